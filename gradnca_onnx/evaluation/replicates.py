"""The ground truth's own noise: agreement between seed replicates of the ground truth.

``finetune --seeds K`` repeats each pair's selected configuration with K seeds, and
``finetune summarize --replicates DIR`` writes one ground-truth table per seed. The Kendall tau
between two replicate tables on a target says how reproducible the ground-truth ranking of the
sources itself is; with K > 2 it is averaged over the K(K-1)/2 pairs of replicates. It is the
reference a metric's tau should be read against: a metric cannot be shown to rank the sources
better than the ground truth reproduces its own ranking (see the README for the caveat that a
noise-free metric's expected tau with one noisy replicate can exceed the inter-replicate tau).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..results.text import aligned
from .correlation import MissingValueWarning, correlation, paired_values
from .table import SourceTargetTable, align

#: The two measures reported: the paper's weighted tau and plain Kendall tau-b.
REPLICATE_MEASURES: tuple[str, ...] = ("weighted_tau", "kendall_tau")


@dataclass(frozen=True)
class ReplicateAgreement:
    """Tau between replicate ground truths per target, and each metric's tau against them.

    Attributes
    ----------
    names : replicate names (e.g. ``seed42``), in input order.
    targets : the targets, in evaluation order.
    pairs : the replicate index pairs ``(a, b)`` with ``a < b``.
    between : measure -> array ``[target, pair]`` of tau between replicates ``a`` and ``b``.
    methods : metric names (empty when no scores were given).
    against : measure -> array ``[target, method, replicate]`` of each metric's tau against
        each replicate.
    """

    names: tuple[str, ...]
    targets: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]
    between: dict[str, NDArray[np.float64]]
    methods: tuple[str, ...]
    against: dict[str, NDArray[np.float64]]

    def ceiling(self, measure: str = "weighted_tau") -> NDArray[np.float64]:
        """Per target, the mean over replicate pairs of ``measure`` (NaN pairs left out)."""
        return _finite_mean(self.between[measure], axis=1)

    def metric_mean(self, measure: str = "weighted_tau") -> NDArray[np.float64]:
        """``[target, method]``: each metric's ``measure`` averaged over the replicates."""
        return _finite_mean(self.against[measure], axis=2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready block (NaN -> ``None``)."""
        out: dict[str, Any] = {"names": list(self.names), "n_replicates": len(self.names),
                               "pairs": [[self.names[a], self.names[b]] for a, b in self.pairs],
                               "targets": {}, "methods": {}}
        for i, t in enumerate(self.targets):
            out["targets"][t] = {m: _summary(self.between[m][i]) for m in REPLICATE_MEASURES}
        for j, name in enumerate(self.methods):
            out["methods"][name] = {
                t: {m: {"per_replicate": [_num(v) for v in self.against[m][i, j]],
                        "mean": _num(self.metric_mean(m)[i, j])} for m in REPLICATE_MEASURES}
                for i, t in enumerate(self.targets)}
        return out


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _finite_mean(a: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    finite = np.isfinite(a)
    n = finite.sum(axis=axis)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _summary(values: NDArray[np.float64]) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    return {"per_pair": [_num(v) for v in values],
            "mean": _num(float(finite.mean())) if finite.size else None,
            "min": _num(float(finite.min())) if finite.size else None,
            "max": _num(float(finite.max())) if finite.size else None,
            "n_pairs": int(finite.size)}


def _check_replicates(replicates: Mapping[str, SourceTargetTable]) -> tuple[str, ...]:
    names = tuple(replicates)
    if len(names) < 2:
        raise InputError(f"replicate agreement needs at least two replicate ground truths; got "
                         f"{len(names)} (write them with `finetune summarize --replicates DIR`)")
    for n in names:
        if not isinstance(replicates[n], SourceTargetTable):
            raise InputError(f"replicate {n!r}: expected a SourceTargetTable; got "
                             f"{type(replicates[n]).__name__}")
    return names


def _tau(x_table: SourceTargetTable, y_table: SourceTargetTable, target: str,
         measure: str) -> float:
    x, y, _ = paired_values(x_table, y_table, target)
    return correlation(x, y, measure)  # type: ignore[arg-type]


def replicate_agreement(replicates: Mapping[str, SourceTargetTable],
                        scores: Mapping[str, SourceTargetTable] | None = None, *,
                        targets: Sequence[str] | None = None) -> ReplicateAgreement:
    """Tau between replicate ground truths, and each metric's tau against every replicate.

    Per target (its own source row dropped, as in :func:`~.report.evaluate`), for every pair of
    replicates the weighted tau (``scipy.stats.weightedtau`` defaults, the paper's measure)
    and Kendall tau-b between them; for every metric its tau against each replicate. A missing
    cell makes that value NaN (left out of the means).

    Parameters
    ----------
    replicates : mapping of name to SourceTargetTable
        At least two replicate ground truths with the same sources (and at least the targets).
    scores : mapping of name to SourceTargetTable, optional
        Metric scores (higher = better), with the replicates' sources.
    targets : sequence of str, optional
        Targets to report (default: the first replicate's).

    Returns
    -------
    ReplicateAgreement

    Raises
    ------
    ValueError
        Fewer than two replicates, or tables whose sources or targets do not match.
    """
    names = _check_replicates(replicates)
    first = replicates[names[0]]
    tgts = tuple(targets) if targets is not None else first.targets
    reps = [align(replicates[n].select(None, tgts), first)[0] for n in names]
    pairs = tuple(itertools.combinations(range(len(names)), 2))
    methods = tuple(scores or {})
    aligned = [align(scores[m].select(None, tgts), first)[0] for m in methods]  # type: ignore[index]
    between = {m: np.full((len(tgts), len(pairs)), np.nan) for m in REPLICATE_MEASURES}
    against = {m: np.full((len(tgts), len(methods), len(names)), np.nan)
               for m in REPLICATE_MEASURES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValueWarning)
        for i, t in enumerate(tgts):
            for measure in REPLICATE_MEASURES:
                for p, (a, b) in enumerate(pairs):
                    between[measure][i, p] = _tau(reps[a], reps[b], t, measure)
                for j, table in enumerate(aligned):
                    for r, rep in enumerate(reps):
                        against[measure][i, j, r] = _tau(table, rep, t, measure)
    return ReplicateAgreement(names, tgts, pairs, between, methods, against)


def _cell(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def format_agreement(agreement: ReplicateAgreement, truth_tau: Mapping[str, NDArray[np.float64]]
                     ) -> str:
    """Text block: per target the replicate tau (mean over pairs) and each metric's tau.

    ``truth_tau`` maps each measure to the ``[target, method]`` taus against the evaluation's
    ground truth, shown beside the replicate agreement.
    """
    k = len(agreement.names)
    lines = [f"Ground-truth replicates ({k}: {', '.join(agreement.names)}): tau between "
             f"replicate ground truths (mean over {len(agreement.pairs)} pair"
             f"{'s' if len(agreement.pairs) != 1 else ''}; min..max) and each metric's tau "
             "against --truth, then its mean tau against the replicates"]
    for measure, title in (("weighted_tau", "weighted tau"), ("kendall_tau", "Kendall tau-b")):
        ceiling = agreement.ceiling(measure)
        means = agreement.metric_mean(measure)
        rows = [["Target", "replicates", *agreement.methods]]
        for i, t in enumerate(agreement.targets):
            vals = agreement.between[measure][i]
            fin = vals[np.isfinite(vals)]
            span = f" ({fin.min():.2f}..{fin.max():.2f})" if fin.size > 1 else ""
            rows.append([t, ("-" if math.isnan(ceiling[i]) else f"{ceiling[i]:.2f}") + span,
                         *(_cell(v) for v in truth_tau[measure][i])])
            rows.append([f"  mean over the {k} replicates", "", *(_cell(v) for v in means[i])])
        lines.append(f"{title}:")
        lines += aligned(rows, right=True, full_rule=True)
    return "\n".join(lines)
