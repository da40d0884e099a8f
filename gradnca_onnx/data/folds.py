"""The paper's scoring / fine-tuning subsets ("folds") of a MedMNIST target (REFERENCE 1).

The rule, exactly as the released code draws them: seed NumPy's *global* RNG with 24; for each
fold in turn draw ``C*100`` train indices with ``np.random.choice(n_train, C*100,
replace=False)``, then, if the val split has more than ``C*25`` images, ``C*25`` val indices the
same way, else keep the whole val split. Not stratified: class proportions follow the data. The
same calls in the same order give the same indices, so this module uses the legacy global RNG
on purpose, and puts the caller's global RNG state back afterwards.

``stratified=True`` is a documented deviation: per-class counts proportional to the class
frequencies (largest remainders), drawn class by class from the same seeded global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError

PAPER_SEED = 24
PAPER_N_FOLDS = 5
PAPER_TRAIN_PER_CLASS = 100
PAPER_VAL_PER_CLASS = 25


@dataclass(frozen=True)
class Fold:
    """Indices of one fold into the official train and val splits (in draw order)."""

    train: NDArray[np.int64]
    val: NDArray[np.int64]


def _n_classes(train_labels: NDArray, val_labels: NDArray) -> int:
    if train_labels.ndim == 2 and train_labels.shape[1] > 1:
        return int(train_labels.shape[1])  # multi-label: C = number of labels
    both = np.concatenate([train_labels.reshape(-1), val_labels.reshape(-1)])
    return int(both.max()) + 1


def _stratified_draw(labels: NDArray[np.int64], k: int, n_classes: int) -> NDArray[np.int64]:
    counts = np.bincount(labels, minlength=n_classes)
    quota = counts * (k / labels.size)
    take = np.floor(quota).astype(np.int64)
    # Largest remainders get the leftover draws (ties: lower class first, deterministic).
    order = np.lexsort((np.arange(n_classes), -(quota - take)))
    take[order[: k - int(take.sum())]] += 1
    chunks = [np.random.choice(np.flatnonzero(labels == c), take[c], replace=False)
              for c in range(n_classes) if take[c] > 0]
    return np.random.permutation(np.concatenate(chunks)).astype(np.int64)


def make_paper_folds(train_labels: ArrayLike, val_labels: ArrayLike, *,
                     n_classes: int | None = None, n_folds: int = PAPER_N_FOLDS,
                     train_per_class: int = PAPER_TRAIN_PER_CLASS,
                     val_per_class: int = PAPER_VAL_PER_CLASS, seed: int = PAPER_SEED,
                     stratified: bool = False) -> list[Fold]:
    """Draw the paper's fold subsets of the official train and val splits.

    Parameters
    ----------
    train_labels, val_labels : array-like, (N,) or (N, 1) (or (N, L) multi-label)
        Labels of the official splits; only their lengths matter to the paper's rule (and the
        class count C, taken as max label + 1, or L).
    n_classes : int, optional
        C; default from the labels as above.
    n_folds : int
        Folds drawn in turn from one RNG stream (the paper: 5; fold 1 is used).
    train_per_class, val_per_class : int
        Draw ``C*train_per_class`` train and ``C*val_per_class`` val images (paper: 100, 25).
    seed : int
        Seed of NumPy's global RNG (paper: 24). The caller's global RNG state is restored.
    stratified : bool
        Deviation from the paper: exact class proportions per fold (single-label only).

    Returns
    -------
    list of Fold
        ``folds[0]`` is fold 1.
    """
    ytr = np.asarray(train_labels)
    yva = np.asarray(val_labels)
    if ytr.ndim == 2 and ytr.shape[1] == 1:
        ytr = ytr[:, 0]
    if yva.ndim == 2 and yva.shape[1] == 1:
        yva = yva[:, 0]
    c = _n_classes(ytr, yva) if n_classes is None else int(n_classes)
    n_train, n_val = ytr.shape[0], yva.shape[0]
    k_train, k_val = c * int(train_per_class), c * int(val_per_class)
    if n_folds < 1:
        raise InputError(f"n_folds must be >= 1; got {n_folds}")
    if k_train > n_train:
        raise InputError(
            f"cannot draw {c}*{train_per_class} = {k_train} train images from a train split of "
            f"{n_train}: the paper's folds need {train_per_class} train images per class; use "
            "the full official splits instead (rank --split train, finetune --fold 0; split= "
            "or fold=None in Python)"
        )
    if stratified and ytr.ndim != 1:
        raise InputError("stratified folds need single-label targets")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        folds = []
        for _ in range(n_folds):
            if stratified:
                tr = _stratified_draw(ytr.astype(np.int64), k_train, c)
            else:
                tr = np.random.choice(n_train, k_train, replace=False)
            if n_val > k_val:
                va = (_stratified_draw(yva.astype(np.int64), k_val, c) if stratified
                      else np.random.choice(n_val, k_val, replace=False))
            else:
                va = np.arange(n_val)
            folds.append(Fold(np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64)))
    finally:
        np.random.set_state(state)
    return folds


def fold_arrays(splits: Mapping[str, NDArray], folds: list[Fold]) -> dict[str, NDArray]:
    """The fold npz content: ``train_imgs_fold<i>``, ``train_labels_fold<i>``, ``val_imgs_fold<i>``,
    ``val_labels_fold<i>`` for i = 1.., cut from MedMNIST-keyed arrays (dtypes and layout kept)."""
    out: dict[str, NDArray] = {}
    for i, f in enumerate(folds, start=1):
        out[f"train_imgs_fold{i}"] = splits["train_images"][f.train]
        out[f"train_labels_fold{i}"] = splits["train_labels"][f.train]
        out[f"val_imgs_fold{i}"] = splits["val_images"][f.val]
        out[f"val_labels_fold{i}"] = splits["val_labels"][f.val]
    return out
