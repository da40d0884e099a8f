"""Convolutions on the smallest feature maps as matrix products (``vjp_trace.small_map_convs``).

The linear-map matrix is checked exactly (every entry one weight or zero; the product equals
the convolution in float64 to 1e-12, rounding only). Which convolutions are rewritten (those
whose matrix is at most twice their weight, never the S_FU layers or grouped ones) is pinned
on a CNN whose maps shrink to 1x1, and its exported graphs (``grads.onnx`` and the
split pass) are checked against float64 autograd with the paper architectures' tolerances
(features 1e-5, S_FU ratio 1e-4: float32 rounding of a sum over the batch).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from gradnca_onnx.engine.batching import open_session, run_grads
from gradnca_onnx.exporters import vjp_trace
from gradnca_onnx.exporters.api import export_model
from gradnca_onnx.exporters.vjp_trace import _SmallMap, trace_feature_vjp
from gradnca_onnx.sources import from_module
from gradnca_onnx.zoo import load_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("cin, cout, size, k, s, p, d", [
    (5, 7, 1, 3, 1, 1, 1),    # 3x3 on 1x1: only the centre tap reads the input
    (4, 6, 2, 3, 1, 1, 1),
    (4, 6, 2, 3, 2, 1, 1),    # strided, 2x2 -> 1x1
    (3, 5, 4, 3, 2, 1, 1),
    (3, 4, 3, 3, 1, 2, 2),    # dilated
    (6, 3, 1, 1, 1, 0, 1),    # 1x1 kernel (a squeeze-excitation layer's)
    (2, 3, 3, 2, 1, 0, 1),    # even kernel, no padding
])
def test_matrix_is_the_convolution(cin, cout, size, k, s, p, d):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(cout, cin, k, k, generator=g)
    ho = (size + 2 * p - d * (k - 1) - 1) // s + 1
    geo = _SmallMap(None, False, 3, (cin, size, size), (cout, ho, ho), (s, s), (p, p), (d, d))
    t = geo.matrix(w)
    assert t.shape == (cin * size * size, cout * ho * ho) and t.dtype == torch.float32
    nonzero = t[t != 0].numpy()
    assert np.isin(nonzero, w.numpy()).all()  # exact: each entry is a weight
    x = torch.randn(3, cin, size, size, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x, w.double(), None, s, p, d)
    got = (x.reshape(3, -1) @ t.double()).reshape(ref.shape)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def shrinking_cnn() -> torch.nn.Sequential:
    """16 px down to 1x1: the last layers are what the rewrite is for."""
    torch.manual_seed(0)
    c = torch.nn.Conv2d
    r = torch.nn.ReLU
    return torch.nn.Sequential(
        c(3, 8, 3, padding=1), r(),                      # 0: S_FU conv1, 16x16
        c(8, 16, 3, stride=2, padding=1), r(),           # 2: S_FU conv2, -> 8x8
        c(16, 32, 3, stride=2, padding=1), r(),          # 4: 8x8 -> 4x4: left alone
        c(32, 32, 3, stride=2, padding=1), r(),          # 6: 4x4 -> 2x2: matrix 7x the weight
        c(32, 64, 3, padding=1), r(),                    # 8: 2x2 (matrix 1.8x): rewritten
        c(64, 64, 3, stride=2, padding=1), r(),          # 10: 2x2 -> 1x1: rewritten
        c(64, 64, 1), r(),                               # 12: 1x1 kernel on 1x1: rewritten
        c(64, 64, 3, padding=1), r(),                    # 14: 3x3 on 1x1: rewritten
        c(64, 64, 3, padding=1, groups=4), r(),          # 16: grouped: left alone
        torch.nn.Flatten(), torch.nn.Linear(64, 5),
    ).eval()


class _Features(torch.nn.Module):
    def __init__(self, net: torch.nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return (self.net[:-1](x),)


def _trace(net, x, c):
    return trace_feature_vjp(_Features(net), "net.0.weight", "net.2.weight", x, c)


def test_which_convolutions_become_products(monkeypatch):
    net = shrinking_cnn()
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 64, generator=g)
    traced = _trace(net, x, c)
    mm = torch.ops.aten.mm.default
    assert sum(n.target is mm for n in traced.graph.graph.nodes) == 4 + 4  # forward + input grads
    base = len(dict(_Features(net).named_parameters()))
    shapes = [tuple(t.shape) for t in traced.tensors[base:]]
    assert sorted(shapes) == sorted([(32 * 4, 64 * 4), (64 * 4, 64), (64, 64), (64, 64)])
    convs = [n for n in traced.graph.graph.nodes
             if n.target is torch.ops.aten.convolution.default]
    assert len(convs) == 9 - 4  # layers 8, 10, 12 and 14 are products

    monkeypatch.setattr(vjp_trace, "small_map_convs", lambda graph, tensors, skip: [])
    plain = _trace(net, x, c)
    with torch.no_grad():
        for a, b in zip(traced.module()(x, c), plain.module()(x, c)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_exported_graphs_match_float64_autograd(tmp_path):
    net = shrinking_cnn()
    out = export_model(from_module(net, name="shrinking"), tmp_path, input_size=16,
                       norm="half", grads_batch=4, head="19", convs=("0", "2"))
    m = load_manifest(out)
    assert m.split is not None
    matmuls = {f: sum(n.op_type == "MatMul" for n in onnx.load(out / f"{f}.onnx").graph.node)
               for f in ("features", "forward", "backward")}
    assert matmuls == {"features": 0, "forward": 4, "backward": 4}  # features.onnx: torch's
    g = torch.Generator().manual_seed(2)
    x, c = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 64, generator=g)

    ref = copy.deepcopy(net).double()
    f64 = ref[:-1](x.double())
    g1, g2 = torch.autograd.grad(f64, [ref[0].weight, ref[2].weight], c.double())
    ratio_ref = float(g2.norm() / g1.norm())

    feats, w1, w2 = run_grads(open_session(out, "grads", manifest=m), x.numpy(), c.numpy())
    names = [f"r{i}" for i in range(m.split.residuals)]
    held = open_session(out, "forward", manifest=m).run(["features", *names],
                                                         {"images": x.numpy()})
    s1, s2 = open_session(out, "backward", manifest=m).run(
        ["grad_w1", "grad_w2"], {"cotangent": c.numpy(), **dict(zip(names, held[1:]))})
    for f in (feats, held[0]):
        np.testing.assert_allclose(f, f64.detach().numpy(), rtol=1e-5, atol=1e-6)
    for a, b in ((w1, w2), (s1, s2)):
        assert abs(np.linalg.norm(b) / np.linalg.norm(a) / ratio_ref - 1) <= 1e-4
