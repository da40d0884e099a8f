"""Image folders: one sub-folder of images per class (read with Pillow).

Class codes follow the sorted sub-folder names and images the sorted file names, so the same
folder always gives the same arrays (and the same content hash). Hidden entries (names starting
with ``.``, e.g. ``.ipynb_checkpoints``) and files without an image extension are ignored.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from .dataset import TargetData
from .preprocess import DEFAULT_FILTER, RESIZE_FILTERS, resize

PathLike = Union[str, "os.PathLike[str]"]

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
        raise ValueError(f"{root}: not a folder")
    classes = _visible_dirs(root)
    if not classes:
        raise ValueError(
            f"{root}: no class sub-folders; expected {root}/<class>/<image> with one sub-folder "
            "per class"
        )
    files: list[Path] = []
    labels: list[int] = []
    for code, d in enumerate(classes):
        found = sorted((f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                        and f.suffix.lower() in IMAGE_EXTENSIONS), key=lambda f: f.name)
        if not found:
            raise ValueError(
                f"{d}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or "
                "remove the folder"
            )
        files.extend(found)
        labels.extend([code] * len(found))
    return files, np.asarray(labels, dtype=np.int64), tuple(d.name for d in classes)


def file_sha256(path: PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_duplicates(paths: Sequence[PathLike]) -> list[list[Path]]:
    """Groups (two or more files each, in input order) of byte-identical files."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        groups[file_sha256(p)].append(Path(p))
    return [g for g in groups.values() if len(g) > 1]


def _read_image(path: Path, mode: str) -> NDArray[np.uint8]:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc}); remove or replace the file") from None


def _image_mode(path: Path) -> str:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc}); remove or replace the file") from None


def load_image_folder(root: PathLike, *, split: str = "all", name: str | None = None,
                      dedupe: bool = False, size: int | None = None,
                      filter: str = DEFAULT_FILTER, mode: str = "auto") -> TargetData:
    """Load a folder of class sub-folders.

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
    size : int, optional
        Resize every image to ``size`` x ``size`` (Pillow, ``filter``) while loading. Needed when
        the images differ in size.
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
        raise ValueError(f"unknown resize filter {filter!r}; use one of {sorted(RESIZE_FILTERS)}")
    if mode not in ("auto", "L", "RGB"):
        raise ValueError(f"mode must be 'auto', 'L' or 'RGB'; got {mode!r}")
    folder = root
    if split != "all":
        sub = _split_dir(root, split)
        if sub is None:
            raise ValueError(
                f"{root}: no {split!r} sub-folder (looked for {list(SPLIT_DIRS.get(split, ()))}); "
                "use split='all' for a folder of class sub-folders"
            )
        folder = sub
    files, labels, classes = list_image_folder(folder)
    if dedupe:
        keep = np.ones(len(files), dtype=bool)
        index = {f: i for i, f in enumerate(files)}
        for group in find_duplicates(files):
            ids = [index[f] for f in group]
            if len({int(labels[i]) for i in ids}) > 1:
                raise ValueError(
                    f"{folder}: identical files under different classes: "
                    f"{', '.join(str(f.relative_to(folder)) for f in group)}; keep one of them"
                )
            keep[ids[1:]] = False
        files = [f for f, k in zip(files, keep) if k]
        labels = labels[keep]
    if np.unique(labels).size < 2:
        raise ValueError(f"{folder}: only one class sub-folder ({classes}); a target needs at least 2")
    if mode == "auto":
        mode = "L" if all(_image_mode(f) in _GREY_MODES for f in files) else "RGB"
    images: list[NDArray[np.uint8]] = []
    for f in files:
        img = _read_image(f, mode)
        if size is not None:
            img = resize(img[None], size, filter=filter)[0]
        images.append(img.reshape(img.shape[0], img.shape[1], -1))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        sizes = sorted({f"{s[1]}x{s[0]}" for s in shapes})
        raise ValueError(f"{folder}: images differ in size ({', '.join(sizes[:4])}); pass size=... "
                         "to resize them while loading")
    if name is None:
        # A split folder is named after the dataset folder above it.
        is_split = any(root.name.lower() in v for v in SPLIT_DIRS.values())
        name = (root.name if split != "all" else
                f"{root.parent.name}-{root.name}" if is_split else root.name)
    stacked = np.stack(images)
    stacked.setflags(write=False)  # ours alone: TargetData keeps it without a copy
    return TargetData(stacked, labels, name, len(classes), str(folder), split, classes)
