"""The one entry point that loads any supported target: it dispatches on what a path holds (an
official MedMNIST npz, a paper fold npz, a folder of class sub-folders, or a label table) to
the readers.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import InputError
from .dataset import SPLITS, TargetData
from .dataset import DATASET_ORDER, FOLDER_ORDER, class_interleaved_order
from .folders import load_files, load_image_folder
from .medmnist import load_npz_target
from .table import TABLE_SUFFIXES, read_label_table

PathLike = Union[str, "os.PathLike[str]"]

_FOLD_SPLIT = re.compile(r"^fold([1-9][0-9]*)(?:-(train|val))?$")


def parse_split(split: str | None, fold: int | None) -> tuple[str | None, int | None]:
    """Normalise ``(split, fold)``: ``"fold3"`` (or ``"fold3-train"``) means ``("train", 3)``,
    ``"fold3-val"`` means ``("val", 3)``."""
    if split is not None:
        m = _FOLD_SPLIT.match(split)
        if m:
            if fold is not None and fold != int(m.group(1)):
                raise InputError(f"split {split!r} and fold={fold} disagree; give one of them")
            return m.group(2) or "train", int(m.group(1))
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; use train, val, test, all or "
                             "fold1..fold5 (--split on the command line, split= in Python)")
    if fold is not None and (not isinstance(fold, (int, np.integer)) or fold < 1):
        raise InputError(f"fold must be a positive integer (1 = the paper's fold); got {fold!r}")
    return split, fold


def load_target(path: PathLike, split: str | None = None, *, fold: int | None = None,
                name: str | None = None, dedupe: bool = False,
                size: int | tuple[int, int] | None = None, filter: str = "bilinear",
                n_folds: int = 5, stratified: bool = False,
                columns: dict[str, str | None] | None = None) -> TargetData:
    """Load one split of a target dataset from a file or folder.

    Parameters
    ----------
    path : str or path-like
        * an official MedMNIST npz (any size variant ``<flag>[_64|_128|_224].npz``);
        * a paper fold npz (keys ``train_imgs_fold<i>``, ``train_labels_fold<i>``,
          ``val_imgs_fold<i>``, ``val_labels_fold<i>``);
        * a folder with one sub-folder of images per class (sorted names = class codes), or
          with ``train``/``val``/``test`` sub-folders of that layout. Its images come in
          :data:`FOLDER_ORDER` (:func:`class_interleaved_order`); npz files keep their order.
          16-bit, float and boolean images are mapped to uint8 (:mod:`.intensity`).
    split : {"train", "val", "test", "all", "fold1", ..., "fold5"}, optional
        Default: ``train`` for npz files, ``all`` for a class folder. ``"fold<i>"`` is short for
        ``split="train", fold=i`` and ``"fold<i>-val"`` for ``split="val", fold=i`` (the
        ``split`` names that fold subsets carry).
    fold : int, optional
        Take the train or val subset of paper fold ``fold`` (1 = the one the paper scores and
        fine-tunes on). From an official MedMNIST npz the folds are drawn on the fly with the
        paper's rule (:func:`~gradnca_onnx.data.folds.make_paper_folds`); the test split is
        always the full official test set. A fold file has no test split. For a fold file
        ``fold`` defaults to 1.
    name : str, optional
        Dataset name (default: the MedMNIST flag from the file name, or the folder name).
    dedupe : bool
        Folders only: drop byte-identical duplicate files (keep the first in sorted order).
    size : int or (height, width), optional
        Folders only: resize every image to ``size`` x ``size`` (or height x width) while
        loading (needed when the images differ in size; saves memory for large ones).
    filter : str
        Pillow filter for ``size`` (default ``bilinear``).
    n_folds, stratified : int, bool
        Passed to :func:`~gradnca_onnx.data.folds.make_paper_folds` when folds are drawn from
        an official npz.
    columns : dict, optional
        Label tables only: the column of each role, ``{"path": ..., "label": ...,
        "group": ..., "split": ...}`` (``label`` may name several 0/1 columns, comma
        separated); roles left out are found by header name
        (:func:`~gradnca_onnx.data.table.read_label_table`).

    Returns
    -------
    TargetData
    """
    split, fold = parse_split(split, fold)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"target {str(p)!r} does not exist; give a MedMNIST npz, a fold npz "
                                "or a folder of class sub-folders")
    if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
        if fold is not None:
            raise InputError(f"{p}: the paper's folds exist for MedMNIST npz files only, not for "
                             "a label table; give a split of the table (its split column) "
                             "instead")
        return load_table_target(p, split, name=name, size=size, filter=filter,
                                 columns=columns)
    if columns:
        raise InputError(f"{p}: the column options (--path-column, --label-column, "
                         "--group-column, --split-column) apply to label tables (.csv, .tsv) "
                         "only")
    if p.is_dir():
        if fold is not None:
            raise InputError(f"{p}: the paper's folds exist for MedMNIST npz files only, not for "
                             "an image folder; give a split of the folder instead (--split "
                             "all|train|val|test on the command line, split= in Python)")
        return load_image_folder(p, split="all" if split is None else split, name=name,
                                 dedupe=dedupe, size=size, filter=filter)
    if dedupe or size is not None:
        raise InputError(f"{p}: resizing while loading (--size on the command line, size= in "
                         "Python) and dedupe apply to image folders only; an npz target's images "
                         "share one size already (rank resizes them to each model's input): "
                         "leave the size out")
    return load_npz_target(p, "train" if split is None else split, fold=fold, name=name,
                           n_folds=n_folds, stratified=stratified)


def load_table_target(path: PathLike, split: str | None = None, *, name: str | None = None,
                      size: int | tuple[int, int] | None = None, filter: str = "bilinear",
                      columns: dict[str, str | None] | None = None) -> TargetData:
    """A target from a label table (:func:`~gradnca_onnx.data.table.read_label_table`): its
    files (images, DICOM or NIfTI) with their labels, the rows of ``split`` (default all),
    patients kept as the target's groups.

    A table is often sorted by class, so the images of a single-label target come in the
    class-interleaved order of image folders (:data:`~.dataset.FOLDER_ORDER`): S_FU's batches
    of consecutive images then hold every class.
    """
    p = Path(path)
    cols = dict(columns or {})
    unknown = set(cols) - {"path", "label", "group", "split"}
    if unknown:
        raise InputError(f"columns: unknown role(s) {sorted(unknown)}; use path, label, group, "
                         "split")
    label = cols.get("label")
    table = read_label_table(
        p, path_column=cols.get("path"),
        label_columns=None if label is None else [c.strip() for c in label.split(",")],
        group_column=cols.get("group"), split_column=cols.get("split"))
    rows = np.arange(len(table))
    split = "all" if split is None else split
    if split != "all":
        if table.splits is None:
            raise InputError(f"{p}: split {split!r} asked for, but the table has no split column "
                             "(name it with --split-column, or leave the split out)")
        rows = np.array([i for i, s in enumerate(table.splits) if s == split], dtype=np.int64)
        if rows.size == 0:
            raise InputError(f"{p}: no row of split {split!r} (the split column has "
                             f"{', '.join(sorted(set(table.splits)))})")
    order = DATASET_ORDER
    if table.labels.ndim == 1:
        rows = rows[class_interleaved_order(table.labels[rows])]
        order = FOLDER_ORDER
    labels = table.labels[rows]
    target = load_files([table.paths[i] for i in rows], labels, table.class_names,
                        name=name or p.stem, source=str(p), split=split, order=order,
                        size=size, filter=filter)
    groups = None if table.groups is None else tuple(table.groups[i] for i in rows)
    return replace(target, notes=(*table.notes, *target.notes), groups=groups)
