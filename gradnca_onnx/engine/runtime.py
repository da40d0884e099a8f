"""Where the graphs run: execution provider and threads."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

from ..core._parallel import available_cores  # noqa: F401 (re-exported)
from ..errors import (
    InputError,
    first_line,  # noqa: F401 (re-exported)
)
from ..io.sessions import (  # noqa: F401 (re-exported)
    ort_errors,
    run_session,
    session_options,
)
from ..zoo import (
    BACKWARD_FILE,
    BACKWARD_OUTPUTS,
    FEATURES_FILE,
    FORWARD_FILE,
    GRADS_FILE,
    Manifest,
    residual_names,
)


def cap_threads(threads: int | None, option: str = "--threads") -> tuple[int | None, str | None]:
    """``threads`` capped at :func:`available_cores`, and the warning to give when capped.

    Parameters
    ----------
    threads : int or None
        Threads asked for; ``None`` (the library's default) is kept.
    option : str
        How the message names the setting (``--threads`` on the command line).

    Returns
    -------
    (threads, warning) : the capped count, and ``None`` or one line saying what was done.

    Raises
    ------
    ValueError
        ``threads`` is not an integer >= 1.
    """
    if threads is None:
        return None, None
    if isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1:
        raise InputError(f"{option} must be an integer >= 1; got {threads!r}")
    cores = available_cores()
    if threads <= cores:
        return int(threads), None
    return cores, (f"{option} {threads} is more than the {cores} CPU core(s) this process may "
                   f"use; using {cores} (more threads than cores only slow it down)")


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30}


def memory_size(text: str | int, option: str = "residual_memory") -> int:
    """Bytes of a size such as ``2GiB``, ``512MiB``, ``1.5G`` or ``0`` (an int: itself).

    Raises
    ------
    InputError
        Anything else, naming ``option``.
    """
    if isinstance(text, Integral) and not isinstance(text, bool):
        _check_count(text, option, minimum=0)
        return int(text)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise InputError(f"{option} must be a size such as 512MiB, 2GiB or 0; got {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


#: The devices a :class:`RuntimeConfig` may name.
DEVICES = ("auto", "cpu", "cuda")


def _check_count(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")


@dataclass(frozen=True)
class RuntimeConfig:
    """How the engine runs ONNX graphs.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``auto`` takes onnxruntime's CUDA provider when the installed onnxruntime offers it
        (``onnxruntime-gpu``), else the CPU.
    threads : int or None
        Intra-op threads (``None``: onnxruntime's default, one per core); more than the cores
        this process may use (:func:`available_cores`) is capped at them, with a warning.
    features_batch : int
        Images per call of the (dynamic-batch) features graph.
    residual_memory : int
        Bytes of residuals the split gradient pass may hold per S_FU batch (default 2 GiB;
        see :mod:`gradnca_onnx.engine.split_pass`). 0 turns the split pass off: every member
        then runs ``features.onnx`` and ``grads.onnx``.
    gradient_pass : {"auto", "split", "whole"}
        ``auto``: the split pass for a member whose residuals of a whole S_FU batch fit the
        budget, else ``features.onnx`` + ``grads.onnx`` (said in its notes); ``split``: the
        split pass whenever one chunk fits (the rest recomputed); ``whole``: never the split
        (:func:`gradnca_onnx.engine.split_pass.choose_pass`).
    """

    device: str = "auto"
    threads: int | None = None
    features_batch: int = 64
    residual_memory: int = 2 << 30
    gradient_pass: str = "auto"

    def __post_init__(self) -> None:
        # Every setting is checked here, so that a bad one raises where it is made, before any
        # model runs, instead of failing every model of a ranking with the same error.
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(map(repr, DEVICES))}; got "
                             f"{self.device!r}")
        _check_count(self.features_batch, "features_batch", minimum=1)
        _check_count(self.residual_memory, "residual_memory", minimum=0)
        if self.gradient_pass not in ("auto", "split", "whole"):
            raise InputError(f"gradient_pass must be 'auto', 'split' or 'whole'; got "
                             f"{self.gradient_pass!r}")
        # More intra-op threads than cores only makes them wait on each other (measured: 60
        # images took 107 s with 1000 threads on 2 cores, 2.3 s with 2): cap, and say so.
        threads, capped = cap_threads(self.threads, "threads")
        if capped:
            warnings.warn(capped, UserWarning, stacklevel=3)
        object.__setattr__(self, "threads", threads)

    def providers(self) -> list[str]:
        """onnxruntime's execution providers for :attr:`device`, best first.

        Raises
        ------
        InputError
            ``device="cuda"`` and this onnxruntime has no CUDA provider.
        """
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise InputError("device 'cuda' was asked for but this onnxruntime has no CUDA "
                                 "provider; install onnxruntime-gpu or use --device cpu")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def open(self, model_dir: str | os.PathLike[str], manifest: Manifest, graph: str, *,
             arena: bool = True) -> Any:
        """An onnxruntime session on one graph of a model directory: ``features``, ``grads``,
        or the split pass's ``forward`` and ``backward``.

        ``arena=False`` turns off onnxruntime's CPU memory arena, so that the session returns
        its buffers after each run instead of keeping its largest run's worth: the split pass
        holds up to three sessions at once, and their arenas were most of its peak memory.
        """
        import onnxruntime as ort

        if graph != "features" and not manifest.has_grads:
            # The scoring code never asks for it; a caller that does gets a clear line.
            raise InputError(f"model {manifest.name!r} is features-only (no {GRADS_FILE}): "
                             f"{manifest.features_only}")
        if graph in ("forward", "backward") and manifest.split is None:
            raise InputError(f"model {manifest.name!r} has no split gradient pass (no "
                             f"{FORWARD_FILE}); re-export it with this version")
        files = {"features": FEATURES_FILE, "grads": GRADS_FILE, "forward": FORWARD_FILE,
                 "backward": BACKWARD_FILE}
        path = Path(model_dir) / files[graph]
        check_graph_file(Path(model_dir), path.name, manifest)
        opts = session_options(manifest.ort_optimization, threads=self.threads)
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = bool(arena)
        try:
            session = ort.InferenceSession(os.fspath(path), opts, providers=self.providers())
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise InputError(f"cannot load {path}: {first_line(exc)}") from None
        check_session(session, manifest, graph, where=str(path))
        return session


#: A graph's inputs or outputs as the manifest implies them: name -> shape (``None``: any size;
#: ``None`` for a dimension: any length).
_Shapes = dict[str, tuple[int | None, ...] | None]


def _expected_io(manifest: Manifest, graph: str) -> tuple[_Shapes, _Shapes]:
    """The inputs and outputs a graph must have, name -> shape (``None``: any size)."""
    spec = manifest.input
    image = (None, spec.channels, *spec.spatial)
    d = manifest.feature_dim
    if graph == "features":
        outputs: _Shapes = {"features": (None, d)}
        if manifest.num_classes is not None:
            outputs["logits"] = (None, manifest.num_classes)
        return {"images": image}, outputs
    b = manifest.batch_policy.grads_batch
    if graph in ("forward", "backward"):
        assert manifest.split is not None
        res = {name: None for name in residual_names(manifest.split.residuals)}
        if graph == "forward":
            outputs = {"features": (b, d)}
            if manifest.num_classes is not None:
                outputs["logits"] = (b, manifest.num_classes)
            return {"images": (b,) + image[1:]}, {**outputs, **res}
        return ({"cotangent": (b, d), **res},
                dict(zip(BACKWARD_OUTPUTS, (manifest.layers.conv1_weight_shape,
                                            manifest.layers.conv2_weight_shape))))
    return ({"images": (b,) + image[1:], "cotangent": (b, d)},
            {"features": (b, d), "grad_w1": manifest.layers.conv1_weight_shape,
             "grad_w2": manifest.layers.conv2_weight_shape})


def _shape_mismatch(actual: Any, expected: tuple[int | None, ...] | None) -> bool:
    if expected is None or actual is None:
        return False
    if len(actual) != len(expected):
        return True
    return any(isinstance(a, int) and e is not None and a != e for a, e in zip(actual, expected))


def check_session(session: Any, manifest: Manifest, graph: str, *, where: str) -> None:
    """Refuse a graph whose inputs or outputs contradict the manifest (names, fixed sizes).

    Raises
    ------
    ValueError
        One line naming the graph file, the input or output, what the manifest says and what
        the graph has.
    """
    inputs, outputs = _expected_io(manifest, graph)
    have_in = {i.name: i.shape for i in session.get_inputs()}
    have_out = {o.name: o.shape for o in session.get_outputs()}
    if sorted(have_in) != sorted(inputs):
        raise InputError(f"{where}: graph inputs are {sorted(have_in)} but a {graph} graph takes "
                         f"{sorted(inputs)}; the file is not this model's {graph} graph: "
                         "re-export the model")
    missing = [n for n in outputs if n not in have_out]
    if missing:
        raise InputError(f"{where}: graph has no output(s) {missing} (it has {sorted(have_out)}); "
                         "the file is not this model's graph: re-export the model")
    for kind, names, have in (("input", inputs, have_in), ("output", outputs, have_out)):
        for name, expected in names.items():
            if _shape_mismatch(have[name], expected):
                assert expected is not None  # no expected shape is never a mismatch
                shown = ["N" if e is None else e for e in expected]
                raise InputError(f"{where}: {kind} {name!r} has shape {have[name]} but the "
                                 f"manifest implies {shown}; the graph and manifest.json "
                                 "disagree: re-export the model")


def check_graph_file(model_dir: Path, name: str, manifest: Manifest) -> None:
    """Confine a graph file and its external-data side files to the model directory.

    A graph that is a symlink out of the model directory, or whose tensors name external data
    outside it or not listed (and so not hashed) in the manifest, is refused: nothing a zoo
    names may read beyond its own directory.
    """
    from ..io.onnx_files import external_data_locations, read_onnx
    from ..zoo.integrity import confined_path

    path = confined_path(model_dir, name)
    for location in external_data_locations(read_onnx(path, hint="re-export the model")):
        if location not in manifest.files:
            raise InputError(f"{path}: its external data file {location!r} is not listed in the "
                             "manifest (so no sha256 covers it); re-export the model")
        confined_path(model_dir, location)
