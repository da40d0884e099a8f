"""onnxruntime sessions on a model directory's graphs, with the manifest's options."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ZooError, first_line
from .manifest import (
    BACKWARD_FILE,
    FEATURES_FILE,
    FORWARD_FILE,
    GRADS_FILE,
    Manifest,
    load_manifest,
)

_GRAPHS = {"features": FEATURES_FILE, "grads": GRADS_FILE, "forward": FORWARD_FILE,
           "backward": BACKWARD_FILE}




def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (plain ``Exception`` subclasses, not ``RuntimeError``)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return ()
    return tuple(v for v in vars(state).values()
                 if isinstance(v, type) and issubclass(v, Exception))


def run_session(session: Any, outputs: list[str], feeds: dict[str, Any], *, where: str) -> list:
    """``session.run`` with onnxruntime's errors turned into one-line ``ValueError``."""
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
    """
    import onnxruntime as ort

    levels = {
        "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise ZooError(f"unknown onnxruntime optimisation level {level!r}; use one of "
                         f"{list(levels)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    return so


def open_session(model_dir: str | os.PathLike, graph: str, *, manifest: Manifest | None = None,
                 threads: int | None = None, verify: bool = False) -> Any:
    """An onnxruntime CPU session on ``features.onnx`` or ``grads.onnx`` of a model directory.

    Parameters
    ----------
    model_dir : path
    graph : {"features", "grads", "forward", "backward"}
    manifest : Manifest, optional
        Already loaded manifest (read from ``model_dir`` otherwise).
    threads : int, optional
        Intra-op threads (onnxruntime's default otherwise).
    verify : bool, default=False
        Check file hashes when reading the manifest.
    """
    import onnxruntime as ort

    if graph not in _GRAPHS:
        raise ZooError(f"graph must be one of {list(_GRAPHS)}; got {graph!r}")
    m = manifest if manifest is not None else load_manifest(model_dir, verify=verify)
    if graph != "features" and not m.has_grads:
        raise ZooError(f"model {m.name!r} is features-only (no {GRADS_FILE}): "
                         f"{m.features_only}")
    if graph in ("forward", "backward") and m.split is None:
        raise ZooError(f"model {m.name!r} has no split gradient pass (no {FORWARD_FILE})")
    path = Path(model_dir) / _GRAPHS[graph]
    return ort.InferenceSession(str(path), session_options(m.ort_optimization, threads=threads),
                                providers=["CPUExecutionProvider"])
