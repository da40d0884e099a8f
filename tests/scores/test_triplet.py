"""Triplet loss and gradient against pytorch-metric-learning + torch autograd (REFERENCE 4).

Tolerances: relative L2 error <= 1e-5 against the float64 reference and <= 1e-4 against the
float32 one (the issue's bounds). Our kernel computes in float64 whatever the input; the float32
reference carries torch's own float32 rounding (~1e-7 relative per distance, amplified by the
1/d factor of the distance gradient), which is what the looser bound absorbs.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from pytorch_metric_learning.losses import TripletMarginLoss  # noqa: E402

import gradnca_onnx as g  # noqa: E402
from gradnca_onnx.core import triplet_margin_loss_grad  # noqa: E402

from _support import cnn_features, real_images  # noqa: E402


def reference(x: np.ndarray, y: np.ndarray, dtype=torch.float64, margin: float = 0.05):
    emb = torch.tensor(x, dtype=dtype, requires_grad=True)
    loss = TripletMarginLoss(margin=margin)(emb, torch.as_tensor(y))
    loss.backward()
    grad = emb.grad if emb.grad is not None else torch.zeros_like(emb)
    return float(loss.detach()), grad.double().numpy()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a))


def batch(b: int, d: int, c: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, b)
    centers = rng.normal(size=(c, d))
    return centers[y] * spread + rng.normal(size=(b, d)), y


@pytest.mark.parametrize("b,d,c", [(183, 512, 11), (183, 64, 2), (40, 16, 2), (24, 8, 11), (183, 2048, 11)])
def test_matches_pml_float64(b: int, d: int, c: int) -> None:
    x, y = batch(b, d, c, seed=b + d + c)
    ref_loss, ref_grad = reference(x, y)
    loss, grad = g.triplet_loss_grad(x, y)
    assert ref_loss > 0
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert grad.dtype == np.float64
    assert rel(grad, ref_grad) <= 1e-5


@pytest.mark.parametrize("b,d,c", [(183, 512, 11), (183, 64, 2), (183, 512, 2)])
def test_matches_pml_float32(b: int, d: int, c: int) -> None:
    x, y = batch(b, d, c, seed=3 * b + d)
    x32 = x.astype(np.float32)
    ref_loss, ref_grad = reference(x32, y, dtype=torch.float32)
    ref64_loss, ref64_grad = reference(x32.astype(np.float64), y)
    loss, grad = g.triplet_loss_grad(x32, y)
    assert grad.dtype == np.float32
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
    # Against the exact (float64) gradient of the same float32 input: float32 output rounding only.
    assert rel(grad, ref64_grad) <= 1e-5
    # Against torch's float32 run: 1e-4, unless torch's own float32 error is larger. That happens
    # when a triplet's violation is within float32 rounding of 0 and torch counts it on the other
    # side of the relu (seed 1061 here: torch float32 is 1.6e-4 from its float64 self, we are
    # 2.5e-8 from float64).
    assert rel(grad, ref_grad) <= max(1e-4, 2 * rel(ref_grad, ref64_grad))


def test_duplicates() -> None:
    x, y = batch(120, 32, 3, seed=11)
    x[10] = x[11]  # same-label or cross-label duplicates, both
    x[20] = x[21]
    y[20], y[21] = 0, 1
    x[30:35] = x[30]
    y[30:35] = 2
    ref_loss, ref_grad = reference(x, y)
    loss, grad = g.triplet_loss_grad(x, y)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert rel(grad, ref_grad) <= 1e-5


@pytest.mark.parametrize("labels", [np.zeros(10, int), np.arange(10)])
def test_batch_without_valid_triplet_has_zero_gradient(labels: np.ndarray) -> None:
    x = np.random.default_rng(0).normal(size=(10, 5))
    ref_loss, ref_grad = reference(x, labels)
    loss, grad = g.triplet_loss_grad(x, labels)
    assert loss == ref_loss == 0.0
    assert not grad.any() and not ref_grad.any()
    _, _, nonzero, total = triplet_margin_loss_grad(x, labels.astype(np.int64))
    assert nonzero == 0 and total == 0


def test_batch_with_triplets_but_no_violation() -> None:
    # Two tight, far-apart clusters: every triplet satisfies the margin.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 6)
    x = np.where(y[:, None] == 0, [1.0, 0.0], [0.0, 1.0]) + 1e-4 * rng.normal(size=(12, 2))
    ref_loss, ref_grad = reference(x, y)
    loss, grad = g.triplet_loss_grad(x, y)
    assert loss == ref_loss == 0.0 and not grad.any() and not ref_grad.any()
    _, _, nonzero, total = triplet_margin_loss_grad(x, y.astype(np.int64))
    assert nonzero == 0 and total == 12 * 5 * 6


def test_two_samples_remainder_batch() -> None:
    # The last S_FU batch at N=1100 holds 2 images; with two labels it has no valid triplet.
    x = np.random.default_rng(2).normal(size=(2, 7))
    loss, grad = g.triplet_loss_grad(x, [0, 1])
    assert loss == 0.0 and grad.shape == (2, 7) and not grad.any()


def test_counts_match_brute_force() -> None:
    x, y = batch(30, 6, 3, seed=4)
    loss, _, nonzero, total = triplet_margin_loss_grad(x, y.astype(np.int64), margin=0.05)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.linalg.norm(u[:, None] - u[None], axis=-1)
    losses = [dist[a, p] - dist[a, n] + 0.05 for a in range(30) for p in range(30) for n in range(30)
              if p != a and y[p] == y[a] and y[n] != y[a]]
    losses = np.array(losses)
    assert total == len(losses) and nonzero == int((losses > 0).sum())
    assert np.isclose(loss, losses[losses > 0].mean(), rtol=1e-12)


def test_real_image_features() -> None:
    images, y = real_images("pool11", 183, seed=3)
    x = cnn_features(images)
    ref_loss, ref_grad = reference(x, y)
    loss, grad = g.triplet_loss_grad(x, y)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert rel(grad, ref_grad) <= 1e-5


def test_margin_and_labels_layout() -> None:
    x, y = batch(50, 10, 4, seed=5)
    ref_loss, ref_grad = reference(x, y, margin=0.3)
    loss, grad = g.triplet_loss_grad(x, y.reshape(-1, 1) + 100, margin=0.3)
    assert abs(loss - ref_loss) <= 1e-5 * ref_loss and rel(grad, ref_grad) <= 1e-5


def test_deterministic_across_thread_counts() -> None:
    x, y = batch(183, 64, 11, seed=6)
    runs = [triplet_margin_loss_grad(x, y.astype(np.int64), n_threads=t) for t in (1, 2, 2)]
    assert all(r[0] == runs[0][0] and np.array_equal(r[1], runs[0][1]) for r in runs)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.full((4, 3), np.nan), [0, 1, 0, 1], "NaN"),
        (np.ones((4, 3)), [0, 1, 0], "labels must have shape"),
        (np.ones(4), [0, 1, 0, 1], "2-D"),
    ],
)
def test_bad_input(x, y, match) -> None:
    with pytest.raises(ValueError, match=match):
        g.triplet_loss_grad(x, y)
