"""GBC: Gaussian Bhattacharyya coefficient of class overlap (Pandy et al. 2022)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.decomposition import PCA

from ._common import (
    check_choice,
    check_positive_int,
    class_sums,
    pca_components,
    prepare,
)

GaussianType = Literal["diagonal", "spherical"]

PCA_DIMS = 64
#: Per-dimension variance floor of the authors' implementation (constant features).
MIN_VARIANCE = 1e-4


def gbc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    gaussian_type: GaussianType = "diagonal",
    n_components: int = PCA_DIMS,
    random_state: int | None = 42,
) -> float:
    """GBC score: minus the summed Bhattacharyya coefficients between every pair of classes.

    Pandy, Agostinelli, Uijlings, Ferrari, Mensink, *Transferability Estimation using
    Bhattacharyya Class Separability*, CVPR 2022 (Sec. 3): the features are reduced by PCA to
    64 dimensions (the authors' setting; capped at min(N, D)); each class c is a Gaussian with
    mean mu_c and diagonal variance s_c (population variance, floored at 1e-4 as in the
    authors' code); for classes c != c', with s = (s_c + s_c') / 2, the Bhattacharyya
    distance is ::

        D_B = 1/8 sum_k (mu_c,k - mu_c',k)^2 / s_k
              + 1/2 [ sum_k log s_k - 1/2 sum_k log s_c,k - 1/2 sum_k log s_c',k ]

    and ``GBC = - sum_c sum_{c' != c} exp(-D_B(c, c'))`` (each unordered pair counted twice).

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    gaussian_type : {"diagonal", "spherical"}, default="diagonal"
        ``"spherical"`` replaces each class's variances by their mean (the authors' other
        option).
    n_components : int, default=64
    random_state : int or None, default=42
        Seed of the PCA (used when scikit-learn picks its randomized solver).

    Returns
    -------
    float
        In [-C(C-1), 0]; higher (less class overlap) is better.
    """
    kind = check_choice(gaussian_type, "gaussian_type", ("diagonal", "spherical"))
    X, y, n_classes = prepare(features, labels)
    k = pca_components(check_positive_int(n_components, "n_components"), *X.shape)
    Z = PCA(n_components=k, random_state=random_state).fit_transform(X)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    means = class_sums(Z, y, n_classes) / counts[:, None]
    # Centred per class rather than E[z^2] - E[z]^2, which loses digits when |mean| >> std.
    var = np.empty_like(means)
    for c in range(n_classes):
        var[c] = np.mean((Z[y == c] - means[c]) ** 2, axis=0)
    var = np.maximum(var, MIN_VARIANCE)
    if kind == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), k, axis=1)
    avg = 0.5 * (var[:, None, :] + var[None, :, :])          # (C, C, k)
    diff2 = (means[:, None, :] - means[None, :, :]) ** 2
    log_var = np.log(var).sum(axis=1)
    dist = (diff2 / avg).sum(axis=2) / 8.0 + 0.5 * (
        np.log(avg).sum(axis=2) - 0.5 * log_var[:, None] - 0.5 * log_var[None, :])
    coeff = np.exp(-dist)
    np.fill_diagonal(coeff, 0.0)
    return float(-coeff.sum())
