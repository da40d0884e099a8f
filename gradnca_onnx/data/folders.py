"""Image folders: one sub-folder of images per class (read with Pillow).

Class codes follow the sorted sub-folder names. Files are listed in sorted order, then put in
the seeded class-interleaved order of :func:`~.dataset.class_interleaved_order`, so the same
folder always gives the same arrays (and the same content hash). Hidden entries (names starting
with ``.``, e.g. ``.ipynb_checkpoints``) and files without an image extension are ignored.
16-bit, 32-bit integer and float images are read without clipping and mapped to uint8
(:mod:`.intensity`); an image over Pillow's decompression-bomb limit is refused.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence, TypeVar, Union

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..io.hashing import sha256_file
from .conventions import linear_uint8
from .dataset import FOLDER_ORDER, TargetData, class_interleaved_order
from .intensity import FILE_ADVICE, IntensityMap, ValueRange, without_8bit_scale
from .preprocess import DEFAULT_FILTER, RESIZE_FILTERS, resize
from .scans import is_medical_file, load_scans

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Sub-folder names that mark an official split (lower-cased) rather than a class.
SPLIT_DIRS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _visible_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)


def _split_dir(root: Path, split: str) -> Path | None:
    names = SPLIT_DIRS.get(split, ())
    for d in _visible_dirs(root):
        if d.name.lower() in names:
            return d
    return None


def split_subfolders(root: PathLike) -> dict[str, Path]:
    """The split sub-folders (``train``, ``val``, ``test``) that ``root`` has, by split name."""
    root = Path(root)
    found = {split: _split_dir(root, split) for split in SPLIT_DIRS}
    return {k: v for k, v in found.items() if v is not None}


def list_image_folder(root: PathLike) -> tuple[list[Path], NDArray[np.int64], tuple[str, ...]]:
    """Files, class codes and class names of a class-per-sub-folder image folder.

    Raises a ``ValueError`` for a folder without class sub-folders or with an empty class.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    classes = _visible_dirs(root)
    if not classes:
        raise InputError(
            f"{root}: no class sub-folders; expected {root}/<class>/<image> with one sub-folder "
            "per class"
        )
    files: list[Path] = []
    labels: list[int] = []
    for code, d in enumerate(classes):
        found = sorted((f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                        and (f.suffix.lower() in IMAGE_EXTENSIONS or is_medical_file(f))),
                       key=lambda f: f.name)
        if not found and any(c.is_dir() and not c.name.startswith(".") for c in d.iterdir()):
            raise InputError(f"{d}: holds sub-folders, not images; give the folder whose "
                             "sub-folders are the classes, each holding images")
        if not found:
            raise InputError(
                f"{d}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or "
                "remove the folder"
            )
        files.extend(found)
        labels.extend([code] * len(found))
    return files, np.asarray(labels, dtype=np.int64), tuple(d.name for d in classes)


def find_duplicates(paths: Sequence[PathLike]) -> list[list[Path]]:
    """Groups (two or more files each, in input order) of byte-identical files."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        groups[sha256_file(p)].append(Path(p))
    return [g for g in groups.values() if len(g) > 1]


def _bomb(path: Path, exc: BaseException) -> ValueError:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return InputError(
        f"{path}: the image has {pixels}, more than Pillow's decompression-bomb limit of "
        f"{Image.MAX_IMAGE_PIXELS:,} (a damaged or hostile file, or a huge scan); downscale it "
        "(e.g. to at most 4096x4096) or remove it")


def _decode(path: Path, read: Callable[[Image.Image], T]) -> T:
    """``read(image)`` on the opened file; Pillow's failures become one ``ValueError`` naming
    the file.

    A decompression bomb is refused: Pillow raises above twice ``Image.MAX_IMAGE_PIXELS`` and
    only warns between the limit and twice it, so the warning is raised as an error here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return read(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(path, exc) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the image ({exc}); remove or replace the file") from None


def _is_wide(mode: str) -> bool:
    """Whether a Pillow mode holds more than 8 bits per pixel (``I;16*``, ``I``, ``F``)."""
    return mode == "F" or mode.startswith("I")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Pillow mode and ``(width, height)`` of an image file (reads the header only)."""
    return _decode(path, lambda im: (im.mode, im.size))


def _raw_pixels(path: Path, mode: str) -> NDArray:
    """The stored values: a wide mode as numpy reads it (uint16, int32, float32: never
    ``convert("L")``, which clips 16-bit values at 255), any other converted to ``mode``."""
    return _decode(path, lambda im: np.asarray(im) if _is_wide(im.mode)
                   else np.asarray(im.convert(mode)))


def _sibling_split_files(root: Path, split: str) -> list[Path]:
    """The images of the other split folders of ``root`` (their values share one scale)."""
    out: list[Path] = []
    if split == "all":
        return out
    for other in split_subfolders(root).values():
        if other == _split_dir(root, split):
            continue
        try:
            out.extend(list_image_folder(other)[0])
        except ValueError:
            continue  # a broken split folder is reported when that split is loaded
    return out


def _intensity(files: list[Path], modes: list[str], siblings: list[Path]) -> IntensityMap | None:
    """The folder's one map of wide pixel values (16-bit, 32-bit integer, float) to uint8, by
    the largest value over its files and its sibling split folders; ``None`` when every file
    is 8-bit (Pillow converts those)."""
    wide = [f for f, m in zip(files, modes) if _is_wide(m)]
    if not wide:
        return None
    seen = ValueRange(n_uint8=len(files) - len(wide))
    for f in wide:
        seen.add(_raw_pixels(f, "L"), str(f))
    for f in siblings:
        try:
            if _is_wide(_header(f)[0]):
                seen.add(_raw_pixels(f, "L"), str(f))
        except ValueError:
            continue  # reported when that split is loaded
    return seen.mapping()


def _load_one(path: Path, mode: str, imap: IntensityMap | None) -> NDArray[np.uint8]:
    """One image as uint8 (H, W, C) in ``mode`` ("L" or "RGB")."""
    if imap is None:
        img = _decode(path, lambda im: np.asarray(im.convert(mode)))
    else:
        img = imap.apply(_raw_pixels(path, mode))
        if mode == "RGB" and img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)  # as convert("RGB") replicates L
    return img.reshape(img.shape[0], img.shape[1], -1)


def _split_folders_hint(folder: Path) -> None:
    """Refuse, with the --split advice, a folder whose sub-folders are splits, not classes."""
    splits = split_subfolders(folder)
    nested = [d for d in splits.values()
              if any(c.is_dir() and not c.name.startswith(".") for c in d.iterdir())]
    if nested:
        names = ", ".join(sorted(d.name for d in splits.values()))
        choices = "|".join(k for k in SPLIT_DIRS if k in splits)
        raise InputError(f"{folder}: holds split sub-folders ({names}), not class folders; "
                         f"choose one split (--split {choices} on the command line, split= in "
                         "Python)")


def load_image_folder(root: PathLike, *, split: str = "all", name: str | None = None,
                      dedupe: bool = False, size: int | tuple[int, int] | None = None,
                      filter: str = DEFAULT_FILTER, mode: str = "auto") -> TargetData:
    """Load a folder of class sub-folders.

    The images come in :data:`~.dataset.FOLDER_ORDER` (:func:`~.dataset.class_interleaved_order`:
    classes interleaved in proportion, each shuffled with seed 0), not class by class, so that
    each of S_FU's batches of consecutive images holds every class. 16-bit, 32-bit integer and
    float images are mapped to uint8 by one map for the whole folder
    (:mod:`~gradnca_onnx.data.intensity`); the target's ``notes`` say how.

    Parameters
    ----------
    root : str or path-like
        ``root/<class>/<image>``; or ``root/<split>/<class>/<image>`` with split folders named
        ``train|training``, ``val|valid|validation``, ``test|testing`` (any case).
    split : {"all", "train", "val", "test"}
        ``"all"``: ``root`` itself is the class folder. Otherwise the matching split sub-folder.
    name : str, optional
        Dataset name (default: ``root``'s name, or ``<parent>-<split folder>`` when ``root`` is
        itself a split folder such as ``Testing``).
    dedupe : bool
        Drop byte-identical files (sha256 of the bytes), keeping the first in sorted order. A
        duplicate filed under two classes is an error (its label is ambiguous).
    size : int or (height, width), optional
        Resize every image to ``size`` x ``size`` (or height x width; Pillow, ``filter``) while
        loading. Needed when the images differ in size.
    filter : str
        Pillow resize filter name (default ``bilinear``).
    mode : {"auto", "L", "RGB"}
        ``auto``: grey (N, H, W, 1) if every image is greyscale, else RGB with grey images
        replicated (PIL ``convert("RGB")``).

    Returns
    -------
    TargetData
    """
    root = Path(root)
    if filter not in RESIZE_FILTERS:
        raise InputError(f"unknown resize filter {filter!r}; use one of {sorted(RESIZE_FILTERS)}")
    if mode not in ("auto", "L", "RGB"):
        raise InputError(f"mode must be 'auto', 'L' or 'RGB'; got {mode!r}")
    folder = root
    if split != "all":
        sub = _split_dir(root, split)
        if sub is None:
            raise InputError(
                f"{root}: no {split!r} sub-folder (looked for {list(SPLIT_DIRS.get(split, ()))}); "
                "for a folder of class sub-folders leave the split out or give all (--split all "
                "on the command line, split='all' in Python)"
            )
        folder = sub
    elif root.is_dir():
        _split_folders_hint(root)
    files, labels, classes = list_image_folder(folder)
    if dedupe:
        files, labels = _deduplicated(folder, files, labels)
    if np.unique(labels).size < 2:
        raise InputError(f"{folder}: only one class sub-folder ({classes}); a target needs at least 2")
    if name is None:
        # A split folder is named after the dataset folder above it.
        is_split = any(root.name.lower() in v for v in SPLIT_DIRS.values())
        name = (root.name if split != "all" else
                f"{root.parent.name}-{root.name}" if is_split else root.name)
    order = class_interleaved_order(labels)
    return load_files([files[i] for i in order], labels[order], classes, name=name,
                      source=str(folder), split=split, order=FOLDER_ORDER, size=size,
                      filter=filter, mode=mode, siblings=_sibling_split_files(root, split))


def load_files(files: Sequence[Path], labels: NDArray[np.int64], classes: Sequence[str], *,
               name: str, source: str, split: str, order: str,
               size: int | tuple[int, int] | None = None, filter: str = DEFAULT_FILTER,
               mode: str = "auto", siblings: Sequence[Path] = ()) -> TargetData:
    """A target of image files, in the order given (class folders and label tables).

    Image files are read with Pillow (16-bit, 32-bit integer and float values mapped to uint8
    by one map for the whole target, their raw values kept as physical values); DICOM and
    NIfTI files by :func:`~.scans.load_scans`. The two kinds do not mix in one target.

    Parameters
    ----------
    files : sequence of Path
    labels : ndarray, int64 (N,) or (N, L)
    classes : sequence of str
    name, source, split, order
        As :class:`TargetData`.
    size, filter, mode
        As :func:`load_image_folder`.
    siblings : sequence of Path
        Files of the other splits, whose values share the 16-bit map.
    """
    medical = [is_medical_file(f) for f in files]
    if any(medical):
        if not all(medical):
            other = next(f for f, m in zip(files, medical) if not m)
            raise InputError(f"{source}: mixes medical files (DICOM, NIfTI) with other images "
                             f"(e.g. {other}); give one kind of file per target")
        return load_scans(files, labels, classes, name=name, source=source, split=split,
                          order=order, size=size, filter=filter)
    if size is not None and not isinstance(size, int) and len(size) == 3:
        raise InputError(f"{source}: a DxHxW size is for volume targets (NIfTI volumes); these "
                         "are 2-D images: give --size HxW")
    headers = [_header(f) for f in files]
    modes = [m for m, _ in headers]
    if mode == "auto":
        mode = "L" if all(m in _GREY_MODES or _is_wide(m) for m in modes) else "RGB"
    shapes = {wh for _, wh in headers}
    if size is None and len(shapes) > 1:
        sizes = sorted(f"{w}x{h}" for w, h in shapes)
        raise InputError(f"{source}: images differ in size ({', '.join(sizes[:4])}); give one "
                         "size to resize them to while loading (--size HxW on the command line, "
                         "size= in Python)")
    if mode == "L" and _physical_folder(files, modes):
        return _physical_files(files, labels, classes, name=name, source=source, split=split,
                               order=order, size=size, filter=filter, siblings=siblings)
    imap = _intensity(list(files), modes, list(siblings))
    images: list[NDArray[np.uint8]] = []
    # Wide (16-bit, 32-bit, float) grey images keep their values as the target's physical
    # values too, for members with an intensity convention (percentile, zscore, a window).
    raw: list[NDArray[np.float32]] | None = [] if imap is not None and mode == "L" else None
    for f in files:
        img = _load_one(f, mode, imap)
        if size is not None:
            img = resize(img[None], size, filter=filter)[0]
        images.append(img)
        if raw is not None:
            raw.append(_raw_values(f, img.shape[:2], filter))
    notes = [imap.note] if imap is not None and imap.note else []
    if size is not None and any(_resized_wh(wh, size) != wh for wh in shapes):
        h, w = images[0].shape[:2]
        notes.append(f"images resized to {h}x{w} while loading ({filter})")
    stacked = np.stack(images)
    stacked.setflags(write=False)  # ours alone: TargetData keeps it without a copy
    physical = None if raw is None else np.stack(raw)[..., None]
    return TargetData(stacked, labels, name, len(classes), source, split, tuple(classes),
                      order, tuple(notes), physical)


def _physical_folder(files: Sequence[Path], modes: Sequence[str]) -> bool:
    """Whether a grey folder's wide files hold physical values without an 8-bit scale
    (:func:`~.intensity.without_8bit_scale`: float TIFFs in HU, negative int32 TIFFs)."""
    return any(_is_wide(m) and without_8bit_scale(_raw_pixels(f, "L"))
               for f, m in zip(files, modes))


def _physical_files(files: Sequence[Path], labels: NDArray[np.int64], classes: Sequence[str],
                    *, name: str, source: str, split: str, order: str,
                    size: int | tuple[int, int] | None, filter: str,
                    siblings: Sequence[Path]) -> TargetData:
    """A grey folder of physical values (float or signed TIFFs): kept for members with an
    intensity convention, shown by the range of the folder's (and its split siblings') values,
    refused by 8-bit members (``eight_bit`` false)."""
    first = np.asarray(_raw_pixels(files[0], "L"))
    hw = first.shape[:2] if size is None else (
        (size, size) if isinstance(size, int) else tuple(size))
    physical = np.empty((len(files), *hw), dtype=np.float32)
    for k, f in enumerate(files):
        physical[k] = _raw_values(f, hw, filter)  # type: ignore[arg-type]
        if not np.isfinite(physical[k]).all():
            raise InputError(f"{f}: pixel values include NaN or inf; {FILE_ADVICE}")
    lo, hi = float(physical.min()), float(physical.max())
    for f in siblings:  # one display scale for every split of the folder
        try:
            raw = np.asarray(_raw_pixels(f, "L"), dtype=np.float32)
        except ValueError:
            continue  # reported when that split is loaded
        lo, hi = min(lo, float(raw.min())), max(hi, float(raw.max()))
    shown = linear_uint8(physical, lo, hi)
    note = (f"pixel values {lo:g}..{hi:g} have no 8-bit scale: kept as physical values for "
            "members with an intensity convention (8-bit members are refused)")
    return TargetData(shown[..., None], labels, name, len(classes), source, split,
                      tuple(classes), order, (note,), physical[..., None], eight_bit=False)


def _raw_values(path: Path, hw: tuple[int, int], filter: str) -> NDArray[np.float32]:
    """A grey image's stored values as float32 (H, W), resized to ``hw`` in float."""
    values = np.asarray(_raw_pixels(path, "L"), dtype=np.float32)
    if values.ndim == 3:  # an LA image: the grey channel
        values = values[..., 0]
    if values.shape != hw:
        pil = Image.fromarray(values, mode="F").resize((hw[1], hw[0]), RESIZE_FILTERS[filter])
        values = np.asarray(pil, dtype=np.float32)
    return values


def _resized_wh(width_height: tuple[int, int], size: int | tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` after resizing to ``size`` (an int: square; else height, width)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(w), int(h)


def _deduplicated(folder: Path, files: list[Path],
                  labels: NDArray[np.int64]) -> tuple[list[Path], NDArray[np.int64]]:
    """``files`` and ``labels`` without byte-identical duplicates (the first in sorted order
    kept); a duplicate filed under two classes is refused."""
    keep = np.ones(len(files), dtype=bool)
    index = {f: i for i, f in enumerate(files)}
    for group in find_duplicates(files):
        ids = [index[f] for f in group]
        if len({int(labels[i]) for i in ids}) > 1:
            raise InputError(
                f"{folder}: identical files under different classes: "
                f"{', '.join(str(f.relative_to(folder)) for f in group)}; keep one of them"
            )
        keep[ids[1:]] = False
    return [f for f, k in zip(files, keep) if k], labels[keep]
