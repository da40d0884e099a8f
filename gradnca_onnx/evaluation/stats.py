"""Significance of rank differences: Friedman test and Nemenyi post-hoc (REFERENCE section 8)."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from ..errors import InputError

QLookup = Literal["correct", "paper"]

# Demšar (2006), Table 5(a): two-tailed Nemenyi critical values q_alpha for k = 2..10 methods
# (the studentized range quantile / sqrt(2), rounded by Demšar). Kept literally because the
# paper's CD comes from this table; other k or alpha are computed from scipy.
_DEMSAR_Q = {
    0.05: (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164),
    0.10: (1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920),
}


class FriedmanResult(NamedTuple):
    """Friedman chi-square statistic and its p-value."""

    statistic: float
    p_value: float


def _check_ranks(ranks: ArrayLike) -> NDArray[np.float64]:
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 2:
        raise InputError(f"ranks must be a 2-D array (n_targets, n_methods); got shape {r.shape}")
    if not np.isfinite(r).all():
        raise InputError("ranks contain NaN/inf; build them with rank_methods, which ranks NaN last")
    return r


def friedman_test(ranks: ArrayLike) -> FriedmanResult:
    """Friedman test over a rank table (``scipy.stats.friedmanchisquare``, tie-corrected).

    Parameters
    ----------
    ranks : array-like of shape (n_targets, n_methods)
        Targets are the blocks, methods the treatments (see :func:`~.ranking.rank_methods`).

    Returns
    -------
    FriedmanResult
        ``(statistic, p_value)``; the null hypothesis is that all methods rank alike.
    """
    r = _check_ranks(ranks)
    n, k = r.shape
    if k < 3:
        raise InputError(f"the Friedman test needs at least 3 methods; got {k}")
    if n < 2:
        raise InputError(f"the Friedman test needs at least 2 targets; got {n}")
    res = stats.friedmanchisquare(*r.T)
    return FriedmanResult(float(res.statistic), float(res.pvalue))


def nemenyi_q(k: int, alpha: float = 0.05, *, lookup: QLookup = "correct") -> float:
    """Two-tailed Nemenyi critical value q_alpha for comparing ``k`` methods.

    Parameters
    ----------
    k : int
        Number of methods (>= 2).
    alpha : float
        Significance level in (0, 1).
    lookup : {"correct", "paper"}
        ``"correct"`` (default) uses q for ``k`` methods. ``"paper"`` reproduces the paper's
        off-by-one: it reads the value for ``k + 1`` (its CD of 2.792 for 7 methods and 11
        targets uses q = 3.031, the table entry for 8 methods).

    Returns
    -------
    float
        Demšar's table value for alpha in {0.05, 0.10} and 2 <= k(+1) <= 10, else
        ``studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise InputError(f"k (the number of methods) must be an integer >= 2; got {k!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha must be strictly between 0 and 1; got {alpha!r}")
    if lookup not in ("correct", "paper"):
        raise InputError(f"lookup must be 'correct' or 'paper'; got {lookup!r}")
    kk = int(k) + (1 if lookup == "paper" else 0)
    table = _DEMSAR_Q.get(float(alpha))
    if table is not None and kk - 2 < len(table):
        return table[kk - 2]
    return float(stats.studentized_range.ppf(1.0 - alpha, kk, np.inf) / math.sqrt(2.0))


def critical_difference(k: int, n: int, alpha: float = 0.05, *, lookup: QLookup = "correct") -> float:
    """Nemenyi critical difference CD = q_alpha * sqrt(k (k + 1) / (6 n)).

    Two methods whose average ranks differ by at least CD differ significantly at ``alpha``.

    Parameters
    ----------
    k : int
        Number of methods (>= 2).
    n : int
        Number of targets (>= 1).
    alpha : float
    lookup : {"correct", "paper"}
        See :func:`nemenyi_q`; ``"paper"`` gives the paper's 2.792 for k = 7, n = 11
        (``"correct"``: 2.716).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n (the number of targets) must be an integer >= 1; got {n!r}")
    q = nemenyi_q(k, alpha, lookup=lookup)
    return q * math.sqrt(k * (k + 1) / (6.0 * n))


def nemenyi_pvalues(ranks: ArrayLike) -> NDArray[np.float64]:
    """Pairwise Nemenyi p-values from a rank table.

    p_ij = P(Q > |R_i - R_j| / sqrt(k (k + 1) / (6 n)) * sqrt(2)) for the studentized range Q
    with k groups and infinite degrees of freedom (the same statistic as scikit-posthocs'
    ``posthoc_nemenyi_friedman``).

    Parameters
    ----------
    ranks : array-like of shape (n_targets, n_methods)

    Returns
    -------
    ndarray of shape (n_methods, n_methods)
        Symmetric, ones on the diagonal.
    """
    r = _check_ranks(ranks)
    n, k = r.shape
    if k < 2:
        raise InputError(f"pairwise comparisons need at least 2 methods; got {k}")
    avg = r.mean(axis=0)
    se = math.sqrt(k * (k + 1) / (6.0 * n))
    q = np.abs(avg[:, None] - avg[None, :]) / se * math.sqrt(2.0)
    p = stats.studentized_range.sf(q, k, np.inf)
    p = np.clip(p, 0.0, 1.0)
    np.fill_diagonal(p, 1.0)
    return p
