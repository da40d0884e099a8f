"""Neighbourhood Components Analysis with scikit-learn's objective, gradient and optimiser path.

The projection matches ``sklearn.neighbors.NeighborhoodComponentsAnalysis`` fitted with the same
``n_components``, ``init``, ``max_iter``, ``tol`` and ``random_state``: same initialisation (PCA
or LDA from scikit-learn itself), same objective and gradient to the last bit, same scipy
L-BFGS-B call. The objective's products stay in BLAS; its element-wise passes are fused in C++
and work in place on one n x n buffer (scikit-learn allocates about seven), or on row blocks
for large n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from .. import _core

#: Up to this many samples the objective is formed exactly as scikit-learn forms it (one dense
#: n x n matrix, bit-identical values); above it, row blocks bound the memory.
EXACT_MAX_SAMPLES = 8192
#: Rows per block in blocked mode: 1024 x 20,000 float64 is 164 MB.
DEFAULT_BLOCK_ROWS = 1024


def nca_loss_grad(
    transformation: NDArray[np.float64],
    X: NDArray,
    labels: NDArray[np.int64],
    *,
    exact_max_samples: int = EXACT_MAX_SAMPLES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[float, NDArray[np.float64]]:
    """NCA objective ``sum_i p_i`` and its gradient with respect to the map.

    For ``n <= exact_max_samples`` the result is bit-identical to scikit-learn's
    ``_loss_grad_lbfgs`` (same products, same element-wise operations, same summation order),
    which is what makes the whole L-BFGS trajectory, and so the projection, identical. Larger
    problems are processed in row blocks with O(block_rows * n) memory; their values then agree
    with scikit-learn to rounding only.

    Parameters
    ----------
    transformation : ndarray of shape (n_components, n_features)
        The linear map A.
    X : ndarray of shape (n_samples, n_features), float64
    labels : ndarray of int64, shape (n_samples,)
        Class codes.
    exact_max_samples, block_rows : int
        Memory/exactness switch and block height of the blocked mode.

    Returns
    -------
    loss : float
        ``sum_i p_i`` (to be maximised).
    grad : ndarray of shape (n_components, n_features)
    """
    A = np.asarray(transformation, dtype=np.float64)
    E = np.dot(X, A.T)
    n = E.shape[0]
    sq = np.einsum("ij,ij->i", E, E)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    p = np.empty(n)
    if n <= exact_max_samples:
        W = E @ E.T  # NumPy uses syrk for E @ E.T, exactly as euclidean_distances does
        _core.nca_shifted_logits(W, sq, 0)
        np.exp(W, out=W)
        _core.nca_weights(W, labels, 0, p)
        _core.nca_symmetrize(W)
        grad = 2 * E.T.dot(W).dot(X)
        return float(np.sum(p)), grad
    # Blocked: M E with M = W + W^T - diag(colsum W), accumulated one row block at a time.
    ME = np.zeros_like(E)
    colsum = np.zeros(n)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        W = np.ascontiguousarray(E[start:stop] @ E.T)
        _core.nca_shifted_logits(W, sq, start)
        np.exp(W, out=W)
        _core.nca_weights(W, labels, start, p[start:stop])
        ME[start:stop] += W @ E
        ME += W.T @ E[start:stop]
        _core.column_sums_sequential(W, colsum)
    ME -= colsum[:, None] * E
    grad = 2 * ME.T.dot(X)
    return float(np.sum(p)), grad


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
    raise ValueError(f"init must be one of 'auto', 'pca', 'lda', 'identity', 'random'; got {init!r}")


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
    exact_max_samples, block_rows : int
        See :func:`nca_loss_grad`.

    Returns
    -------
    NCAResult
    """
    if n_components > X.shape[1]:
        raise ValueError(
            f"n_components ({n_components}) cannot be greater than the number of features "
            f"({X.shape[1]})"
        )
    A0 = _initial_map(X, labels, n_components, init, random_state)
    # scikit-learn promotes float32 X inside every product; promoting once is bit-identical.
    X = np.ascontiguousarray(X, dtype=np.float64)
    n_features = X.shape[1]
    evaluations = 0

    def objective(flat: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        nonlocal evaluations
        evaluations += 1
        loss, grad = nca_loss_grad(flat.reshape(-1, n_features), X, labels,
                                   exact_max_samples=exact_max_samples, block_rows=block_rows)
        return -loss, -grad.ravel()

    iterations = 0

    def count(_: NDArray[np.float64]) -> None:
        nonlocal iterations
        iterations += 1

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
