"""From uint8 images to a model's input: channels, size, scaling and normalisation (REFERENCE 1).

Everything here takes plain arguments (mean, std, size, channels, resize filter) so that the
engine can pass what a model's manifest says and the fine-tuning code what its source needs.
NumPy and Pillow only.

The order is the paper's: grey -> RGB by channel replication (PIL ``convert("RGB")``), resize
(only when the image size differs from the model's input size), ``/ 255`` to [0, 1], channels
first, then ``(x - mean) / std`` per channel, all in float32 like torchvision's ``ToTensor`` +
``Normalize`` (the result is bit-identical to them).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from .._normalisation import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD
from ..errors import InputError

#: Pillow resampling filters by name. ``bilinear`` is the default: it is what torchvision's
#: ``Resize`` uses on PIL images, and the MedMNIST+ size variants were made with it too.
RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
DEFAULT_FILTER = "bilinear"

Size = Union[int, Sequence[int]]


def normalization(kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the paper: ``"imagenet"`` for ImageNet-pretrained sources, ``"half"``
    (0.5 / 0.5) for every other source."""
    if kind == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if kind == "half":
        return HALF_MEAN, HALF_STD
    raise InputError(f"unknown normalisation {kind!r}; use 'imagenet' or 'half'")


def as_nhwc(images: ArrayLike, *, name: str = "images") -> NDArray[np.uint8]:
    """Return ``images`` as uint8 ``(N, H, W, C)`` with C = 1 or 3.

    ``(N, H, W)`` grey stacks get a channel axis. Integer arrays within 0..255 are cast;
    boolean arrays become 0 and 255 (black and white, not the nearly black 0 and 1); float
    arrays are refused (their scale is ambiguous). The target loaders convert 16-bit and float
    images first (:mod:`gradnca_onnx.data.intensity`).
    """
    x = np.asarray(images)
    if x.dtype.kind not in "uib":
        raise InputError(
            f"{name} must be uint8 pixel values 0..255; got dtype {x.dtype} "
            "(convert float images with (x * 255).round().astype(np.uint8))"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InputError(
            f"{name} must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3) (channels last); got "
            f"{x.shape}" + ("; drop the alpha channel (2 or 4 channels)" if x.ndim == 4
                            and x.shape[-1] in (2, 4) else
                            "; 3-D volumes are not supported" if x.ndim == 4 else "")
        )
    return _as_uint8(x, name)


def _as_uint8(x: NDArray[Any], name: str) -> NDArray[np.uint8]:
    if x.dtype == np.bool_:
        return np.where(x, np.uint8(255), np.uint8(0))
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InputError(
                f"{name} has values outside 0..255 (min {x.min()}, max {x.max()}); give uint8 "
                "pixel values (16-bit images: load them with load_target, which maps them to "
                "0..255 by their bit depth)")
        return x.astype(np.uint8)
    return x


def is_volume_stack(x: NDArray[Any]) -> bool:
    """Whether ``x`` is a stack of grey volumes: ``(N, D, H, W)`` (a last axis other than 1 or
    3 channels, as MedMNIST 3-D stores them) or ``(N, D, H, W, 1)``."""
    return (x.ndim == 4 and x.shape[-1] not in (1, 2, 3, 4)) or (x.ndim == 5
                                                                 and x.shape[-1] == 1)


def as_ndhwc(volumes: ArrayLike, *, name: str = "volumes") -> NDArray[np.uint8]:
    """Return grey ``volumes`` as uint8 ``(N, D, H, W, 1)`` (checked as :func:`as_nhwc`)."""
    x = np.asarray(volumes)
    if x.dtype.kind not in "uib":
        raise InputError(f"{name} must be uint8 values 0..255; got dtype {x.dtype}")
    if x.ndim == 4:
        x = x[..., None]
    if x.ndim != 5 or x.shape[-1] != 1:
        raise InputError(f"{name} must be grey volumes (N, D, H, W) or (N, D, H, W, 1); got "
                         f"shape {x.shape}")
    return _as_uint8(x, name)


def as_images(images: ArrayLike, *, name: str = "images") -> NDArray[np.uint8]:
    """:func:`as_ndhwc` for a stack of volumes (:func:`is_volume_stack`), else
    :func:`as_nhwc`."""
    x = np.asarray(images)
    return as_ndhwc(x, name=name) if is_volume_stack(x) else as_nhwc(x, name=name)


def to_rgb(images: ArrayLike) -> NDArray[np.uint8]:
    """Grey ``(N, H, W[, 1])`` -> ``(N, H, W, 3)`` by replicating the channel (PIL
    ``convert("RGB")`` on an ``L`` image); RGB input is returned unchanged."""
    x = as_nhwc(images)
    if x.shape[-1] == 3:
        return x
    return np.repeat(x, 3, axis=-1)


def to_grey(images: ArrayLike) -> NDArray[np.uint8]:
    """RGB ``(N, H, W, 3)`` -> ``(N, H, W, 1)`` with PIL's ``convert("L")`` (ITU-R 601-2 luma,
    in Pillow's fixed-point arithmetic, so the result equals Pillow's); grey input unchanged."""
    x = as_nhwc(images)
    if x.shape[-1] == 1:
        return x
    # Pillow: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (libImaging/Convert.c).
    rgb = x.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., None]


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        parts = tuple(int(s) for s in size)
        if len(parts) != 2:
            raise InputError(f"size must be an int or (height, width); got {size!r}")
        h, w = parts
    if h < 1 or w < 1:
        raise InputError(f"size must be positive; got {size!r}")
    return h, w


#: Largest side :func:`parse_size` accepts (a larger one is a typo or runs out of memory).
MAX_SIDE = 8192


def parse_size(text: str, option: str = "--size") -> tuple[int, ...]:
    """``(height, width)`` of a size written ``N`` (square) or ``HxW`` (e.g. ``224``, ``64x96``),
    or ``(depth, height, width)`` of a volume size written ``DxHxW`` (a volume target's).

    Raises
    ------
    ValueError
        Naming ``option``: not of that form, a side below 1 or above :data:`MAX_SIDE`.
    """
    parts = str(text).strip().lower().split("x")
    if not 1 <= len(parts) <= 3 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"{option} must be N or HxW in pixels (e.g. 224 or 64x96), or DxHxW for "
                         f"volumes; got {text!r}")
    sides = [int(p) for p in parts] if len(parts) > 1 else [int(parts[0])] * 2
    if min(sides) < 1 or max(sides) > MAX_SIDE:
        raise InputError(f"{option} {text}: each side must be 1..{MAX_SIDE} pixels")
    return tuple(sides)


def _filter(name: str) -> Image.Resampling:
    try:
        return RESIZE_FILTERS[name]
    except KeyError:
        raise InputError(
            f"unknown resize filter {name!r}; use one of {sorted(RESIZE_FILTERS)}"
        ) from None


def resize(images: ArrayLike, size: Size, *, filter: str = DEFAULT_FILTER) -> NDArray[np.uint8]:
    """Resize every image with Pillow's ``Image.resize`` and the named filter.

    Parameters
    ----------
    images : array-like, uint8 (N, H, W[, C])
    size : int or (height, width)
        Target size; an int means square.
    filter : str
        One of :data:`RESIZE_FILTERS` (default ``"bilinear"``, with Pillow's antialiasing when
        downscaling, like torchvision's ``Resize`` on PIL images).

    Returns
    -------
    ndarray, uint8 (N, height, width, C)
        The input itself (not a copy) when it already has that size.
    """
    x = as_nhwc(images)
    h, w = _hw(size)
    resample = _filter(filter)
    if x.shape[1:3] == (h, w):
        return x
    out = np.empty((x.shape[0], h, w, x.shape[3]), dtype=np.uint8)
    for i, img in enumerate(x):
        # Pillow resizes an L or RGB image; the channel axis is dropped for L and restored.
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        res = np.asarray(pil.resize((w, h), resample))
        out[i] = res.reshape(h, w, -1)
    return out


def normalize(images: ArrayLike, mean: Sequence[float], std: Sequence[float]) -> NDArray[np.float32]:
    """uint8 ``(N, H, W, C)`` -> float32 ``(N, C, H, W)``: ``(x / 255 - mean) / std`` per channel.

    Computed in float32 in torchvision's order (``ToTensor`` then ``Normalize``), so the result is
    bit-identical to theirs.
    """
    x = as_nhwc(images)
    c = x.shape[-1]
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    s = np.asarray(std, dtype=np.float32).reshape(-1)
    if m.shape != (c,) or s.shape != (c,):
        raise InputError(f"mean and std need {c} value(s) for {c}-channel images; got {mean!r}, {std!r}")
    if not np.all(s > 0):
        raise InputError(f"std must be positive; got {std!r}")
    out = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)
    out /= np.float32(255.0)
    out -= m[None, :, None, None]
    out /= s[None, :, None, None]
    return out


def preprocess(images: ArrayLike, *, mean: Sequence[float], std: Sequence[float],
               size: Size | None = None, channels: int = 3,
               filter: str = DEFAULT_FILTER) -> NDArray[np.float32]:
    """The whole input pipeline: channels, resize, scale, normalise.

    Parameters
    ----------
    images : array-like, uint8 (N, H, W[, C])
    mean, std : sequence of float
        Per-channel statistics (``channels`` values each), e.g. from the model's manifest or
        :func:`normalization`.
    size : int or (height, width), optional
        The model's input size. Images of another size are resized with ``filter``; ``None``
        keeps the size (the paper scores the 224 px files without resizing).
    channels : {1, 3}
        Input channels of the model: grey images are replicated to RGB for 3, RGB images are
        converted to luma for 1.
    filter : str
        Pillow resize filter name (default ``"bilinear"``).

    Returns
    -------
    ndarray, float32 (N, channels, height, width)
    """
    if channels == 3:
        x = to_rgb(images)
    elif channels == 1:
        x = to_grey(images)
    else:
        raise InputError(f"channels must be 1 or 3; got {channels!r}")
    if size is not None:
        x = resize(x, size, filter=filter)
    return normalize(x, mean, std)


#: ITU-R 601-2 luma weights (what Pillow's ``convert("L")`` computes in fixed point).
LUMA = (0.299, 0.587, 0.114)


def preprocess_values(values: ArrayLike, *, mean: Sequence[float], std: Sequence[float],
                      size: Size | None = None, channels: int = 3,
                      filter: str = DEFAULT_FILTER) -> NDArray[np.float32]:
    """The input pipeline of values already on the model's scale (what an intensity
    convention gives: 0..1 from a window or percentiles, z-scores): channels, resize,
    normalise, as :func:`preprocess` does for 8-bit images.

    Parameters
    ----------
    values : array-like, float (N, H, W[, C])
    mean, std, size, channels, filter
        As :func:`preprocess`. Grey values are replicated to 3 channels; 3-channel values
        become their ITU-R 601-2 luma (:data:`LUMA`) for 1. Resizing uses Pillow's
        32-bit float images (mode ``F``) with the same filters as 8-bit images.

    Returns
    -------
    ndarray, float32 (N, channels, height, width)
    """
    x = np.asarray(values, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InputError(f"values must be (N, H, W[, 1 or 3]); got shape {x.shape}")
    if channels == 1 and x.shape[-1] == 3:
        x = np.tensordot(x, np.asarray(LUMA, dtype=np.float32), axes=([3], [0]))[..., None]
    elif channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3; got {channels!r}")
    if size is not None and x.shape[1:3] != _hw(size):
        x = _resize_float(x, _hw(size), _filter(filter))
    return channels_first(x, mean, std, channels)


def channels_first(x: NDArray[np.float32], mean: Sequence[float], std: Sequence[float],
                   channels: int) -> NDArray[np.float32]:
    """Values on the model's scale, channels last ``(N, ..., C)`` with C = 1 or ``channels``,
    as ``(N, channels, ...)`` normalised per channel, ``(x - mean) / std``: written channel by
    channel into the output, with no replicated or transposed copy of the target (a grey
    channel is replicated here). The images' (2-D) and the volumes' (3-D) last step."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    s = np.asarray(std, dtype=np.float32).reshape(-1)
    if m.size != channels or s.size != channels or not np.all(s > 0):
        raise InputError(f"mean and std need {channels} value(s), std > 0; got {mean!r}, "
                         f"{std!r}")
    out = np.empty((x.shape[0], channels, *x.shape[1:-1]), dtype=np.float32)
    for c in range(channels):
        np.subtract(x[..., c if x.shape[-1] > 1 else 0], m[c], out=out[:, c])
        out[:, c] /= s[c]
    return out


def _resize_float(x: NDArray[np.float32], hw: tuple[int, int],
                  resample: Image.Resampling) -> NDArray[np.float32]:
    h, w = hw
    out = np.empty((x.shape[0], h, w, x.shape[3]), dtype=np.float32)
    for i in range(x.shape[0]):
        for c in range(x.shape[3]):
            pil = Image.fromarray(np.ascontiguousarray(x[i, :, :, c]), mode="F")
            out[i, :, :, c] = np.asarray(pil.resize((w, h), resample), dtype=np.float32)
    return out
