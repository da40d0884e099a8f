"""Scoring the zoo on each of the paper's folds (``rank --folds``).

The paper scores every source on fold 1 of five subsets ("folds") of the official train split
(REFERENCE section 1: ``C*100`` images drawn per fold with NumPy's legacy RNG seeded 24; see
:mod:`gradnca_onnx.data.folds`). ``rank --folds`` ranks the zoo on each of the folds; the
spread over them (per model and for the zoo) is computed by
:mod:`gradnca_onnx.evaluation.folds`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.folds import PAPER_N_FOLDS
from ..errors import InputError
from ..results import ZooRanking
from .options import Progress, RankOptions, callbacks_propagate
from .ranking import rank_each


def load_folds(path: str | os.PathLike, n_folds: int = PAPER_N_FOLDS) -> list[Any]:
    """The train subsets of paper folds 1..``n_folds`` of a MedMNIST or fold npz."""
    from ..data.load import load_target

    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise InputError(f"--folds needs at least two folds; got {n_folds!r}")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"--folds: {p} is a folder; the paper's folds exist for MedMNIST npz "
                         "files (or fold npz files) only: give one with --target")
    return [load_target(p, f"fold{i}", n_folds=n_folds) for i in range(1, n_folds + 1)]


@callbacks_propagate
def rank_folds(zoo_dir: str | Path, target_path: str | os.PathLike,
               options: RankOptions | None = None, *, n_folds: int = PAPER_N_FOLDS,
               **settings: Any) -> ZooRanking:
    """Rank the zoo on each paper fold of a target and summarise the fold-to-fold spread.

    Returns fold 1's :class:`~gradnca_onnx.results.ZooRanking` (the paper's) with ``folds``
    blocks: per model the values over the folds with mean, SD, min and max of S, S_LP, S_FU,
    the rank and every metric; for the zoo the Kendall tau between fold rankings. Schema
    ``gradnca-onnx/rank/2``. ``options`` and ``settings`` as
    :func:`~gradnca_onnx.engine.rank_zoo`.
    """
    # Imported here: the evaluation package loads scipy.stats (over a second).
    from ..evaluation.folds import summarise_folds

    options = RankOptions.of(options, **settings)
    targets = load_folds(target_path, n_folds)
    progress = [_per_fold(options.progress, i) for i in range(1, len(targets) + 1)]
    return summarise_folds(rank_each(zoo_dir, targets, options, progress=progress))


def _per_fold(progress: Progress | None, fold: int) -> Progress | None:
    """The progress callback with the fold in the model's label."""
    if progress is None:
        return None
    return lambda model, stage, done, total: progress(f"{model} (fold {fold})", stage, done,
                                                      total)
