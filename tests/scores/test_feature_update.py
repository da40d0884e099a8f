"""S_FU: the batching rule, the ratio, and the cotangent route against a full autograd pass.

The engine computes S_FU without torch: the triplet loss gradient with respect to the features
(the cotangent, from the C++ core) is pulled back through the ONNX gradient graph. Here the
pull-back is done by torch autograd, and the result must equal the paper's direct route (loss
through pytorch-metric-learning, ``loss.backward()``) for every batch. Tolerance: relative 1e-5
on each norm in float64 (both routes are exact up to rounding).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradnca_onnx as g
from gradnca_onnx.scores import fu_cotangents


def test_batch_rule_matches_reference_examples() -> None:
    sizes = [s.stop - s.start for s in g.fu_batch_slices(1100)]
    assert sizes == [183] * 6 + [2]
    assert [s.stop - s.start for s in g.fu_batch_slices(200)] == [33] * 6 + [2]
    assert [s.stop - s.start for s in g.fu_batch_slices(600)] == [100] * 6
    assert [s.stop - s.start for s in g.fu_batch_slices(6)] == [1] * 6
    slices = g.fu_batch_slices(1234)
    assert slices[0].start == 0 and slices[-1].stop == 1234
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))


def test_batch_rule_rejects_too_few_samples() -> None:
    with pytest.raises(ValueError, match="at least 6 samples"):
        g.fu_batch_slices(5)


def test_ratio_counts_zero_batches_in_both_means() -> None:
    w1 = [1.0, 3.0, 0.0]
    w2 = [2.0, 4.0, 0.0]
    assert g.feature_update_score(w1, w2) == pytest.approx(np.mean(w2) / np.mean(w1))


@pytest.mark.parametrize(
    "w1, w2, match",
    [
        ([0.0, 0.0], [0.0, 0.0], "undefined"),
        ([1.0], [1.0, 2.0], "one first- and one second-layer norm"),
        ([1.0, np.nan], [1.0, 2.0], "NaN"),
        ([1.0, -1.0], [1.0, 2.0], "non-negative"),
    ],
)
def test_ratio_bad_input(w1, w2, match) -> None:
    with pytest.raises(ValueError, match=match):
        g.feature_update_score(w1, w2)


def test_cotangent_route_equals_paper_autograd_route() -> None:
    torch = pytest.importorskip("torch")
    from pytorch_metric_learning.losses import TripletMarginLoss

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ).double().eval()
    w1, w2 = model[0].weight, model[3].weight
    rng = np.random.default_rng(0)
    n = 62  # batches of 10 and a remainder of 2
    images = torch.from_numpy(rng.normal(size=(n, 3, 12, 12)))
    labels = rng.integers(0, 3, n)

    # Paper route: per batch, pml loss on the features, backward, norms of the weight gradients.
    ref1, ref2 = [], []
    loss_fn = TripletMarginLoss()
    for sl in g.fu_batch_slices(n):
        model.zero_grad()
        loss = loss_fn(model(images[sl]), torch.as_tensor(labels[sl]))
        loss.backward()
        ref1.append(0.0 if w1.grad is None else float(w1.grad.norm()))
        ref2.append(0.0 if w2.grad is None else float(w2.grad.norm()))

    # Engine route: features forward, cotangent from the core, vector-Jacobian product.
    with torch.no_grad():
        feats = model(images).numpy()
    ours1, ours2 = [], []
    for sl, _, cot in fu_cotangents(feats, labels):
        out = model(images[sl])
        gw1, gw2 = torch.autograd.grad(out, [w1, w2], torch.from_numpy(cot))
        ours1.append(float(gw1.norm()))
        ours2.append(float(gw2.norm()))

    np.testing.assert_allclose(ours1, ref1, rtol=1e-5, atol=0)
    np.testing.assert_allclose(ours2, ref2, rtol=1e-5, atol=0)
    assert ref1[-1] == 0.0  # the remainder batch of 2 has no valid triplet and counts as zero
    assert g.feature_update_score(ours1, ours2) == pytest.approx(
        np.mean(ref2) / np.mean(ref1), rel=1e-5)
