"""H-score with Ledoit-Wolf shrinkage (Bao et al. 2019; Ibrahim et al. 2022)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.covariance import ledoit_wolf_shrinkage

from ..errors import InputError
from ._common import class_sums, large_factorisation, prepare, row_span

#: Relative cut-off of the pseudo-inverse (``np.linalg.pinv(rcond=1e-15)`` in the reference
#: implementations); only reached without shrinkage.
PINV_RCOND = 1e-15


def hscore(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    shrinkage: Literal["ledoit-wolf"] | float = "ledoit-wolf",
) -> float:
    """Regularised H-score: ``tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | y]))``.

    The H-score of Bao, Li, Huang, Zhang, Cheng, Tang, Li, *An Information-theoretic Approach to
    Transferability in Task Transfer Learning*, ICIP 2019, is ``tr(cov(f)^-1 cov(E[f|y]))``;
    with D comparable to N, ``cov(f)`` is (near-)singular and the score blows up. Ibrahim,
    Ponomareva, Mazumder, *Newer is not always better: Rethinking transferability metrics, their
    peculiarities, stability and performance*, ECML-PKDD 2022, replace it by the Ledoit-Wolf
    estimate ``cov_alpha = (1 - alpha) S + alpha (tr(S) / D) I`` (S the empirical covariance,
    alpha the Ledoit-Wolf shrinkage) and scale the between-class covariance by ``1 - alpha``.

    ``cov(E[f|y])`` is the covariance (normaliser N - 1, as ``np.cov``) of the features with each
    sample replaced by its class mean, as in the widely used implementation of this score; it
    has rank C - 1, so the trace is computed from the C class means (one solve), not from a
    D x D product.

    Wide features (D > N) are handled in the span of the centred samples (Q, N columns, see
    :func:`~._common.row_span`), exactly: S = Q S_Q Q^T, so cov_alpha = Q cov_Q Q^T +
    mu (I - Q Q^T) with mu = alpha tr(S) / D, and the class-mean deviations lie in the span,
    so their quadratic form with cov_alpha^+ is the one with cov_Q^+ (the largest eigenvalue,
    which sets the pseudo-inverse's cut-off, is in the span as well). The Ledoit-Wolf alpha
    is then computed from the N x N Gram matrix (:func:`ledoit_wolf_alpha`). O(N^2 D) time and
    O(N D) memory instead of O(D^3) and O(D^2): 16k-dimensional features no longer need a
    2 GB covariance and its eigendecomposition.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    shrinkage : "ledoit-wolf" or float in [0, 1], default="ledoit-wolf"
        A float fixes alpha; ``0.0`` is the original, unregularised H-score (pseudo-inverse).

    Returns
    -------
    float
        >= 0; higher is better.
    """
    X, y, n_classes = prepare(features, labels)
    n, d = X.shape
    centred = X - X.mean(axis=0)
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise InputError(
                f"shrinkage must be 'ledoit-wolf' or a float in [0, 1]; got {shrinkage!r}")
        alpha = ledoit_wolf_alpha(centred)
    else:
        alpha = float(shrinkage)
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"shrinkage must be in [0, 1]; got {shrinkage!r}")
    # The samples in an orthonormal basis of their span when D > N (see above), else as they are.
    coords = row_span(centred)[0] if d > n else centred
    # scikit-learn's ledoit_wolf covariance, written out: (1 - alpha) S + alpha tr(S) / D I.
    emp = coords.T @ coords / n
    cov = (1.0 - alpha) * emp
    cov.flat[:: cov.shape[0] + 1] += alpha * np.trace(emp) / d
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    mean_dev = class_sums(coords, y, n_classes) / counts[:, None]  # class means - grand mean
    # cov(g) = sum_c n_c mean_dev_c mean_dev_c^T / (N - 1), so
    # tr(cov_alpha^+ cov(g)) = sum_c n_c mean_dev_c^T cov_alpha^+ mean_dev_c / (N - 1).
    with large_factorisation(cov.shape[0]):
        evals, evecs = np.linalg.eigh(cov)
    cutoff = PINV_RCOND * max(float(np.abs(evals).max()), 0.0)
    inv = np.zeros_like(evals)
    np.divide(1.0, evals, out=inv, where=np.abs(evals) > cutoff)
    proj = mean_dev @ evecs  # (C, k), k = D or, in the span form, N
    quad = (proj * proj) @ inv
    return float((1.0 - alpha) * np.dot(counts, quad) / (n - 1))


def ledoit_wolf_alpha(centred: NDArray[np.float64]) -> float:
    """The Ledoit-Wolf shrinkage of centred samples (N, D), as ``sklearn.covariance``'s.

    For D <= N this is ``ledoit_wolf_shrinkage`` itself. For D > N the same formula is
    evaluated from the N x N Gram matrix G = X X^T (exact, O(N^2 D) instead of scikit-learn's
    O(N D^2) blocks of X^T X): its ``delta_ = ||X^T X||_F^2 / N^2 = ||G||_F^2 / N^2`` and
    ``beta_ = sum(X2^T X2) = ||X2 1||^2``, X2 = X**2, i.e. the sum of squared row norms
    squared.
    """
    n, d = centred.shape
    if d <= n:
        return float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    row_sq = np.einsum("ij,ij->i", centred, centred)
    trace = row_sq.sum() / n  # tr(S), S = X^T X / N
    mu = trace / d
    gram = centred @ centred.T
    delta_ = np.sum(gram**2) / n**2
    beta = (np.sum(row_sq**2) / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)
