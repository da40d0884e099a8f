"""The split gradient pass as exported: which residuals it keeps, and the fallback without it.

The numbers of the split pass are checked elsewhere: against float64 autograd for the paper's
nine architectures (``test_export_models.py``) and against ``grads.onnx`` and the reference
pipeline in the engine (``test_engine.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradnca_onnx.engine.batching import open_session
from gradnca_onnx.exporters.api import export_model
from gradnca_onnx.sources import from_module
from gradnca_onnx.zoo import load_manifest

from _support import small_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_residuals_are_what_the_backward_needs(tmp_path):
    """The backward reads: the images and the second convolution's input (the two weight
    gradients), 0/1 masks for the ReLUs, and the max-pool indices. Not: BatchNorm inputs
    (eval-mode BatchNorm's input gradient is a per-channel scale), convolution inputs whose
    weight gradient is not asked for (only their shape is), float copies of the masks, or
    the gathered patches of a weight gradient."""
    b = 4
    out = export_model(from_module(small_cnn(), name="cnn"), tmp_path, input_size=28,
                       norm="half", grads_batch=b)
    m = load_manifest(out)
    x = np.random.default_rng(0).standard_normal((b, 3, 28, 28)).astype(np.float32)
    sess = open_session(out, "forward", manifest=m)
    names = [f"r{i}" for i in range(m.split.residuals)]
    held = dict(zip(names, sess.run(names, {"images": x})))
    kinds = sorted((str(a.dtype), a.shape) for a in held.values())
    assert kinds == sorted([
        ("float32", (b, 3, 28, 28)),     # images: the first weight gradient
        ("float32", (b, 16, 28, 28)),    # ReLU 1's output: the second weight gradient
        ("bool", (b, 16, 28, 28)),       # ReLU masks
        ("bool", (b, 32, 14, 14)),
        ("bool", (b, 64, 7, 7)),
        ("int64", (b, 32, 7, 7)),        # max-pool indices
    ]), kinds
    assert m.split.residual_bytes == sum(a.nbytes for a in held.values())
    np.testing.assert_array_equal(held[names[[a.shape for a in held.values()].index(
        (b, 3, 28, 28))]], x)


def test_member_without_split_when_it_cannot_be_cut(tmp_path, monkeypatch):
    """A graph the split cannot cut still makes a complete member (grads.onnx alone), with
    a warning, and the engine scores it."""
    from gradnca_onnx.exporters import onnx_split

    def refuse(*args, **kwargs):
        raise ValueError("no type and shape recorded for residual tensor(s) ['t']")

    monkeypatch.setattr(onnx_split, "split", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_model(from_module(small_cnn(), name="cnn"), tmp_path, input_size=28,
                           norm="half", grads_batch=4)
    m = load_manifest(out)
    assert m.split is None and not (out / "forward.onnx").exists()
    assert [str(w.message) for w in caught if "split gradient pass" in str(w.message)]
    assert m.has_grads and (out / "grads.onnx").exists()
    monkeypatch.undo()
    from gradnca_onnx.data.dataset import from_arrays
    from gradnca_onnx.engine import FeatureCache, rank_zoo

    rng = np.random.default_rng(1)
    target = from_arrays(rng.integers(0, 255, (24, 28, 28, 3), dtype=np.uint8),
                         np.arange(24) % 2)
    ranking = rank_zoo(tmp_path, target, cache=FeatureCache(None))
    assert ranking.models[0].ok and ranking.models[0].fu is not None
