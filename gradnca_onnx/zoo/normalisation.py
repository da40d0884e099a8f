"""Per-channel input normalisation presets (REFERENCE section 1)."""

from __future__ import annotations

import math

from .._normalisation import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD
from ..errors import ZooError
from .manifest import MIN_STD

#: ImageNet statistics, for ImageNet-pretrained sources (one definition, shared with the data layer).
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
#: mean 0.5 / std 0.5, for every other source.
HALF = ((HALF_MEAN[0],), (HALF_STD[0],))


def _floats(text: str, what: str, spec: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(":"))
    except ValueError:
        raise ZooError(
            f"normalisation {spec!r}: {what} {text!r} is not a number (or ':'-separated numbers)"
        ) from None
    return vals


def parse_normalisation(spec: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Turn ``imagenet``, ``half`` or ``MEAN,STD`` into per-channel (mean, std).

    ``MEAN`` and ``STD`` are one number (used for every channel) or ``channels`` numbers
    separated by ``:`` (for example ``0.485:0.456:0.406,0.229:0.224:0.225``); ``2 x channels``
    comma-separated numbers are the means then the stds (``0.485,0.456,0.406,0.229,0.224,0.225``).

    Raises
    ------
    ValueError
        Unknown preset, malformed numbers, wrong count, a std below ``MIN_STD`` (1e-6), or
        ``imagenet`` for a model whose channel count is not 3.
    """
    if channels < 1:
        raise ZooError(f"channels must be >= 1; got {channels}")
    s = spec.strip().lower()
    if s == "imagenet":
        if channels != 3:
            raise ZooError(
                f"normalisation 'imagenet' has 3 channels but the model takes {channels}; "
                "use 'half' or MEAN,STD"
            )
        mean, std = IMAGENET
    elif s == "half":
        mean, std = HALF
    else:
        parts = s.split(",")
        if len(parts) == 2 * channels and channels > 1:
            # MEAN1,...,MEANc,STD1,...,STDc: the form model cards print (CLIP's, RAD-DINO's)
            parts = [":".join(parts[:channels]), ":".join(parts[channels:])]
        if len(parts) != 2:
            raise ZooError(
                f"normalisation {spec!r} is not 'imagenet', 'half' or MEAN,STD (e.g. 0.5,0.5)"
            )
        mean, std = _floats(parts[0], "mean", spec), _floats(parts[1], "std", spec)
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    if len(mean) != channels or len(std) != channels:
        raise ZooError(
            f"normalisation {spec!r} gives {len(mean)} means and {len(std)} stds for a "
            f"{channels}-channel model; give one value or {channels}"
        )
    if any(not math.isfinite(v) for v in mean + std):
        raise ZooError(f"normalisation {spec!r}: mean and std must be finite numbers")
    if any(not (v > 0) for v in std):
        raise ZooError(f"normalisation {spec!r}: std must be > 0")
    if any(v < MIN_STD for v in std):
        # Images are normalised in float32: a std of 1e-300 is 0 there, one below MIN_STD
        # turns rounding noise into the signal.
        raise ZooError(f"normalisation {spec!r}: std {min(std):g} is too small; each std "
                       f"must be >= {MIN_STD:g} (the model's real input std, e.g. 0.5)")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
