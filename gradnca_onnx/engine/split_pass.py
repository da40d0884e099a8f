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

from ..errors import InputError
from ..io.sessions import run_session
from ..scores import fu_batch_slices
from ..scores.feature_update import triplet_loss_grad
from ..zoo import BACKWARD_OUTPUTS, Manifest, residual_names
from .batching import add_chunk, pad_rows

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
                 timings: dict[str, float] | None = None) -> tuple[Any, ...]:
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
    features : ndarray (n, D), float32
    logits : ndarray (n, K), float32, or ``None`` without a head
    norms_w1, norms_w2 : ndarray, float64
        Norms of the two weight gradients per S_FU batch.
    notes : list of str
    """
    run = _SplitRun(open_graph, manifest, x, chunks_held(manifest, budget), _Clock(timings))
    slices = fu_batch_slices(len(x))
    n1, n2 = np.zeros(len(slices)), np.zeros(len(slices))
    feat_step, grad_step = tick("features", len(x)), tick("gradients", len(slices))
    for i, sl in enumerate(slices):
        held = run.forward(sl, feat_step)
        with run.clock("cotangent"):
            _, cot = triplet_loss_grad(run.feats[sl], labels[sl])
        g1, g2 = run.backward(sl, cot, held)
        if g1 is not None:
            n1[i], n2[i] = np.linalg.norm(g1), np.linalg.norm(g2)
        grad_step(i + 1)
    notes = []
    if run.recomputed:
        b = run.b
        per_image = manifest.split.residual_bytes / b / 2**20
        notes.append(f"gradient pass: {run.recomputed} of {run.total} chunks of {b} images "
                     f"recomputed with grads.onnx (their residuals, {per_image:.1f} MiB per "
                     f"image, did not fit the {budget / 2**20:.0f} MiB residual budget; raise "
                     "it with --residual-memory)")
    return run.feats, run.logits, n1, n2, notes


class _SplitRun:
    """The state of one model's split pass: sessions, outputs and chunk counts."""

    def __init__(self, open_graph: Callable[[str], Any], manifest: Manifest,
                 x: NDArray[np.float32], keep: int, clock: "_Clock") -> None:
        assert manifest.split is not None and manifest.batch_policy.grads_batch is not None
        self.open_graph, self.m, self.x, self.keep, self.clock = (open_graph, manifest, x,
                                                                  keep, clock)
        self.b = manifest.batch_policy.grads_batch
        self.names = residual_names(manifest.split.residuals)
        n, k = len(x), manifest.num_classes
        self.feats = np.empty((n, manifest.feature_dim), np.float32)
        self.logits = np.empty((n, k), np.float32) if k is not None else None
        self.sessions: dict[str, Any] = {}
        self.recomputed = self.total = 0

    def session(self, graph: str) -> Any:
        if graph not in self.sessions:
            self.sessions[graph] = self.open_graph(graph)
        return self.sessions[graph]

    def chunks(self, sl: slice) -> list[tuple[int, int]]:
        return [(a, min(a + self.b, sl.stop)) for a in range(sl.start, sl.stop, self.b)]

    def forward(self, sl: slice, step: Callable[[int], None]) -> list[dict | None]:
        """Run one S_FU batch forward; the first ``keep`` chunks' residuals, ``None`` after."""
        m, has_logits = self.m, self.logits is not None
        wanted = ["features"] + (["logits"] if has_logits else []) + list(self.names)
        held: list[dict | None] = []
        for j, (a, z) in enumerate(self.chunks(sl)):
            with self.clock("forward"):
                out = run_session(self.session("forward"), wanted,
                                  {"images": pad_rows(self.x[a:z], self.b)},
                                  where=f"{m.name}: forward.onnx")
            _check_width(out[0], m.feature_dim, "features", m)
            self.feats[a:z] = out[0][: z - a]
            if has_logits:
                _check_width(out[1], m.num_classes, "logits", m)
                self.logits[a:z] = out[1][: z - a]
            held.append(dict(zip(self.names, out[1 + has_logits:])) if j < self.keep else None)
            step(z)
        return held

    def backward(self, sl: slice, cot: NDArray, held: list[dict | None]) -> tuple[Any, Any]:
        """The batch's two weight gradients (float64 sums over its chunks; ``None`` if its
        cotangent is zero)."""
        g1 = g2 = None
        for j, (a, z) in enumerate(self.chunks(sl)):
            c = cot[a - sl.start: z - sl.start]
            if not c.any():  # linear in the cotangent: a zero chunk adds nothing
                continue
            self.total += 1
            c = pad_rows(c, self.b)
            if held[j] is not None:
                with self.clock("backward"):
                    w1, w2 = run_session(self.session("backward"), list(BACKWARD_OUTPUTS),
                                         {"cotangent": c, **held[j]},
                                         where=f"{self.m.name}: backward.onnx")
            else:
                self.recomputed += 1
                with self.clock("recompute"):
                    _, w1, w2 = run_session(
                        self.session("grads"), ["features", "grad_w1", "grad_w2"],
                        {"images": pad_rows(self.x[a:z], self.b), "cotangent": c},
                        where=f"{self.m.name}: grads.onnx")
            held[j] = None  # free this chunk's residuals as soon as they are used
            g1, g2 = add_chunk(g1, w1), add_chunk(g2, w2)
        return g1, g2


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


def _check_width(out: NDArray, size: int | None, name: str, manifest: Manifest) -> None:
    if out.ndim != 2 or out.shape[1] != size:
        raise InputError(f"{manifest.name}: forward.onnx output {name!r} has shape "
                         f"{list(out.shape)} but the manifest says width {size}; the graph and "
                         "manifest.json disagree: re-export the model")


#: How the gradient pass is chosen (``RuntimeConfig.gradient_pass``, ``rank --gradient-pass``).
GRADIENT_PASSES = ("auto", "split", "whole")


def choose_pass(manifest: Manifest, budget: int, n_images: int, mode: str = "auto"
                ) -> tuple[bool, str | None]:
    """Whether the engine runs the split pass for this member, and the note that says why
    not when the rule chose the whole pass for a member that has a split.

    ``split`` runs it whenever the budget holds at least one chunk (the chunks past it are
    recomputed with ``grads.onnx``); ``whole`` never (``features.onnx`` then ``grads.onnx``);
    ``auto`` (the default) only when the budget holds every chunk of the largest S_FU batch.
    The rule is measured: a recomputed chunk runs its forward twice, and ``forward.onnx``
    costs more than ``features.onnx`` (it writes the residuals), so a split that recomputes
    chunks only pays when most are held: the break-even share of chunks held was 0.64 for
    resnet18 and 0.93 for densenet121 (224 px, batch 32, this machine; README, gradient pass).
    """
    if manifest.split is None or mode == "whole":
        return False, None
    held = chunks_held(manifest, budget)
    if mode == "split" or held < 1:
        return held >= 1, None
    b = manifest.batch_policy.grads_batch or 1
    largest = max((sl.stop - sl.start for sl in fu_batch_slices(n_images)), default=0)
    needed = -(-largest // b)
    if held >= needed:
        return True, None
    mib = manifest.split.residual_bytes / 2**20
    return False, (f"gradient pass: features.onnx + grads.onnx, not the split pass: the "
                   f"{budget / 2**20:.0f} MiB residual budget holds {held} of the {needed} "
                   f"chunks of {b} images of an S_FU batch ({mib:.0f} MiB each), and recomputing "
                   f"the rest costs more than the split saves; --residual-memory "
                   f"{needed * mib:.0f}MiB holds them all (--gradient-pass split forces it)")
