"""2-D targets of medical files (DICOM, NIfTI): physical values and their 8-bit rendering.

Each file is one 2-D image (a single-frame DICOM, a NIfTI with one slice), read as physical
values by :mod:`.dicom` and :mod:`.nifti` (HU for CT; padding outside the field of view
becomes ``NaN``). The target keeps them (:attr:`TargetData.physical`) for the members whose
manifest states an intensity convention (:mod:`.conventions`), and renders them to 8 bits
for the others with one linear map for the whole target: the DICOM window when every image
carries the same one (what a radiologist sees), else the target's range of finite values. A
note says which. Volumes (several slices or frames in one file) are refused here: a 2-D target
takes one image per file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence, Union

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..errors import InputError
from .conventions import linear_uint8
from .dataset import TargetData
from .physical import MedicalImage
from .preprocess import DEFAULT_FILTER, RESIZE_FILTERS

PathLike = Union[str, "os.PathLike[str]"]

#: File name endings read as medical files (DICOM files without an extension are recognised
#: by their ``DICM`` preamble).
MEDICAL_SUFFIXES = (".dcm", ".dicom", ".ima", ".nii", ".nii.gz")


def is_medical_file(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM or NIfTI file: by its ending, or (no ending) by the
    ``DICM`` marker a DICOM file carries after its 128-byte preamble."""
    p = Path(path)
    if p.is_dir():  # a DICOM series: one volume (:func:`read_scan` with ``volume``)
        return True
    name = p.name.lower()
    if name.endswith(MEDICAL_SUFFIXES):
        return True
    if p.suffix:
        return False
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_scan(path: PathLike, *, volume: bool = False) -> MedicalImage:
    """One medical file as a 2-D :class:`MedicalImage`, or with ``volume`` a 3-D one.

    Raises
    ------
    InputError
        A volume or time series (more than one slice or frame; with ``volume``, anything but
        one 3-D volume), or what the reader refuses.
    """
    p = Path(path)
    if p.is_dir():
        from .dicom import read_dicom_series

        if not volume:
            raise InputError(f"{p}: a directory (a DICOM series) is one volume, not a 2-D "
                             "image; name every row of the table by a directory")
        image = read_dicom_series(p)
    elif p.name.lower().endswith((".nii", ".nii.gz")):
        from .nifti import read_nifti

        image = read_nifti(p)
    else:
        from .dicom import read_dicom

        image = read_dicom(p)
    shape = "x".join(map(str, image.values.shape))
    if volume and image.values.ndim != 3:
        raise InputError(f"{p}: holds {shape} values, not one 3-D volume; a volume target "
                         "takes one volume per file (a 4-D series: save the volume you want "
                         "as its own file)")
    if not volume and image.values.ndim != 2:
        raise InputError(f"{p}: holds a {shape} volume, not one 2-D image; a 2-D target takes "
                         "one image per file (export the slices you want as separate files)")
    return image


def is_volume_file(path: PathLike) -> bool:
    """Whether ``path`` is one volume: a directory (a DICOM series) or a NIfTI file whose
    header gives three axes; DICOM files are single images here."""
    p = Path(path)
    if p.is_dir():
        return True
    if not p.name.lower().endswith((".nii", ".nii.gz")):
        return False
    from .nifti import spatial_shape

    return len(spatial_shape(p)) == 3


def _masked(image: MedicalImage) -> NDArray[np.float32]:
    """The image's values with padding as ``NaN`` (never a statistic's input)."""
    values = np.asarray(image.values, dtype=np.float32)  # the reader's own array: no copy
    if image.padding is not None and image.padding.any():
        values = values.copy()
        values[image.padding] = np.nan
    return values


def _resized(values: NDArray[np.float32], size: tuple[int, int],
             resample: Image.Resampling) -> NDArray[np.float32]:
    """``values`` resized (Pillow, 32-bit float); padding stays ``NaN`` where the resized
    mask is mostly padding."""
    h, w = size
    nan = np.isnan(values)
    padded = bool(nan.any())
    filled = np.where(nan, np.nanmin(values) if not nan.all() else 0.0, values) if padded \
        else values
    out = np.asarray(Image.fromarray(np.ascontiguousarray(filled, dtype=np.float32), mode="F")
                     .resize((w, h), resample), dtype=np.float32)
    if padded:
        out = out.copy()
        mask = np.asarray(Image.fromarray(nan.astype(np.float32), mode="F").resize(
            (w, h), resample))
        out[mask > 0.5] = np.nan
    return out


def render_8bit(values: NDArray[np.float32], windows: Sequence[tuple[float, float] | None]
                ) -> tuple[NDArray[np.uint8], str]:
    """One linear map of the whole target's physical ``values`` (N, H, W) to uint8, and a
    note saying which: the DICOM window (centre, width) when every image carries the same
    one, else the range of the finite values. Padding (``NaN``) becomes 0."""
    same = windows and all(w is not None and w == windows[0] for w in windows)
    if same:
        centre, width = windows[0]  # type: ignore[misc]
        low, high = centre - width / 2.0, centre + width / 2.0
        how = f"the images' DICOM window (centre {centre:g}, width {width:g})"
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        how = f"the target's value range {low:g}..{high:g}"
    return (linear_uint8(values, low, high),
            f"8-bit rendering (for members without an intensity convention): {how}")


def load_scans(files: Sequence[Path], labels: NDArray[np.int64], classes: Sequence[str], *,
               name: str, source: str, split: str, order: str,
               size: int | tuple[int, int] | None = None,
               filter: str = DEFAULT_FILTER) -> TargetData:
    """A target of 2-D medical files (in the order given), physical values kept.

    Parameters
    ----------
    files : sequence of Path
        One DICOM or NIfTI file per image.
    labels : ndarray, int64 (N,) or (N, L)
        Their class codes (or multi-label indicators).
    classes : sequence of str
        Class names.
    name, source, split, order
        As :class:`TargetData`.
    size : int or (height, width), optional
        Resize every image while loading (needed when they differ in size).
    filter : str
        Pillow resize filter.
    """
    if filter not in RESIZE_FILTERS:
        raise InputError(f"unknown resize filter {filter!r}; use one of {sorted(RESIZE_FILTERS)}")
    if files and is_volume_file(files[0]):
        return load_volumes(files, labels, classes, name=name, source=source, split=split,
                            order=order, size=size)
    if size is not None and not isinstance(size, int) and len(size) == 3:
        raise InputError(f"{source}: a DxHxW size is for volume targets; these files are 2-D "
                         "images: give --size HxW")
    hw = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    def fit(v: NDArray[np.float32]) -> NDArray[np.float32]:
        return v if hw is None or v.shape == hw else _resized(
            v, hw, RESIZE_FILTERS[filter])  # type: ignore[arg-type]

    physical, read = _stacked(files, read_scan, fit, source=source, what="images",
                              advice="resize them to while loading (--size HxW")
    resized = None if hw is None else (f"images resized to {hw[0]}x{hw[1]} while loading "
                                       f"({filter}, in physical values)")
    return _scan_target(physical, read, resized, labels, classes, name=name, source=source,
                        split=split, order=order)


def _scan_target(physical: NDArray[np.float32], read: Sequence["_Read"], resized: str | None,
                 labels: NDArray[np.int64], classes: Sequence[str], *, name: str, source: str,
                 split: str, order: str) -> TargetData:
    """The target of stacked physical values (images or volumes): their one 8-bit rendering,
    and notes on how they were read (resized, modalities, padding)."""
    images, how = render_8bit(physical, [r.window for r in read])
    notes = [how] + ([resized] if resized else [])
    modalities, units = {r.modality for r in read}, {r.unit for r in read}
    modality = modalities.pop() if len(modalities) == 1 else "mixed"
    if modality == "mixed":
        notes.append(f"the files are of several modalities ({', '.join(sorted(modalities))})")
    unit = units.pop() if len(units) == 1 else ""
    padded = int(np.isnan(physical).reshape(len(physical), -1).any(axis=1).sum())
    if padded:
        kind = "volume" if physical.ndim == 4 else "image"
        notes.append(f"{padded} {kind}(s) have padding outside the field of view (masked)")
    return TargetData(images[..., None], labels, name, len(classes), source, split,
                      tuple(classes), order, tuple(notes), physical[..., None], unit, modality)


class _Read(NamedTuple):
    """What a target keeps of each file besides its values."""

    window: tuple[float, float] | None
    modality: str
    unit: str


def _stacked(files: Sequence[Path], read: Callable[[Path], MedicalImage],
             fit: Callable[[NDArray[np.float32]], NDArray[np.float32]], *, source: str,
             what: str, advice: str) -> tuple[NDArray[np.float32], list[_Read]]:
    """Each file read (padding as ``NaN``) and fitted to the target's size, stacked into one
    array filled file by file, and each file's window, modality and unit. Files of different
    sizes without a size to fit them to are one line naming ``advice``."""
    physical: NDArray[np.float32] | None = None
    read_: list[_Read] = []
    for k, f in enumerate(files):
        image = read(f)
        v = fit(_masked(image))
        if physical is None:
            physical = np.empty((len(files), *v.shape), dtype=np.float32)
        elif v.shape != physical.shape[1:]:
            sizes = sorted({"x".join(map(str, v.shape)), "x".join(map(str, physical.shape[1:]))})
            raise InputError(f"{source}: {what} differ in size ({', '.join(sizes)}, at {f}); "
                             f"give one size to {advice} on the command line, size= in "
                             "Python)")
        physical[k] = v
        read_.append(_Read(image.window, image.modality, image.unit))
    if physical is None:
        raise InputError(f"{source}: no files to read")
    return physical, read_


def _resampled(values: NDArray[np.float32], size: tuple[int, ...]) -> NDArray[np.float32]:
    """``values`` resampled trilinearly; padding (``NaN``) filled with the volume's minimum
    first (never spread into the field of view), and ``NaN`` again where the resampled mask
    is mostly padding, as :func:`_resized` does for images."""
    from .volumes import resize_volumes

    nan = np.isnan(values)
    if not nan.any():
        return resize_volumes(values[None], size)[0]
    filled = np.where(nan, np.nanmin(values) if not nan.all() else 0.0, values)
    out = resize_volumes(filled[None], size)[0]
    out[resize_volumes(nan[None].astype(np.float32), size)[0] > 0.5] = np.nan
    return out


def load_volumes(files: Sequence[Path], labels: NDArray[np.int64], classes: Sequence[str], *,
                 name: str, source: str, split: str, order: str,
                 size: int | Sequence[int] | None = None) -> TargetData:
    """A volume target: one NIfTI volume per file (``(z, y, x)`` as :func:`read_nifti`
    reads it) or one DICOM series per directory (:func:`read_dicom_series`), physical values
    kept (padding outside the field of view as NaN), resampled trilinearly to ``size`` (an int for a cube, or
    ``(depth, height, width)``) when given; volumes of different sizes need it."""
    if isinstance(size, int):
        size = (size, size, size)
    if size is not None and len(size) != 3:
        raise InputError(f"{source}: the files are 3-D volumes: give --size DxHxW (or N for a "
                         "cube) to resample them while loading")
    def fit(v: NDArray[np.float32]) -> NDArray[np.float32]:
        return v if size is None or v.shape == tuple(size) else _resampled(v, tuple(size))

    physical, read = _stacked(files, lambda f: read_scan(f, volume=True), fit, source=source,
                              what="volumes", advice="resample them to while loading (--size "
                              "DxHxW")
    resized = None if size is None else (f"volumes resampled to {'x'.join(map(str, size))} "
                                         "while loading (trilinear, in physical values)")
    return _scan_target(physical, read, resized, labels, classes, name=name, source=source,
                        split=split, order=order)


def from_physical(values: NDArray, labels: NDArray, *, unit: str = "", modality: str = "",
                  name: str = "arrays", class_names: Sequence[str] | None = None,
                  window: tuple[float, float] | None = None, split: str = "all") -> TargetData:
    """A :class:`TargetData` from physical values given in Python (HU slices, MR values): the
    values are kept for members with an intensity convention and rendered to 8 bits for the
    others (``window`` (centre, width) when given, else their range; a note says which).

    Parameters
    ----------
    values : array-like, float or integer (N, H, W) or (N, H, W, 1)
        Physical values; ``NaN`` marks pixels outside the field of view; inf is refused.
    labels : array-like (N,)
        Class codes 0..C-1 (``class_names`` names them) or any class values (coded in sorted
        order, as :func:`~.dataset.from_arrays` does).
    unit, modality : str
        What the values are (``"HU"``, ``"CT"``): checked against a member's convention.
    """
    from .dataset import from_arrays

    v = np.asarray(values, dtype=np.float32)
    if v.ndim == 4 and v.shape[-1] == 1:
        v = v[..., 0]
    if v.ndim != 3:
        raise InputError(f"{name}: physical values must be (N, H, W) or (N, H, W, 1) grey "
                         f"images; got shape {v.shape}")
    if np.isinf(v).any():
        raise InputError(f"{name}: physical values hold inf; use NaN for pixels outside the "
                         "field of view")
    images, how = render_8bit(v, [window] * len(v) if window is not None else [None])
    coded = from_arrays(images, labels, name=name, class_names=class_names, split=split)
    return TargetData(coded.images, coded.labels, name, coded.n_classes, "", split,
                      coded.class_names, coded.order, (how,), v[..., None], unit, modality)
