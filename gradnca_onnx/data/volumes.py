"""Volumes (3-D images) to a 3-D model's input: trilinear resampling and normalisation.

The first brick of 3-D targets (MedMNIST 3-D, NIfTI volumes, DICOM series): NumPy only, as
the rest of the data layer. :func:`resize_volumes` resamples ``(N, D, H, W)`` stacks the way
``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` does (the tests
compare the two): separable linear interpolation along each axis, source coordinate
``(i + 0.5) * in / out - 0.5`` clamped at 0, no antialiasing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from .preprocess import channels_first

Size3 = int | Sequence[int]


def _dhw(size: Size3) -> tuple[int, int, int]:
    if isinstance(size, (int, np.integer)):
        d = h = w = int(size)
    else:
        parts = tuple(int(s) for s in size)
        if len(parts) != 3:
            raise InputError(f"volume size must be an int or (depth, height, width); got {size!r}")
        d, h, w = parts
    if min(d, h, w) < 1:
        raise InputError(f"volume size must be positive; got {size!r}")
    return d, h, w


def _linear_axis(x: NDArray[np.float32], axis: int, out: int) -> NDArray[np.float32]:
    """``x`` linearly resampled to ``out`` samples along ``axis`` (torch's half-pixel rule)."""
    n = x.shape[axis]
    if n == out:
        return x
    # In float32, as torch computes the scale and the coordinates for float32 input.
    scale = np.float32(n) / np.float32(out)
    src = scale * (np.arange(out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))  # torch clamps at 0 (not at n - 1)
    i0 = np.minimum(src.astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = src - i0.astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = out
    w1 = w1.reshape(shape)
    a, b = np.take(x, i0, axis=axis), np.take(x, i1, axis=axis)
    return a + (b - a) * w1


def resize_volumes(volumes: ArrayLike, size: Size3) -> NDArray[np.float32]:
    """Trilinear resampling of ``(N, D, H, W)`` or ``(N, D, H, W, C)`` volumes to ``size``,
    float32, as ``torch.nn.functional.interpolate(..., mode="trilinear",
    align_corners=False)``.

    Parameters
    ----------
    volumes : array-like, (N, D, H, W) or (N, D, H, W, C)
    size : int or (depth, height, width)

    Returns
    -------
    ndarray, float32, the same layout at the new size
    """
    x = np.asarray(volumes, dtype=np.float32)
    if x.ndim not in (4, 5):
        raise InputError(f"volumes must be (N, D, H, W) or (N, D, H, W, C); got shape {x.shape}")
    for axis, out in zip((1, 2, 3), _dhw(size)):
        x = _linear_axis(x, axis, out)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess_volumes(volumes: ArrayLike, *, mean: Sequence[float], std: Sequence[float],
                       size: Size3 | None = None, channels: int = 1) -> NDArray[np.float32]:
    """3-D input pipeline: scale (uint8 / 255; other values as given, e.g. an intensity
    convention's 0..1), resample, replicate the grey channel, normalise.

    Parameters
    ----------
    volumes : array-like, (N, D, H, W) or (N, D, H, W, C), uint8 or float (the model's scale)
        Grey volumes, or C = ``channels`` channels last (an intensity convention with one
        window per channel).
    mean, std : sequence of float
        One value per input channel.
    size : int or (depth, height, width), optional
        The model's input size; ``None`` keeps the volumes' size.
    channels : int
        Input channels: a grey volume is replicated to each.

    Returns
    -------
    ndarray, float32 (N, channels, D, H, W)
    """
    raw = np.asarray(volumes)
    if raw.ndim == 4:
        raw = raw[..., None]
    if raw.ndim != 5 or raw.shape[-1] not in (1, channels):
        raise InputError(f"volumes must be (N, D, H, W) or (N, D, H, W, {channels}); got shape "
                         f"{raw.shape}")
    x = raw.astype(np.float32) / np.float32(255.0) if raw.dtype == np.uint8 else \
        raw.astype(np.float32)
    if size is not None:
        x = resize_volumes(x, size)
    return channels_first(x, mean, std, channels)
