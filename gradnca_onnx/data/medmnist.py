"""MedMNIST npz files (official keys, every size variant) and the paper's fold npz files."""

from __future__ import annotations

import math
import os
import re
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from numpy.typing import NDArray

from .._validation import check_label_codes
from ..errors import InputError
from ..io.atomic import atomic_savez
from .conventions import linear_uint8
from .dataset import DATASET_ORDER, TargetData
from .folds import fold_arrays, make_paper_folds
from .intensity import ValueRange, without_8bit_scale
from .preprocess import as_images, is_volume_stack

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


#: What to do about pixel values without a defined conversion, in an npz.
_NPZ_ADVICE = ("store the images as uint8 (0..255) or uint16 arrays, or as floats within 0..1")
_PICKLED = ("holds pickled (object) arrays, which gradnca-onnx never loads (unpickling can run "
            "code); save images and labels as plain numeric arrays")


def _unreadable(p: Path, what: str, exc: BaseException,
                damage: str = "corrupt or truncated") -> ValueError:
    """One line on an npz (or one of its arrays) that NumPy cannot read, without NumPy's advice
    to unpickle: pickled arrays are said to be pickled, anything else corrupt or truncated."""
    text = str(exc)
    if "pickle" in text and not isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError)):
        return InputError(f"{p}: {what} {_PICKLED}")
    return InputError(f"{p}: {what} cannot be read ({type(exc).__name__}: "
                      f"{' '.join(text.split())[:200]}); the file is {damage}: download or "
                      "write it again")


def _header_problem(zf: zipfile.ZipFile, p: Path, key: str) -> str | None:
    """What is wrong with an array whose ``.npy`` header promises more bytes than the archive
    member holds (a damaged header would otherwise allocate its claimed size: "out of
    memory"), or that holds pickled (object) data; ``None`` when nothing is."""
    member = f"{key}.npy" if f"{key}.npy" in zf.namelist() else key
    info = zf.getinfo(member)
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return None  # newer header versions: np.load checks them
        held = info.file_size - fh.tell()
    if dtype.hasobject:
        return f"{p}: array {key!r} {_PICKLED}"
    needed = math.prod(int(d) for d in shape) * dtype.itemsize
    if needed > held:
        return (f"{p}: array {key!r}: its header claims shape {tuple(shape)} ({needed:,} bytes) "
                f"but the file holds {held:,} bytes of it; the file is corrupt or truncated: "
                "download or write it again")
    return None


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
        raise InputError(f"{p}: cannot open it ({exc})") from None
    if magic[:2] != b"PK":
        # np.load would try the .npy or pickle formats and report something confusing.
        what = "a .npy array" if magic[:4] == b"\x93NUM" else "not an npz (zip) archive"
        raise InputError(f"{p}: is {what}; give a MedMNIST npz, a paper fold npz or a folder of "
                         "class sub-folders")
    if not zipfile.is_zipfile(p):
        # np.load would fall back to unpickling it and call it pickled data.
        raise InputError(f"{p}: starts like an npz (zip) archive but is not a readable one; the "
                         "file is corrupt, truncated or not an npz: download or write it again")
    try:
        f = np.load(p, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _unreadable(p, "the archive", exc, "corrupt, truncated or not an npz") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise InputError(f"{p}: is a .npy array, not an .npz archive; give a MedMNIST or fold npz")
    with f:
        return list(f.files)


def read_npz(path: PathLike, keys: Iterable[str]) -> dict[str, NDArray]:
    """Read the named arrays of an npz file.

    A corrupt or truncated file raises one ``ValueError`` naming the file (zip, zlib, OS and
    NumPy errors are caught: a truncated member often only fails when it is read), and so does
    an array whose header claims more data than the file holds, or pickled (object) data; a
    missing key raises one naming the key and the keys the file has.
    """
    p = Path(path)
    wanted = list(keys)
    present = npz_keys(p)
    missing = [k for k in wanted if k not in present]
    if missing:
        raise InputError(f"{p}: missing key(s) {missing}; the file has {present}")
    out: dict[str, NDArray] = {}
    k = wanted[0] if wanted else ""
    try:
        problems = []
        with zipfile.ZipFile(p) as zf:
            for k in wanted:  # a loop, not a comprehension: the except names this k
                problems.append(_header_problem(zf, p, k))
    except _READ_ERRORS as exc:
        raise _unreadable(p, f"array {k!r}", exc) from None
    problem = next((m for m in problems if m), None)
    if problem:
        raise InputError(problem)
    try:
        with np.load(p, allow_pickle=False) as f:
            for k in wanted:
                out[k] = f[k]
    except _READ_ERRORS as exc:
        raise _unreadable(p, f"array {k!r}", exc) from None
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
    """2-D images as uint8 (N, H, W, C); MedMNIST 3-D volumes (N, D, H, W) as (N, D, H, W, 1)."""
    if x.ndim == 4 and x.shape[-1] in (2, 4):
        raise InputError(f"{where}: images have {x.shape[-1]} channels (shape {x.shape}); only "
                         "grey (1) or RGB (3) images are supported: drop the alpha channel")
    return as_images(x, name=where)


def _image_keys(keys: Iterable[str]) -> list[str]:
    """The image arrays among an npz file's keys (official or fold keys)."""
    return [k for k in keys if k in MEDMNIST_KEYS and k.endswith("_images")
            or ((m := _FOLD_KEY.match(k)) is not None and m.group(2) == "imgs")]


def _physical_only(x: NDArray) -> bool:
    """Whether ``x`` holds grey physical values without an 8-bit scale: finite floats outside
    0..1 or integers outside 0..65535 (an npz of CT slices in HU)."""
    grey = x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 1) or is_volume_stack(x)
    return grey and without_8bit_scale(x)


def _file_range(p: Path, keys: list[str]) -> tuple[float, float]:
    """The smallest and largest value over the file's image arrays (every split)."""
    lo, hi = math.inf, -math.inf
    for k in _image_keys(keys):
        a = read_npz(p, [k])[k]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    return lo, hi


def _converted(x: NDArray, p: Path, keys: list[str], where: str
               ) -> tuple[NDArray, tuple[str, ...], NDArray | None]:
    """``x`` as uint8 pixel values, a note on how, and its physical values when it has no
    8-bit scale, like a folder's images (:mod:`.intensity`): booleans 0/255, floats within 0..1
    times 255, 16-bit integers by the bit depth of the largest value over all the file's image
    arrays (one map for every split). Grey floats outside 0..1 and integers outside 0..65535
    are physical values (``None`` otherwise): kept for members with an intensity convention,
    displayed by the file's value range, refused by 8-bit members
    (:attr:`TargetData.eight_bit`)."""
    if x.dtype == np.uint8:
        return x, (), None
    if _physical_only(x):
        lo, hi = _file_range(p, keys)
        shown = linear_uint8(x, lo, hi)
        note = (f"{x.dtype} values {lo:g}..{hi:g} have no 8-bit scale: kept as physical values "
                "for members with an intensity convention (8-bit members are refused)")
        return shown, (note,), x.astype(np.float32)
    seen = ValueRange(advice=_NPZ_ADVICE)
    seen.add(x, where)
    if x.dtype.kind in "ui":
        for k in _image_keys(keys):
            seen.add(read_npz(p, [k])[k], f"{p} {k}")
    imap = seen.mapping()
    return imap.apply(x), tuple(n for n in (imap.note,) if n), None


def _n_classes(labels: list[NDArray], where: str = "labels") -> int:
    """Classes coded by the label arrays of all splits (validated first: a string, NaN or huge
    label is one clear error, not a crash or a huge allocation)."""
    checked = [check_label_codes(a, int(np.shape(a)[0]) if np.ndim(a) else -1, name=where,
                                 min_classes=1) if np.size(a) else np.asarray(a)
               for a in labels]
    y = checked[0]
    if y.ndim == 2 and y.shape[1] > 1:
        return int(y.shape[1])
    sizes = [int(np.max(a)) for a in checked if a.size]
    if not sizes:
        raise InputError(f"{where}: no labels; the file holds no images")
    return max(sizes) + 1


def _target(images: NDArray, labels: NDArray, *, where: str, name: str, n_classes: int,
            p: Path, keys: list[str], split: str, notes: tuple[str, ...] = ()) -> TargetData:
    """A split of an npz file, in the file's order (the paper's), its pixels as uint8."""
    x, more, physical = _converted(images, p, keys, f"{where} images")
    return _split_target(x, labels, physical, where=where, name=name, n_classes=n_classes, p=p,
                         split=split, notes=notes + more)


def _split_target(x: NDArray, labels: NDArray, physical: NDArray | None, *, where: str,
                  name: str, n_classes: int, p: Path, split: str,
                  notes: tuple[str, ...]) -> TargetData:
    x = _images(x, f"{where} images")
    y = check_label_codes(labels, x.shape[0], name=f"{where} labels")
    # These arrays are ours alone (fresh from the file): read-only, TargetData keeps them uncopied.
    x.setflags(write=False)
    y.setflags(write=False)
    return TargetData(x, y, name, n_classes, str(p), split, (), DATASET_ORDER,
                      tuple(dict.fromkeys(notes)), physical, eight_bit=physical is None)


def load_npz_target(path: PathLike, split: str = "train", *, fold: int | None = None,
                    name: str | None = None, n_folds: int = 5,
                    stratified: bool = False) -> TargetData:
    """Load one split of a MedMNIST npz or a paper fold npz (see :func:`~.load.load_target`)."""
    p = Path(path)
    keys = npz_keys(p)
    kind = npz_kind(keys)
    name = medmnist_flag(p) if name is None else name
    if kind == "medmnist":
        return _load_medmnist(p, keys, split, fold=fold, name=name, n_folds=n_folds,
                              stratified=stratified)
    if kind == "folds":
        return _load_fold_file(p, keys, split, fold=1 if fold is None else fold, name=name)
    raise InputError(
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
                raise InputError(f"{p}: fold {fold} asked, but there are {n_folds} folds "
                                 f"(n_folds={n_folds} in Python); use fold1..fold{n_folds}")
            folds = make_paper_folds(labels["train_labels"], labels["val_labels"],
                                     n_classes=n_classes, n_folds=n_folds, stratified=stratified)
            idx = getattr(folds[fold - 1], split)
            arr = read_npz(p, [f"{split}_images"])[f"{split}_images"]
            where = f"{p} fold {fold} {split}"
            return _target(arr[idx], labels[f"{split}_labels"][idx], where=where, name=name,
                           n_classes=n_classes, p=p, keys=keys, split=f"fold{fold}-{split}")
        else:
            raise InputError(f"{p}: split 'all' cannot be combined with a fold")
    else:
        split_name = split
    if split_name == "all":
        arrays = read_npz(p, [f"{s}_images" for s in MEDMNIST_SPLITS])
        converted = [_converted(arrays[f"{s}_images"], p, keys, f"{p} {s}_images")
                     for s in MEDMNIST_SPLITS]
        parts = [_images(x, f"{p} {s}_images") for (x, _, _), s in zip(converted,
                                                                       MEDMNIST_SPLITS)]
        if len({a.shape[1:] for a in parts}) != 1:
            raise InputError(f"{p}: the splits have different image shapes; load one split at a "
                             "time (--split train|val|test on the command line, split= in "
                             "Python)")
        physical = [ph for _, _, ph in converted]
        if any(ph is None for ph in physical) and not all(ph is None for ph in physical):
            raise InputError(f"{p}: some splits hold 8-bit images and others physical values; "
                             "load one split at a time (--split train|val|test)")
        y = np.concatenate([labels[f"{s}_labels"] for s in MEDMNIST_SPLITS])
        joined = None if physical[0] is None else np.concatenate(
            [ph.reshape(len(ph), *parts[0].shape[1:]) for ph in physical])
        return _split_target(np.concatenate(parts), y, joined, where=str(p), name=name,
                             n_classes=n_classes, p=p, split="all",
                             notes=tuple(n for _, ns, _ in converted for n in ns))
    arr = read_npz(p, [f"{split_name}_images"])[f"{split_name}_images"]
    return _target(arr, labels[f"{split_name}_labels"], where=f"{p} {split_name}", name=name,
                   n_classes=n_classes, p=p, keys=keys, split=split_name)


def _load_fold_file(p: Path, keys: list[str], split: str, *, fold: int, name: str) -> TargetData:
    if split not in ("train", "val"):
        raise InputError(
            f"{p}: a paper fold file holds train and val subsets only, no {split!r} split; the "
            "test set is the official MedMNIST test split (load it from the MedMNIST npz)"
        )
    present = fold_numbers(keys)
    if fold not in present:
        raise InputError(f"{p}: no fold {fold}; the file has folds {present}")
    wanted = [f"train_labels_fold{fold}", f"val_labels_fold{fold}", f"{split}_imgs_fold{fold}"]
    arrays = read_npz(p, wanted)
    n_classes = _n_classes([arrays[f"train_labels_fold{fold}"], arrays[f"val_labels_fold{fold}"]],
                           f"{p} fold {fold} labels")
    return _target(arrays[f"{split}_imgs_fold{fold}"], arrays[f"{split}_labels_fold{fold}"],
                   where=f"{p} fold {fold} {split}", name=name, n_classes=n_classes,
                   p=p, keys=keys, split=f"fold{fold}-{split}")


def write_paper_folds(medmnist_npz: PathLike, out: PathLike, **kwargs: object) -> Path:
    """Make the fold npz of an official MedMNIST npz (atomically).

    ``kwargs`` go to :func:`make_paper_folds`. Returns the written path.
    """
    keys = ("train_images", "train_labels", "val_images", "val_labels")
    splits = read_npz(medmnist_npz, keys)
    folds = make_paper_folds(splits["train_labels"], splits["val_labels"], **kwargs)  # type: ignore[arg-type]
    return atomic_savez(out, fold_arrays(splits, folds))
