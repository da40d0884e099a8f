"""DICOM files and series as physical values (:class:`~.physical.MedicalImage`), with pydicom.

What is applied, in this order:

1. **Decoding** through pydicom's decoder plugins (RLE, JPEG, JPEG-LS, JPEG 2000: pylibjpeg and
   its plugins, or Pillow). A compressed transfer syntax with no decoder installed is refused in
   one line that names the transfer syntax and the pip line that installs one.
2. **Padding**: PixelPaddingValue (and PixelPaddingRangeLimit, inclusive) compared with the
   *stored* values, before any rescale, as the standard defines it; the mask is
   :attr:`~.physical.MedicalImage.padding`. Padded pixels keep their rescaled value.
3. **Modality LUT**: ``stored * RescaleSlope + RescaleIntercept`` (or the Modality LUT
   Sequence, through pydicom's ``apply_modality_lut``). For Enhanced multi-frame images the
   rescale is read per frame from the PerFrameFunctionalGroupsSequence, else from the
   SharedFunctionalGroupsSequence (``PixelValueTransformationSequence``), else from the top
   level: pydicom's ``apply_modality_lut`` reads only the top level, so on such a file (e.g.
   NEMA's eCT_Supplemental) it would leave the stored values unchanged. Each frame is computed
   in float64 and stored as float32 (exact to float32 rounding, never a float64 copy of the
   whole volume).
4. **MONOCHROME1** (minimum is white) is inverted so that higher values are brighter, as in
   MONOCHROME2: ``v -> lo + hi - v``, where ``lo..hi`` is the range that the stored value range
   (BitsStored, PixelRepresentation) covers after the modality LUT. The map depends on the
   header only, never on the image's content, so the slices of a series stay comparable. The
   recorded window centre is mapped the same way.
5. **Not applied**: the VOI LUT and window (the first WindowCenter/WindowWidth pair is recorded
   as :attr:`~.physical.MedicalImage.window`), the Presentation LUT, Real World Value Mapping.

Geometry: slices of a series, and frames of a multi-frame file that give their positions, are
sorted by ImagePositionPatient projected on the slice normal (ImageOrientationPatient's row
direction x column direction), never by InstanceNumber; the slice index then runs along the
normal, which makes the affine right-handed. Colour images (RGB, YBR, PALETTE COLOR) are refused:
they hold no single physical value per pixel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence, Union

import numpy as np
from numpy.typing import NDArray

from ..errors import EXTRAS, InputError, first_line, optional_import
from .physical import MedicalImage

__all__ = ["read_dicom", "read_dicom_path", "read_dicom_series"]

PathLike = Union[str, "os.PathLike[str]"]

#: Keywords of the elements that hold pixel data.
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: The pip line that installs a decoder, by compressed transfer syntax UID.
DECODER_PIP = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                     "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                     "1.2.840.10008.1.2.4.203"), "pip install pylibjpeg pylibjpeg-openjpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                     "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                     "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
                    "pip install pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle",
}
#: Positions closer than this along the normal (mm) are the same position.
SAME_POSITION_MM = 1e-3
#: Orientation cosines that differ by less than this are the same orientation.
SAME_ORIENTATION = 1e-4


def _pydicom() -> ModuleType:
    return optional_import("pydicom", "medical", "reading DICOM")


# --------------------------------------------------------------------------- reading a file
def _dcmread(path: Path, *, pixels: bool = True) -> Any:
    """The dataset of ``path`` (its pixel data left unread when ``pixels`` is False)."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except pydicom.errors.InvalidDicomError as exc:
        raise InputError(f"{path}: not a DICOM file ({first_line(exc)}); give a DICOM file or "
                         "a folder holding the files of one series") from None
    except (OSError, MemoryError):
        raise  # a missing or unreadable file names itself
    except Exception as exc:  # a damaged file: pydicom's parser fails in many ways
        raise InputError(f"{path}: cannot be read as DICOM ({first_line(exc)}); the file may be "
                         "truncated or damaged") from None


def _require_pixels(ds: Any, path: Path) -> None:
    if not any(k in ds for k in PIXEL_KEYWORDS):
        sop = getattr(ds.get("SOPClassUID"), "name", None) or "unknown SOP class"
        raise InputError(f"{path}: the DICOM file has no pixel data ({sop}, Modality "
                         f"{ds.get('Modality', '?')}); give an image file")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(f"{path}: a colour DICOM image ({photometric}) holds no single physical "
                         "value per pixel; give a greyscale (MONOCHROME1/2) image")


def _transfer_syntax(ds: Any, path: Path) -> Any:
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None:
        raise InputError(f"{path}: the DICOM file names no Transfer Syntax UID in its file meta "
                         "information, so its pixel data cannot be decoded; rewrite it with one")
    return uid


def _check_decoder(uid: Any, path: Path) -> None:
    """Refuse, in one line naming the pip line, a transfer syntax without an installed
    decoder (pydicom's own error lists every plugin on several lines)."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:  # pydicom's answer for a syntax no plugin of it knows
        raise InputError(f"{path}: pydicom cannot decode the transfer syntax {uid.name} ({uid}); "
                         "convert the file to an uncompressed one (e.g. gdcmconv --raw)") from None
    if not decoder.is_available:
        pip = DECODER_PIP.get(str(uid), EXTRAS["medical"])
        raise InputError(f"{path}: the pixel data are compressed as {uid.name} ({uid}) and no "
                         f"decoder for it is installed; install one with: {pip}")


def _stored(ds: Any, path: Path) -> NDArray:
    """The stored pixel values, shape (frames, rows, columns)."""
    _require_pixels(ds, path)
    uid = _transfer_syntax(ds, path)
    _check_decoder(uid, path)
    try:
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot decode the {uid.name} pixel data "
                         f"({first_line(exc)})") from None
    return arr.reshape(_n_frames(ds), arr.shape[-2], arr.shape[-1])


def _n_frames(ds: Any) -> int:
    return int(ds.get("NumberOfFrames") or 1)


# --------------------------------------------------------------------------- functional groups
def _group_item(ds: Any, frame: int, keyword: str) -> tuple[Any, str]:
    """The first item of the functional-group sequence ``keyword`` for ``frame`` (per-frame
    groups first, then shared ones) and where it came from; ``(None, "")`` when absent."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(keyword)
        if seq:
            return seq[0], "per-frame functional groups"
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(keyword)
        if seq:
            return seq[0], "shared functional groups"
    return None, ""


def _attr(ds: Any, frame: int, group: str, keyword: str) -> Any:
    """``keyword`` from the functional group ``group`` of ``frame``, else from the top level."""
    item, _ = _group_item(ds, frame, group)
    if item is not None and keyword in item:
        return item.get(keyword)
    return ds.get(keyword)


# --------------------------------------------------------------------------- modality LUT
@dataclass(frozen=True)
class _Rescale:
    slope: float = 1.0
    intercept: float = 0.0
    kind: str = ""  #: RescaleType as written ("" when absent)
    where: str = ""  #: "" (none), "top level", "shared/per-frame functional groups", "LUT"


def _rescale_of(item: Any, where: str) -> _Rescale:
    return _Rescale(float(item.get("RescaleSlope", 1.0)), float(item.get("RescaleIntercept", 0.0)),
                    str(item.get("RescaleType", "") or "").strip(), where)


def _rescales(ds: Any, n: int) -> list[_Rescale]:
    """The rescale of each frame, from the functional groups where they give one."""
    found = [_group_item(ds, f, "PixelValueTransformationSequence") for f in range(n)]
    if any(item is not None for item, _ in found):
        return [_rescale_of(item, where) if item is not None else _Rescale()
                for item, where in found]
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return [_rescale_of(ds, "top level")] * n
    if ds.get("ModalityLUTSequence"):
        kind = str(ds.ModalityLUTSequence[0].get("ModalityLUTType", "") or "").strip()
        return [_Rescale(kind=kind, where="LUT")] * n
    return [_Rescale()] * n


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _lut(ds: Any, stored: NDArray) -> NDArray[np.float32]:
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)


def _frame_values(ds: Any, stored: NDArray, rescale: _Rescale) -> NDArray[np.float32]:
    """One frame's physical values."""
    if rescale.where == "LUT":
        return _lut(ds, stored)
    if rescale.slope == 1.0 and rescale.intercept == 0.0:
        return stored.astype(np.float32)
    # float64 for one frame: rounded once, to float32, like the exact value would be.
    return (stored.astype(np.float64) * rescale.slope + rescale.intercept).astype(np.float32)


def _mapped_range(ds: Any, rescale: _Rescale, frame: NDArray) -> tuple[float, float]:
    """The range the stored value range covers after the modality LUT (float pixel data,
    which have no stored range, use the frame's own)."""
    if frame.dtype.kind == "f":
        return float(frame.min()), float(frame.max())
    lo, hi = _stored_range(ds)
    if rescale.where == "LUT":
        out = _lut(ds, np.arange(lo, hi + 1, dtype=np.int64)) if hi - lo < 2 ** 17 else frame
        return float(out.min()), float(out.max())
    ends = (lo * rescale.slope + rescale.intercept, hi * rescale.slope + rescale.intercept)
    return float(min(ends)), float(max(ends))


def _unit(modality: str, rescale: _Rescale, pet_units: str = "") -> str:
    """``HU`` for CT without a RescaleType (the CT default) or with HU; another defined type
    as written; PET's Units (e.g. ``BQML``), which its rescaled values are in; ``""`` for US
    (unspecified) or nothing."""
    if rescale.kind and rescale.kind.upper() != "US":
        return rescale.kind
    if not rescale.kind and modality == "CT" and rescale.where:
        return "HU"
    if modality == "PT" and pet_units:
        return pet_units
    return ""


# --------------------------------------------------------------------------- pixels of one file
@dataclass
class _Pixels:
    values: NDArray[np.float32]  #: (frames, rows, columns)
    padding: Optional[NDArray[np.bool_]]
    unit: str
    window: Optional[tuple[float, float]]
    rescales: list[_Rescale]  #: per frame, in the order of ``values``
    floats: bool  #: float pixel data (no rescale applies)
    notes: list[str] = field(default_factory=list)  #: besides the rescale (see _rescale_notes)

    def all_notes(self) -> list[str]:
        return _rescale_notes(self.rescales, self.floats, "frames") + self.notes


def _padding(ds: Any, stored: NDArray) -> Optional[NDArray[np.bool_]]:
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    lo, hi = sorted((value, value if limit is None else limit))
    return (stored >= lo) & (stored <= hi)


def _window(ds: Any) -> tuple[Optional[tuple[float, float]], list[str]]:
    item, _ = _group_item(ds, 0, "FrameVOILUTSequence")
    src = item if item is not None else ds
    centre, width = src.get("WindowCenter"), src.get("WindowWidth")
    if centre is None or width is None:
        return None, []
    centres = list(centre) if isinstance(centre, Sequence) and not isinstance(centre, str) \
        else [centre]
    widths = list(width) if isinstance(width, Sequence) and not isinstance(width, str) else [width]
    notes = ([f"{len(centres)} windows given; the first ({float(centres[0]):g}/"
              f"{float(widths[0]):g}) recorded"] if len(centres) > 1 else [])
    return (float(centres[0]), float(widths[0])), notes


def _physical(ds: Any, path: Path, order: Optional[Sequence[int]] = None) -> _Pixels:
    """The physical values of every frame of ``ds`` (in ``order`` when given)."""
    stored = _stored(ds, path)
    rescales = _rescales(ds, len(stored))
    if order is not None:
        stored = stored[list(order)]
        rescales = [rescales[i] for i in order]
    modality = str(ds.get("Modality", "") or "")
    values = np.empty(stored.shape, dtype=np.float32)
    for f, frame in enumerate(stored):
        values[f] = _frame_values(ds, frame, rescales[f])
    window, notes = _window(ds)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        window = _invert(ds, values, stored, rescales, window)
        notes.append("MONOCHROME1 inverted (v -> lo + hi - v over the rescaled stored range) so "
                     "that higher is brighter")
    padding = _padding(ds, stored)
    if padding is not None:
        notes.append(_padding_note(ds))
    unit = _unit(modality, rescales[0], str(ds.get("Units", "") or "").strip())
    return _Pixels(values, padding, unit, window, rescales, stored.dtype.kind == "f", notes)


def _padding_note(ds: Any) -> str:
    limit = ds.get("PixelPaddingRangeLimit")
    what = (f"PixelPaddingValue {ds.PixelPaddingValue}" if limit is None else
            f"PixelPaddingValue {ds.PixelPaddingValue} to PixelPaddingRangeLimit {limit}")
    return f"padding ({what}, stored values) masked in `padding`"


def _invert(ds: Any, values: NDArray[np.float32], stored: NDArray, rescales: list[_Rescale],
            window: Optional[tuple[float, float]]) -> Optional[tuple[float, float]]:
    """Invert MONOCHROME1 frames in place; the window centre (of frame 0) is mapped alike."""
    for f, rescale in enumerate(rescales):
        lo, hi = _mapped_range(ds, rescale, stored[f])
        np.subtract(np.float32(lo + hi), values[f], out=values[f])
        if f == 0 and window is not None:
            window = (lo + hi - window[0], window[1])
    return window


def _rescale_notes(rescales: list[_Rescale], floats: bool, what: str) -> list[str]:
    first = rescales[0]
    if floats:
        return ["float pixel data: values kept as stored (no rescale applies)"]
    if first.where == "LUT":
        return ["modality LUT sequence applied"]
    if not first.where:
        return ["no rescale in the file: stored values kept"]
    pairs = {(r.slope, r.intercept) for r in rescales}
    what = (f"rescale slope {first.slope:g}, intercept {first.intercept:g}" if len(pairs) == 1
            else f"{len(pairs)} different rescales (slope, intercept) across {what}")
    return [f"{what} from the {first.where}" + (f" (type {first.kind})" if first.kind else "")]


# --------------------------------------------------------------------------- geometry
def _vector(value: Any, n: int) -> Optional[NDArray[np.float64]]:
    if value is None:
        return None
    try:
        v = np.array([float(x) for x in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (n,) and np.isfinite(v).all() else None


def _orientation(value: Any) -> Optional[NDArray[np.float64]]:
    """ImageOrientationPatient as a 2x3 array of unit vectors (row direction, column
    direction), or None when absent or degenerate."""
    v = _vector(value, 6)
    if v is None:
        return None
    rc = v.reshape(2, 3)
    norms = np.linalg.norm(rc, axis=1)
    if (norms < 1e-6).any():
        return None
    return rc / norms[:, None]


def _pixel_spacing(ds: Any, frame: int = 0) -> tuple[Optional[tuple[float, float]], list[str]]:
    """(row spacing dy, column spacing dx) in mm: PixelSpacing, else ImagerPixelSpacing
    (at the detector, noted), else None."""
    ps = _vector(_attr(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if ps is not None:
        return (ps[0], ps[1]), []
    ips = _vector(ds.get("ImagerPixelSpacing"), 2)
    if ips is not None:
        return (ips[0], ips[1]), ["pixel spacing from ImagerPixelSpacing (at the detector, not "
                                  "corrected for magnification)"]
    return None, ["no PixelSpacing: in-plane spacing unknown (nan)"]


def _slice_gap(ds: Any, frame: int = 0) -> Optional[float]:
    """SpacingBetweenSlices, else SliceThickness: the slice step when positions do not say."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        v = _attr(ds, frame, "PixelMeasuresSequence", keyword)
        try:
            if v is not None and float(v) > 0:
                return float(v)
        except (TypeError, ValueError):
            continue
    return None


@dataclass
class _Stack:
    """Where the slices of a stack lie: their order, the slice step and the affine."""

    order: list[int]
    dz: float
    affine: Optional[NDArray[np.float64]]
    notes: list[str]


def _affine(orient: NDArray, spacing: tuple[float, float], step: NDArray,
            origin: NDArray) -> NDArray[np.float64]:
    a = np.eye(4)
    a[:3, 0] = orient[0] * spacing[1]  # x: along a row (column index), column spacing
    a[:3, 1] = orient[1] * spacing[0]  # y: down a column (row index), row spacing
    a[:3, 2] = step
    a[:3, 3] = origin
    return a


def _sort_stack(positions: list[Optional[NDArray]], orient: Optional[NDArray],
                spacing: Optional[tuple[float, float]], gap: Optional[float],
                what: str) -> tuple[Optional[_Stack], Optional[tuple[int, int]]]:
    """Sort slices by their position along the normal. Returns the stack, or None and the
    pair of indices of two slices at the same position (or None when positions are absent)."""
    if orient is None or any(p is None for p in positions):
        return None, None
    normal = np.cross(orient[0], orient[1])
    pos = np.stack([p for p in positions if p is not None])
    depth = pos @ normal
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    gaps = np.diff(depth[order])
    if gaps.size and gaps.min() < SAME_POSITION_MM:
        k = int(np.argmin(gaps))
        return None, (order[k], order[k + 1])
    notes = []
    if order != sorted(order):
        notes.append(f"{what} sorted by ImagePositionPatient along the slice normal")
    if gaps.size:
        dz = float((depth[order[-1]] - depth[order[0]]) / gaps.size)
        step = (pos[order[-1]] - pos[order[0]]) / gaps.size
        if gaps.max() - gaps.min() > max(0.01, 0.01 * dz):
            notes.append(f"uneven gaps between {what} ({gaps.min():g}..{gaps.max():g} mm); the "
                         f"spacing is their mean, {dz:g} mm")
    else:
        dz = gap if gap is not None else float("nan")
        step = normal * (gap if gap is not None else 1.0)
    affine = None if spacing is None else _affine(orient, spacing, step, pos[order[0]])
    return _Stack(order, dz, affine, notes), None


def _gap_or_nan(gap: Optional[float], what: str) -> tuple[float, list[str]]:
    if gap is not None:
        return gap, [f"{what} spacing from SpacingBetweenSlices/SliceThickness ({gap:g} mm)"]
    return float("nan"), [f"{what} spacing unknown (nan)"]


# --------------------------------------------------------------------------- one file
def read_dicom(path: PathLike) -> MedicalImage:
    """One DICOM file as physical values.

    Parameters
    ----------
    path : str or path-like
        A DICOM file (Part 10, with the ``DICM`` prefix).

    Returns
    -------
    MedicalImage
        ``values`` of shape ``(H, W)`` for a single-frame image, ``(Z, H, W)`` for a
        multi-frame one (frames sorted by position along the slice normal when every frame
        gives its position and no two share one; in file order otherwise, noted).

    Raises
    ------
    InputError
        Not a DICOM file, no pixel data, a colour image, a compressed transfer syntax without
        an installed decoder, or pixel data that cannot be decoded.
    MissingExtraError
        pydicom is not installed.
    """
    path = Path(path)
    ds = _dcmread(path)
    n = _n_frames(ds)
    spacing, notes = _pixel_spacing(ds)
    if n == 1:
        return _single_frame(ds, path, spacing, notes)
    return _multi_frame(ds, path, n, spacing, notes)


def _image(px: _Pixels, ds: Any, path: Path, spacing: tuple[float, ...],
           affine: Optional[NDArray], notes: list[str], values: NDArray[np.float32],
           padding: Optional[NDArray[np.bool_]]) -> MedicalImage:
    return MedicalImage(values=values, spacing=spacing, affine=affine,
                        modality=str(ds.get("Modality", "") or ""), unit=px.unit, padding=padding,
                        source=str(path), notes=list(dict.fromkeys(notes)),
                        window=px.window, space="LPS" if affine is not None else "")


def _single_frame(ds: Any, path: Path, spacing: Optional[tuple[float, float]],
                  notes: list[str]) -> MedicalImage:
    px = _physical(ds, path)
    orient = _orientation(ds.get("ImageOrientationPatient"))
    origin = _vector(ds.get("ImagePositionPatient"), 3)
    affine = None
    if orient is not None and origin is not None and spacing is not None:
        # A 2-D image uses only columns 0, 1 and 3; column 2 (the normal) keeps it invertible.
        gap = _slice_gap(ds)
        affine = _affine(orient, spacing, np.cross(orient[0], orient[1]) * (gap or 1.0), origin)
    dydx = spacing or (float("nan"), float("nan"))
    padding = None if px.padding is None else px.padding[0]
    return _image(px, ds, path, dydx, affine, notes + px.all_notes(), px.values[0], padding)


def _multi_frame(ds: Any, path: Path, n: int, spacing: Optional[tuple[float, float]],
                 notes: list[str]) -> MedicalImage:
    positions = [_vector(_attr(ds, f, "PlanePositionSequence", "ImagePositionPatient"), 3)
                 for f in range(n)]
    orients = [_orientation(_attr(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient"))
               for f in range(n)]
    orient = orients[0] if _same_orientation(orients) else None
    stack, same = _sort_stack(positions, orient, spacing, _slice_gap(ds), "frames")
    if stack is None:
        dz, gap_notes = _gap_or_nan(_slice_gap(ds), "frame")
        why = ("two frames share a position" if same is not None else
               "the frames do not all give one position and one orientation")
        stack = _Stack(list(range(n)), dz, None, [f"frames kept in file order ({why})"] + gap_notes)
    px = _physical(ds, path, stack.order if stack.order != list(range(n)) else None)
    dydx = spacing or (float("nan"), float("nan"))
    return _image(px, ds, path, (stack.dz, *dydx), stack.affine,
                  notes + stack.notes + px.all_notes(), px.values, px.padding)


def _differing(orients: list[NDArray]) -> Optional[int]:
    """The index of the first orientation that differs from the first (None: all agree)."""
    return next((i for i, o in enumerate(orients)
                 if np.abs(o - orients[0]).max() >= SAME_ORIENTATION), None)


def _same_orientation(orients: list[Optional[NDArray]]) -> bool:
    given = [o for o in orients if o is not None]
    return len(given) == len(orients) and _differing(given) is None


# --------------------------------------------------------------------------- a series
@dataclass
class _Header:
    path: Path
    ds: Any


def _series_headers(directory: Path) -> tuple[list[_Header], list[str]]:
    """The headers of the image files in ``directory``; files that are not DICOM images
    (other files, DICOMDIR, structured reports) are skipped and noted."""
    pydicom = _pydicom()
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    headers, skipped = [], []
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            skipped.append(p.name)
            continue
        except Exception as exc:
            if isinstance(exc, (OSError, MemoryError)):
                raise
            raise InputError(f"{p}: cannot be read as DICOM ({first_line(exc)}); the file may "
                             "be truncated or damaged; remove it from the series folder") from None
        if "Rows" in ds and "Columns" in ds:
            headers.append(_Header(p, ds))
        else:
            skipped.append(p.name)
    if not headers:
        raise InputError(f"{directory}: no DICOM image files in the folder ({len(files)} files); "
                         "give a folder holding the files of one series")
    notes = ([f"skipped {len(skipped)} file(s) that are not DICOM images: "
              f"{', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}"] if skipped else [])
    return headers, notes


def _one_series(directory: Path, headers: list[_Header]) -> None:
    counts: dict[str, int] = {}
    for h in headers:
        uid = str(h.ds.get("SeriesInstanceUID", "") or "(none)")
        counts[uid] = counts.get(uid, 0) + 1
    if len(counts) > 1:
        listed = ", ".join(f"{uid} ({k} file{'s' if k != 1 else ''})"
                           for uid, k in counts.items())
        raise InputError(f"{directory}: {len(counts)} series in one folder (SeriesInstanceUID "
                         f"{listed}); put each series in its own folder and read that")


def _one_shape(directory: Path, headers: list[_Header]) -> tuple[int, int]:
    first = headers[0]
    shape = (int(first.ds.Rows), int(first.ds.Columns))
    for h in headers[1:]:
        other = (int(h.ds.Rows), int(h.ds.Columns))
        if other != shape:
            raise InputError(f"{directory}: slices of different shapes, {shape[0]}x{shape[1]} "
                             f"({first.path.name}) and {other[0]}x{other[1]} ({h.path.name}); "
                             "one series needs one slice shape")
    return shape


def _series_stack(directory: Path, headers: list[_Header],
                  spacing: Optional[tuple[float, float]]) -> _Stack:
    orients = [_orientation(h.ds.get("ImageOrientationPatient")) for h in headers]
    given = [o for o in orients if o is not None]
    k = _differing(given) if len(given) == len(orients) else None
    if k is not None:
        raise InputError(f"{directory}: slices of different ImageOrientationPatient "
                         f"({headers[0].path.name}, {headers[k].path.name}); one series needs one "
                         "orientation")
    positions = [_vector(h.ds.get("ImagePositionPatient"), 3) for h in headers]
    stack, same = _sort_stack(positions, orients[0], spacing, _slice_gap(headers[0].ds), "slices")
    if same is not None:
        a, b = (headers[i].path.name for i in same)
        raise InputError(f"{directory}: two slices at the same position ({a}, {b}); a series "
                         "with several time points or echoes is not one volume: split it")
    if stack is not None:
        return stack
    return _instance_order(headers)


def _instance_order(headers: list[_Header]) -> _Stack:
    """No positions: InstanceNumber order (file-name order where that is missing)."""
    numbers = [h.ds.get("InstanceNumber") for h in headers]
    dz, notes = _gap_or_nan(_slice_gap(headers[0].ds), "slice")
    if all(n is not None for n in numbers):
        order = sorted(range(len(headers)), key=lambda i: int(numbers[i]))
        return _Stack(order, dz, None, ["no ImagePositionPatient/ImageOrientationPatient on "
                                        "every slice: sorted by InstanceNumber"] + notes)
    return _Stack(list(range(len(headers))), dz, None,
                  ["no slice positions or instance numbers: slices in file-name order"] + notes)


def read_dicom_series(directory: PathLike) -> MedicalImage:
    """The single-frame DICOM files of one series in ``directory`` as one volume.

    Slices are sorted by ImagePositionPatient projected on the slice normal (never by
    InstanceNumber, which scanners number either way); the slice spacing is the mean gap
    between those projections (uneven gaps are noted). Slices without positions fall back to
    InstanceNumber order, noted. Files that are not DICOM images are skipped, noted. A folder
    holding one multi-frame file is read as that file.

    Parameters
    ----------
    directory : str or path-like
        A folder holding the files of one series (no recursion into sub-folders).

    Returns
    -------
    MedicalImage
        ``values`` of shape ``(Z, H, W)``, ``spacing`` ``(dz, dy, dx)``.

    Raises
    ------
    InputError
        Two series in the folder (naming both and their file counts), slices of different
        shapes or orientations, two slices at one position, several multi-frame files, or any
        error of :func:`read_dicom` for a slice.
    """
    directory = Path(directory)
    headers, notes = _series_headers(directory)
    _one_series(directory, headers)
    multi = [h for h in headers if _n_frames(h.ds) > 1]
    if multi:
        if len(headers) == 1:
            return read_dicom(multi[0].path)
        raise InputError(f"{directory}: {len(headers)} image files, of which {len(multi)} are "
                         f"multi-frame ({multi[0].path.name}); read each multi-frame file on its "
                         "own")
    rows, cols = _one_shape(directory, headers)
    spacing, sp_notes = _pixel_spacing(headers[0].ds)
    stack = _series_stack(directory, headers, spacing)
    return _read_slices(directory, [headers[i] for i in stack.order], (rows, cols), spacing,
                        stack, notes + sp_notes)


def _read_slices(directory: Path, headers: list[_Header], shape: tuple[int, int],
                 spacing: Optional[tuple[float, float]], stack: _Stack,
                 notes: list[str]) -> MedicalImage:
    """Decode the slices (in stack order) one at a time into one float32 volume."""
    values = np.empty((len(headers), *shape), dtype=np.float32)
    padding: Optional[NDArray[np.bool_]] = None
    units, rescales, first = set(), [], None
    notes = list(notes)
    for z, h in enumerate(headers):
        px = _physical(_dcmread(h.path), h.path)
        values[z] = px.values[0]
        if px.padding is not None:
            padding = np.zeros(values.shape, dtype=bool) if padding is None else padding
            padding[z] = px.padding[0]
        units.add(px.unit)
        rescales += px.rescales
        first = px if first is None else first
        notes.extend(px.notes)  # the rescales are summarised once, below
    assert first is not None
    notes = _rescale_notes(rescales, first.floats, "slices") + notes
    if len(units) > 1:
        notes.append(f"slices disagree on the unit ({', '.join(sorted(units))}); the first "
                     "slice's is recorded")
    dydx = spacing or (float("nan"), float("nan"))
    return _image(first, headers[0].ds, directory, (stack.dz, *dydx), stack.affine,
                  notes + stack.notes + [f"{len(headers)} slices of one series"], values, padding)


def read_dicom_path(path: PathLike) -> MedicalImage:
    """A DICOM file (:func:`read_dicom`) or a folder of one series (:func:`read_dicom_series`)."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if path.is_file():
        return read_dicom(path)
    raise InputError(f"{path}: no such file or folder; give a DICOM file or a folder holding the "
                     "files of one series")
