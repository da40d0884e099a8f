"""Fold-to-fold spread of the ranking (``rank --folds``).

The paper scores every source on fold 1 of five subsets ("folds") of the official train split
(REFERENCE section 1: ``C*100`` images drawn per fold with NumPy's legacy RNG seeded 24; see
:mod:`gradnca_onnx.data.folds`). ``rank --folds`` scores the zoo on each of the folds and
reports, per model, the mean, SD, minimum and maximum of S, S_LP, S_FU, every baseline metric
and the rank over the folds, and for the zoo the Kendall tau between every pair of fold
rankings. The folds overlap (each is drawn from the whole train split), so their spread is a
lower bound on the spread between independent samples of the same size.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.folds import PAPER_N_FOLDS
from ..errors import InputError
from .cache import FeatureCache
from .runtime import RuntimeConfig
from ..results import ZooRanking
from .scoring import Progress, rank_zoo

#: The per-model values summarised over the folds (``metrics`` entries are added by name).
TERMS = ("score", "lp", "fu", "rank")


def load_folds(path: str | os.PathLike, n_folds: int = PAPER_N_FOLDS) -> list[Any]:
    """The train subsets of paper folds 1..``n_folds`` of a MedMNIST or fold npz."""
    from ..data.dataset import load_target

    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise InputError(f"--folds needs at least two folds; got {n_folds!r}")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"--folds: {p} is a folder; the paper's folds exist for MedMNIST npz "
                         "files (or fold npz files) only: give one with --target")
    return [load_target(p, f"fold{i}", n_folds=n_folds) for i in range(1, n_folds + 1)]


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


def rank_folds(zoo_dir: str | Path, target_path: str | os.PathLike, *,
               n_folds: int = PAPER_N_FOLDS, scenario: str = "dataset",
               runtime: RuntimeConfig | None = None, cache: FeatureCache | None = None,
               resize: bool = True, verify: bool = True, models: Sequence[str] | None = None,
               metrics: str | Sequence[str] | None = None, faithful: bool = False,
               progress: Progress | None = None, lp_jitters: int = 0) -> ZooRanking:
    """Rank the zoo on each paper fold of a target and summarise the fold-to-fold spread.

    Returns fold 1's :class:`ZooRanking` (the paper's) with ``folds`` blocks: per model the
    values over the folds with mean, SD, min and max of S, S_LP, S_FU, the rank and every
    metric; for the zoo the Kendall tau between fold rankings. Schema ``gradnca-onnx/rank/2``.
    Other parameters as :func:`~gradnca_onnx.engine.rank_zoo`.
    """
    targets = load_folds(target_path, n_folds)
    rankings = [rank_zoo(zoo_dir, t, scenario=scenario, runtime=runtime, cache=cache,
                         resize=resize, verify=verify, models=models, metrics=metrics,
                         faithful=faithful, progress=_per_fold(progress, i),
                         lp_jitters=lp_jitters)
                for i, t in enumerate(targets, start=1)]
    return summarise_folds(rankings)


def _per_fold(progress: Progress | None, fold: int) -> Progress | None:
    """The progress callback with the fold in the model's label."""
    if progress is None:
        return None
    return lambda model, stage, done, total: progress(f"{model} (fold {fold})", stage, done,
                                                      total)
