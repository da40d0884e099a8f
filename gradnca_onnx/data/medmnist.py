"""MedMNIST npz files (official keys, every size variant) and the paper's fold npz files."""

from __future__ import annotations

import os
import re
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from numpy.typing import NDArray

from .dataset import TargetData, check_target_labels
from .folds import make_paper_folds
from .preprocess import as_nhwc

PathLike = Union[str, "os.PathLike[str]"]

MEDMNIST_SPLITS = ("train", "val", "test")
#: Keys of an official MedMNIST npz.
MEDMNIST_KEYS = tuple(f"{s}_{k}" for s in MEDMNIST_SPLITS for k in ("images", "labels"))
#: Image sizes of MedMNIST (28) and MedMNIST+ (``<flag>_64.npz`` etc.).
MEDMNIST_SIZES = (28, 64, 128, 224)
_FOLD_KEY = re.compile(r"^(train|val)_(imgs|labels)_fold([0-9]+)$")
_SIZE_SUFFIX = re.compile(r"_(?:%s)$" % "|".join(str(s) for s in MEDMNIST_SIZES))
#: What NumPy raises for a damaged npz. A mangled ``.npy`` header inside the archive fails in
#: NumPy's Python-2 header fallback with ``tokenize.TokenError`` or ``SyntaxError`` (found by
#: fuzzing, issue 15).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, SyntaxError,
                tokenize.TokenError, KeyError, NotImplementedError)


def _why(exc: BaseException) -> str:
    """What is wrong with an npz that NumPy cannot read, without NumPy's advice to unpickle."""
    text = str(exc)
    if "pickle" in text:
        return ("it holds pickled (object) arrays, which gradnca-onnx never loads (unpickling "
                "can run code); store images and labels as plain numeric arrays")
    return f"{type(exc).__name__}: {' '.join(text.split())[:200]}"


def medmnist_flag(path: PathLike) -> str:
    """The dataset name of a MedMNIST file: ``breastmnist_224.npz`` -> ``breastmnist``."""
    stem = Path(path).name
    stem = stem[:-4] if stem.lower().endswith(".npz") else Path(stem).stem
    return _SIZE_SUFFIX.sub("", stem)


def npz_keys(path: PathLike) -> list[str]:
    """Array names in an npz file, without reading the arrays."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ValueError(f"{p}: cannot open it ({exc})") from None
    if magic[:2] != b"PK":
        # np.load would try the .npy or pickle formats and report something confusing.
        what = "a .npy array" if magic[:4] == b"\x93NUM" else "not an npz (zip) archive"
        raise ValueError(f"{p}: is {what}; give a MedMNIST npz, a paper fold npz or a folder of "
                         "class sub-folders")
    try:
        f = np.load(p, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise ValueError(
            f"{p}: cannot read it as an npz archive ({_why(exc)}); the file is corrupt, "
            "truncated or not an npz: download or write it again"
        ) from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: is a .npy array, not an .npz archive; give a MedMNIST or fold npz")
    with f:
        return list(f.files)


def read_npz(path: PathLike, keys: Iterable[str]) -> dict[str, NDArray]:
    """Read the named arrays of an npz file.

    A corrupt or truncated file raises one ``ValueError`` naming the file (zip, zlib, OS and
    NumPy errors are caught: a truncated member often only fails when it is read); a missing key
    raises one naming the key and the keys the file has.
    """
    p = Path(path)
    wanted = list(keys)
    present = npz_keys(p)
    missing = [k for k in wanted if k not in present]
    if missing:
        raise ValueError(f"{p}: missing key(s) {missing}; the file has {present}")
    out: dict[str, NDArray] = {}
    try:
        with np.load(p, allow_pickle=False) as f:
            for k in wanted:
                out[k] = f[k]
    except _READ_ERRORS as exc:
        raise ValueError(
            f"{p}: array {k!r} cannot be read ({_why(exc)}); the file is corrupt or "
            "truncated: download or write it again"
        ) from None
    return out


def npz_kind(keys: Iterable[str]) -> str:
    """``"medmnist"`` (official keys), ``"folds"`` (paper fold keys) or ``"unknown"``."""
    keys = set(keys)
    if any(k in keys for k in MEDMNIST_KEYS):
        return "medmnist"
    if any(_FOLD_KEY.match(k) for k in keys):
        return "folds"
    return "unknown"


def fold_numbers(keys: Iterable[str]) -> list[int]:
    """Fold numbers present in a fold npz."""
    return sorted({int(m.group(3)) for k in keys if (m := _FOLD_KEY.match(k))})


def _images(x: NDArray, where: str) -> NDArray[np.uint8]:
    if x.ndim == 4 and x.shape[-1] not in (1, 3):
        if x.shape[-1] in (2, 4):
            raise ValueError(f"{where}: images have {x.shape[-1]} channels (shape {x.shape}); only "
                             "grey (1) or RGB (3) images are supported: drop the alpha channel")
        raise ValueError(f"{where}: images have shape {x.shape}; 3-D volumes (MedMNIST3D) are not "
                         "supported, only 2-D images (N, H, W[, 3])")
    return as_nhwc(x, name=where)


def _n_classes(labels: list[NDArray], where: str = "labels") -> int:
    """Classes coded by the label arrays of all splits (validated first: a string, NaN or huge
    label is one clear error, not a crash or a huge allocation)."""
    checked = [check_target_labels(a, int(np.shape(a)[0]) if np.ndim(a) else -1, where=where,
                                   min_classes=1) if np.size(a) else np.asarray(a)
               for a in labels]
    y = checked[0]
    if y.ndim == 2 and y.shape[1] > 1:
        return int(y.shape[1])
    sizes = [int(np.max(a)) for a in checked if a.size]
    if not sizes:
        raise ValueError(f"{where}: no labels; the file holds no images")
    return max(sizes) + 1


def _target(images: NDArray, labels: NDArray, *, where: str, name: str, n_classes: int,
            source: str, split: str) -> TargetData:
    x = _images(images, f"{where} images")
    y = check_target_labels(labels, x.shape[0], where=f"{where} labels")
    # These arrays are ours alone (fresh from the file): read-only, TargetData keeps them uncopied.
    x.setflags(write=False)
    y.setflags(write=False)
    return TargetData(x, y, name, n_classes, source, split)


def load_npz_target(path: PathLike, split: str = "train", *, fold: int | None = None,
                    name: str | None = None, n_folds: int = 5,
                    stratified: bool = False) -> TargetData:
    """Load one split of a MedMNIST npz or a paper fold npz (see :func:`~.dataset.load_target`)."""
    p = Path(path)
    keys = npz_keys(p)
    kind = npz_kind(keys)
    name = medmnist_flag(p) if name is None else name
    if kind == "medmnist":
        return _load_medmnist(p, keys, split, fold=fold, name=name, n_folds=n_folds,
                              stratified=stratified)
    if kind == "folds":
        return _load_fold_file(p, keys, split, fold=1 if fold is None else fold, name=name)
    raise ValueError(
        f"{p}: neither a MedMNIST npz (keys {list(MEDMNIST_KEYS)}) nor a paper fold npz (keys "
        f"train_imgs_fold<i>, train_labels_fold<i>, val_imgs_fold<i>, val_labels_fold<i>); it has "
        f"keys {keys[:8]}"
    )


def _load_medmnist(p: Path, keys: list[str], split: str, *, fold: int | None, name: str,
                   n_folds: int, stratified: bool) -> TargetData:
    label_keys = [f"{s}_labels" for s in MEDMNIST_SPLITS]
    labels = read_npz(p, label_keys)
    n_classes = _n_classes([labels[k] for k in label_keys], f"{p} labels")
    if fold is not None:
        if split == "test":
            split_name = "test"  # the paper tests on the full official test set
        elif split in ("train", "val"):
            if fold > n_folds:
                raise ValueError(f"{p}: fold {fold} asked but n_folds is {n_folds}")
            folds = make_paper_folds(labels["train_labels"], labels["val_labels"],
                                     n_classes=n_classes, n_folds=n_folds, stratified=stratified)
            idx = getattr(folds[fold - 1], split)
            arr = read_npz(p, [f"{split}_images"])[f"{split}_images"]
            where = f"{p} fold {fold} {split}"
            return _target(arr[idx], labels[f"{split}_labels"][idx], where=where, name=name,
                           n_classes=n_classes, source=str(p), split=f"fold{fold}-{split}")
        else:
            raise ValueError(f"{p}: split 'all' cannot be combined with a fold")
    else:
        split_name = split
    if split_name == "all":
        arrays = read_npz(p, [f"{s}_images" for s in MEDMNIST_SPLITS])
        parts = [_images(arrays[f"{s}_images"], f"{p} {s}_images") for s in MEDMNIST_SPLITS]
        if len({a.shape[1:] for a in parts}) != 1:
            raise ValueError(f"{p}: the splits have different image shapes; load them one by one")
        images = np.concatenate(parts)
        y = np.concatenate([labels[f"{s}_labels"] for s in MEDMNIST_SPLITS])
        return _target(images, y, where=str(p), name=name, n_classes=n_classes, source=str(p),
                       split="all")
    arr = read_npz(p, [f"{split_name}_images"])[f"{split_name}_images"]
    return _target(arr, labels[f"{split_name}_labels"], where=f"{p} {split_name}", name=name,
                   n_classes=n_classes, source=str(p), split=split_name)


def _load_fold_file(p: Path, keys: list[str], split: str, *, fold: int, name: str) -> TargetData:
    if split not in ("train", "val"):
        raise ValueError(
            f"{p}: a paper fold file holds train and val subsets only, no {split!r} split; the "
            "test set is the official MedMNIST test split (load it from the MedMNIST npz)"
        )
    present = fold_numbers(keys)
    if fold not in present:
        raise ValueError(f"{p}: no fold {fold}; the file has folds {present}")
    wanted = [f"train_labels_fold{fold}", f"val_labels_fold{fold}", f"{split}_imgs_fold{fold}"]
    arrays = read_npz(p, wanted)
    n_classes = _n_classes([arrays[f"train_labels_fold{fold}"], arrays[f"val_labels_fold{fold}"]],
                           f"{p} fold {fold} labels")
    return _target(arrays[f"{split}_imgs_fold{fold}"], arrays[f"{split}_labels_fold{fold}"],
                   where=f"{p} fold {fold} {split}", name=name, n_classes=n_classes,
                   source=str(p), split=f"fold{fold}-{split}")
