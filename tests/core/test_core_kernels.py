"""The compiled kernels against their references: scikit-learn's NCA objective, gradient and
k-NN probabilities, and NumPy's summation."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

from gradnca_onnx import _core
from gradnca_onnx.core import fit_nca, knn_class_proba, nca_loss_grad
from gradnca_onnx.core._parallel import Products

from _support import pixel_features, real_images


def sklearn_loss_grad(A: np.ndarray, X: np.ndarray, y: np.ndarray):
    nca = NeighborhoodComponentsAnalysis(n_components=A.shape[0])
    nca.n_iter_ = 0
    loss, grad = nca._loss_grad_lbfgs(A.ravel(), X, y[:, None] == y[None, :], -1.0)
    return -loss, -grad.reshape(A.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,d,D,c", [(300, 10, 64, 3), (1100, 50, 512, 11), (200, 50, 64, 2),
                                     (333, 50, 129, 4), (2500, 50, 64, 2)])
def test_nca_objective_bit_identical_to_sklearn(n: int, d: int, D: int, c: int, dtype) -> None:
    # float32 features: scikit-learn's float32 path (float32 map, float64 distance chunks;
    # n=2500 spans several chunks).
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, D)).astype(dtype)
    y = rng.integers(0, c, n)
    A = (rng.normal(size=(d, D)) * 0.1).astype(dtype)
    with threadpool_limits(limits=1):
        ref_loss, ref_grad = sklearn_loss_grad(A, X, y)
        loss, grad = nca_loss_grad(A, X, y.astype(np.int64), products=Products(2))
    assert loss == ref_loss
    assert np.array_equal(grad, ref_grad)


def test_nca_blocked_mode_agrees_to_rounding() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(700, 40))
    y = rng.integers(0, 4, 700).astype(np.int64)
    A = rng.normal(size=(8, 40)) * 0.2
    ref_loss, ref_grad = sklearn_loss_grad(A, X, y)
    for block in (64, 250, 699):
        loss, grad = nca_loss_grad(A, X, y, exact_max_samples=0, block_rows=block)
        assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
        np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-11 * np.abs(ref_grad).max())


def test_fit_nca_real_pixels_equals_sklearn_projection() -> None:
    images, y = real_images("pool11", 400, seed=2)
    X = pixel_features(images, side=8)
    with threadpool_limits(limits=1):
        ref = NeighborhoodComponentsAnalysis(n_components=20, random_state=42).fit(X, y)
    ours = fit_nca(X, y.astype(np.int64), n_components=20)
    assert ours.n_iter == ref.n_iter_ - 1 or ours.n_iter == ref.n_iter_
    assert np.array_equal(ours.components, ref.components_)


def test_pairwise_sum_is_numpy_sum() -> None:
    rng = np.random.default_rng(3)
    for n in [1, 7, 8, 9, 127, 128, 129, 255, 1000, 4097]:
        x = rng.random(n) * np.exp(rng.normal(size=n) * 4)
        assert _core.pairwise_sum(x) == np.sum(x)


def knn_reference(E: np.ndarray, y: np.ndarray, k: int, algorithm: str = "auto") -> np.ndarray:
    with threadpool_limits(limits=1):
        return KNeighborsClassifier(n_neighbors=k, algorithm=algorithm).fit(E, y).predict_proba(E)


@pytest.mark.parametrize("n,d,c,k", [(200, 50, 2, 5), (1100, 50, 11, 5), (500, 3, 4, 1), (300, 20, 5, 9)])
def test_knn_proba_equals_sklearn(n: int, d: int, c: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    E = rng.normal(size=(n, d))
    y = rng.integers(0, c, n)
    ref = knn_reference(E, y, k)
    ours = knn_class_proba(E, y.astype(np.int64), n_neighbors=k, n_classes=c, products=Products(2))
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("d", [2, 20])
def test_knn_ties_go_to_lower_index_like_sklearn_brute_force(d: int) -> None:
    # Integer grid points: many exactly equal distances, plus exact duplicates with other labels.
    # S_LP works in 50 dimensions, where scikit-learn's 'auto' picks brute force; below 16 it
    # picks a KD-tree, whose order among exactly tied points differs, so compare with brute.
    # Single-threaded scikit-learn scans candidates in index order; with several OpenMP threads
    # it splits them into per-thread heaps and merges those, so its choice among exact ties then
    # depends on the thread count (that is why the reference runs single-threaded).
    rng = np.random.default_rng(4)
    E = rng.integers(0, 3, size=(400, d)).astype(np.float64)
    y = rng.integers(0, 3, 400)
    for k in (1, 5, 12):
        ref = knn_reference(E, y, k, algorithm="brute")
        ours = knn_class_proba(E, y.astype(np.int64), n_neighbors=k, n_classes=3)
        assert np.array_equal(ours, ref)


def test_knn_blocks_and_threads_do_not_change_result() -> None:
    rng = np.random.default_rng(5)
    E = rng.normal(size=(900, 10))
    y = rng.integers(0, 6, 900).astype(np.int64)
    a = knn_class_proba(E, y, block_rows=100, products=Products(1))
    b = knn_class_proba(E, y, block_rows=4096, products=Products(2))
    assert np.array_equal(a, b)


def test_knn_rejects_bad_k() -> None:
    E = np.zeros((4, 2))
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_class_proba(E, np.array([0, 1, 0, 1]), n_neighbors=5)


@pytest.mark.parametrize("n", [9, 37, 129, 333, 1100])
@pytest.mark.parametrize("D", [7, 64, 513])
def test_split_dgemm_is_bit_identical_to_one_call(n: int, D: int) -> None:
    # The property the parallel products rely on (see core/_parallel.py).
    rng = np.random.default_rng(n * D)
    d = min(D, 50)
    X, A, W = rng.normal(size=(n, D)), rng.normal(size=(d, D)), rng.normal(size=(n, n))
    P = Products(2)
    with threadpool_limits(limits=1, user_api="blas"):
        E = X @ A.T
        G = E.T.dot(W)
        assert np.array_equal(P.matmul_rows(X, A.T), E)
        assert np.array_equal(P.matmul_cols(E.T, W), G)
        assert np.array_equal(P.matmul_cols(G, X), G.dot(X))
        assert np.array_equal(P.matmul_rows(E, E.copy().T), E @ E.copy().T)
