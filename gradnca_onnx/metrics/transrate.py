"""TransRate: coding-rate difference between all features and per-class features (Huang et al.)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg

from ..errors import InputError
from ._common import large_factorisation, prepare

DEFAULT_EPS = 1e-4


def coding_rate(Z: NDArray[np.float64], eps: float = DEFAULT_EPS) -> float:
    """``R(Z, eps) = 1/2 log det(I_d + Z^T Z / (n eps))`` for Z of shape (n, d).

    By Sylvester's identity det(I_d + A^T A) = det(I_n + A A^T), so the smaller Gram matrix is
    factored (Cholesky: it is symmetric positive definite).
    """
    n, d = Z.shape
    gram = Z.T @ Z if d <= n else Z @ Z.T
    gram /= n * eps
    gram.flat[:: gram.shape[0] + 1] += 1.0
    with large_factorisation(gram.shape[0]):
        factor = linalg.cholesky(gram, lower=True, check_finite=False)
    return float(np.log(np.diag(factor)).sum())  # 1/2 log det = sum log diag(L)


def transrate(features: ArrayLike, labels: ArrayLike, *, eps: float = DEFAULT_EPS) -> float:
    """TransRate score ``R(Z, eps) - R(Z, eps | Y)``.

    Huang, Huang, Rong, Yang, Wei, *Frustratingly Easy Transferability Estimation*, ICML 2022:
    the mutual information between features and labels, estimated by the coding rate of
    Ma et al. (2007). As in the authors' published code: the features are centred (global mean);
    ``R(Z, eps) = 1/2 log det(I + Z^T Z / (n eps))``; ``R(Z, eps | Y)`` is the plain average over
    the C classes of ``R(Z_c, eps)`` (Z_c the rows of class c, n_c in place of n); eps = 1e-4.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    eps : float, default=1e-4
        Distortion of the coding rate.

    Returns
    -------
    float
        Higher is better.
    """
    X, y, n_classes = prepare(features, labels)
    if not eps > 0:
        raise InputError(f"eps must be positive; got {eps!r}")
    Z = X - X.mean(axis=0, keepdims=True)
    whole = coding_rate(Z, eps)
    per_class = sum(coding_rate(Z[y == c], eps) for c in range(n_classes))
    return float(whole - per_class / n_classes)
