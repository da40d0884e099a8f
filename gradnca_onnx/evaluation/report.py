"""Comparing several transferability metrics against one ground truth: the paper's Tables 2/3."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..results.text import aligned
from ..scores.combine import check_scenario
from .bootstrap import bootstrap_ci
from .correlation import MissingValueWarning, paired_values, per_target, top1_regret
from .ranking import average_ranks, rank_methods
from .replicates import ReplicateAgreement, format_agreement, replicate_agreement
from .stats import (
    FriedmanResult,
    QLookup,
    critical_difference,
    friedman_test,
    nemenyi_pvalues,
    nemenyi_q,
)
from .table import SourceTargetTable, align

#: Extra per-target measures reported beside the weighted tau.
EXTRA_MEASURES: tuple[str, ...] = ("kendall_tau", "spearman", "pearson", "top1_regret")
#: Smallest significance level of the critical difference: q is the studentized range's
#: (1 - alpha) quantile, and 1 - alpha in float64 loses alpha's digits far below this.
MIN_ALPHA = 1e-6


@dataclass(frozen=True)
class Evaluation:
    """Per-target correlations, ranks and significance of several metrics (see :func:`evaluate`).

    Arrays are indexed ``[target, method]`` in the order of :attr:`targets` and :attr:`methods`.
    A target whose ground truth is constant ranks no method: its row of :attr:`ranks` is NaN
    and it is left out of the average ranks and the tests (:attr:`notes` says so).
    ``friedman_note`` and ``cd_note`` say, in words, why the Friedman test or the critical
    difference is ``None``.
    """

    scenario: str
    methods: tuple[str, ...]
    targets: tuple[str, ...]
    tau: NDArray[np.float64]
    ranks: NDArray[np.float64]
    avg_rank: NDArray[np.float64]
    friedman: FriedmanResult | None
    cd: float | None
    q: float | None
    alpha: float
    cd_lookup: str
    nemenyi_p: NDArray[np.float64] | None
    measures: dict[str, NDArray[np.float64]]
    n_sources: dict[str, int]
    truth: SourceTargetTable
    scores: dict[str, SourceTargetTable] = field(repr=False)
    tau_ci: NDArray[np.float64] | None = None
    ci_confidence: float | None = None
    replicates: ReplicateAgreement | None = None
    friedman_note: str | None = None
    cd_note: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; NaN becomes ``None``; integral ranks are ``int``."""

        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        def rank(v: float) -> int | float | None:
            if math.isnan(v):
                return None  # a target whose ground truth ranks nothing
            return int(v) if float(v).is_integer() else float(v)

        def per_method(mat: NDArray, conv: Any = num) -> dict[str, dict[str, Any]]:
            return {m: {t: conv(mat[i, j]) for i, t in enumerate(self.targets)}
                    for j, m in enumerate(self.methods)}

        out: dict[str, Any] = {
            "scenario": self.scenario,
            "methods": list(self.methods),
            "targets": list(self.targets),
            "tau": per_method(self.tau),
            "rank": per_method(self.ranks, rank),
            "avg_rank": {m: num(v) for m, v in zip(self.methods, self.avg_rank)},
            "friedman": (None if self.friedman is None else
                         {"statistic": num(self.friedman.statistic), "p_value": num(self.friedman.p_value)}),
            "friedman_note": self.friedman_note,
            "cd": num(self.cd),
            "q": num(self.q),
            "cd_note": self.cd_note,
            "notes": list(self.notes),
            "alpha": self.alpha,
            "cd_lookup": self.cd_lookup,
            "n_sources": dict(self.n_sources),
            "nemenyi_p": (None if self.nemenyi_p is None else
                          {a: {b: num(self.nemenyi_p[i, j]) for j, b in enumerate(self.methods)}
                           for i, a in enumerate(self.methods)}),
            "measures": {name: per_method(mat) for name, mat in self.measures.items()},
        }
        if self.tau_ci is not None:
            out["tau_ci"] = {
                "confidence": self.ci_confidence,
                "interval": {m: {t: [num(self.tau_ci[i, j, 0]), num(self.tau_ci[i, j, 1])]
                                 for i, t in enumerate(self.targets)}
                             for j, m in enumerate(self.methods)},
            }
        if self.replicates is not None:
            out["replicates"] = self.replicates.to_dict()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text (strict JSON: no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def format_table(self) -> str:
        """Plain-text table like the paper's: ``tau (rank)`` per target, average ranks, tests."""
        def cell(t: float, r: float) -> str:
            tau_s = "-" if math.isnan(t) else f"{t:.2f}"
            r_s = "-" if math.isnan(r) else f"{int(r)}" if float(r).is_integer() else f"{r:.1f}"
            return f"{tau_s} ({r_s})"

        rows = [["Target", *self.methods]]
        for i, target in enumerate(self.targets):
            rows.append([target, *(cell(self.tau[i, j], self.ranks[i, j]) for j in range(len(self.methods)))])
        rows.append(["Avg. rank", *(f"{v:.2f}" for v in self.avg_rank)])
        lines = [f"Weighted Kendall tau (rank), {self.scenario} scenario, "
                 f"{len(self.targets)} targets x {len(self.methods)} methods"]
        lines += aligned(rows, right=True, rules=(0, len(rows) - 2), full_rule=True)
        if self.friedman is not None:
            p = self.friedman.p_value
            p_s = f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"
            lines.append(f"Friedman test: chi2 = {self.friedman.statistic:.2f}, p = {p_s}")
        else:
            lines.append(f"Friedman test: {self.friedman_note or 'not computed'}")
        if self.cd is not None:
            which = "the paper's q lookup (k + 1)" if self.cd_lookup == "paper" else "q for k methods"
            lines.append(f"Nemenyi critical difference (alpha = {self.alpha:g}, {which}: q = {self.q:.3f}): "
                         f"CD = {self.cd:.3f}")
        elif self.cd_note:
            lines.append(f"Nemenyi critical difference: {self.cd_note}")
        lines += [f"Note: {note}" for note in self.notes]
        if self.replicates is not None:
            lines += ["", format_agreement(self.replicates, {"weighted_tau": self.tau,
                                                             "kendall_tau": self.measures["kendall_tau"]})]
        return "\n".join(lines)


def _check_methods(scores: Mapping[str, SourceTargetTable]) -> tuple[str, ...]:
    if not scores:
        raise InputError("no methods to evaluate; give at least one scores table")
    names = tuple(scores)
    for m in names:
        if not isinstance(m, str) or not m.strip():
            raise InputError(f"method names must be non-empty strings; got {m!r}")
        if not isinstance(scores[m], SourceTargetTable):
            raise InputError(f"method {m!r}: expected a SourceTargetTable; got {type(scores[m]).__name__}")
    first = names[0]
    ref = scores[first].targets
    for m in names[1:]:
        missing = [t for t in ref if t not in scores[m].targets]
        extra = [t for t in scores[m].targets if t not in ref]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks target(s) {missing}")
            if extra:
                parts.append(f"has extra target(s) {extra}")
            raise InputError(
                f"method {m!r} ({scores[m].name}) {' and '.join(parts)} compared with method {first!r} "
                f"({scores[first].name}); every method must score the same targets"
            )
    return names


def evaluate(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable], *,
             scenario: str = "dataset", alpha: float = 0.05, cd_lookup: QLookup = "correct",
             n_bootstrap: int = 0, seed: int | None = None,
             ci_confidence: float = 0.95,
             replicates: Mapping[str, SourceTargetTable] | None = None) -> Evaluation:
    """Evaluate several metrics against one ground truth, as the paper does (REFERENCE 8).

    Per target (each target's own source row dropped): weighted Kendall tau
    (``scipy.stats.weightedtau`` defaults), plus Kendall tau-b, Spearman, Pearson and top-1
    regret; methods ranked per target by tau (1 = best, NaN last, ties averaged); average ranks;
    Friedman test; Nemenyi critical difference and pairwise p-values.

    Parameters
    ----------
    truth : SourceTargetTable
        Ground-truth transfer performance (sources x targets).
    scores : mapping of str to SourceTargetTable
        Method name -> its scores; all with the truth's sources and the same targets (a subset
        of the truth's). Higher score must mean better predicted transfer.
    scenario : {"dataset", "model"}
        Recorded in the result (the released files need no other difference); ``"cross-domain"``
        is the synonym of ``"model"`` (:func:`~gradnca_onnx.scores.combine.check_scenario`).
    alpha : float
        Significance level of the critical difference.
    cd_lookup : {"correct", "paper"}
        q for k methods (default) or the paper's off-by-one (k + 1), see
        :func:`~.stats.nemenyi_q`.
    n_bootstrap : int
        When > 0, percentile bootstrap intervals of tau over the sources with this many
        resamples (needs ``seed``).
    seed : int, optional
        Seed of the bootstrap; the j-th method uses ``seed + j``.
    ci_confidence : float
        Coverage of the bootstrap intervals.
    replicates : mapping of str to SourceTargetTable, optional
        At least two seed replicates of the ground truth (``finetune summarize --replicates``),
        with the truth's sources: per target, the tau between them (the ground truth's own
        reproducibility) and every method's tau against each, in ``Evaluation.replicates``
        (see :func:`~.replicates.replicate_agreement`).

    Returns
    -------
    Evaluation
        The Friedman result is ``None`` with fewer than 3 methods or 2 targets; the CD and
        p-values are ``None`` with a single method.

    Raises
    ------
    ValueError
        On mismatched sources or targets (named), a target with fewer than two sources, or a
        method whose tau is NaN on every target (nothing to rank it by).
    """
    check_scenario(scenario)
    if isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        # Checked even when no critical difference is computed (one method): a bad value
        # is an error whatever else the input holds.
        raise InputError(f"alpha (--alpha) must be strictly between 0 and 1, e.g. 0.05; got "
                         f"{alpha!r}")
    if float(alpha) < MIN_ALPHA:
        raise InputError(f"alpha (--alpha) {alpha!r} is too small: the critical difference is "
                         f"computed for alpha >= {MIN_ALPHA:g} (e.g. 0.05 or 0.01)")
    if n_bootstrap:
        if seed is None:
            raise InputError("a bootstrap needs an explicit seed for reproducibility (--seed on "
                             "the command line, seed= in Python)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed (--seed) must be an integer >= 0; got {seed!r}")
        if n_bootstrap < 10:
            raise InputError(f"the bootstrap (--bootstrap on the command line, n_bootstrap= in "
                             f"Python) must be 0 (no intervals) or at least 10; got {n_bootstrap}")
    methods = _check_methods(scores)
    targets = scores[methods[0]].targets
    aligned: dict[str, SourceTargetTable] = {}
    for m in methods:
        aligned[m], _ = align(scores[m].select(None, targets), truth)
    truth_t = truth.select(None, targets)
    n_sources = {t: len(paired_values(aligned[methods[0]], truth_t, t)[2]) for t in targets}
    flat = _flat_targets(truth_t, targets)

    tau = np.column_stack([per_target(aligned[m], truth_t, "weighted_tau") for m in methods])
    for j, m in enumerate(methods):
        if np.isnan(tau[:, j]).all():
            raise InputError(
                f"method {m!r} ({aligned[m].name}): weighted tau is undefined on every target (its "
                "scores are constant or missing on each); it cannot be ranked, fix or drop it"
            )
    measures: dict[str, NDArray[np.float64]] = {}
    with warnings.catch_warnings():
        # The tau pass above already warned about every missing pair.
        warnings.simplefilter("ignore", MissingValueWarning)
        for name in EXTRA_MEASURES:
            if name == "top1_regret":
                measures[name] = np.column_stack([top1_regret(aligned[m], truth_t) for m in methods])
            else:
                measures[name] = np.column_stack([per_target(aligned[m], truth_t, name)  # type: ignore[arg-type]
                                                  for m in methods])
        tau_ci = None
        if n_bootstrap:
            tau_ci = np.stack([bootstrap_ci(aligned[m], truth_t, seed=int(seed) + j,  # type: ignore[arg-type]
                                            n_resamples=n_bootstrap, confidence=ci_confidence)
                               for j, m in enumerate(methods)], axis=1)

    agreement = None
    if replicates is not None:
        reps = {n: align(r.select(None, targets), truth)[0] for n, r in replicates.items()}
        agreement = replicate_agreement(reps, aligned, targets=targets)
    # A target whose ground truth is constant ranks no method (every tau is undefined):
    # counted, it would add a block of ties to the average ranks and the tests.
    ranked = np.array([t not in flat for t in targets])
    ranks = np.full(tau.shape, np.nan)
    ranks[ranked] = rank_methods(tau[ranked])
    avg = average_ranks(ranks[ranked])
    k, n = len(methods), int(ranked.sum())
    too_few = (f"needs at least two targets (got {n}"
               + (" once targets with a constant ground truth are left out)" if flat else ")"))
    friedman, friedman_note = _friedman(ranks[ranked], k, too_few)
    cd = q = pvals = None
    cd_note = None
    if k >= 2 and n >= 2:
        q = nemenyi_q(k, alpha, lookup=cd_lookup)
        cd = critical_difference(k, n, alpha, lookup=cd_lookup)
        pvals = nemenyi_pvalues(ranks[ranked])
    elif k >= 2:
        cd_note = f"not computed: it {too_few}"
    notes = tuple(f"target {t!r}: {why}; it ranks no method and is left out of the average "
                  "ranks and the tests" for t, why in flat.items())
    return Evaluation(
        scenario=scenario, methods=methods, targets=tuple(targets), tau=tau, ranks=ranks,
        avg_rank=avg, friedman=friedman, cd=cd, q=q, alpha=float(alpha), cd_lookup=cd_lookup,
        nemenyi_p=pvals, measures=measures, n_sources=n_sources, truth=truth_t, scores=aligned,
        tau_ci=tau_ci, ci_confidence=ci_confidence if n_bootstrap else None,
        replicates=agreement, friedman_note=friedman_note, cd_note=cd_note, notes=notes,
    )


def _flat_targets(truth: SourceTargetTable, targets: Sequence[str]) -> dict[str, str]:
    """Targets whose ground truth (over the candidate sources) cannot rank anything, and why.

    Raises
    ------
    ValueError
        Every target is such a target: there is nothing to evaluate against.
    """
    flat = {}
    for t in targets:
        y = paired_values(truth, truth, t)[1]
        values = np.unique(y[np.isfinite(y)])
        if values.size == 1:
            flat[t] = f"the ground truth is the same ({values[0]:g}) for every candidate source"
        elif values.size == 0:
            flat[t] = "the ground truth has no value for any candidate source"
    if flat and len(flat) == len(targets):
        raise InputError(f"{truth.name}: the ground truth is constant (or missing) on every "
                         f"target {list(targets)}, so it ranks no source; check the ground-truth "
                         "file")
    return flat


def _friedman(ranks: NDArray[np.float64], k: int, too_few: str
              ) -> tuple[FriedmanResult | None, str | None]:
    """The Friedman test over ``ranks`` (targets x k methods), or ``None`` and why, in words
    (``too_few``: what to say with fewer than two targets)."""
    if k < 3:
        return None, f"needs at least three methods (got {k})"
    if ranks.shape[0] < 2:
        return None, f"not computed: it {too_few}"
    if (ranks == ranks[:, :1]).all():
        return None, ("undefined: every method has the same rank on every target (all tied), "
                      "so there is no difference to test")
    return friedman_test(ranks), None
