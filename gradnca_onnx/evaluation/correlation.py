"""Agreement between a metric's scores and the ground truth, per target (REFERENCE section 8)."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from ..errors import (
    InputError,
    MissingValueWarning,  # noqa: F401 - re-exported
)
from .table import SourceTargetTable, align

Measure = Literal["weighted_tau", "kendall_tau", "spearman", "pearson"]
MEASURES: tuple[str, ...] = ("weighted_tau", "kendall_tau", "spearman", "pearson")


def paired_values(scores: SourceTargetTable, truth: SourceTargetTable, target: str
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64], tuple[str, ...]]:
    """Scores and ground truth of every source on ``target``, the target's own row dropped.

    A source named like the target (dataset scenario: the target pre-trained on itself) is not a
    candidate, so it is left out whatever its cells hold.

    Parameters
    ----------
    scores, truth : SourceTargetTable
        Aligned tables (see :func:`~gradnca_onnx.evaluation.table.align`).
    target : str

    Returns
    -------
    x, y : ndarray of shape (n_kept,)
        Scores and ground truth (may hold NaN for a missing pair).
    sources : tuple of str
        The kept sources, in table order.

    Raises
    ------
    ValueError
        If fewer than two sources remain: a ranking needs at least two candidates.
    """
    keep = np.array([s != target for s in truth.sources])
    kept = tuple(s for s, k in zip(truth.sources, keep) if k)
    if len(kept) < 2:
        raise InputError(
            f"target {target!r}: only {len(kept)} source(s) {list(kept)} besides the target itself; "
            "a ranking needs at least two sources"
        )
    return scores.column(target)[keep], truth.column(target)[keep], kept


def correlation(x: ArrayLike, y: ArrayLike, measure: Measure = "weighted_tau") -> float:
    """Rank (or linear) correlation between scores ``x`` and ground truth ``y``.

    Parameters
    ----------
    x, y : array-like of shape (n_sources,)
    measure : {"weighted_tau", "kendall_tau", "spearman", "pearson"}
        ``weighted_tau`` is ``scipy.stats.weightedtau(x, y)`` with its defaults (hyperbolic
        weigher, both rankings averaged), the paper's measure. The others are
        ``scipy.stats.kendalltau`` (tau-b), ``spearmanr`` and ``pearsonr``.

    Returns
    -------
    float
        NaN when undefined: a missing value in ``x`` or ``y``, or a constant ``x`` or ``y``
        (a metric that gives every source the same score ranks nothing).
    """
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    if xa.shape != ya.shape:
        raise InputError(f"scores and ground truth must have one value per source; got {xa.size} and {ya.size}")
    if xa.size < 2:
        raise InputError(f"need at least two sources to correlate; got {xa.size}")
    if measure not in MEASURES:
        raise InputError(f"measure must be one of {list(MEASURES)}; got {measure!r}")
    if np.isnan(xa).any() or np.isnan(ya).any():
        return float("nan")
    if np.all(xa == xa[0]) or np.all(ya == ya[0]):
        return float("nan")
    with warnings.catch_warnings():
        # Near-constant input still gets a value; scipy's advisory warning adds nothing here.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        if measure == "weighted_tau":
            value = stats.weightedtau(xa, ya).statistic
        elif measure == "kendall_tau":
            value = stats.kendalltau(xa, ya).statistic
        elif measure == "spearman":
            value = stats.spearmanr(xa, ya).statistic
        else:
            value = stats.pearsonr(xa, ya).statistic
    return float(value)


def _warn_missing(scores: SourceTargetTable, target: str, x: NDArray, y: NDArray,
                  sources: tuple[str, ...], truth_name: str) -> None:
    miss_x = [s for s, v in zip(sources, x) if np.isnan(v)]
    miss_y = [s for s, v in zip(sources, y) if np.isnan(v)]
    parts = []
    if miss_x:
        parts.append(f"no score for source(s) {miss_x}")
    if miss_y:
        parts.append(f"no ground truth in {truth_name} for source(s) {miss_y}")
    warnings.warn(f"{scores.name}, target {target!r}: {' and '.join(parts)}; its result there is NaN",
                  MissingValueWarning, stacklevel=3)


def per_target(scores: SourceTargetTable, truth: SourceTargetTable,
               measure: Measure = "weighted_tau") -> NDArray[np.float64]:
    """:func:`correlation` on every target of ``scores``, the target's own row dropped.

    Parameters
    ----------
    scores : SourceTargetTable
        One metric's scores; its targets must be targets of ``truth`` and its sources those of
        ``truth``.
    truth : SourceTargetTable
        Ground-truth transfer performance (e.g. test AUC).
    measure : {"weighted_tau", "kendall_tau", "spearman", "pearson"}

    Returns
    -------
    ndarray of shape (n_targets,), in ``scores.targets`` order
        NaN where undefined (see :func:`correlation`); a missing pair also emits a
        :class:`MissingValueWarning` naming it.
    """
    scores, truth = align(scores, truth)
    out = np.empty(len(scores.targets))
    for j, target in enumerate(scores.targets):
        x, y, kept = paired_values(scores, truth, target)
        if np.isnan(x).any() or np.isnan(y).any():
            _warn_missing(scores, target, x, y, kept, truth.name)
        out[j] = correlation(x, y, measure)
    return out


def weighted_tau(scores: SourceTargetTable, truth: SourceTargetTable) -> NDArray[np.float64]:
    """The paper's measure: :func:`per_target` with ``measure="weighted_tau"``."""
    return per_target(scores, truth, "weighted_tau")


def top1_regret(scores: SourceTargetTable, truth: SourceTargetTable) -> NDArray[np.float64]:
    """Per target, the best ground truth minus the ground truth of the top-scored source.

    0 means the metric's first choice is the best source; the unit is that of ``truth``.
    When several sources share the top score, the regret is averaged over them (the expected
    regret of picking one of them at random). NaN where a pair is missing.

    Returns
    -------
    ndarray of shape (n_targets,), in ``scores.targets`` order
    """
    scores, truth = align(scores, truth)
    out = np.empty(len(scores.targets))
    for j, target in enumerate(scores.targets):
        x, y, kept = paired_values(scores, truth, target)
        if np.isnan(x).any() or np.isnan(y).any():
            _warn_missing(scores, target, x, y, kept, truth.name)
            out[j] = np.nan
            continue
        out[j] = y.max() - y[x == x.max()].mean()
    return out
