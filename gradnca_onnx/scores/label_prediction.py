"""S_LP: k-NN true-label probability after an NCA projection (REFERENCE section 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_features, check_labels
from ..core import fit_nca, knn_class_proba
from ..core._parallel import Products, single_threaded_blas
from ..errors import InputError


def label_prediction_probabilities(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int = 50,
    n_neighbors: int = 5,
    random_state: int | None = 42,
    max_iter: int = 50,
    tol: float = 1e-5,
    n_threads: int | None = None,
) -> NDArray[np.float64]:
    """Per-sample probability of the true label, as the paper's pipeline computes it.

    ``NeighborhoodComponentsAnalysis(n_components, random_state)`` fitted on the features and
    labels, the same features projected, then ``KNeighborsClassifier(n_neighbors)`` fitted on the
    projection and queried on the same points (each point is its own first neighbour, so every
    value is at least ``1 / n_neighbors``).

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Penultimate-layer features of the target images. float32 features follow
        scikit-learn's float32 path (as the paper's code, which fed it torch's float32 features);
        other dtypes the float64 path.
    labels : array-like of shape (n_samples,) or (n_samples, 1)
        Target class labels, any values (remapped to 0..C-1).
    n_components : int, default=50
        Dimension of the NCA projection; must not exceed ``n_features``.
    n_neighbors : int, default=5
    random_state : int or None, default=42
        Seed of the NCA initialisation (used by a randomized PCA solver).
    max_iter, tol : NCA optimiser settings (scikit-learn's defaults).
    n_threads : int, optional
        Threads (default ``GRADNCA_NUM_THREADS`` or all CPUs). The result does not depend on it:
        it is bit-identical to the scikit-learn pipeline run under single-threaded BLAS
        (``threadpoolctl.threadpool_limits(1)``) on any machine.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    X = check_features(features)  # float32 stays float32, as in scikit-learn
    y, _ = check_labels(labels, X.shape[0])
    n, d = X.shape
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise InputError(f"n_components must be a positive integer; got {n_components!r}")
    if n_components > d:
        raise InputError(
            f"n_components ({n_components}) is larger than the feature dimension D={d}; "
            f"use n_components <= {d}"
        )
    if not isinstance(n_neighbors, (int, np.integer)) or not 1 <= n_neighbors <= n:
        raise InputError(f"n_neighbors must be an integer in [1, n_samples={n}]; got {n_neighbors!r}")
    nca = fit_nca(X, y, n_components=int(n_components), max_iter=max_iter, tol=tol,
                  random_state=random_state, n_threads=n_threads)
    with single_threaded_blas(), Products(n_threads) as products:
        embedded = products.matmul_rows(np.ascontiguousarray(X, dtype=np.float64), nca.components.T)
        proba = knn_class_proba(embedded, y, n_neighbors=int(n_neighbors),
                                n_classes=int(y.max()) + 1, products=products)
    return proba[np.arange(n), y]


#: Relative size of the feature jitters that ``label_prediction_score(jitters=K)`` averages
#: over: the perturbation under which S_LP's numerical noise was measured (README, "S_LP's
#: numerical noise"), far below any feature difference that means something.
JITTER_SCALE = 1e-6


def jittered_features(features: NDArray[np.floating[Any]], seed: int,
                      scale: float = JITTER_SCALE) -> NDArray[np.floating[Any]]:
    """``features * (1 + scale * N(0, 1))`` from ``np.random.default_rng(seed)``, same dtype."""
    rng = np.random.default_rng(seed)
    return (features * (1 + scale * rng.standard_normal(features.shape))).astype(features.dtype)


def check_jitters(jitters: object, name: str = "jitters") -> int:
    """``jitters`` as an int: 0 (the paper's S_LP) or at least 2 (the smoothed variant)."""
    if isinstance(jitters, bool) or not isinstance(jitters, (int, np.integer)) \
            or jitters < 0 or jitters == 1:
        raise InputError(f"{name} must be 0 (the paper's S_LP) or an integer >= 2; "
                         f"got {jitters!r}")
    return int(jitters)


def label_prediction_score(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int = 50,
    n_neighbors: int = 5,
    random_state: int | None = 42,
    n_threads: int | None = None,
    jitters: int = 0,
) -> float:
    """S_LP: mean over samples of the k-NN probability of the true label after NCA.

    See :func:`label_prediction_probabilities` for the parameters; raises ``ValueError`` for a
    single class, NaN/inf features, ``n_components > n_features`` or mismatched lengths.

    ``jitters=0`` (the default) is the paper's S_LP. ``jitters=K >= 2`` is this package's
    smoothed variant (an extension, not the paper's): the mean of the paper's S_LP over ``K``
    copies of the features jittered by :func:`jittered_features` with seeds ``0..K-1``. NCA's 50
    L-BFGS steps stop far from convergence, so S_LP moves by ~0.002 under a 1e-6 perturbation;
    averaging ``K=5`` jitters cut that spread about 4x on real features, at ``K`` times the cost.
    """
    jitters = check_jitters(jitters)

    def one(x: ArrayLike) -> float:
        return float(np.mean(label_prediction_probabilities(
            x, labels, n_components=n_components, n_neighbors=n_neighbors,
            random_state=random_state, n_threads=n_threads)))

    if not jitters:
        return one(features)
    X = check_features(features)
    return float(np.mean([one(jittered_features(X, s)) for s in range(jitters)]))
