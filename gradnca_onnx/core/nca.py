"""Neighbourhood Components Analysis with scikit-learn's objective, gradient and optimiser path.

The projection matches ``sklearn.neighbors.NeighborhoodComponentsAnalysis`` fitted with the same
``n_components``, ``init``, ``max_iter``, ``tol`` and ``random_state``: same initialisation (PCA
or LDA from scikit-learn itself), same objective and gradient to the last bit, same scipy
L-BFGS-B call. The objective's products stay in BLAS; its element-wise passes are fused in C++
and work in place on one n x n buffer (scikit-learn allocates about seven), or on row blocks
for large n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .. import _core
from ..errors import InputError
from ._parallel import Products, single_threaded_blas

#: Up to this many samples the objective is formed exactly as scikit-learn forms it (one dense
#: n x n matrix, bit-identical values); above it, row blocks bound the memory.
EXACT_MAX_SAMPLES = 8192
#: Rows per block in blocked mode: 1024 x 20,000 float64 is 164 MB.
DEFAULT_BLOCK_ROWS = 1024


def nca_loss_grad(
    transformation: NDArray[np.float64],
    X: NDArray[np.float64],
    labels: NDArray[np.int64],
    *,
    products: Products | None = None,
    exact_max_samples: int = EXACT_MAX_SAMPLES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[float, NDArray[np.float64]]:
    """NCA objective ``sum_i p_i`` and its gradient with respect to the map.

    For ``n <= exact_max_samples`` every value is formed by the same floating-point operations
    as scikit-learn's ``_loss_grad_lbfgs``, so under single-threaded BLAS (as :func:`fit_nca`
    runs it) the result is bit-identical; larger problems are processed in row blocks with
    O(block_rows * n) memory and agree with scikit-learn to rounding only.

    Parameters
    ----------
    transformation : ndarray of shape (n_components, n_features)
        The linear map A.
    X : ndarray of shape (n_samples, n_features), float64 or float32, C-contiguous
        float32 (with n <= exact_max_samples) takes scikit-learn's float32 path.
    labels : ndarray of int64, shape (n_samples,)
        Class codes.
    products : Products, optional
        Thread pool for the matrix products (default: one thread).
    exact_max_samples, block_rows : int
        Memory/exactness switch and block height of the blocked mode.

    Returns
    -------
    loss : float
        ``sum_i p_i`` (to be maximised).
    grad : ndarray of shape (n_components, n_features)
    """
    prod = products if products is not None else Products(1)
    if X.dtype == np.float32 and X.shape[0] <= exact_max_samples:
        return _loss_grad_float32(np.asarray(transformation, dtype=np.float32), X, labels, prod)
    A = np.asarray(transformation, dtype=np.float64)
    E = prod.matmul_rows(X, A.T)
    n = E.shape[0]
    sq = np.einsum("ij,ij->i", E, E)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    p = np.empty(n)

    def rowwise(W: NDArray[np.float64], row0: int) -> None:
        # Row slabs are independent: logits, NumPy's exp and the weights of each row.
        def slab(sl: slice) -> None:
            block = W[sl]
            _core.nca_shifted_logits(block, sq, row0 + sl.start)
            np.exp(block, out=block)
            _core.nca_weights(block, labels, row0 + sl.start, p[row0 + sl.start: row0 + sl.stop])

        prod.map_rows(slab, W.shape[0])

    if n <= exact_max_samples:
        # One syrk, as scikit-learn's distances: a row-split gemm differs from it for some n.
        W = E @ E.T
        rowwise(W, 0)
        _core.nca_symmetrize(W)  # memory-bound; one thread is fastest
        grad = 2 * prod.matmul_cols(prod.matmul_cols(E.T, W), X)
        return float(np.sum(p)), grad
    # Blocked: M E with M = W + W^T - diag(colsum W), accumulated one row block at a time.
    ME = np.zeros_like(E)
    colsum = np.zeros(n)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        W = prod.matmul_rows(E[start:stop], E.T)
        rowwise(W, start)
        ME[start:stop] += prod.matmul_rows(W, E)
        ME += prod.matmul_rows(np.ascontiguousarray(W.T), E[start:stop])
        _core.column_sums_sequential(W, colsum, prod.n_threads)
    ME -= colsum[:, None] * E
    grad = 2 * prod.matmul_cols(ME.T, X)
    return float(np.sum(p)), grad


def upcast_block_size(n: int, d: int) -> int:
    """Chunk size of scikit-learn's float32 ``euclidean_distances`` for an (n x d) array vs itself."""
    maxmem = max(((n + n) * d + n * n) / 10, 10 * 2**17)
    tmp = 2 * d
    return max(int((-tmp + math.sqrt(tmp**2 + 4 * maxmem)) / 2), 1)


def _loss_grad_float32(A: NDArray[np.float32], X: NDArray[np.float32], labels: NDArray[np.int64],
                       prod: Products) -> tuple[np.float32, NDArray[np.float32]]:
    """scikit-learn's objective on float32 features, bit for bit.

    There, scipy hands the optimiser's iterate to the objective as float32 (the dtype of the
    PCA initialisation), so the embedding, softmax, weights and gradient are all float32; only
    the squared distances are formed in float64 chunks and cast back.
    """
    # float32 products are not split: OpenBLAS's sgemm rounds differently on different slab
    # shapes, so only one call per product reproduces scikit-learn.
    E = np.dot(X, A.T)
    n = E.shape[0]
    E64 = E.astype(np.float64)
    sq = np.einsum("ij,ij->i", E64, E64)
    # scikit-learn multiplies separate upcast copies (gemm); E64 @ E64.T would be a syrk.
    G = prod.matmul_rows(E64, E64.copy().T)
    W = np.empty((n, n), dtype=np.float32)
    p = np.empty(n, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    block = upcast_block_size(n, E.shape[1])

    def slab(sl: slice) -> None:
        w = W[sl]
        _core.nca_shifted_logits_f32(G[sl], w, sq, sl.start, block)
        np.exp(w, out=w)
        _core.nca_weights_f32(w, labels, sl.start, p[sl])

    prod.map_rows(slab, n)
    del G
    _core.nca_symmetrize_f32(W)
    grad = 2 * E.T.dot(W).dot(X)
    return np.sum(p), grad


def _initial_map(X: NDArray, labels: NDArray[np.int64], n_components: int, init: str,
                 random_state: int | None) -> NDArray[np.float64]:
    """scikit-learn's ``NeighborhoodComponentsAnalysis._initialize`` for string inits."""
    n_samples, n_features = X.shape
    if init == "auto":
        n_classes = int(np.unique(labels).shape[0])
        if n_components <= min(n_features, n_classes - 1):
            init = "lda"
        elif n_components < min(n_features, n_samples):
            init = "pca"
        else:
            init = "identity"
    rng = np.random.RandomState(random_state)
    if init == "identity":
        return np.eye(n_components, n_features)
    if init == "random":
        return rng.standard_normal(size=(n_components, n_features))
    if init == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=n_components, random_state=rng).fit(X).components_
    if init == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        lda = LinearDiscriminantAnalysis(n_components=n_components).fit(X, labels)
        return lda.scalings_.T[:n_components]
    raise InputError(f"init must be one of 'auto', 'pca', 'lda', 'identity', 'random'; got {init!r}")


@dataclass(frozen=True)
class NCAResult:
    """A fitted NCA map and how the optimiser ended."""

    components: NDArray[np.float64]
    n_iter: int
    n_evaluations: int
    objective: float
    converged: bool


def fit_nca(
    X: NDArray,
    labels: NDArray[np.int64],
    *,
    n_components: int = 50,
    init: str = "auto",
    max_iter: int = 50,
    tol: float = 1e-5,
    random_state: int | None = 42,
    n_threads: int | None = None,
    exact_max_samples: int = EXACT_MAX_SAMPLES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> NCAResult:
    """Fit the NCA map exactly as scikit-learn's estimator does (validated inputs expected).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    labels : ndarray of int64, shape (n_samples,)
        Class codes 0..C-1.
    n_components, init, max_iter, tol, random_state
        As in ``sklearn.neighbors.NeighborhoodComponentsAnalysis``.
    n_threads : int, optional
        Threads for the products and kernels (default: ``GRADNCA_NUM_THREADS`` or all CPUs).
        The result does not depend on it.
    exact_max_samples, block_rows : int
        See :func:`nca_loss_grad`.

    Notes
    -----
    BLAS is pinned to one thread for the whole fit (initialisation, objective and the L-BFGS-B
    updates): multi-threaded BLAS rounds differently for different thread counts, and L-BFGS on
    this objective amplifies a 1e-15 difference into a different projection within ~30
    iterations. The result therefore equals scikit-learn's estimator run under
    ``threadpoolctl.threadpool_limits(1)``, bit for bit, on any machine.

    Returns
    -------
    NCAResult
    """
    if n_components > X.shape[1]:
        raise InputError(
            f"n_components ({n_components}) cannot be greater than the number of features "
            f"({X.shape[1]})"
        )
    with single_threaded_blas(), Products(n_threads) as products:
        A0 = _initial_map(X, labels, n_components, init, random_state)
        # float32 X keeps scikit-learn's float32 path (see _loss_grad_float32); anything else
        # is float64, where promoting once is bit-identical to promoting in every product.
        if X.dtype != np.float32:
            X = np.ascontiguousarray(X, dtype=np.float64)
        else:
            X = np.ascontiguousarray(X)
        n_features = X.shape[1]
        evaluations = 0
        iterations = 0

        def objective(flat: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
            nonlocal evaluations
            evaluations += 1
            loss, grad = nca_loss_grad(
                flat.reshape(-1, n_features), X, labels, products=products,
                exact_max_samples=exact_max_samples, block_rows=block_rows,
            )
            return -loss, -grad.ravel()  # same dtypes as scikit-learn hands to scipy

        def count(_: NDArray[np.float64]) -> None:
            nonlocal iterations
            iterations += 1

        from scipy.optimize import (
            minimize,  # lazily: scipy.optimize costs ~1 s to import
        )

        result = minimize(
            objective,
            np.ravel(A0),
            method="L-BFGS-B",
            jac=True,
            tol=tol,
            options={"maxiter": max_iter},
            callback=count,
        )
    return NCAResult(
        components=result.x.reshape(-1, n_features),
        n_iter=iterations,
        n_evaluations=evaluations,
        objective=float(-result.fun),
        converged=bool(result.success),
    )
