"""onnxruntime sessions: options, opening a CPU session on a file, running one, its errors.

onnxruntime is imported when a session is made, not with this module, so that the command
line's error handling (which names onnxruntime's exception types) stays cheap to import.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ZooError, first_line

#: The manifest's ``ort_optimization`` names -> onnxruntime's ``GraphOptimizationLevel`` names.
_LEVELS = {"disable_all": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (plain ``Exception`` subclasses, not ``RuntimeError``)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return ()
    return tuple(v for v in vars(state).values()
                 if isinstance(v, type) and issubclass(v, Exception))


def run_session(session: Any, outputs: list[str], feeds: dict[str, Any], *, where: str) -> list:
    """``session.run`` with onnxruntime's errors turned into one-line :class:`ZooError`.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
    outputs : list of str
        Output names (``None`` for all).
    feeds : dict
        Input name -> array.
    where : str
        The graph file the message names.
    """
    try:
        return session.run(outputs, feeds)
    except ort_errors() as exc:
        raise ZooError(f"{where}: onnxruntime cannot run the graph ({first_line(exc)}); the "
                       "graph does not match its manifest: re-export the model") from None


def session_options(level: str = "all", *, threads: int | None = None) -> Any:
    """``onnxruntime.SessionOptions`` with the given optimisation level and thread count.

    The level is the manifest's ``ort_optimization``. All levels give the same gradients up to
    fp32 rounding; a ReLU whose pre-activation sits within rounding of zero can flip at any
    level (as it does between torch's own CPU kernels), so the fastest level, ``all``, is the
    exporter's default (README, "Exporting models").

    Raises
    ------
    ZooError
        An unknown level.
    """
    import onnxruntime as ort

    if level not in _LEVELS:
        raise ZooError(f"unknown onnxruntime optimisation level {level!r}; use one of "
                       f"{list(_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    if threads is not None:
        # Both pools: the inter-op pool is only used in parallel execution mode, but a bound
        # that leaves any pool at onnxruntime's default (one thread per core) is no bound.
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = int(threads)
    return so


def cpu_session(path: str | os.PathLike, level: str = "all", *,
                threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU provider for the ONNX file at ``path``.

    Parameters
    ----------
    path : path
        The ``.onnx`` file (its external data, if any, beside it).
    level : str
        Optimisation level (:func:`session_options`).
    threads : int, optional
        Intra-op threads (onnxruntime's default otherwise).
    """
    import onnxruntime as ort

    return ort.InferenceSession(os.fspath(path), session_options(level, threads=threads),
                                providers=["CPUExecutionProvider"])
