"""Where the graphs run: execution provider and threads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..zoo import FEATURES_FILE, GRADS_FILE, Manifest, session_options


@dataclass(frozen=True)
class RuntimeConfig:
    """How the engine runs ONNX graphs.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``auto`` takes onnxruntime's CUDA provider when the installed onnxruntime offers it
        (``onnxruntime-gpu``), else the CPU.
    threads : int or None
        Intra-op threads (``None``: onnxruntime's default, one per core).
    features_batch : int
        Images per call of the (dynamic-batch) features graph.
    """

    device: str = "auto"
    threads: int | None = None
    features_batch: int = 64

    def providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise ValueError("device 'cuda' was asked for but this onnxruntime has no CUDA "
                                 "provider; install onnxruntime-gpu or use --device cpu")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if self.device != "auto":
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def open(self, model_dir: str | os.PathLike, manifest: Manifest, graph: str) -> Any:
        """An onnxruntime session on ``features.onnx`` or ``grads.onnx`` of a model directory."""
        import onnxruntime as ort

        if graph == "grads" and not manifest.has_grads:
            # The scoring code never asks for it; a caller that does gets a clear line.
            raise ValueError(f"model {manifest.name!r} is features-only (no {GRADS_FILE}): "
                             f"{manifest.features_only}")
        path = Path(model_dir) / {"features": FEATURES_FILE, "grads": GRADS_FILE}[graph]
        opts = session_options(manifest.ort_optimization, threads=self.threads)
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(os.fspath(path), opts, providers=self.providers())
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            text = str(exc).strip().splitlines()
            raise ValueError(f"cannot load {path}: {text[0] if text else type(exc).__name__}") from None
