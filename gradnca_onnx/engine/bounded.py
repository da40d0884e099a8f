"""Large targets in bounded time: a class-stratified, seeded subsample above a sample count.

S_LP's NCA is quadratic in the number of images n (measured, README "Large targets": 470 s a
28 px model at n = 16,000, 28 s at 5,000), so a target of the size of a full MedMNIST train
split would take hours per model. Above ``max_samples`` images a ranking
scores every member on one class-stratified subsample of the target (each class keeps its share,
at least two images, so triplets still form; a target with patient groups keeps each patient
whole), drawn with a fixed seed, so every member and every run sees the same images. The
subsample is stated in the ranking's notes (table, CSV and JSON) and, being other data, has its
own cache key. At or below ``max_samples`` the target is used as it is: results are unchanged.
The paper's targets (C x 100 images for C classes) are far below the default.
"""

from __future__ import annotations

from numbers import Integral

from ..data.dataset import TargetData
from ..errors import InputError

#: The default bound (``rank --max-samples``): chosen by measurement, see the README
#: ("Large targets").
DEFAULT_MAX_SAMPLES = 5000


def check_max_samples(value: int | None, option: str = "max_samples") -> int:
    """``value`` as a bound: ``None`` gives the default, ``0`` means no bound."""
    if value is None:
        return DEFAULT_MAX_SAMPLES
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise InputError(f"{option} must be a whole number >= 0 (0: score every image); got "
                         f"{value!r}")
    value = int(value)  # numpy integers too
    if 0 < value < 6:
        raise InputError(f"{option} {value} is too small: S_FU needs at least 6 images")
    return value


def bounded_target(target: TargetData, max_samples: int, seed: int = 0
                   ) -> tuple[TargetData, str | None]:
    """``target``, or its class-stratified subsample of about ``max_samples`` images with the
    note that says so (``None`` when the target is used whole)."""
    n = len(target)
    if not max_samples or n <= max_samples:
        return target, None
    # Imported here: only large targets need it (it loads scipy).
    from ..evaluation.resampling import grouped_subsamples, stratified_subsamples

    fraction = max_samples / n
    if target.groups is not None:
        (keep,) = grouped_subsamples(target.labels, target.groups, 1, fraction=fraction,
                                     seed=seed)
        how = "class-stratified, each patient whole"
    else:
        (keep,) = stratified_subsamples(target.labels, 1, fraction=fraction, seed=seed)
        how = "class-stratified"
    note = (f"target subsampled: {len(keep):,} of its {n:,} images are scored ({how}, seed "
            f"{seed}; above {max_samples:,} images S_LP's NCA is quadratic in n); every model "
            "sees the same images; --max-samples 0 scores all")
    return target.subset(keep), note


def check_sample_seed(value: int, option: str = "sample_seed") -> int:
    """``value`` as the subsample's seed (a whole number >= 0)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise InputError(f"{option} must be a whole number >= 0; got {value!r}")
    return int(value)
