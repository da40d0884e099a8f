"""Where independent tasks run: in this process (``local``) or as Ray tasks (``ray``).

An executor takes a module-level function and a list of calls and yields one
:class:`TaskOutcome` per call, in completion order. A call that raises, or whose worker process
dies more often than the retry budget allows, becomes an outcome with ``error`` set: the other
calls still finish. The caller (the driver) combines the outcomes and alone writes results to
disk, so shared state (the run store, the ranking files) has a single writer.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..errors import InputError, first_line, one_line, optional_import

#: One call: positional and keyword arguments.
Call = tuple[tuple[Any, ...], dict[str, Any]]

EXECUTORS = ("local", "ray")


@dataclass
class TaskOutcome:
    """The result of one call: ``value``, or ``error`` (one line of text) when it failed."""

    index: int
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None




class LocalExecutor:
    """Runs every call in this process, one after the other (the default; no Ray needed)."""

    name = "local"
    #: Calls run here, so callbacks (progress bars) can be passed into them.
    in_process = True

    def share(self, obj: Any) -> Any:
        """A handle to ``obj`` that calls can take as an argument (here: ``obj`` itself)."""
        return obj

    def gpus(self) -> float:
        """GPUs the executor can hand to tasks (a local call uses whatever the process sees)."""
        return 0.0

    def map(self, fn: Callable[..., Any], calls: Sequence[Call], *,
            num_gpus: float = 0.0) -> Iterator[TaskOutcome]:
        """Run ``fn(*args, **kwargs)`` for every call; yield outcomes in call order."""
        for i, (args, kwargs) in enumerate(calls):
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:  # a failed call is reported; KeyboardInterrupt still stops
                yield TaskOutcome(i, error=one_line(exc))
                continue
            yield TaskOutcome(i, value=value)

    def close(self) -> None:
        """Nothing to release."""


def _import_ray() -> Any:
    """Ray, or :class:`~gradnca_onnx.errors.MissingExtraError` naming the ``ray`` extra."""
    return optional_import("ray", "ray", "the ray executor")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable HOST:PORT (``ray.init`` would retry for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r} must be 'auto' or HOST:PORT (e.g. "
                         "10.0.0.1:6379, or ray://HOST:10001 for Ray Client)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address} ({exc}); start it with "
                         "'ray start --head' on the head node or check the address") from None


class RayExecutor:
    """Runs calls as Ray tasks: one task per call, retried when its worker dies.

    Parameters
    ----------
    address : str, optional
        ``None``: connect to a running Ray instance if ``ray.init`` was already called, else
        start a local one on this machine. ``"auto"``: the cluster this node belongs to
        (``ray start``). ``"HOST:PORT"``: the head node's GCS address.
    max_retries : int
        How often a task whose worker process died (killed, out of memory, node lost) is run
        again before it is reported as failed. Exceptions raised by the task itself are
        deterministic and are not retried.
    num_cpus : float
        CPUs each task asks for (the scheduler runs at most cluster CPUs / num_cpus at once).
    """

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, *, max_retries: int = 3,
                 num_cpus: float = 1.0) -> None:
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0; got {max_retries}")
        self._ray = ray = _import_ray()
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        self._owned = False
        if address not in (None, "auto"):
            _check_reachable(address)
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR")
            except ConnectionError as exc:
                raise InputError(f"cannot connect to Ray (address {address!r}): "
                                 f"{' '.join(str(exc).split())}") from None
            self._owned = True

    def share(self, obj: Any) -> Any:
        """Put ``obj`` in the object store once; tasks given the reference receive ``obj``."""
        return self._ray.put(obj)

    def gpus(self) -> float:
        """GPUs in the cluster (0 when it has none)."""
        return float(self._ray.cluster_resources().get("GPU", 0.0))

    def map(self, fn: Callable[..., Any], calls: Sequence[Call], *,
            num_gpus: float = 0.0) -> Iterator[TaskOutcome]:
        """Submit every call as a task; yield outcomes as tasks finish.

        Closing the generator early (an exception or Ctrl-C in the caller) cancels the tasks
        still pending, so no work outlives the driver.
        """
        ray = self._ray
        remote = ray.remote(fn).options(max_retries=self.max_retries, retry_exceptions=False,
                                        num_cpus=self.num_cpus, num_gpus=num_gpus)
        refs = [remote.remote(*args, **kwargs) for args, kwargs in calls]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield self._outcome(index[ref], ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _outcome(self, i: int, ref: Any) -> TaskOutcome:
        ray = self._ray
        try:
            return TaskOutcome(i, value=ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            # The task itself raised: report its exception, not Ray's wrapper and traceback.
            cause = getattr(exc, "cause", None)
            return TaskOutcome(i, error=one_line(cause) if cause is not None else
                               first_line(exc))
        except ray.exceptions.RayError as exc:
            return TaskOutcome(i, error=f"worker died and the task failed after "
                                        f"{self.max_retries} retries ({type(exc).__name__})")

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


Executor = LocalExecutor | RayExecutor


def make_executor(name: str, *, address: str | None = None, max_retries: int = 3,
                  num_cpus: float = 1.0) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``).

    Raises
    ------
    InputError
        Unknown name, an address without ``ray``, or an unreachable cluster.
    MissingExtraError
        Ray not installed (the ``ray`` extra).
    """
    name = (name or "").strip().lower()
    if name not in EXECUTORS:
        raise InputError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    if name == "local":
        if address:
            raise InputError("--ray-address needs --executor ray")
        return LocalExecutor()
    return RayExecutor(address or os.environ.get("RAY_ADDRESS") or None,
                       max_retries=max_retries, num_cpus=num_cpus)


def task_gpus(executor: Executor, device: str) -> float:
    """GPUs one task asks for: 1 when its device can use a GPU and the cluster has one.

    Raises ``ValueError`` when ``device`` insists on CUDA and a Ray cluster has no GPU (the
    tasks could never be scheduled).
    """
    if executor.in_process:
        return 0.0
    have = executor.gpus()
    wants_cuda = device.startswith("cuda")
    if wants_cuda and have <= 0:
        raise InputError(f"device {device!r} needs a GPU but the Ray cluster has none; use "
                         "--device cpu or add GPU workers")
    return 1.0 if have > 0 and (wants_cuda or device == "auto") else 0.0
