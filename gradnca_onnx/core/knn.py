"""Uniform-weight k-NN class probabilities with scikit-learn's semantics, batched in row blocks."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .. import _core

DEFAULT_BLOCK_ROWS = 2048


def knn_class_proba(
    X: NDArray,
    labels: NDArray[np.int64],
    *,
    n_neighbors: int = 5,
    n_classes: int | None = None,
    queries: NDArray | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> NDArray[np.float64]:
    """Class probabilities of ``KNeighborsClassifier(n_neighbors).fit(X, labels).predict_proba``.

    Euclidean distance, uniform weights, brute force; the queries default to ``X`` itself, so
    each point counts as its own nearest neighbour (as scikit-learn does when ``X`` is passed
    again). Ties in distance go to the lower reference index, as in scikit-learn.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Reference points.
    labels : ndarray of int64, shape (n_samples,)
        Class codes 0..C-1.
    n_neighbors : int
    n_classes : int, optional
        Number of columns of the result (default ``labels.max() + 1``).
    queries : ndarray of shape (n_queries, n_features), optional
    block_rows : int
        Queries handled at once (memory ``block_rows * n_samples`` doubles).

    Returns
    -------
    ndarray of shape (n_queries, n_classes)
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    Q = X if queries is None else np.ascontiguousarray(queries, dtype=np.float64)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    n = X.shape[0]
    if not 1 <= n_neighbors <= n:
        raise ValueError(f"n_neighbors must be in [1, n_samples={n}]; got {n_neighbors}")
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty((Q.shape[0], n_classes))
    for start in range(0, Q.shape[0], block_rows):
        stop = min(start + block_rows, Q.shape[0])
        gram = np.ascontiguousarray(Q[start:stop] @ X.T)
        out[start:stop] = _core.knn_proba_block(gram, sq, labels, n_neighbors, n_classes)
    return out
