"""Triplet margin loss over every valid triplet of a batch, with its gradient.

Reproduces pytorch-metric-learning's ``TripletMarginLoss()`` defaults used by the paper: embeddings
L2-normalised (``torch.nn.functional.normalize``, eps 1e-12), Euclidean distances, per-triplet
loss ``relu(d(a, p) - d(a, n) + margin)`` over all (a, p, n) with ``p != a`` sharing a's label and
``n`` of another label, ``AvgNonZeroReducer`` (mean over the triplets whose loss is > 0, 0 when none).
Gradients follow torch autograd, including its zero subgradient at a zero distance. Computation
is in float64 whatever the input dtype.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .. import _core
from ._parallel import default_threads

_NORMALIZE_EPS = 1e-12
# Below this squared distance (between unit vectors) the Gram form has lost most digits; such
# pairs are recomputed from coordinates.
_EXACT_BELOW = 1e-6


def triplet_margin_loss_grad(
    embeddings: NDArray, labels: NDArray[np.int64], *, margin: float = 0.05,
    n_threads: int | None = None,
) -> tuple[float, NDArray[np.float64], int, int]:
    """Loss, gradient with respect to the raw embeddings, non-zero and total triplet counts.

    Parameters
    ----------
    embeddings : ndarray of shape (batch, dim)
        Raw (un-normalised) embeddings.
    labels : ndarray of int64, shape (batch,)
    margin : float
    n_threads : int, optional
        Threads of the C++ kernels (default: all CPUs from 512 rows up, else 1); the result
        does not depend on it.

    Returns
    -------
    loss : float
    grad : ndarray of float64, shape (batch, dim)
    n_nonzero : int
        Triplets with a positive loss (the reducer's divisor).
    n_triplets : int
        Valid triplets in the batch.
    """
    X = np.ascontiguousarray(embeddings, dtype=np.float64)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    denom = np.maximum(norms, _NORMALIZE_EPS)
    U = X / denom[:, None]
    gram = U @ U.T
    if n_threads is None:
        # Below ~500 rows the O(b^2 log b) kernel takes about a millisecond: a thread team's
        # start-up and barrier cost more than they save.
        n_threads = default_threads() if X.shape[0] >= 512 else 1
    threads = max(1, int(n_threads))
    dist = _core.pairwise_distances_from_gram(np.ascontiguousarray(gram), U, _EXACT_BELOW, threads)
    loss_sum, n_nonzero, n_triplets, coef = _core.triplet_all(dist, labels, float(margin), threads)
    if n_nonzero == 0:
        return 0.0, np.zeros_like(X), int(n_nonzero), int(n_triplets)
    # dL/dD = coef / n_nonzero; D_ab = |u_a - u_b| has gradient (u_a - u_b) / D_ab (0 at D = 0).
    with np.errstate(divide="ignore", invalid="ignore"):
        R = np.where(dist > 0.0, coef / dist, 0.0) / n_nonzero
    S = R + R.T
    grad_u = U * S.sum(axis=1)[:, None] - S @ U
    # Through u = x / max(|x|, eps): project out the radial part unless the norm was clamped.
    radial = np.einsum("ij,ij->i", U, grad_u)
    grad_x = np.where(
        (norms > _NORMALIZE_EPS)[:, None], grad_u - U * radial[:, None], grad_u
    ) / denom[:, None]
    return float(loss_sum / n_nonzero), grad_x, int(n_nonzero), int(n_triplets)
