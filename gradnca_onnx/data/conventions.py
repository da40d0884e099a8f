"""Intensity conventions: how a model expects a target's physical values (HU for CT, scanner
units for MR) to be mapped to its input, before the per-channel mean/std step.

A zoo member's manifest records its convention (``input.intensity``); the engine applies it
to each target image. The conventions (an extension of the paper, whose models all take 8-bit
images):

``8bit`` (the default, and every member exported before conventions existed)
    The target's 8-bit images, scaled by 1/255: exactly the paper's pipeline.
``window:LOW,HIGH[:UNIT]``
    Physical values clipped to the window and mapped linearly to 0..1
    (``(x - LOW) / (HIGH - LOW)``): a CT model trained on [-1000, 1000] HU, say. ``UNIT``
    (e.g. ``HU``) must match the target's when both state one.
``percentile:PLOW,PHIGH``
    Each image clipped to its own PLOW-th and PHIGH-th percentiles (of the pixels inside its
    field of view) and mapped linearly to 0..1: MR pipelines without a physical scale.
``zscore``
    Each image minus its mean, over its standard deviation (inside its field of view): the
    usual MR normalisation; the manifest's mean/std then stay 0 and 1.
``windows:LOW1,HIGH1;LOW2,HIGH2;...[:UNIT]``
    One window per input channel (a CT model fed a brain, a subdural and a bone window as its
    three channels). The other conventions give one grey channel, replicated to the model's
    channels as 8-bit grey images are.

Pixels outside the field of view (DICOM padding) are ``NaN`` in a target's physical values:
they become the convention's lowest value (0 for a window or percentiles, the image's minimum
z-score), never a statistic's input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError

#: The convention kinds, in the order the help lists them.
KINDS = ("8bit", "window", "percentile", "zscore", "windows")
#: The forms ``--intensity`` takes, for messages.
FORMS = ("8bit, window:LOW,HIGH[:UNIT], percentile:PLOW,PHIGH, zscore or "
         "windows:LOW1,HIGH1;LOW2,HIGH2;...[:UNIT]")


@dataclass(frozen=True)
class Intensity:
    """One intensity convention (see the module docstring).

    Attributes
    ----------
    kind : {"8bit", "window", "percentile", "zscore", "windows"}
    low, high : float or None
        The window (physical units) or the percentiles (0..100); ``None`` otherwise.
    unit : str
        The window's unit (``"HU"``), or ``""`` when it states none.
    windows : tuple of (float, float)
        ``windows``: one (low, high) per input channel; empty otherwise.
    """

    kind: str = "8bit"
    low: float | None = None
    high: float | None = None
    unit: str = ""
    windows: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"intensity {self.kind!r} is not a convention; use {FORMS}")
        if (self.kind == "windows") != bool(self.windows):
            raise InputError(f"intensity {self.kind}: "
                             + ("give one LOW,HIGH per channel" if self.kind == "windows"
                                else "takes no list of windows"))
        for lo, hi in self.windows:
            _check_bounds("windows", float(lo), float(hi))
        bounded = self.kind in ("window", "percentile")
        if bounded != (self.low is not None and self.high is not None):
            raise InputError(f"intensity {self.kind}: "
                             + ("give LOW,HIGH" if bounded else "takes no bounds"))
        if bounded:
            _check_bounds(self.kind, float(self.low), float(self.high))  # type: ignore[arg-type]
        if self.unit and self.kind not in ("window", "windows"):
            raise InputError(f"intensity {self.kind}: only a window states a unit")

    @property
    def is_default(self) -> bool:
        """Whether this is the paper's 8-bit convention (nothing recorded, nothing changes)."""
        return self.kind == "8bit"

    @property
    def physical(self) -> bool:
        """Whether it reads a target's physical values (every convention but ``8bit``)."""
        return self.kind != "8bit"

    @property
    def channels(self) -> int | None:
        """The channels the convention gives (``windows``: one per window), ``None``: one grey
        channel, replicated to the model's."""
        return len(self.windows) if self.windows else None

    def text(self) -> str:
        """The ``--intensity`` form of this convention."""
        if self.kind == "windows":
            listed = ";".join(f"{_num(lo)},{_num(hi)}" for lo, hi in self.windows)
            return f"windows:{listed}" + (f":{self.unit}" if self.unit else "")
        if self.kind in ("window", "percentile"):
            bounds = f"{_num(self.low)},{_num(self.high)}"
            return f"{self.kind}:{bounds}" + (f":{self.unit}" if self.unit else "")
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``input.intensity`` object."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.windows:
            out["windows"] = [[float(lo), float(hi)] for lo, hi in self.windows]
        if self.low is not None:
            out.update(low=float(self.low), high=float(self.high))  # type: ignore[arg-type]
        if self.unit:
            out["unit"] = self.unit
        return out

    def apply(self, values: NDArray[np.floating]) -> NDArray[np.float32]:
        """Map physical ``values`` (N, H, W[, C]; NaN outside the field of view) to the model's
        input scale, float32, image by image (the statistics of one image never reach
        another)."""
        if not self.physical:
            raise InputError("the 8bit convention reads the target's 8-bit images, not its "
                             "physical values")
        shape = values.shape if not self.windows else (*values.shape[:-1], len(self.windows))
        out = np.empty(shape, dtype=np.float32)
        for i in range(values.shape[0]):  # one image at a time: no float64 copy of the target
            x = np.asarray(values[i], dtype=np.float32)
            if self.windows:
                for c, (lo, hi) in enumerate(self.windows):
                    out[i, ..., c] = _window(x[..., 0], float(lo), float(hi))
            else:
                out[i] = self._one(x)
        return out

    def _one(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        inside = np.isfinite(x)
        if self.kind == "window":
            lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
        elif self.kind == "percentile":
            if not inside.any():
                return np.zeros_like(x)
            lo, hi = (float(v) for v in np.percentile(x[inside], [self.low, self.high]))
        else:
            return _zscore(x, inside)
        return _window(x, lo, hi)


def _window(x: NDArray[np.float32], lo: float, hi: float) -> NDArray[np.float32]:
    """``x`` clipped to ``[lo, hi]`` and mapped to 0..1; ``NaN`` (outside the field of view)
    to 0; a constant image (``hi <= lo``, percentiles of one value) to 0."""
    if hi <= lo:
        return np.zeros_like(x)
    y = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(y, 0.0, 1.0, out=y)
    y[~np.isfinite(x)] = 0.0
    return y


def linear_uint8(values: NDArray, low: float, high: float) -> NDArray[np.uint8]:
    """``values`` mapped linearly from ``[low, high]`` to 0..255 (float32 arithmetic,
    rounded, clipped; ``NaN`` to 0), image by image (no float64 copy of a target): the one
    display rendering of physical values for 8-bit members and ``images``."""
    scale = np.float32(255.0 / (high - low)) if high > low else np.float32(0.0)
    out = np.empty(values.shape, dtype=np.uint8)
    for i in range(values.shape[0]):
        y = (np.asarray(values[i], dtype=np.float32) - np.float32(low)) * scale
        out[i] = np.clip(np.rint(np.nan_to_num(y, nan=0.0)), 0, 255)
    return out


def _zscore(x: NDArray[np.float32], inside: NDArray[np.bool_]) -> NDArray[np.float32]:
    if not inside.any():
        return np.zeros_like(x)
    v = x[inside].astype(np.float64)  # one image's statistics in float64: exact enough
    mean, std = float(v.mean()), float(v.std())
    y = (x - np.float32(mean)) * np.float32(1.0 / std) if std > 0 else np.zeros_like(x)
    y[~inside] = y[inside].min() if std > 0 else 0.0
    return y.astype(np.float32, copy=False)


def _num(v: float | None) -> str:
    return repr(int(v)) if v is not None and float(v).is_integer() else repr(v)


def _check_bounds(kind: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"intensity {kind}: LOW and HIGH must be finite numbers")
    if low >= high:
        raise InputError(f"intensity {kind}:{_num(low)},{_num(high)}: LOW must be below HIGH")
    if kind == "percentile" and not (0 <= low and high <= 100):
        raise InputError(f"intensity percentile:{_num(low)},{_num(high)}: percentiles lie in "
                         "0..100")


def parse_intensity(text: str | None, option: str = "--intensity") -> Intensity:
    """``8bit``, ``window:LOW,HIGH[:UNIT]``, ``percentile:PLOW,PHIGH`` or ``zscore`` as an
    :class:`Intensity` (``None``: the default, ``8bit``).

    Raises
    ------
    InputError
        Another form, bounds that are not two finite numbers with LOW < HIGH, percentiles
        outside 0..100 (one line naming ``option``).
    """
    if text is None:
        return Intensity()
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower().replace("-", "")
    try:
        if kind in ("8bit", "zscore"):
            if rest:
                raise InputError("takes no bounds")
            return Intensity(kind)
        if kind == "windows":
            return _parse_windows(rest)
        if kind not in ("window", "percentile"):
            raise InputError("is not a convention")
        bounds, _, unit = rest.partition(":")
        parts = [p.strip() for p in bounds.split(",")]
        if len(parts) != 2:
            raise InputError("needs two bounds, LOW,HIGH")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError("bounds must be numbers") from None
        if unit and kind != "window":
            raise InputError("only a window states a unit")
        return Intensity(kind, low, high, unit.strip())
    except InputError as exc:
        raise InputError(f"{option} {text!r}: {exc}; use {FORMS}") from None


def _parse_windows(rest: str) -> Intensity:
    """``LOW1,HIGH1;LOW2,HIGH2;...[:UNIT]`` as a ``windows`` convention."""
    listed, _, unit = rest.partition(":")
    windows = []
    for part in listed.split(";"):
        bounds = [b.strip() for b in part.split(",")]
        if len(bounds) != 2:
            raise InputError("needs LOW,HIGH for each channel, separated by ';'")
        try:
            windows.append((float(bounds[0]), float(bounds[1])))
        except ValueError:
            raise InputError("bounds must be numbers") from None
    return Intensity("windows", unit=unit.strip(), windows=tuple(windows))


def intensity_from_dict(data: Any, where: str) -> Intensity:
    """The :class:`Intensity` of a manifest's ``input.intensity`` object."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise InputError(f"{where} must be an object with a 'kind' ({FORMS})")
    extra = set(data) - {"kind", "low", "high", "unit", "windows"}
    if extra:
        raise InputError(f"{where}: unknown field(s) {sorted(extra)}")
    listed = data.get("windows", [])
    if not isinstance(listed, list) or not all(
            isinstance(w, list) and len(w) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) for b in w)
            for w in listed):
        raise InputError(f"{where}.windows must be a list of [low, high] pairs")
    low, high, unit = data.get("low"), data.get("high"), data.get("unit", "")
    for name, v in (("low", low), ("high", high)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InputError(f"{where}.{name} must be a number")
    if not isinstance(unit, str):
        raise InputError(f"{where}.unit must be a string")
    try:
        return Intensity(data["kind"], None if low is None else float(low),
                         None if high is None else float(high), unit,
                         tuple((float(lo), float(hi)) for lo, hi in listed))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
