"""Ranks: methods per target by their correlation with the ground truth, models by score."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from ..errors import InputError


def _as_matrix(values: ArrayLike, name: str) -> NDArray[np.float64]:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise InputError(f"{name} must be a 2-D array (n_targets, n_methods); got shape {m.shape}")
    return m


def rank_methods(tau: ArrayLike) -> NDArray[np.float64]:
    """Rank the methods on every target: 1 = highest correlation, NaN ranks last.

    Parameters
    ----------
    tau : array-like of shape (n_targets, n_methods)
        Higher is better. NaN (an undefined correlation, e.g. a metric that gives every source
        the same score) ranks below every number, as in the paper.

    Returns
    -------
    ndarray of shape (n_targets, n_methods)
        Ranks 1..n_methods per row; ties (including several NaN) share their average rank, so a
        row always sums to n(n+1)/2, as the Friedman test expects.
    """
    m = _as_matrix(tau, "tau")
    if np.isinf(m).any():
        raise InputError("tau contains inf; correlations lie in [-1, 1] (NaN for undefined)")
    # Negate so that rank 1 is the best; NaN becomes +inf, i.e. after every real value.
    key = np.where(np.isnan(m), np.inf, -m)
    return rankdata(key, method="average", axis=1)


def best_first_ranks(scores: ArrayLike) -> NDArray[np.int64]:
    """Ranks along the last axis, higher score first: 1 = best, ties share the better rank.

    Competition ranking ("1224"): a model's rank is 1 + the number of models with a strictly
    higher score. The ranking of a zoo (``combine_zoo``) and the ranks per resample
    (:func:`~gradnca_onnx.evaluation.resampling.rank_statistics`) both use it.

    Parameters
    ----------
    scores : array-like of shape (..., n_models), finite

    Returns
    -------
    ndarray of int64, the shape of ``scores``

    Notes
    -----
    ``scipy.stats.rankdata(-scores, method="min")`` replaced two hand-written copies of
    ``1 + (scores > s).sum()``; measured identical (same integers, int64) on 20,000 random
    vectors of 1-15 models with many ties, one tie, and +0.0 / -0.0 / repeated extremes, and
    on a 500 x 7 matrix ranked per row. Negation is exact in floating point, so the order is
    the scores' own.
    """
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        # rankdata would make a whole row NaN; the callers drop undefined rows first.
        raise InputError("ranks need finite scores; leave out the undefined ones first")
    return rankdata(-s, method="min", axis=-1).astype(np.int64)


def average_ranks(ranks: ArrayLike) -> NDArray[np.float64]:
    """Mean rank of every method over the targets (lower is better).

    Parameters
    ----------
    ranks : array-like of shape (n_targets, n_methods)
        As returned by :func:`rank_methods`.

    Returns
    -------
    ndarray of shape (n_methods,)
    """
    r = _as_matrix(ranks, "ranks")
    if np.isnan(r).any():
        raise InputError("ranks contain NaN; build them with rank_methods, which ranks NaN last")
    return r.mean(axis=0)
