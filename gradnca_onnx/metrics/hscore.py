"""H-score with Ledoit-Wolf shrinkage (Bao et al. 2019; Ibrahim et al. 2022)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.covariance import ledoit_wolf

from ._common import class_sums, prepare

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
            raise ValueError(
                f"shrinkage must be 'ledoit-wolf' or a float in [0, 1]; got {shrinkage!r}")
        cov, alpha = ledoit_wolf(centred, assume_centered=True)
        alpha = float(alpha)
    else:
        alpha = float(shrinkage)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1]; got {shrinkage!r}")
        emp = centred.T @ centred / n
        cov = (1.0 - alpha) * emp
        cov.flat[:: d + 1] += alpha * np.trace(emp) / d
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    mean_dev = class_sums(centred, y, n_classes) / counts[:, None]  # class means - grand mean
    # cov(g) = sum_c n_c mean_dev_c mean_dev_c^T / (N - 1), so
    # tr(cov_alpha^+ cov(g)) = sum_c n_c mean_dev_c^T cov_alpha^+ mean_dev_c / (N - 1).
    evals, evecs = np.linalg.eigh(cov)
    cutoff = PINV_RCOND * max(float(np.abs(evals).max()), 0.0)
    inv = np.zeros_like(evals)
    np.divide(1.0, evals, out=inv, where=np.abs(evals) > cutoff)
    proj = mean_dev @ evecs  # (C, D)
    quad = (proj * proj) @ inv
    return float((1.0 - alpha) * np.dot(counts, quad) / (n - 1))
