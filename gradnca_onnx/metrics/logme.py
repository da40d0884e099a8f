"""LogME: log maximum evidence of a Bayesian linear model on the features (You et al.)."""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._common import class_sums, large_factorisation, prepare

#: Singular values at or below this are dropped when the spectrum comes from F^T F (N > D),
#: as the released ``truncated_svd`` does.
RANK_TOL = 1e-10
MAX_ITER = 11
REL_TOL = 1e-3
EPSILON = 1e-5


@numba.njit(cache=True)
def _fixed_point_evidence(sigma: NDArray, x2: NDArray, res_x2: NDArray, n: int, d: int
                          ) -> NDArray:
    """Per-class evidence / N of the fixed-point iteration (one column of ``x2`` per class)."""
    k, n_classes = x2.shape
    out = np.empty(n_classes)
    log_2pi = np.log(2.0 * np.pi)
    for c in range(n_classes):
        alpha = 1.0
        beta = 1.0
        m2 = 0.0
        res2 = 0.0
        for _ in range(MAX_ITER):
            t = alpha / beta
            gamma = 0.0
            m2 = 0.0
            res2 = 0.0
            for j in range(k):
                s = sigma[j]
                xx = x2[j, c]
                gamma += s / (s + t)
                m2 += s * xx / ((t + s) * (t + s))
                q = 1.0 + s / t
                res2 += xx / (q * q)
            res2 += res_x2[c]
            alpha = gamma / (m2 + EPSILON)
            beta = (n - gamma) / (res2 + EPSILON)
            t_new = alpha / beta
            if abs(t_new - t) / t <= REL_TOL:
                break
        log_det = 0.0
        for j in range(k):
            log_det += np.log(alpha + beta * sigma[j])
        evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * log_det
                    - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * log_2pi)
        out[c] = evidence / n
    return out


def logme_evidences(features: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """Per-class LogME evidence / N (one-vs-rest 0/1 targets), classes in sorted label order.

    See :func:`logme`; its score is the mean of these values.
    """
    X, y, n_classes = prepare(features, labels)
    n, d = X.shape
    # The spectrum and the projections x = U^T y are all the fixed point needs. When N > D the
    # released code takes the SVD of F^T F and forms U = F V / s, an N x k matrix; here
    # U^T y = V^T (F^T y) / s, where F^T y is just the class sums of the rows, so U is never
    # formed. The SVD itself is kept (not the cheaper eigh): the rank cut s > 1e-10 depends on
    # the round-off it leaves on null directions (dead ReLU units, collinear features: ~1e-6,
    # so they are kept), and every kept direction adds -1/2 log(alpha + beta s^2) to the
    # evidence; eigh returns exact zeros there instead, and the score would move by O(1e-2).
    sums = class_sums(X, y, n_classes)  # (C, D) = F^T Y for one-hot Y
    if n > d:
        with large_factorisation(d):
            _, s2, vh = np.linalg.svd(X.T @ X)
        s = np.sqrt(s2)
        keep = s > RANK_TOL
        s, vh = s[keep], vh[keep]
        x = (vh @ sums.T) / s[:, None]  # (k, C)
        sigma = s * s
    else:
        # N <= D: the released code keeps all N singular values of F (no rank cut), so the
        # eigenvectors of F F^T (F's left singular vectors) give the same sums, faster than
        # an SVD of the N x D matrix.
        with large_factorisation(n):
            evals, u = np.linalg.eigh(X @ X.T)
        order = np.argsort(np.abs(evals))[::-1]
        sigma, u = np.abs(evals[order]), u[:, order]
        onehot = np.zeros((n, n_classes))
        onehot[np.arange(n), y] = 1.0
        x = u.T @ onehot  # (N, C)
    x2 = x * x
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)  # sum of y^2 for 0/1 y
    res_x2 = counts - x2.sum(axis=0)
    return _fixed_point_evidence(np.ascontiguousarray(sigma), np.ascontiguousarray(x2),
                                 res_x2, n, d)


def logme(features: ArrayLike, labels: ArrayLike) -> float:
    """LogME score: mean over classes of the maximum log evidence per sample.

    For each class c a Bayesian linear regression ``y_c ~ N(F w, 1/beta)``, ``w ~ N(0, 1/alpha)``
    is fitted to the one-vs-rest 0/1 target of that class by the fixed-point iteration of
    You et al., *Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs*
    (JMLR 2022, arXiv:2110.10545), the one in the released LogME code and in
    REFERENCE section 6: float64; ``alpha = beta = 1`` to start; at most 11 iterations;
    ``gamma = sum sigma_i / (sigma_i + t)``, ``alpha = gamma / (||m||^2 + 1e-5)``,
    ``beta = (N - gamma) / (||y - F m||^2 + 1e-5)``; stop when ``|t_new - t| / t <= 1e-3`` with
    ``t = alpha / beta``. The evidence (You, Liu, Wang, Long, *LogME: Practical Assessment of
    Pre-trained Models for Transfer Learning*, ICML 2021) is::

        L = D/2 log(alpha) + N/2 log(beta) - 1/2 sum log(alpha + beta sigma_i)
            - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - N/2 log(2 pi)

    and the score is the mean of ``L / N`` over classes. When N > D the spectrum comes from
    ``F^T F`` with singular values <= 1e-10 dropped; otherwise all N singular values of F are kept,
    as in the released code. For N < D that code leaves the D - N zero directions out of the
    log-determinant while D/2 log(alpha) counts them; this is kept, since REFERENCE section 6
    specifies the released algorithm.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)

    Returns
    -------
    float
        Higher is better.
    """
    return float(np.mean(logme_evidences(features, labels)))
