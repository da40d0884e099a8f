"""S_LP against the scikit-learn pipeline of the paper (REFERENCE section 3).

The reference is computed here with scikit-learn under single-threaded BLAS. That is the
configuration gradnca_onnx reproduces: NCA's L-BFGS amplifies last-bit differences (scikit-learn
itself gives S_LP 0.429 with one BLAS thread and 0.444 with two on the same random data), so
the only well-defined reference is a fixed BLAS configuration; gradnca_onnx pins it internally
and is bit-identical to it. The stated tolerance is the issue's 1e-3; the tests also check that
the projection itself matches to 1e-9, which is what makes the agreement exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradnca_onnx as g
from gradnca_onnx.core import fit_nca
from gradnca_onnx.scores import label_prediction_probabilities

from _support import cnn_features, pixel_features, random_problem, real_images, sklearn_slp

CASES = [(n, d, c) for n in (200, 1100) for d in (64, 512) for c in (2, 11)]


@pytest.mark.parametrize("n,d,c", CASES)
def test_slp_matches_sklearn_random(n: int, d: int, c: int) -> None:
    X, y = random_problem(n, d, c, seed=n + d + c)
    ref, ref_components = sklearn_slp(X, y)
    ours = g.label_prediction_score(X, y)
    assert abs(ours - ref) <= 1e-3
    codes = np.searchsorted(np.unique(y), y)
    nca = fit_nca(X, codes)
    np.testing.assert_allclose(nca.components, ref_components, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n,d,kind", [(n, d, kind) for n in (200, 1100) for d in (64, 512)
                                      for kind in ("binary", "pool11")])
def test_slp_matches_sklearn_real_images(n: int, d: int, kind: str) -> None:
    images, y = real_images(kind, n, seed=1)
    X = pixel_features(images, side=8) if d == 64 else cnn_features(images)
    assert X.shape == (n, d)
    assert len(np.unique(y)) == (2 if kind == "binary" else 11)
    ref, _ = sklearn_slp(X, y)
    ours = g.label_prediction_score(X, y)
    assert abs(ours - ref) <= 1e-3


@pytest.mark.parametrize("n", [300, 3000])
def test_float32_features_follow_sklearns_float32_path(n: int) -> None:
    # scikit-learn fitted on float32 runs NCA's objective in float32 (scipy passes the float32
    # iterate through) with float64 distance chunks; n=3000 spans several chunks.
    X, y = random_problem(n, 64, 3, seed=5)
    X32 = X.astype(np.float32)
    ref, ref_components = sklearn_slp(X32, y)
    assert abs(g.label_prediction_score(X32, y) - ref) <= 1e-3
    nca = fit_nca(X32, np.searchsorted(np.unique(y), y))
    assert np.array_equal(nca.components, ref_components)


def test_other_sizes_and_k() -> None:
    X, y = random_problem(150, 40, 4, seed=9)
    ref, _ = sklearn_slp(X, y, n_components=10, k=3)
    ours = g.label_prediction_score(X, y, n_components=10, n_neighbors=3)
    assert abs(ours - ref) <= 1e-3


def test_lda_and_identity_initialisations_follow_sklearn() -> None:
    # n_components <= C - 1 selects LDA; n_components == D selects the identity.
    X, y = random_problem(120, 12, 6, seed=2)
    ref, _ = sklearn_slp(X, y, n_components=3)
    assert abs(g.label_prediction_score(X, y, n_components=3) - ref) <= 1e-3
    ref, _ = sklearn_slp(X, y, n_components=12)
    assert abs(g.label_prediction_score(X, y, n_components=12) - ref) <= 1e-3


def test_probabilities_quirk_floor_and_range() -> None:
    X, y = random_problem(200, 64, 2, seed=3)
    p = label_prediction_probabilities(X, y)
    # Each point is its own first neighbour: the true-label probability is at least 1/k.
    assert p.min() >= 0.2 - 1e-12 and p.max() <= 1.0
    assert np.isclose(p.mean(), g.label_prediction_score(X, y))


def test_deterministic_and_thread_independent() -> None:
    X, y = random_problem(400, 64, 5, seed=4)
    a = label_prediction_probabilities(X, y, n_threads=1)
    b = label_prediction_probabilities(X, y, n_threads=2)
    c = label_prediction_probabilities(X, y, n_threads=2)
    assert np.array_equal(a, b) and np.array_equal(b, c)


def test_label_layouts_and_remapping() -> None:
    X, y = random_problem(200, 64, 3, seed=6)
    base = g.label_prediction_score(X, y)
    assert g.label_prediction_score(X, y.reshape(-1, 1)) == base  # MedMNIST (N, 1) labels
    remapped = np.array([3, 7, 42])[y]  # non-contiguous labels
    assert g.label_prediction_score(X, remapped) == base
    assert g.label_prediction_score(X, np.array(["a", "b", "c"])[y]) == base


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda X, y: (X, np.zeros_like(y)), "at least 2"),
        (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), y), "NaN"),
        (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.inf, X), y), "NaN/inf"),
        (lambda X, y: (X[:, :10], y), "n_components"),
        (lambda X, y: (X, y[:-1]), "199 entries"),
        (lambda X, y: (X[0], y), "2-D"),
        (lambda X, y: (X, np.stack([y, y], 1)), r"shape \(N,\)"),
    ],
)
def test_bad_input_raises_clear_value_error(make, match) -> None:
    X, y = random_problem(200, 64, 3, seed=7)
    Xb, yb = make(X, y)
    with pytest.raises(ValueError, match=match):
        g.label_prediction_score(Xb, yb)


def test_too_many_neighbours_rejected() -> None:
    X, y = random_problem(20, 8, 2, seed=8)
    with pytest.raises(ValueError, match="n_neighbors"):
        g.label_prediction_score(X, y, n_components=4, n_neighbors=21)
