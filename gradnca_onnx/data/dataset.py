"""The target dataset object and its order: the bottom of the data layer.

A :class:`TargetData` is a read-only set of uint8 images (channels last) with integer labels, a
name, where it came from, which split it is, the order of its images, notes on how it was read,
and a content hash that caches (the engine's feature cache, the fine-tuning run store) can key
on. The readers (:mod:`.medmnist`, :mod:`.folders`) build them; :func:`~.load.load_target`
dispatches on what a path holds. This module imports no reader; labels are checked by
:mod:`gradnca_onnx._validation`, the package's one label check.

Order matters: S_FU cuts the target into batches of ``floor(n/6)`` consecutive images, and a
batch needs two classes to hold a triplet. MedMNIST and paper fold npz files keep the dataset's
order (the paper's). An image folder has no order of its own (its files are listed class by
class), so :func:`class_interleaved_order` gives it one: each class shuffled with
``numpy.random.default_rng(0)``, then the classes interleaved in proportion, so that every S_FU
batch holds every class in proportion (:data:`FOLDER_ORDER`, recorded in the rank output).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_label_codes, check_labels
from ..errors import InputError
from .preprocess import as_images

SPLITS = ("train", "val", "test", "all")
#: ``TargetData.order`` of a target in its source's own order (npz files, arrays).
DATASET_ORDER = "dataset"
#: Seed of :func:`class_interleaved_order` for image folders.
FOLDER_ORDER_SEED = 0
#: ``TargetData.order`` of an image folder (:func:`class_interleaved_order`).
FOLDER_ORDER = f"class-interleaved, seed {FOLDER_ORDER_SEED}"


@dataclass(frozen=True, eq=False)
class TargetData:
    """Images and labels of one split of a target dataset.

    Parameters
    ----------
    images : ndarray, uint8 (N, H, W, C), or (N, D, H, W, 1) for volumes
        C = 1 (grey) or 3 (RGB). Grey volumes (MedMNIST 3-D, NIfTI volumes, DICOM series)
        are 3-D targets for 3-D members (:attr:`volumetric`). Stored read-only.
    labels : ndarray, int64 (N,) or (N, L)
        Class codes 0..n_classes-1, or 0/1 indicators for a multi-label target (L labels).
    name : str
        Short dataset name (a MedMNIST flag such as ``breastmnist``, or the folder name); the
        ground-truth table uses it as the target's column.
    n_classes : int
        Number of classes (labels for a multi-label target). May exceed the classes present in
        this split (the official test split of a dataset is coded like its train split).
    source : str
        The file or folder it was read from (``""`` for arrays).
    split : str
        ``train``, ``val``, ``test``, ``all``, or ``fold<i>-train`` / ``fold<i>-val``.
    class_names : tuple of str
        One name per class (default ``"0"``, ``"1"``, ...).
    order : str
        How the images are ordered: ``"dataset"`` (the source's own order: npz files, arrays)
        or :data:`FOLDER_ORDER` (image folders, :func:`class_interleaved_order`). S_FU's
        batches are consecutive images, so the rank output and the feature cache key record it.
    notes : tuple of str
        How the images were read where it is not plain uint8 (e.g. 16-bit values mapped to
        0..255, images resized while loading); shown with the ranking.
    physical : ndarray, float32 (N, H, W, C), optional
        The images' physical values (Hounsfield units for CT after the DICOM modality LUT,
        NIfTI values after ``scl_slope``/``scl_inter``, a 16-bit file's raw values), ``NaN``
        outside the field of view (DICOM padding): what a member with an intensity
        convention reads (:mod:`.conventions`). ``images`` then holds the target's 8-bit
        rendering, which members without one read. ``None``: an 8-bit target.
    unit : str
        The unit of ``physical`` (``"HU"``), ``""`` when it has none.
    modality : str
        What the images are (DICOM ``Modality`` such as ``CT`` or ``MR``, ``NIfTI``, or
        ``""`` for 8-bit images).
    groups : tuple of str, optional
        The group (patient) of each image, from a label table's patient column: resamples
        keep a group's images together. Not part of the content hash (it changes which
        images are drawn together, not any image's features).
    eight_bit : bool
        Whether ``images`` are 8-bit images a model without an intensity convention may read
        (the default; for DICOM, the images' window). ``False``: physical values without an
        8-bit scale (an npz of floats in HU), whose ``images`` only display them; members
        without a convention are then refused, never fed a guessed scale.
    """

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    name: str
    n_classes: int
    source: str = ""
    split: str = "all"
    class_names: tuple[str, ...] = ()
    order: str = DATASET_ORDER
    notes: tuple[str, ...] = ()
    physical: NDArray[np.float32] | None = None
    unit: str = ""
    modality: str = ""
    groups: tuple[str, ...] | None = None
    eight_bit: bool = True
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        where = self.source or self.name
        images = as_images(self.images, name=f"{where}: images")
        labels = np.asarray(self.labels)
        if labels.dtype != np.int64:
            labels = labels.astype(np.int64)
        if labels.ndim not in (1, 2) or labels.shape[0] != images.shape[0]:
            raise InputError(
                f"{where}: labels have shape {labels.shape} for {images.shape[0]} images; "
                "expected (N,) or (N, L)"
            )
        n_classes = int(self.n_classes)
        if labels.ndim == 2:
            if labels.shape[1] != n_classes or (labels.size and not np.isin(labels, (0, 1)).all()):
                raise InputError(f"{where}: multi-label labels must be 0/1 with {n_classes} columns")
        elif labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise InputError(f"{where}: labels must lie in 0..{n_classes - 1}; got "
                             f"{labels.min()}..{labels.max()}")
        names = tuple(str(c) for c in self.class_names) or tuple(str(i) for i in range(n_classes))
        if len(names) != n_classes:
            raise InputError(f"{where}: {len(names)} class names for {n_classes} classes")
        # Read-only arrays: a frozen dataclass should not change under its hash. Writable input
        # (the caller may still hold it) is copied; the loaders hand over read-only arrays of
        # their own, which are kept as they are (no second copy of a large image set).
        images = _frozen(images, np.uint8)
        labels = _frozen(labels, np.int64)
        images.setflags(write=False)
        labels.setflags(write=False)
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "n_classes", n_classes)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "order", str(self.order))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        physical = self._checked_physical(images, where)
        if self.groups is not None:
            groups = tuple(str(g) for g in self.groups)
            if len(groups) != images.shape[0]:
                raise InputError(f"{where}: {len(groups)} groups for {images.shape[0]} images")
            object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "physical", physical)
        object.__setattr__(self, "sha256", content_sha256(images, labels, physical))

    def _checked_physical(self, images: NDArray[np.uint8], where: str
                          ) -> NDArray[np.float32] | None:
        """``physical`` as a read-only float32 array of the images' shape, or ``None``."""
        if self.physical is None:
            return None
        values = np.asarray(self.physical)
        if values.ndim == images.ndim - 1:
            values = values[..., None]
        if values.shape != images.shape or values.dtype.kind != "f":
            raise InputError(f"{where}: physical values have shape {values.shape} "
                             f"({values.dtype}) for images of shape {images.shape}; expected "
                             "float values of the images' shape")
        if np.isinf(values).any():
            raise InputError(f"{where}: physical values hold inf; NaN marks pixels outside "
                             "the field of view, inf has no meaning")
        values = _frozen(values, np.float32)
        values.setflags(write=False)
        return values

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"TargetData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image={self.images.shape[1:]}, n_classes={self.n_classes}, task={self.task!r}, "
                f"sha256={self.sha256[:12]}...)")

    @property
    def task(self) -> str:
        """``"binary"``, ``"multi-class"`` or ``"multi-label"``."""
        if self.labels.ndim == 2:
            return "multi-label"
        return "binary" if self.n_classes == 2 else "multi-class"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the images (of each slice of a volume)."""
        return int(self.images.shape[-3]), int(self.images.shape[-2])

    @property
    def volumetric(self) -> bool:
        """Whether the target holds volumes ``(N, D, H, W, 1)`` (a 3-D target)."""
        return self.images.ndim == 5

    @property
    def spatial_size(self) -> tuple[int, ...]:
        """``(height, width)``, or ``(depth, height, width)`` for volumes."""
        return tuple(int(s) for s in self.images.shape[1:-1])

    @property
    def size_text(self) -> str:
        """``HxW`` or ``DxHxW``."""
        return "x".join(str(s) for s in self.spatial_size)

    def describe(self) -> str:
        """One line on what was read: images, their size and channels, their values (8-bit,
        or the modality, range and unit of the physical values), images per class."""
        chans = "grey" if self.images.shape[-1] == 1 else "RGB"
        kind = "volumes" if self.volumetric else "images"
        values = "8-bit"
        if self.physical is not None:
            finite = self.physical[np.isfinite(self.physical)]
            span = f"{finite.min():g}..{finite.max():g}" if finite.size else "no finite values"
            what = f"{self.modality} " if self.modality else ""
            unit = f" {self.unit}" if self.unit else ""
            shown = ("with an 8-bit rendering" if self.eight_bit else
                     "no 8-bit scale: members without an intensity convention are refused")
            values = f"{what}physical values {span}{unit} ({shown})"
        counts = ", ".join(f"{name} {int(n)}" for name, n in zip(self.class_names,
                                                                 self.class_counts()))
        where = f" from {self.source}" if self.source else ""
        groups = (f"; {len(set(self.groups))} groups (patients), kept together in resamples"
                  if self.groups is not None else "")
        return (f"{self.name} ({self.split}){where}: {len(self)} {kind} {self.size_text} {chans}, "
                f"{values}; {self.task}, per class: {counts}{groups}")

    def class_counts(self) -> NDArray[np.int64]:
        """Images per class (positives per label for a multi-label target)."""
        if self.labels.ndim == 2:
            positives: NDArray[np.int64] = self.labels.sum(axis=0)  # numpy types .sum() as Any
            return positives
        return np.bincount(self.labels, minlength=self.n_classes)

    def subset(self, indices: ArrayLike, split: str | None = None) -> "TargetData":
        """The images at ``indices`` (in that order), with the same coding and name."""
        idx = np.asarray(indices, dtype=np.int64)
        images, labels = self.images[idx], self.labels[idx]  # fresh arrays: no second copy
        images.setflags(write=False)
        labels.setflags(write=False)
        physical = None if self.physical is None else self.physical[idx]
        groups = None if self.groups is None else tuple(self.groups[i] for i in idx)
        return TargetData(images, labels, self.name, self.n_classes, self.source,
                          self.split if split is None else split, self.class_names, self.order,
                          self.notes, physical, self.unit, self.modality, groups,
                          self.eight_bit)


def _frozen(a: NDArray[Any], dtype: type) -> NDArray[Any]:
    if a.dtype == dtype and a.flags.c_contiguous and not a.flags.writeable:
        return a
    return np.array(a, dtype=dtype, order="C", copy=True)


def class_interleaved_order(labels: ArrayLike, *,
                            seed: int = FOLDER_ORDER_SEED) -> NDArray[np.int64]:
    """A seeded order in which every stretch of consecutive images holds every class in
    proportion (the order of image folders, :data:`FOLDER_ORDER`).

    Each class's images (in code order 0..C-1) are shuffled with one
    ``numpy.random.default_rng(seed)`` stream; the i-th of class c's ``n_c`` images gets the
    position key ``(i + 0.5) / n_c``, and the images are sorted by key (ties: lower class
    first). A 31/29 folder alternates its classes, so each of S_FU's batches of
    ``floor(n/6)`` consecutive images holds both.

    Parameters
    ----------
    labels : array-like, int (N,)
        Class codes.
    seed : int
        Seed of the within-class shuffle.

    Returns
    -------
    ndarray, int64 (N,)
        Indices into ``labels``.
    """
    y = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    idx, keys, codes = [], [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        idx.append(members)
        keys.append((np.arange(members.size) + 0.5) / members.size)
        codes.append(np.full(members.size, c))
    if not idx:
        return np.zeros(0, dtype=np.int64)
    # lexsort: the last key is the primary one.
    order = np.lexsort((np.concatenate(codes), np.concatenate(keys)))
    return np.concatenate(idx)[order].astype(np.int64)


def content_sha256(images: NDArray[np.uint8], labels: NDArray[np.int64],
                   physical: NDArray[np.float32] | None = None) -> str:
    """sha256 of the image and label bytes (with their shapes), and of the physical values
    when there are any, independent of file paths (an 8-bit target hashes as it always did)."""
    h = hashlib.sha256(b"gradnca-onnx target v1\0")
    header = {"images": list(images.shape), "labels": list(labels.shape)}
    h.update(json.dumps(header, sort_keys=True).encode())
    # Buffers, not .tobytes(): no temporary copy of a large image set.
    h.update(np.ascontiguousarray(images, dtype=np.uint8).data)
    h.update(np.ascontiguousarray(labels, dtype="<i8").data)
    if physical is not None:
        h.update(b"physical float32\0")
        h.update(np.ascontiguousarray(physical, dtype="<f4").data)
    return h.hexdigest()


def from_arrays(images: ArrayLike, labels: ArrayLike, *, name: str = "arrays",
                class_names: Sequence[str] | None = None, split: str = "all") -> TargetData:
    """A :class:`TargetData` from arrays passed from Python.

    Parameters
    ----------
    images : array-like, uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3); or grey volumes
        (N, D, H, W) / (N, D, H, W, 1) for a 3-D target (a last axis of 1..4 is channels)
    labels : array-like (N,) or (N, 1)
        Any class values (integers or strings); they are coded 0..C-1 in sorted order of the
        distinct values (like scikit-learn's ``LabelEncoder``), and the values become the class
        names. (N, L) 0/1 arrays are taken as multi-label.
    name : str
        Dataset name.
    class_names : sequence of str, optional
        Names of the codes 0..C-1 when ``labels`` are already codes; then C = len(class_names).
    split : str

    Returns
    -------
    TargetData
    """
    x = as_images(images)
    y = np.asarray(labels)
    where = f"{name} labels"
    if y.ndim == 2 and y.shape[1] > 1:
        codes = check_label_codes(y, x.shape[0], name=where)
        return TargetData(x, codes, name, codes.shape[1], "", split,
                          tuple(class_names) if class_names else ())
    if class_names is not None:
        codes = check_label_codes(y, x.shape[0], name=where)
        if codes.max() >= len(class_names):
            raise InputError(f"{name}: label {codes.max()} has no name among {len(class_names)} "
                             "class names")
        return TargetData(x, codes, name, len(class_names), "", split, tuple(class_names))
    if y.dtype.kind in "uibf":  # numbers must be codes too: no NaN, no 1e12, none negative
        check_label_codes(y, x.shape[0], name=where, min_classes=1)
    codes, classes = check_labels(y, x.shape[0], name=where, samples="images")
    names = tuple(str(c.item() if hasattr(c, "item") else c) for c in classes)
    return TargetData(x, codes, name, classes.size, "", split, names)


def split_target(data: TargetData, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 42) -> tuple[TargetData, TargetData, TargetData]:
    """Stratified random train/val/test split of a target without official splits (a folder).

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and cut by the fractions
    (at least one image of each class in each part where the class has three or more), so the
    split is the same on every machine. Not for multi-label targets.
    """
    if data.labels.ndim != 1:
        raise InputError(f"{data.name}: split_target needs single-label data")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError("val_fraction and test_fraction must be in (0, 1) with a sum below 1")
    rng = np.random.default_rng(seed)
    parts: list[list[NDArray[np.int64]]] = [[], [], []]
    for c in range(data.n_classes):
        idx = rng.permutation(np.flatnonzero(data.labels == c))
        n = idx.size
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    out = []
    for name, chunks in zip(("train", "val", "test"), parts):
        idx = np.sort(np.concatenate(chunks))
        out.append(data.subset(idx, split=name))
    return out[0], out[1], out[2]
