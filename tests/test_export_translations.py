"""The constant pooling matrices behind the avg-pool backward translations, against torch.

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
