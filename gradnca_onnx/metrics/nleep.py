"""NLEEP: LEEP with a Gaussian mixture in place of the source classifier (Li et al. 2021)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from ..core._parallel import single_threaded_blas
from ..errors import InputError
from ._common import check_positive_int, prepare
from .leep import empirical_conditional

#: The default GMM seed. The released code passes none, so its NLEEP changes from run to run.
DEFAULT_GMM_SEED = 42


def nleep(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    log: bool = True,
    random_state: int | None = DEFAULT_GMM_SEED,
    variance: float = 0.8,
    components_per_class: int = 5,
    pca_random_state: int | None = 42,
) -> float:
    """NLEEP (N-LEEP): LEEP over the components of a Gaussian mixture fitted to the features.

    Li, Jia, Sang, Zhu, Green, Wang, Gong, *Ranking Neural Checkpoints*, CVPR 2021 (N-LEEP),
    as REFERENCE section 6 states it: ``PCA(n_components=0.8, random_state=42)`` (keep 80 %
    of the variance); ``GaussianMixture(n_components=5 * C)`` with scikit-learn's other
    defaults (full covariances, k-means initialisation, ``max_iter=100``); ``p(z|x)`` = the
    mixture's posterior; ``p(y, z) = sum_{i: y_i = y} p(z|x_i) / N``; ``p(y|z) = p(y, z) / p(z)``;
    ``E = p(z|x) p(y|z)^T``; score = mean of ``log E[i, y_i]``.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    log : bool, default=True
        ``True`` takes the log, as Li et al. define N-LEEP (score <= 0). ``False`` is the
        released code's quirk: the mean probability itself, without the log (score in [0, 1]).
    random_state : int or None, default=42
        Seed of the mixture's k-means initialisation. The released code leaves it unseeded
        (``None``), which makes NLEEP non-deterministic; seeded, the same inputs give the same
        score. Note that the k-means++ seeding picks samples by position, so even seeded NLEEP
        depends (slightly) on the order of the samples.
    variance : float, default=0.8
        Fraction of the variance the PCA keeps.
    components_per_class : int, default=5
        The mixture has ``components_per_class * C`` components.
    pca_random_state : int or None, default=42

    Returns
    -------
    float
        Higher is better.

    Raises
    ------
    ValueError
        Besides the common input checks: fewer samples than mixture components.
    """
    X, y, n_classes = prepare(features, labels)
    per_class = check_positive_int(components_per_class, "components_per_class")
    if not 0.0 < float(variance) < 1.0:
        raise InputError(f"variance must be a fraction in (0, 1); got {variance!r}")
    n_components = per_class * n_classes
    if X.shape[0] < n_components:
        raise InputError(
            f"NLEEP fits a mixture of {per_class} x {n_classes} classes = {n_components} "
            f"components, which needs at least that many samples; got {X.shape[0]}"
        )
    reduced = PCA(n_components=float(variance), random_state=pca_random_state).fit_transform(X)
    # scikit-learn's M-step is one skinny (d x N) @ (N x d) product per component; OpenBLAS
    # threads slow those down several-fold (8x measured at N = 20,000 on 2 cores) and change
    # nothing but round-off, so the mixture is fitted on one BLAS thread.
    with single_threaded_blas():
        gmm = GaussianMixture(n_components=n_components, random_state=random_state).fit(reduced)
        posterior = gmm.predict_proba(reduced)
    cond = empirical_conditional(posterior, y, n_classes)
    expected = (posterior @ cond.T)[np.arange(y.shape[0]), y]
    if not log:
        return float(np.mean(expected))
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log(expected)))
