"""The fixed-batch gradient graph's batch policy (pad / chunk), checked without torch.

A stand-in session implements the grads.onnx contract for a linear model f_i = W x_i, whose
weight gradient of sum_i <f_i, c_i> is sum_i c_i x_i^T, and refuses any batch but its own,
as a real fixed-batch graph does. (The same policy on real exported graphs is checked against
torch in tests/test_export_models.py.)
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gradnca_onnx.engine.batching import grads_batch_size, run_grads


class LinearGradsSession:
    def __init__(self, batch: int, shape=(2, 3, 3), dim: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.batch, self.shape, self.dim = batch, shape, dim
        self.W = rng.standard_normal((dim, int(np.prod(shape)))).astype(np.float32)
        self.calls = 0

    def get_inputs(self):
        return [SimpleNamespace(name="images", shape=[self.batch, *self.shape]),
                SimpleNamespace(name="cotangent", shape=[self.batch, self.dim])]

    def run(self, names, feed):
        x, c = feed["images"], feed["cotangent"]
        assert x.shape == (self.batch, *self.shape) and c.shape == (self.batch, self.dim)
        assert x.dtype == np.float32 and c.dtype == np.float32
        self.calls += 1
        flat = x.reshape(self.batch, -1)
        g = c.T @ flat
        out = {"features": flat @ self.W.T, "grad_w1": g, "grad_w2": 2 * g}
        return [out[n] for n in names]


@pytest.mark.parametrize("n, calls", [(1, 1), (3, 1), (4, 1), (5, 2), (9, 3), (12, 3)])
def test_run_grads_pads_and_chunks_exactly(n, calls):
    sess = LinearGradsSession(batch=4)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, *sess.shape)).astype(np.float32)
    c = rng.standard_normal((n, sess.dim)).astype(np.float32)
    feats, g1, g2 = run_grads(sess, x, c)
    flat = x.reshape(n, -1).astype(np.float64)
    want = c.astype(np.float64).T @ flat
    assert sess.calls == calls
    assert feats.shape == (n, sess.dim) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, flat @ sess.W.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    # fp32 products inside the stand-in session, float64 sums across chunks
    np.testing.assert_allclose(g1, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g2, 2 * want, rtol=1e-5, atol=1e-5)
    assert g1.dtype == np.float64


def test_run_grads_rejects_bad_shapes():
    sess = LinearGradsSession(batch=2)
    x = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"cotangent must have shape \(3, 5\)"):
        run_grads(sess, x, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"images must have shape \(n, 2, 3, 3\)"):
        run_grads(sess, np.zeros((3, 2, 4, 4), np.float32), np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="at least one image"):
        run_grads(sess, x[:0], np.zeros((0, 5), np.float32))


def test_grads_batch_size_requires_a_fixed_gradient_graph():
    sess = LinearGradsSession(batch=2)
    assert grads_batch_size(sess) == 2
    sess.batch = "batch"
    with pytest.raises(ValueError, match="no fixed batch"):
        grads_batch_size(sess)
    other = SimpleNamespace(get_inputs=lambda: [SimpleNamespace(name="images", shape=[1])])
    with pytest.raises(ValueError, match="not a gradient graph"):
        grads_batch_size(other)
