"""NIfTI-1 and NIfTI-2 files (``.nii``, ``.nii.gz``) as physical values
(:class:`~.physical.MedicalImage`), with nibabel.

* **Values**: nibabel's scaled data (``scl_slope``/``scl_inter`` applied when the header sets
  them), read straight to float32 (``np.asarray(img.dataobj, dtype=np.float32)``), whatever the
  byte order on disk. NaN or inf voxels are refused in one line naming the file and the count.
* **Axes**: NIfTI stores ``(x, y, z[, t])`` (``i`` fastest). The reader *reverses* the axes, so
  ``values`` is ``(z, y, x)`` for a volume, ``(t, z, y, x)`` for a 4-D file (kept whole, noted)
  and ``(y, x)`` for a single slice: each ``values[k]`` is one ``(H, W) = (y, x)`` image, with
  rows along the file's ``j`` axis and columns along ``i``, in storage order (nothing is flipped:
  a radiological display may need a flip, which :attr:`affine` tells). Trailing axes of length
  1 are dropped first, so an ``(x, y, 1)`` file is one 2-D image. Because NIfTI data are
  column-major (Fortran order), the reversal is a C-contiguous view: no copy.
* **Geometry**: ``affine`` is nibabel's (``img.affine``: the sform, else the qform), unchanged;
  it maps ``(x, y, z, 1)``, the ``values`` index reversed, to RAS+ millimetres. ``spacing`` is
  the length of the affine's first 2 or 3 columns, reversed to ``values`` order. A file with
  neither sform nor qform has ``affine=None`` (noted).
* **Window**: ``cal_min``/``cal_max``, when the header sets them, recorded as
  ``window = ((cal_min + cal_max) / 2, cal_max - cal_min)``; not applied.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError, first_line, optional_import
from .physical import MedicalImage

__all__ = ["read_nifti", "spatial_shape"]

PathLike = Union[str, "os.PathLike[str]"]


def _load(path: Path) -> Any:
    nib = optional_import("nibabel", "medical", "reading NIfTI")
    try:
        img = nib.load(path)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # nibabel's ImageFileError and the parsers' own errors
        raise InputError(f"{path}: cannot be read as NIfTI ({first_line(exc)}); give a .nii or "
                         ".nii.gz file") from None
    if not isinstance(img, (nib.Nifti1Pair, nib.Nifti2Pair)):
        raise InputError(f"{path}: a {type(img).__name__}, not a NIfTI image; convert it to "
                         ".nii or .nii.gz")
    return img


def _shape(img: Any, path: Path) -> tuple[int, ...]:
    """The file's shape without trailing axes of length 1 (beyond the first two)."""
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 2 or len(shape) > 4:
        raise InputError(f"{path}: a NIfTI image of shape {tuple(img.shape)}; 2-D, 3-D and 4-D "
                         "images are read")
    return shape


def _data(img: Any, path: Path, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """The scaled voxel values as float32, ``shape`` in the file's axis order."""
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, MemoryError):
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read the NIfTI voxel data ({first_line(exc)}); the "
                         "file may be truncated, or its data type has no single value per voxel "
                         "(complex, RGB)") from None
    data = data.reshape(shape, order="A")  # dropping trailing 1s keeps the memory layout
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InputError(f"{path}: {bad} of {data.size} voxels are NaN or inf; replace them "
                         "(e.g. with numpy.nan_to_num) and save the file again")
    return data


def _geometry(img: Any, n_spatial: int) -> tuple[Optional[NDArray[np.float64]],
                                                  tuple[float, ...], list[str]]:
    """The affine (None without sform and qform), the spacing in ``values`` order, notes."""
    header = img.header
    affine = np.asarray(img.affine, dtype=np.float64)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[:n_spatial]
    notes = []
    zooms = np.asarray(header.get_zooms()[:n_spatial], dtype=np.float64)
    if not np.allclose(sizes, zooms, rtol=1e-4, atol=1e-6):
        notes.append(f"voxel sizes from the affine ({_fmt(sizes)} mm) differ from pixdim "
                     f"({_fmt(zooms)}); the affine's are used")
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        return None, tuple(sizes[::-1]), notes + ["no sform or qform: position unknown (affine "
                                                  "None)"]
    return affine, tuple(sizes[::-1]), notes


def _fmt(values: Any) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


def _window(header: Any) -> Optional[tuple[float, float]]:
    lo, hi = float(header["cal_min"]), float(header["cal_max"])
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return None
    return (lo + hi) / 2.0, hi - lo


def _notes(img: Any, shape: tuple[int, ...]) -> list[str]:
    header = img.header
    notes = [f"NIfTI-{2 if header.sizeof_hdr == 540 else 1}, axes reversed from the file's "
             f"{shape} to {shape[::-1]}"]
    if header.endianness == ">":
        notes.append("big-endian data")
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    if (slope, inter) != (1.0, 0.0):
        notes.append(f"scl_slope {float(slope):g}, scl_inter {float(inter):g} applied")
    if len(shape) == 4:
        step = float(header["pixdim"][4])
        unit = header.get_xyzt_units()[1]
        notes.append(f"4-D kept whole: {shape[3]} volumes first (t, z, y, x); time step "
                     f"pixdim[4] = {step:g} ({unit} by xyzt_units)")
    return notes


def spatial_shape(path: PathLike) -> tuple[int, ...]:
    """The file's shape (trailing axes of length 1 dropped), read from its header alone."""
    path = Path(path)
    return _shape(_load(path), path)


def read_nifti(path: PathLike) -> MedicalImage:
    """One NIfTI-1 or NIfTI-2 file as physical values (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        A ``.nii`` or ``.nii.gz`` file (a ``.hdr``/``.img`` pair is read too).

    Returns
    -------
    MedicalImage
        ``values`` of shape ``(H, W)`` = ``(y, x)``, ``(Z, H, W)`` = ``(z, y, x)`` or
        ``(T, Z, H, W)`` = ``(t, z, y, x)``; ``spacing`` ``(dy, dx)`` or ``(dz, dy, dx)``;
        ``affine`` the file's, acting on ``(x, y, z, 1)``; ``modality`` ``"NIfTI"``;
        ``space`` ``"RAS"``.

    Raises
    ------
    InputError
        Not a NIfTI file, more than 4 axes, unreadable voxel data, or NaN/inf voxels.
    MissingExtraError
        nibabel is not installed.
    """
    path = Path(path)
    img = _load(path)
    shape = _shape(img, path)
    data = _data(img, path, shape)
    affine, spacing, geo_notes = _geometry(img, min(len(shape), 3))
    values = data.T  # (x, y, z[, t]) -> ([t,] z, y, x); C-contiguous for Fortran-order data
    if not values.flags.c_contiguous:
        values = np.ascontiguousarray(values)
    return MedicalImage(values=values, spacing=spacing, affine=affine, modality="NIfTI",
                        unit="", padding=None, source=str(path),
                        notes=_notes(img, shape) + geo_notes, window=_window(img.header),
                        space="RAS" if affine is not None else "")
