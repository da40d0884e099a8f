"""The ONNX translations of backward ops, against torch (pooling matrices, convolution backward,
max pooling with indices).

The backward translation is g -> rows.T @ g @ cols, which is the adjoint of the forward pooling
x -> rows @ x @ cols.T; so checking the forward against torch (and one backward) checks it.
Exact up to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradnca_onnx.exporters.translations import adaptive_pool_matrix, pool_matrix


@pytest.mark.parametrize("size, k, s, p, ceil, include_pad", [
    ((8, 8), 2, 2, 0, False, True),      # densenet transition
    ((7, 9), 3, 2, 1, True, False),      # ceil mode, padding excluded from the divisor
    ((7, 9), 3, 2, 1, True, True),       # ceil mode, padding counted (clipped at the pad edge)
    ((5, 6), 3, 1, 1, False, True),
    ((11, 4), (3, 2), (2, 1), (1, 0), True, False),
])
def test_avg_pool_matrices_match_torch(size, k, s, p, ceil, include_pad):
    kk, ss, pp = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p))
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    want = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=include_pad)
    ho, wo = want.shape[2:]
    rows = pool_matrix(size[0], ho, kk[0], ss[0], pp[0], include_pad)
    cols = pool_matrix(size[1], wo, kk[1], ss[1], pp[1], include_pad)
    got = rows @ x.detach().numpy() @ cols.T
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    (grad,) = torch.autograd.grad(want, x, g)
    np.testing.assert_allclose(rows.T @ g.numpy() @ cols, grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, out", [((7, 7), (1, 1)), ((10, 7), (3, 2)), ((5, 8), (5, 3)),
                                       ((6, 6), (4, 4))])
def test_adaptive_pool_matrices_match_torch(size, out):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    want = F.adaptive_avg_pool2d(x, out).numpy()
    got = adaptive_pool_matrix(size[0], out[0]) @ x.numpy() @ adaptive_pool_matrix(size[1], out[1]).T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --- The backward translations, run op by op (onnxscript's eager mode on onnxruntime) ---
# against float64 torch autograd. fp32 evaluation: max relative error <= 1e-5 (measured
# 5e-8 to 7e-7); a wrong index, phase or padding is off by O(1).

def _eager(a) -> "tensor.Tensor":
    from onnxscript import tensor

    return tensor.Tensor(np.asarray(a.detach().numpy(), np.float32))


def _max_rel(got, want) -> float:
    want = want.detach().numpy()
    return float(np.abs(np.asarray(got.value) - want).max() / np.abs(want).max())


CONVS = [  # (input channels, input size, kernel, stride, padding, dilation, groups)
    (16, 8, 3, 1, 1, 1, 1),        # stride 1: flipped-kernel Conv; weight gradient by Gemm
    (3, 8, 3, 1, 0, 1, 1),         # stride 1, no padding; RGB: the weight gradient's Conv form
    (16, 9, 3, 1, 2, 2, 1),        # stride 1, dilated
    (4, 9, 3, 1, 3, 1, 1),         # stride 1, padding past the kernel span: ConvTranspose
    (4, 8, 3, 1, 1, 1, 2),         # stride 1, grouped
    (16, 9, 3, 2, 1, 1, 1),        # strided (ConvTranspose), odd input (no row dropped)
    (3, 8, 3, 2, 1, 1, 1),         # strided, even input (the forward dropped a row)
    (16, 9, 3, 2, 0, 1, 1),        # strided, no padding
    (16, 8, 1, 2, 0, 1, 1),        # 1x1 stride 2: kernel narrower than the stride
    (4, 9, 2, 2, 0, 1, 1),         # kernel = stride
    (16, 9, 4, 2, 1, 1, 1),        # kernel 4, stride 2
    (3, 15, 7, 2, 3, 1, 1),        # the ResNet stem
    (16, 11, 5, 3, 2, 1, 1),       # stride 3 (taps in two Gemm blocks)
    (4, 10, 5, 2, 4, 1, 1),        # padding past the dilated kernel span
    (4, 9, 3, 2, 1, 1, 4),         # depthwise, strided
    (4, 10, 3, 2, 2, 2, 1),        # strided and dilated
    (16, (9, 7), (3, 1), (2, 1), (1, 0), 1, 1),   # per-axis sizes
]


@pytest.mark.parametrize("cin, size, k, s, p, d, g", CONVS)
def test_convolution_backward_matches_autograd(cin, size, k, s, p, d, g):
    from gradnca_onnx.exporters.translations import convolution_backward

    torch.manual_seed(0)
    size, k, s, p, d = (v if isinstance(v, tuple) else (v, v) for v in (size, k, s, p, d))
    x = torch.randn(2, cin, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, cin // g, *k, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=g)
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, w], gy)
    ox, ow, _ = convolution_backward(_eager(gy), _eager(x), _eager(w), None, list(s), list(p),
                                     list(d), False, [0, 0], g, [True, True, False])
    assert _max_rel(ox, gx) <= 1e-5
    assert _max_rel(ow, gw) <= 1e-5


@pytest.mark.parametrize("conv, size", [(F.conv1d, (11,)), (F.conv3d, (7, 6, 5))])
@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_backward_1d_3d(conv, size, stride):
    from gradnca_onnx.exporters.translations import convolution_backward

    torch.manual_seed(1)
    nd = len(size)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, *([3] * nd), dtype=torch.float64, requires_grad=True)
    y = conv(x, w, stride=stride, padding=1)
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, w], gy)
    ox, ow, ob = convolution_backward(_eager(gy), _eager(x), _eager(w), None, [stride] * nd,
                                      [1] * nd, [1] * nd, False, [0] * nd, 1, [True, True, True])
    assert _max_rel(ox, gx) <= 1e-5 and _max_rel(ow, gw) <= 1e-5
    np.testing.assert_allclose(np.asarray(ob.value), gy.sum(dim=[0, *range(2, 2 + nd)]).numpy(),
                               rtol=1e-5)


@pytest.mark.parametrize("size, k, s, p, d, ceil", [
    ((9, 9), 3, 2, 1, 1, False),   # the ResNet stem's pooling
    ((8, 7), 2, 2, 0, 1, True),    # ceil mode
    ((11, 10), 3, 2, 1, 2, False),  # dilated
])
def test_max_pool_indices_match_aten(size, k, s, p, d, ceil):
    from gradnca_onnx.exporters.translations import max_pool2d_with_indices

    torch.manual_seed(2)
    x = torch.randn(2, 3, *size).relu()   # ties at zero, as after a ReLU
    want_v, want_i = torch.ops.aten.max_pool2d_with_indices(x, [k, k], [s, s], [p, p], [d, d], ceil)
    got_v, got_i = max_pool2d_with_indices(_eager(x), [k, k], [s, s], [p, p], [d, d], ceil)
    np.testing.assert_array_equal(np.asarray(got_v.value), want_v.numpy())
    # Ties may pick another index, but every index must point at the window's maximum.
    flat = x.flatten(2).numpy()
    picked = np.take_along_axis(flat, np.asarray(got_i.value).reshape(2, 3, -1), axis=2)
    np.testing.assert_array_equal(picked, want_v.flatten(2).numpy())
