"""Pixel values that are not uint8 (16-bit, 32-bit integer, float, boolean) as uint8 images.

The data layer delivers uint8 images (the paper's pipeline divides by 255). Other encodings are
converted where the conversion is defined, and refused with one line where it is not:

* **Integers** (16-bit PNG or TIFF, 32-bit integer TIFF, uint16/int npz arrays) within
  0..65535: one linear map for the whole target, never per image (the intensities of images
  relative to each other carry information). Its scale is the detected bit depth ``b``: the
  smallest of 8, 10, 12, 14 and 16 bits whose range 0..2**b - 1 holds the target's largest
  value; a value ``x`` becomes ``round(x * 255 / (2**b - 1))``. So 8-bit values stay as they
  are, BreastMNIST stored x257 as uint16 comes back exactly, and 12-bit CT or MR data fills
  0..255 instead of clipping. Negative values, or values above 65535, are refused.
* **Floats** within 0..1: ``round(x * 255)``. Any other range, NaN or inf is refused (the
  scale of such values is unknown).
* **Booleans**: False -> 0, True -> 255.

Every conversion is recorded as a note on the target (:attr:`IntensityMap.note`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError

#: Bit depths a target's integer pixel values are scaled by (the smallest that holds them).
BIT_DEPTHS = (8, 10, 12, 14, 16)
#: Largest integer pixel value accepted (16 bits).
MAX_INTEGER = 2 ** BIT_DEPTHS[-1] - 1
#: What to do about values without a defined conversion (image files; npz files say their own).
FILE_ADVICE = ("write the images as 8- or 16-bit PNGs (integers 0..65535) or as floats within "
               "0..1")


def bit_depth(max_value: int) -> int:
    """The smallest of :data:`BIT_DEPTHS` whose range ``0..2**b - 1`` holds ``max_value``."""
    for b in BIT_DEPTHS:
        if max_value <= 2 ** b - 1:
            return b
    raise InputError(f"pixel value {max_value} exceeds {MAX_INTEGER} (16 bits)")


@dataclass
class ValueRange:
    """The value range of a target's pixel arrays, gathered array by array.

    :meth:`add` refuses, naming ``where``, an array whose values have no defined conversion
    (negative or above 65535 integers, floats outside 0..1, NaN or inf), with ``advice``.
    """

    int_max: int = -1  #: largest integer value (-1: no integer array seen)
    wide_kinds: tuple[str, ...] = ()  #: dtypes of the wider-than-8-bit integer arrays seen
    n_uint8: int = 0  #: uint8 arrays seen
    n_float: int = 0  #: float arrays seen
    n_bool: int = 0  #: boolean arrays seen
    advice: str = FILE_ADVICE  #: what to do, in a refusal

    def add(self, x: NDArray, where: str) -> None:
        """Take in the values of one pixel array (an image or a stack of images)."""
        kind = x.dtype.kind
        if kind == "b":
            self.n_bool += 1
        elif kind == "f":
            check_float_range(x, where, self.advice)
            self.n_float += 1
        elif kind in "ui":
            if x.size:
                lo, hi = int(x.min()), int(x.max())
                if lo < 0 or hi > MAX_INTEGER:
                    raise InputError(
                        f"{where}: integer pixel values {lo}..{hi} ({x.dtype}) lie outside "
                        f"0..{MAX_INTEGER}, so their scale is unknown; {self.advice}")
                self.int_max = max(self.int_max, hi)
            if x.dtype == np.uint8:
                self.n_uint8 += 1
            elif x.dtype.name not in self.wide_kinds:  # name: uint16 for <u2 and >u2
                self.wide_kinds += (x.dtype.name,)
        else:
            raise InputError(f"{where}: pixel values of dtype {x.dtype} are not numbers; "
                             f"{self.advice}")

    def mapping(self) -> "IntensityMap":
        """The one map that turns every array seen into uint8."""
        depth = bit_depth(self.int_max) if self.int_max >= 0 else 8
        return IntensityMap(depth=depth, max_value=max(self.int_max, 0),
                            wide_kinds=self.wide_kinds, mixed=bool(self.n_uint8 and
                                                                   self.wide_kinds),
                            floats=self.n_float > 0, bools=self.n_bool > 0)


def check_float_range(x: NDArray, where: str, advice: str = FILE_ADVICE) -> None:
    """Refuse float pixel values that are not finite or lie outside 0..1."""
    if not x.size:
        return
    if not np.isfinite(x).all():
        raise InputError(f"{where}: float pixel values include NaN or inf; {advice}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{where}: float pixel values {lo:g}..{hi:g} lie outside 0..1, so "
                         f"their scale is unknown; {advice}")


@dataclass(frozen=True)
class IntensityMap:
    """One target's map from stored pixel values to uint8 (see the module docstring)."""

    depth: int = 8
    max_value: int = 255
    wide_kinds: tuple[str, ...] = ()
    mixed: bool = False
    floats: bool = False
    bools: bool = False

    def apply(self, x: NDArray) -> NDArray[np.uint8]:
        """``x`` (checked by :meth:`ValueRange.add`) as uint8."""
        if x.dtype.kind == "b":
            return np.where(x, np.uint8(255), np.uint8(0))
        if x.dtype.kind == "f":
            return np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)
        if self.depth == 8:
            return x.astype(np.uint8)
        full = 2 ** self.depth - 1
        # round(x * 255 / full) in integers: full is odd, so there are no ties to break.
        return ((x.astype(np.int64) * 510 + full) // (2 * full)).astype(np.uint8)

    @property
    def note(self) -> str | None:
        """What the map did, for the target's notes (``None`` when nothing was converted)."""
        parts = []
        if self.wide_kinds:
            full = 2 ** self.depth - 1
            kinds = "/".join(self.wide_kinds)
            what = (f"mixed 8-bit and {kinds} pixel values" if self.mixed
                    else f"{kinds} pixel values")
            parts.append(f"{what} (largest {self.max_value}) mapped to 0..255 by the "
                         f"{self.depth}-bit scale x*255/{full}, rounded, one map for the whole "
                         "target" if self.depth > 8 else
                         f"{what} all within 0..255: kept as 8-bit values")
        if self.floats:
            parts.append("float pixel values in 0..1 scaled by 255, rounded")
        if self.bools:
            parts.append("boolean images as 0 (False) and 255 (True)")
        return "; ".join(parts) or None


def without_8bit_scale(x: NDArray) -> bool:
    """Whether grey pixel values ``x`` are physical values without an 8-bit scale: finite
    floats outside 0..1, or integers outside 0..65535 (CT slices in HU as float or int16).
    Such values are kept as a target's physical values (for members with an intensity
    convention) instead of being mapped to uint8 by a guessed scale."""
    if not x.size or x.dtype.kind not in "fiu":
        return False
    lo, hi = float(x.min()), float(x.max())
    if x.dtype.kind == "f":
        return bool(np.isfinite(x).all()) and (lo < 0.0 or hi > 1.0)
    return lo < 0 or hi > MAX_INTEGER
