"""How a zoo is ranked: the settings shared by every ranking path, as one options object.

:class:`RankOptions` holds what ``rank_zoo``, ``resample_zoo``, ``rank_folds`` and
``executors.rank_targets`` take besides the zoo and the targets; :class:`Resampling` the
settings of ``--resamples``. Both are checked once, before any work, by the ranking path
(:func:`gradnca_onnx.engine.ranking.plan_ranking`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from ..errors import InputError
from .cache import FeatureCache
from .runtime import RuntimeConfig

#: progress(model, stage, done, total); stages: "features", "gradients", "scores", ...
Progress = Callable[[str, str, int, int], None]

#: How S_FU is resampled: re-batched gradient passes, or the cached batches resampled.
FU_ESTIMATORS = ("rebatch", "batches")
#: Default fraction of each class kept per resample (half-sampling).
DEFAULT_FRACTION = 0.5


class _CallbackRaised(BaseException):
    """Carries an exception of the caller's progress callback past the per-model error
    handling (which turns a model's failure into its ``error``) to the public entry point,
    which re-raises it unchanged. A ``BaseException``, as ``KeyboardInterrupt`` is, so that no
    ``except Exception`` on the way catches it."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


def guarded(progress: Progress | None) -> Progress | None:
    """``progress`` with its exceptions carried to the caller (:func:`callbacks_propagate`)."""
    if progress is None or getattr(progress, "_guarded", False):
        return progress

    def call(model: str, stage: str, done: int, total: int) -> None:
        try:
            progress(model, stage, done, total)
        except Exception as exc:  # the caller's own error: theirs to see, not a model's
            raise _CallbackRaised(exc) from None

    call._guarded = True  # type: ignore[attr-defined]
    return call


F = TypeVar("F", bound=Callable[..., Any])


def callbacks_propagate(fn: F) -> F:
    """Decorate a public entry point: an exception raised by the caller's progress callback
    reaches the caller as it was raised (same object, same type), not as a model's error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _CallbackRaised as carried:
            original = carried.original
        raise original  # outside the except block: no "during handling" chain is added

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class RankOptions:
    """Every setting of a ranking but the zoo and the targets.

    Attributes
    ----------
    scenario : ``"dataset"`` (sources of one architecture) or ``"cross-domain"`` (the paper's
        model scenario, both terms inverted; ``"model"`` is its synonym)
    runtime : where the graphs run (default: :class:`RuntimeConfig`'s defaults)
    cache : the feature cache (default: none)
    resize : resize target images to each model's input size (else refuse other sizes)
    verify : check every member's files against their sha256 before scoring
    models : the zoo's members to rank (default: all)
    metrics : baseline metrics from the same pass: registry names or ``"all"``
    faithful : baseline metrics with the released code's quirks
    progress : ``progress(model, stage, done, total)`` callback; an exception it raises
        stops the ranking and reaches the caller unchanged
    lp_jitters : K >= 2: S_LP as the mean over K feature jitters (an extension); 0: the paper's
    within_family : combine and rank each family of S_FU layers (``conv+conv``,
        ``conv+linear``...) on its own (an extension for mixed zoos)
    max_samples : above this many images a target is scored on a class-stratified subsample
        of that size (:mod:`gradnca_onnx.engine.bounded`); ``None``: the default (5,000),
        ``0``: every image
    sample_seed : the seed of that subsample
    """

    scenario: str = "dataset"
    runtime: RuntimeConfig | None = None
    cache: FeatureCache | None = None
    resize: bool = True
    verify: bool = True
    models: Sequence[str] | None = None
    metrics: str | Sequence[str] | None = None
    faithful: bool = False
    progress: Progress | None = None
    lp_jitters: int = 0
    within_family: bool = False
    max_samples: int | None = None
    sample_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "progress", guarded(self.progress))

    @classmethod
    def of(cls, options: RankOptions | None = None, **settings: Any) -> RankOptions:
        """``options`` (default: the defaults) with ``settings`` (field names) replaced.

        Raises ``TypeError`` for a name that is not a field, as a function call would.
        """
        return replace(options or cls(), **settings)


@dataclass(frozen=True)
class Resampling:
    """The settings of ``rank --resamples`` (same settings and seed, same output).

    Attributes
    ----------
    n_resamples : number of class-stratified subsamples (at least 2)
    seed : seed of the subsamples and batch draws
    fraction : share of each class kept per subsample, in (0, 1]
    level : interval level, in (0, 1)
    fu : ``"rebatch"`` (a ``grads.onnx`` pass per batch of each resample) or ``"batches"``
        (the cached S_FU batches drawn with replacement; no pass)
    """

    n_resamples: int
    seed: int = 0
    fraction: float = DEFAULT_FRACTION
    level: float = 0.95
    fu: str = "rebatch"

    def check(self) -> None:
        """Refuse bad settings (:func:`check_resample_options`)."""
        check_resample_options(self.n_resamples, self.fraction, self.level, self.fu, self.seed)


def check_resample_options(n_resamples: Any, fraction: Any, level: Any, fu: Any,
                           seed: Any) -> None:
    """Refuse bad resampling settings with one line naming the option.

    ``n_resamples`` ``None`` checks the other settings only (the command line checks them
    even without ``--resamples``: a bad value is an error whatever else is given).
    """
    if n_resamples is not None and (
            isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer))
            or n_resamples < 2):
        raise InputError(f"--resamples must be an integer >= 2 (intervals need at least two "
                         f"resamples; 200 is a good start); got {n_resamples!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 < float(fraction) <= 1.0:
        raise InputError(f"--fraction must be in (0, 1] (the share of each class kept per "
                         f"resample; default {DEFAULT_FRACTION}); got {fraction!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) \
            or not 0.0 < float(level) < 1.0:
        raise InputError(f"--level must be in (0, 1), e.g. 0.95; got {level!r}")
    if fu not in FU_ESTIMATORS:
        raise InputError(f"--fu-resample must be one of {', '.join(FU_ESTIMATORS)}; got {fu!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer; got {seed!r}")
