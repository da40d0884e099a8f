"""Uniform-weight k-NN class probabilities with scikit-learn's semantics, batched in row blocks.

scikit-learn's ``predict_proba`` (Euclidean, brute force, uniform weights) finds neighbours with
``EuclideanArgKmin``: candidates in index order pushed onto a fixed-size max-heap keyed by
``-2 q.x + |x|^2``; among exactly tied points the survivors depend on that heap's history. The
C++ kernel reproduces the heap operation for operation on keys from the same BLAS products.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .. import _core
from ..errors import InputError
from ._parallel import Products

DEFAULT_BLOCK_ROWS = 2048


def knn_class_proba(
    X: NDArray,
    labels: NDArray[np.int64],
    *,
    n_neighbors: int = 5,
    n_classes: int | None = None,
    queries: NDArray | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    products: Products | None = None,
) -> NDArray[np.float64]:
    """Class probabilities of ``KNeighborsClassifier(n_neighbors).fit(X, labels).predict_proba``.

    Euclidean distance, uniform weights, brute force; the queries default to ``X`` itself, so
    each point counts as its own nearest neighbour (as scikit-learn does when ``X`` is passed
    again). Exactly tied distances (duplicate samples) are resolved as single-threaded
    scikit-learn resolves them: one heap fed in index order. Multi-threaded scikit-learn merges
    per-thread heaps, so its choice among exact ties depends on its thread count; and its
    ``algorithm='auto'`` uses a KD-tree below 16 features, with yet another order among ties.
    Results without exact ties are identical in every case.

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
    products : Products, optional
        Thread pool for the Gram blocks and the selection (default: one thread).

    Returns
    -------
    ndarray of shape (n_queries, n_classes)
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    Q = X if queries is None else np.ascontiguousarray(queries, dtype=np.float64)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    n = X.shape[0]
    if not 1 <= n_neighbors <= n:
        raise InputError(f"n_neighbors must be in [1, n_samples={n}]; got {n_neighbors}")
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    prod = products if products is not None else Products(1)
    sq = np.einsum("ij,ij->i", X, X)
    # scikit-learn forms the keys with gemm on chunks; with Q the same buffer as X, NumPy would
    # switch to syrk for a block holding every row, which rounds differently for some n.
    X = X.copy() if Q is X else X
    out = np.empty((Q.shape[0], n_classes))
    for start in range(0, Q.shape[0], block_rows):
        stop = min(start + block_rows, Q.shape[0])
        gram = prod.matmul_rows(Q[start:stop], X.T)

        def select(sl: slice, gram: NDArray[np.float64] = gram, start: int = start) -> None:
            out[start + sl.start: start + sl.stop] = _core.knn_proba_block(
                gram[sl], sq, labels, n_neighbors, n_classes)

        prod.map_rows(select, stop - start)
    return out
