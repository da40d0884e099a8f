"""The gradient pass with one forward per image: ``forward.onnx``, cotangent, ``backward.onnx``.

For each S_FU batch (:func:`~gradnca_onnx.scores.fu_batch_slices`) the images go through
``forward.onnx`` in chunks of the manifest's ``grads_batch``; that gives the features (and
logits) every image needs for S_LP, and the residuals the backward reads. The cotangent of
the batch's triplet loss needs the whole batch's features, so the residuals of its chunks are
held until it is known. They are held under a memory budget
(:attr:`RuntimeConfig.residual_memory <gradnca_onnx.engine.RuntimeConfig>`): the chunks past
it keep no residuals, and their gradients are recomputed with ``grads.onnx`` (which repeats
their forward pass). The model's notes say how many chunks that was. Chunks whose cotangent is
zero need no backward (the gradient is linear in the cotangent).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import numpy as np
from numpy.typing import NDArray

from ..scores import fu_batch_slices
from ..scores.feature_update import triplet_loss_grad
from ..zoo import BACKWARD_OUTPUTS, Manifest, residual_names
from ..zoo.sessions import run_session

#: Default budget for the residuals held per S_FU batch (bytes): 2 GiB. resnet18 at 224 px
#: holds about 5 MiB per image, so n = 1,100 (S_FU batches of 183) fits whole.
DEFAULT_RESIDUAL_MEMORY = 2 << 30


def chunks_held(manifest: Manifest, budget: int) -> int:
    """How many ``grads_batch`` chunks' residuals fit in ``budget`` bytes (at least 0)."""
    assert manifest.split is not None
    per_chunk = max(manifest.split.residual_bytes, 1)
    return int(budget // per_chunk)


def split_passes(open_graph: Callable[[str], Any], manifest: Manifest, x: NDArray[np.float32],
                 labels: NDArray, budget: int,
                 tick: Callable[[str, int], Callable[[int], None]],
                 timings: dict[str, float] | None = None) -> tuple[NDArray[np.float32], NDArray[np.float32] | None,
                            NDArray[np.float64], NDArray[np.float64], list[str]]:
    """Features, logits and the per-S_FU-batch gradient norms, each image forward once.

    Parameters
    ----------
    open_graph : callable
        ``open_graph("forward" | "backward" | "grads")`` -> onnxruntime session (opened on
        first use).
    manifest : Manifest
        A member with a ``split`` block.
    x : ndarray (n, C, H, W), float32
        The preprocessed images.
    labels : ndarray (n,)
    budget : int
        Bytes of residuals held per S_FU batch.
    tick : callable
        ``tick(stage, total)`` -> ``step(done)`` progress callback.
    timings : dict, optional
        Seconds per stage are added to it: ``forward``, ``cotangent``, ``backward`` and
        ``recompute`` (the benchmarks' per-stage times).

    Returns
    -------
    features, logits (``None`` without a head), norms of grad W1 and grad W2 per S_FU batch,
    and notes for the user.
    """
    assert manifest.split is not None and manifest.batch_policy.grads_batch is not None
    b = manifest.batch_policy.grads_batch
    n, d = len(x), manifest.feature_dim
    has_logits = manifest.num_classes is not None
    names = residual_names(manifest.split.residuals)
    feats = np.empty((n, d), np.float32)
    logits = np.empty((n, manifest.num_classes), np.float32) if has_logits else None
    slices = fu_batch_slices(n)
    n1, n2 = np.zeros(len(slices)), np.zeros(len(slices))
    keep = chunks_held(manifest, budget)
    recomputed = total = 0
    feat_step, grad_step = tick("features", n), tick("gradients", len(slices))
    sessions: dict[str, Any] = {}
    clock = _Clock(timings)

    def session(graph: str) -> Any:
        if graph not in sessions:
            sessions[graph] = open_graph(graph)
        return sessions[graph]

    wanted = ["features"] + (["logits"] if has_logits else []) + list(names)
    for i, sl in enumerate(slices):
        starts = range(sl.start, sl.stop, b)
        held: list[dict[str, NDArray] | None] = []
        for j, start in enumerate(starts):
            stop = min(start + b, sl.stop)
            with clock("forward"):
                out = run_session(session("forward"), wanted,
                                  {"images": _padded(x[start:stop], b)},
                                  where=f"{manifest.name}: forward.onnx")
            _check_width(out[0], d, "features", manifest)
            feats[start:stop] = out[0][: stop - start]
            if logits is not None:
                _check_width(out[1], manifest.num_classes, "logits", manifest)
                logits[start:stop] = out[1][: stop - start]
            first = 2 if has_logits else 1
            held.append(dict(zip(names, out[first:])) if j < keep else None)
            del out
            feat_step(stop)
        with clock("cotangent"):
            _, cot = triplet_loss_grad(feats[sl], labels[sl])
        g1 = g2 = None
        for j, start in enumerate(starts):
            stop = min(start + b, sl.stop)
            c = cot[start - sl.start: stop - sl.start]
            if not c.any():  # linear in the cotangent: a zero chunk adds nothing
                continue
            total += 1
            c = _padded(c, b)
            if held[j] is not None:
                with clock("backward"):
                    w1, w2 = run_session(session("backward"), list(BACKWARD_OUTPUTS),
                                         {"cotangent": c, **held[j]},
                                         where=f"{manifest.name}: backward.onnx")
            else:
                recomputed += 1
                with clock("recompute"):
                    _, w1, w2 = run_session(
                        session("grads"), ["features", "grad_w1", "grad_w2"],
                        {"images": _padded(x[start:stop], b), "cotangent": c},
                        where=f"{manifest.name}: grads.onnx")
            held[j] = None  # free this chunk's residuals as soon as they are used
            g1 = w1.astype(np.float64) if g1 is None else g1 + w1
            g2 = w2.astype(np.float64) if g2 is None else g2 + w2
        del held
        if g1 is not None:
            n1[i], n2[i] = np.linalg.norm(g1), np.linalg.norm(g2)
        grad_step(i + 1)
    notes = []
    if recomputed:
        per_image = manifest.split.residual_bytes / b / 2**20
        notes.append(f"gradient pass: {recomputed} of {total} chunks of {b} images recomputed "
                     f"with grads.onnx (their residuals, {per_image:.1f} MiB per image, did not "
                     f"fit the {budget / 2**20:.0f} MiB residual budget; raise it with "
                     "--residual-memory)")
    return feats, logits, n1, n2, notes


class _Clock:
    """``with clock(stage):`` adds the block's seconds to ``timings[stage]`` (if given)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


def _padded(a: NDArray, b: int) -> NDArray[np.float32]:
    """``a`` as float32 with zero rows appended up to ``b`` rows (the graphs' fixed batch)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if len(a) == b:
        return a
    return np.concatenate([a, np.zeros((b - len(a), *a.shape[1:]), np.float32)])


def _check_width(out: NDArray, size: int | None, name: str, manifest: Manifest) -> None:
    if out.ndim != 2 or out.shape[1] != size:
        raise ValueError(f"{manifest.name}: forward.onnx output {name!r} has shape "
                         f"{list(out.shape)} but the manifest says width {size}; the graph and "
                         "manifest.json disagree: re-export the model")


def uses_split(manifest: Manifest, budget: int) -> bool:
    """Whether the engine runs the split pass for this member: it has one, and the budget
    holds at least one chunk (else ``features.onnx`` and ``grads.onnx`` do the work)."""
    return manifest.split is not None and chunks_held(manifest, budget) >= 1
