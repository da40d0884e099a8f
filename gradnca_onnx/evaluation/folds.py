"""The statistics of ``rank --folds``: the fold-to-fold spread of every score and rank.

Per model: the mean, SD, minimum and maximum over the folds of S, S_LP, S_FU, every baseline
metric and the rank; for the zoo: the Kendall tau between every pair of fold rankings. The
paper's folds overlap (each is drawn from the whole train split), so their spread is a lower
bound on the spread between independent samples of the same size. Scoring the folds is the
engine's (:mod:`gradnca_onnx.engine.folds`).
"""

from __future__ import annotations

import itertools
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..results import ZooRanking

#: The per-model values summarised over the folds (``metrics`` entries are added by name).
TERMS = ("score", "lp", "fu", "rank")


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"values", "mean", "sd", "min", "max"}`` over the folds that have a value.

    ``sd`` is the sample SD (ddof 1); it and every statistic are ``None`` when too few folds
    have a value, never NaN.
    """
    have = np.array([v for v in values if v is not None], dtype=np.float64)
    out: dict[str, Any] = {"values": list(values), "mean": None, "sd": None, "min": None,
                           "max": None}
    if have.size:
        out.update(mean=float(have.mean()), min=float(have.min()), max=float(have.max()))
    if have.size >= 2:
        out["sd"] = float(have.std(ddof=1))
    return out


def kendall_between_folds(rankings: Sequence[ZooRanking], term: str = "score"
                          ) -> dict[str, Any]:
    """Kendall tau-b between the models' ``term`` on every pair of folds.

    Only models with the term on both folds count; a pair with fewer than two such models or a
    constant term has tau ``None``. Returns ``{"pairs": [{"folds": [i, j], "tau"}], "mean",
    "sd", "min", "max"}`` (folds numbered from 1).
    """
    from scipy.stats import kendalltau

    by_fold = [{m.name: getattr(m, term) for m in r.models if getattr(m, term) is not None}
               for r in rankings]
    pairs = []
    for i, j in itertools.combinations(range(len(rankings)), 2):
        common = sorted(set(by_fold[i]) & set(by_fold[j]))
        tau = None
        if len(common) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = kendalltau([by_fold[i][c] for c in common], [by_fold[j][c] for c in common])[0]
            tau = float(t) if np.isfinite(t) else None
        pairs.append({"folds": [i + 1, j + 1], "tau": tau})
    stats = spread([p["tau"] for p in pairs])
    del stats["values"]
    return {"pairs": pairs, **stats}


def summarise_folds(rankings: Sequence[ZooRanking]) -> ZooRanking:
    """Fold 1's ranking with per-model ``folds`` blocks and the zoo's fold block attached."""
    first = rankings[0]
    by_fold = [{m.name: m for m in r.models} for r in rankings]
    for m in first.models:
        rows = [f.get(m.name) for f in by_fold]
        block: dict[str, Any] = {}
        for term in TERMS:
            block[term] = spread([None if r is None or not r.ok else getattr(r, term)
                                  for r in rows])
        block["metrics"] = {name: spread([None if r is None else r.metrics.get(name)
                                          for r in rows]) for name in first.metrics}
        m.folds = block
    first.folds = {
        "n_folds": len(rankings), "split": "train",
        "rule": "the paper's folds (REFERENCE section 1): C*100 train images per fold, "
                "np.random.seed(24), folds drawn in turn; the table's ranking is fold 1's",
        "n_samples": [r.n_samples for r in rankings],
        "top": [next((m.name for m in r.models if m.rank == 1), None) for r in rankings],
        "kendall_tau": {term: kendall_between_folds(rankings, term)
                        for term in ("score", "lp", "fu")},
    }
    return first
