"""Running a zoo member's graphs: its sessions, and the fixed-batch gradient graph on a batch of
any size (the manifest's batch policy).

``grads.onnx`` is traced at a fixed batch ``B``. A batch of ``n`` images is cut into chunks of
``B``; the last chunk is padded with zero images and zero cotangent rows. The weight gradients of
the chunks are summed. This is exact: in eval mode each image's forward pass depends on that image
alone, and the weight gradient is ``sum_i J_i^T c_i`` over images ``i``, so a zero cotangent row
adds nothing and chunk sums add up to the whole batch's gradient.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import ZooError
from ..io.sessions import cpu_session, run_session
from ..zoo.manifest import (
    BACKWARD_FILE,
    FEATURES_FILE,
    FORWARD_FILE,
    GRADS_FILE,
    GRADS_INPUTS,
    GRADS_OUTPUTS,
    Manifest,
    load_manifest,
)

#: The graphs of a member, by the name :func:`open_session` takes.
GRAPHS = {"features": FEATURES_FILE, "grads": GRADS_FILE, "forward": FORWARD_FILE,
          "backward": BACKWARD_FILE}


def open_session(model_dir: str | os.PathLike, graph: str, *, manifest: Manifest | None = None,
                 threads: int | None = None, verify: bool = False) -> Any:
    """An onnxruntime CPU session on one graph of a model directory, with its manifest's
    optimisation level.

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

    Raises
    ------
    ZooError
        An unknown graph, or one the member does not have (features-only, no split pass).
    """
    if graph not in GRAPHS:
        raise ZooError(f"graph must be one of {list(GRAPHS)}; got {graph!r}")
    m = manifest if manifest is not None else load_manifest(model_dir, verify=verify)
    if graph != "features" and not m.has_grads:
        raise ZooError(f"model {m.name!r} is features-only (no {GRADS_FILE}): "
                       f"{m.features_only}")
    if graph in ("forward", "backward") and m.split is None:
        raise ZooError(f"model {m.name!r} has no split gradient pass (no {FORWARD_FILE})")
    return cpu_session(Path(model_dir) / GRAPHS[graph], m.ort_optimization, threads=threads)


def pad_rows(a: ArrayLike, b: int) -> NDArray[np.float32]:
    """``a`` as contiguous float32 with zero rows appended up to ``b`` rows (the graphs' fixed
    batch); zero images with zero cotangent rows add nothing to a weight gradient."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if len(a) == b:
        return a
    return np.concatenate([a, np.zeros((b - len(a), *a.shape[1:]), np.float32)])


def add_chunk(total: NDArray[np.float64] | None, chunk: NDArray) -> NDArray[np.float64]:
    """``total + chunk`` in float64 (``chunk`` itself when ``total`` is ``None``): the chunk
    sums of the batch policy are done in float64, whatever the graph's dtype."""
    return chunk.astype(np.float64) if total is None else total + chunk


def grads_batch_size(session: Any) -> int:
    """The fixed batch of a ``grads.onnx`` session (its ``images`` input's first dimension)."""
    names = [i.name for i in session.get_inputs()]
    if tuple(names) != GRADS_INPUTS:
        raise ZooError(f"not a gradient graph: inputs are {names}, expected {list(GRADS_INPUTS)}")
    b = session.get_inputs()[0].shape[0]
    if not isinstance(b, int) or b < 1:
        raise ZooError(f"gradient graph has no fixed batch (images dimension 0 is {b!r})")
    return b


def run_grads(session: Any, images: ArrayLike, cotangent: ArrayLike
              ) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Features and summed conv-weight gradients of a whole batch, whatever its size.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        A session on a model's ``grads.onnx``.
    images : array-like of shape (n, C, H, W)
        Preprocessed images (float32, normalised as the manifest says).
    cotangent : array-like of shape (n, D)
        Gradient of the loss with respect to the features (e.g. from
        :func:`gradnca_onnx.triplet_loss_grad`).

    Returns
    -------
    features : ndarray (n, D), float32
    grad_w1, grad_w2 : ndarray, float64
        Gradients of ``sum_i <features_i, cotangent_i>`` with respect to the first and second
        conv weights (summed over chunks in float64).
    """
    b = grads_batch_size(session)
    x = np.ascontiguousarray(images, dtype=np.float32)
    c = np.ascontiguousarray(cotangent, dtype=np.float32)
    in_shape = tuple(session.get_inputs()[0].shape[1:])
    d = session.get_inputs()[1].shape[1]
    if x.ndim != 1 + len(in_shape) or x.shape[1:] != in_shape:
        raise ZooError(f"images must have shape (n, {', '.join(map(str, in_shape))}); "
                       f"got {x.shape}")
    if c.shape != (x.shape[0], d):
        raise ZooError(f"cotangent must have shape ({x.shape[0]}, {d}) to match the images; "
                       f"got {c.shape}")
    n = x.shape[0]
    if n == 0:
        raise ZooError("run_grads needs at least one image")
    feats = np.empty((n, d), dtype=np.float32)
    g1 = g2 = None
    for start in range(0, n, b):
        stop = min(start + b, n)
        f, w1, w2 = run_session(session, list(GRADS_OUTPUTS),
                                {"images": pad_rows(x[start:stop], b),
                                 "cotangent": pad_rows(c[start:stop], b)}, where="grads.onnx")
        feats[start:stop] = f[: stop - start]
        g1, g2 = add_chunk(g1, w1), add_chunk(g2, w2)
    return feats, g1, g2  # type: ignore[return-value]
