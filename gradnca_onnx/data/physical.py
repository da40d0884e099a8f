"""Medical images as physical values: the type that the DICOM and NIfTI readers return.

A :class:`MedicalImage` holds what a scanner measured (Hounsfield units for CT, the scanner's
own scale for MR), before any display mapping (window, VOI LUT) or any conversion to uint8.

Axis conventions (the same for every reader):

* ``values`` is indexed like a NumPy image stack: ``(H, W)`` for one 2-D image, ``(Z, H, W)``
  for a volume (slices or frames first, in spatial order where the file says where they lie),
  ``(T, Z, H, W)`` for a 4-D NIfTI. Rows (``H``) and columns (``W``) are kept in storage
  order: nothing is flipped or reoriented, so :attr:`~MedicalImage.affine` stays exact.
* ``spacing`` is in millimetres, one entry per *spatial* axis, in the same order as the last
  2 or 3 axes of ``values``: ``(dy, dx)`` or ``(dz, dy, dx)``. An axis whose spacing the file
  does not give is ``nan`` (and a note says so).
* ``affine`` maps a voxel index written *reversed*, ``(x, y, z, 1) = (column, row, slice, 1)``,
  to millimetres in :attr:`~MedicalImage.space` (``"LPS"``: DICOM patient coordinates;
  ``"RAS"``: NIfTI world coordinates). This is the ITK/SimpleITK convention
  (``GetArrayFromImage`` gives ``z, y, x``; the direction matrix and origin are ``x, y, z``)
  and, for NIfTI, exactly the file's affine. :meth:`~MedicalImage.world` takes an index in
  ``values`` order and does the reversal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["MedicalImage"]


@dataclass
class MedicalImage:
    """One medical image (2-D), volume or series (3-D) or time series (4-D), as physical values.

    Attributes
    ----------
    values : ndarray of float32
        Physical values: the modality LUT (rescale slope and intercept) applied, MONOCHROME1
        inverted, no window or VOI LUT applied. Shape ``(H, W)``, ``(Z, H, W)`` or
        ``(T, Z, H, W)`` (see the module docstring).
    spacing : tuple of float
        Millimetres per spatial axis, the last ``len(spacing)`` axes of ``values`` in their
        order; ``nan`` where unknown.
    affine : ndarray of float64, shape (4, 4), or None
        Voxel ``(x, y, z, 1)`` (the ``values`` index reversed) to millimetres in ``space``;
        ``None`` when the file does not say where the image lies.
    modality : str
        The DICOM Modality (``"CT"``, ``"MR"``, ...), or ``"NIfTI"``.
    unit : str
        ``"HU"`` for CT whose rescale type says so (or is absent, which means HU for CT);
        another defined DICOM rescale type as written; ``""`` when unknown or unspecified.
    padding : ndarray of bool, or None
        True where a pixel is padding (outside the scanner's field of view), same shape as
        ``values``; ``None`` when the file declares no padding. Padded pixels keep their
        rescaled value in ``values``: mask them before computing statistics.
    source : str
        The file or folder read.
    notes : list of str
        One line each on how the image was read (what was applied, sorted, assumed).
    window : tuple of (float, float), or None
        The file's first (WindowCenter, WindowWidth), in the units of ``values``; recorded, not
        applied.
    space : str
        ``"LPS"`` (DICOM patient coordinates), ``"RAS"`` (NIfTI world) or ``""`` (no affine).
    """

    values: NDArray[np.float32]
    spacing: tuple[float, ...]
    affine: Optional[NDArray[np.float64]] = None
    modality: str = ""
    unit: str = ""
    padding: Optional[NDArray[np.bool_]] = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    window: Optional[tuple[float, float]] = None
    space: str = ""

    def __post_init__(self) -> None:
        # Checked once here so that every reader's output obeys the same contract.
        if self.values.dtype != np.float32:
            raise TypeError(f"values must be float32, not {self.values.dtype}")
        if self.values.ndim not in (2, 3, 4):
            raise ValueError(f"values must be 2-D, 3-D or 4-D, not {self.values.ndim}-D")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) not in (2, 3) or len(self.spacing) > self.values.ndim:
            raise ValueError(f"spacing {self.spacing} does not fit values {self.values.shape}")
        if self.affine is not None and np.shape(self.affine) != (4, 4):
            raise ValueError(f"affine must be 4x4, not {np.shape(self.affine)}")
        if self.padding is not None and self.padding.shape != self.values.shape:
            raise ValueError(f"padding {self.padding.shape} does not match values "
                             f"{self.values.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of :attr:`values`."""
        return tuple(self.values.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shape of the spatial axes (the last ``len(spacing)`` axes of ``values``)."""
        return self.shape[-len(self.spacing):]

    def world(self, index: Sequence[float]) -> NDArray[np.float64]:
        """Millimetres in :attr:`space` of the voxel at ``index`` (in ``values`` order over the
        spatial axes: ``(row, column)`` or ``(slice, row, column)``)."""
        if self.affine is None:
            raise ValueError(f"{self.source}: the image has no affine (its position is unknown)")
        if len(index) != len(self.spacing):
            raise ValueError(f"index {tuple(index)} needs {len(self.spacing)} entries")
        xyz = list(index)[::-1] + [0.0] * (3 - len(index))
        return (self.affine @ np.array([*xyz, 1.0]))[:3]

    def masked_range(self) -> tuple[float, float]:
        """The smallest and largest value outside the padding (``nan`` when all is padding)."""
        inside = self.values if self.padding is None else self.values[~self.padding]
        if not inside.size:
            return math.nan, math.nan
        return float(inside.min()), float(inside.max())
