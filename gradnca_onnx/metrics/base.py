"""Registry of the baseline metrics, per-model computation from one feature pass, zoo step.

The engine calls :func:`compute_metrics` once per model with that model's features, the target
labels and, when the model has a classification head, its logits; after the last model it
calls :func:`zoo_scores` per metric, which applies the zoo-level step (NCTI's min-max over
models) and is the identity for every other metric.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from ._common import DegenerateScoreWarning, large_factorisation, prepare
from ._memory import memory_refusal
from .gbc import gbc
from .hscore import hscore
from .leep import leep
from .logme import logme
from .nce import nce
from .ncti import ncti_terms, ncti_zoo
from .nleep import nleep
from .parc import parc
from .sfda import sfda
from .static import MemberFacts, params, source_images
from .transrate import transrate

Status = Literal["ok", "skipped", "error"]

#: The note a logits-based metric carries for a model without a classification head.
NO_LOGITS_NOTE = "skipped: model has no logits"
#: The note a static metric carries when it is given features but no zoo member's facts.
NO_MODEL_NOTE = "skipped: no zoo member given"


@dataclass(frozen=True)
class Metric:
    """What the engine needs to know about one baseline metric.

    Attributes
    ----------
    name : registry key (``rank --metrics`` spelling).
    title : human-readable name with its source.
    higher_is_better : direction of the score.
    needs_logits : computed from the source classifier's logits instead of the features.
    compute : ``compute(features_or_logits, labels, **options)``, per model.
    options : per-model keyword options ``compute`` accepts.
    zoo_step : ``zoo_step(per_model_terms (n_models, k), exclude=..., **zoo_options)`` for a
        metric whose score needs every model of the zoo (NCTI), else None.
    zoo_options : keyword options of ``zoo_step``.
    needs_model : a static baseline: ``compute(member)`` takes the member's facts
        (:class:`~.static.MemberFacts`, read by the engine from its graph or manifest) and
        does not look at the target (``params``, ``source_images``).
    unrecorded : for a static baseline whose ``compute`` may return ``None`` (a property the
        member's manifest does not record): why, and how to record it; the result is then
        ``"skipped"`` with this as its note.
    """

    name: str
    title: str
    higher_is_better: bool
    needs_logits: bool
    compute: Callable[..., Any]
    options: tuple[str, ...] = ()
    zoo_step: Callable[..., NDArray[np.float64]] | None = None
    zoo_options: tuple[str, ...] = ()
    needs_model: bool = False
    unrecorded: str = ""


@dataclass(frozen=True)
class MetricResult:
    """One metric on one model.

    ``value`` is the score (NaN when skipped or failed, and for NCTI before the zoo step);
    ``terms`` holds the per-model terms of a metric with a zoo step (NCTI: seli, ncc, vc);
    ``note`` says why a result is skipped, failed or degenerate (NaN), and carries the
    warnings its computation raised; ``warned`` is true when it does (the note is then worth
    showing even beside a valid score).
    """

    name: str
    value: float
    status: Status = "ok"
    note: str = ""
    terms: Mapping[str, float] | None = field(default=None)
    warned: bool = False

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"


def _ncti_per_model(features: ArrayLike, labels: ArrayLike, **options: Any) -> dict[str, float]:
    return ncti_terms(features, labels, **options)._asdict()


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("logme", "LogME (You et al. 2021)", True, False, logme),
        Metric("leep", "LEEP (Nguyen et al. 2020)", True, True, leep),
        Metric("nleep", "NLEEP (Li et al. 2021)", True, False, nleep,
               ("log", "random_state", "variance", "components_per_class", "pca_random_state")),
        Metric("parc", "PARC (Bolya et al. 2021)", True, False, parc,
               ("subsample", "max_samples", "random_state", "n_dims")),
        Metric("sfda", "SFDA (Shao et al. 2022)", True, False, sfda, ("saturated",)),
        Metric("ncti", "NCTI (Wang et al. 2023)", True, False, _ncti_per_model,
               ("n_components", "random_state"), zoo_step=ncti_zoo, zoo_options=("vc_sign",)),
        Metric("gbc", "GBC (Pandy et al. 2022)", True, False, gbc,
               ("gaussian_type", "n_components", "random_state")),
        Metric("hscore", "H-score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022)", True, False,
               hscore, ("shrinkage",)),
        Metric("nce", "NCE (Tran et al. 2019)", True, True, nce),
        Metric("transrate", "TransRate (Huang et al. 2022)", True, False, transrate, ("eps",)),
        Metric("params", "parameter count of features.onnx (static baseline)", True, False,
               params, needs_model=True),
        Metric("source_images", "source-dataset size recorded in manifest.json (static "
               "baseline)", True, False, source_images, needs_model=True,
               unrecorded="skipped: the model's manifest does not record source_images (the "
                          "source dataset's size); export or import it with --source-images N"),
    )
}

#: The quirks of the released code, each behind a named option. ``as_released`` reproduces
#: REFERENCE section 6 number by number; ``default`` is the corrected behaviour.
QUIRKS: tuple[dict[str, Any], ...] = (
    {"metric": "nleep", "option": "log", "as_released": False, "default": True,
     "quirk": "mean probability without the log of Li et al.'s definition"},
    {"metric": "nleep", "option": "random_state", "as_released": None, "default": 42,
     "quirk": "Gaussian mixture unseeded, so the score changes from run to run"},
    {"metric": "parc", "option": "subsample", "as_released": "ignored", "default": "applied",
     "quirk": "above 15,000 samples a stratified subsample is drawn and then not used"},
    {"metric": "sfda", "option": "saturated", "as_released": "as_released", "default": "nan",
     "quirk": "on binary targets (N <= D) every probability is 1.0: score 1.0 for every model"},
    {"metric": "ncti", "option": "vc_sign", "as_released": "+", "default": "-",
     "quirk": "S_vc added, where the NCTI paper subtracts it"},
)


def faithful_options() -> dict[str, dict[str, Any]]:
    """Per-metric options that reproduce the released code (REFERENCE section 6)."""
    out: dict[str, dict[str, Any]] = {}
    for q in QUIRKS:
        out.setdefault(q["metric"], {})[q["option"]] = q["as_released"]
    return out


def resolve_names(names: str | Iterable[str]) -> list[str]:
    """``"all"``, ``"logme,leep"`` or an iterable of names -> list of known names, in order."""
    if isinstance(names, str):
        items = [part.strip().lower() for part in names.split(",") if part.strip()]
    else:
        items = [str(part).strip().lower() for part in names]
    if not items:
        raise InputError("no metric names given")
    out: list[str] = []
    for item in items:
        expanded = list(METRICS) if item == "all" else [item]
        for name in expanded:
            if name not in METRICS:
                raise InputError(f"unknown metric {name!r}; known: {', '.join(METRICS)} or 'all'")
            if name not in out:
                out.append(name)
    return out


def _merged_options(options: Mapping[str, Mapping[str, Any]] | None,
                    faithful: bool) -> dict[str, dict[str, Any]]:
    base = faithful_options() if faithful else {}
    merged: dict[str, dict[str, Any]] = {name: dict(base.get(name, {})) for name in METRICS}
    for name, opts in (options or {}).items():
        if name not in METRICS:
            raise InputError(f"options given for unknown metric {name!r}")
        metric = METRICS[name]
        allowed = metric.options + metric.zoo_options
        for key, value in opts.items():
            if key not in allowed:
                raise InputError(
                    f"{name} has no option {key!r}; its options are {', '.join(allowed) or 'none'}"
                )
            merged[name][key] = value
    return merged


def compute_metrics(
    names: str | Iterable[str],
    features: ArrayLike,
    labels: ArrayLike,
    logits: ArrayLike | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    faithful: bool = False,
    errors: Literal["raise", "record"] = "raise",
    member: MemberFacts | None = None,
) -> dict[str, MetricResult]:
    """Compute baseline metrics for one model from its features (and logits).

    Parameters
    ----------
    names : "all", a comma-separated string, or an iterable of registry names
    features : array-like of shape (n_samples, n_features)
        The model's penultimate features of the target images.
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    logits : array-like of shape (n_samples, n_source_classes), optional
        The model's final-layer output. ``None`` for a headless model: every metric that needs
        logits (LEEP, NCE) returns a ``"skipped"`` result whose note is
        ``"skipped: model has no logits"``, and the others are computed as usual.
    options : mapping of metric name -> mapping of option -> value, optional
        Per-metric options (see each function; :data:`QUIRKS` lists the quirk switches).
        Zoo-level options (NCTI's ``vc_sign``) are accepted here too and ignored until
        :func:`zoo_scores`.
    faithful : bool, default=False
        Start from the released code's options (:func:`faithful_options`); ``options``
        still override them.
    errors : {"raise", "record"}, default="raise"
        ``"record"`` turns a ``ValueError`` of one metric (e.g. NLEEP on fewer samples than
        mixture components) or a ``MemoryError`` into an ``"error"`` result with the message
        as its note, so the other metrics of the model are still returned.
    member : MemberFacts, optional
        The static facts of the zoo member the features come from
        (:func:`gradnca_onnx.engine.member.read_member_facts`); without them static metrics
        come back ``"skipped"`` with the note :data:`NO_MODEL_NOTE`. A property the manifest
        does not record (``source_images``) is ``"skipped"`` too, with a note that says so,
        never a made-up value; one that could not be read is an ``"error"``.

    Returns
    -------
    dict of name -> MetricResult, in the order of ``names``.

    Notes
    -----
    Before a metric runs, its peak memory is estimated from N, D and C and compared with a
    share of the memory the machine has free (:mod:`gradnca_onnx.metrics._memory`); a metric
    that would not fit is ``"skipped"`` with a note saying how much it needs, instead of
    letting the OOM killer end the process. Warnings a metric raises become part of its note
    (``warned`` set) and are then raised again for the caller's filters.
    """
    if errors not in ("raise", "record"):
        raise InputError(f"errors must be 'raise' or 'record'; got {errors!r}")
    selected = resolve_names(names)
    merged = _merged_options(options, faithful)
    X, y, n_classes = prepare(features, labels)
    if logits is not None and np.asarray(logits).shape[:1] != (X.shape[0],):
        raise InputError(
            f"logits have {np.asarray(logits).shape[:1]} rows but there are {X.shape[0]} samples"
        )
    results: dict[str, MetricResult] = {}
    for name in selected:
        metric = METRICS[name]
        kwargs = {k: v for k, v in merged[name].items() if k in metric.options}
        if metric.needs_model:
            results[name] = _static_result(metric, member, errors)
            continue
        if metric.needs_logits and logits is None:
            results[name] = MetricResult(
                name, math.nan, "skipped",
                f"{NO_LOGITS_NOTE}; {metric.title} needs the source classifier's output",
            )
            continue
        data = logits if metric.needs_logits else X
        width = np.shape(data)[1] if np.ndim(data) == 2 else 1  # a bad shape: the metric says
        refusal = memory_refusal(name, metric.title, X.shape[0], width, n_classes, kwargs)
        if refusal is not None:
            results[name] = MetricResult(name, math.nan, "skipped", refusal)
            continue
        notes: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # The factorisations inside scikit-learn (PCA's SVD, the mixture's Cholesky)
                # have order <= min(N, D): one BLAS thread when that is large (_common).
                with large_factorisation(min(X.shape[0], width)):
                    value = metric.compute(data, y, **kwargs)
            except (ValueError, MemoryError) as err:
                if errors == "raise":
                    raise
                value = None
                notes.append(_failure_note(err, metric))
        warned = _warning_notes(caught, notes)
        for w in caught:  # hand every warning on to the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if isinstance(value, Mapping) and not all(np.isfinite(list(value.values()))):
            # A NaN term would stop the zoo step (min-max over every model) for all models.
            bad = ", ".join(f"{k}={v:g}" for k, v in value.items())
            notes.append(f"error: {metric.title} terms are not finite ({bad}); this model "
                         "is left out of its zoo step")
            value = None
        note = "; ".join(notes)
        if value is None:
            results[name] = MetricResult(name, math.nan, "error", note, warned=warned)
        elif isinstance(value, Mapping):
            results[name] = MetricResult(
                name, math.nan, "ok",
                note or "per-model terms; the score needs zoo_scores over all models",
                dict(value), warned=warned,
            )
        else:
            results[name] = MetricResult(name, float(value), "ok", note, warned=warned)
    return results


def _failure_note(err: BaseException, metric: Metric) -> str:
    if isinstance(err, MemoryError):
        return (f"error: out of memory while computing {metric.title}; score fewer images or "
                "use a machine with more memory")
    return f"error: {' '.join(str(err).split())}"


def _warning_notes(caught: Sequence[warnings.WarningMessage], notes: list[str]) -> bool:
    """Append each distinct warning's message to ``notes`` as one line; whether any was.

    A :class:`DegenerateScoreWarning` says why the value is NaN and is kept as it is; any
    other (numpy's RuntimeWarning, scikit-learn's ConvergenceWarning, ...) is marked as a
    warning. Never the file and line that raised it: the user did not write that code.
    """
    seen = set(notes)
    for w in caught:
        text = " ".join(str(w.message).split())
        if not issubclass(w.category, DegenerateScoreWarning):
            text = f"warning: {text}"
        if text not in seen:
            seen.add(text)
            notes.append(text)
    return bool(caught)


def _static_result(metric: Metric, member: MemberFacts | None, errors: str) -> MetricResult:
    """A static metric's result: from the member's facts, or skipped / failed.

    Skipped without ``member``, and when ``compute`` returns ``None`` (the member does not
    record the property; the note is the metric's ``unrecorded`` text); failed when the fact
    could not be read.
    """
    if member is None:
        return MetricResult(metric.name, math.nan, "skipped",
                            f"{NO_MODEL_NOTE}; {metric.title} needs the member's facts")
    try:
        value = metric.compute(member)
    except ValueError as err:
        if errors == "raise":
            raise
        return MetricResult(metric.name, math.nan, "error", f"error: {err}")
    if value is None:
        return MetricResult(metric.name, math.nan, "skipped",
                            metric.unrecorded or f"skipped: {metric.title} is not recorded")
    return MetricResult(metric.name, float(value), "ok")


def zoo_scores(
    name: str,
    results: Sequence[MetricResult],
    *,
    exclude: ArrayLike | None = None,
    options: Mapping[str, Any] | None = None,
    faithful: bool = False,
) -> NDArray[np.float64]:
    """Scores of one metric for every model of a zoo (one target), zoo step applied.

    Parameters
    ----------
    name : registry name
    results : one :class:`MetricResult` of that metric per model, in zoo order
    exclude : bool mask or indices of models left out of a zoo-level normalisation (the model
        pre-trained on the target itself); their score is NaN. Ignored for metrics without a
        zoo step.
        A model whose result has no terms (skipped or failed) is left out the same way.
    options : zoo-level options of the metric (NCTI: ``vc_sign``)
    faithful : start from the released code's zoo options (NCTI ``vc_sign="+"``)

    Returns
    -------
    ndarray of shape (n_models,)
        NaN for skipped results.
    """
    metric = METRICS[resolve_names([name])[0]]
    for r in results:
        if r.name != metric.name:
            raise InputError(f"zoo_scores({metric.name!r}) got a result of {r.name!r}")
    merged = _merged_options({metric.name: dict(options or {})}, faithful)
    if metric.zoo_step is None:
        return np.array([r.value for r in results], dtype=np.float64)
    kwargs = {k: v for k, v in merged[metric.name].items() if k in metric.zoo_options}
    if not results:
        return np.empty(0)
    with_terms = [r for r in results if r.terms is not None]
    if not with_terms:
        return np.full(len(results), np.nan)
    keys = list(with_terms[0].terms)  # type: ignore[arg-type]
    table = np.array(
        [[r.terms[k] for k in keys] if r.terms is not None else [np.nan] * len(keys)
         for r in results], dtype=np.float64)
    # A model whose terms are missing (skipped or failed) is left out like an excluded one.
    mask = np.array([r.terms is None for r in results])
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.dtype == bool:
            if ex.shape != mask.shape:
                raise InputError(f"exclude mask has shape {ex.shape}; expected {mask.shape}")
            mask |= ex
        else:
            mask[ex.astype(np.int64)] = True
    return metric.zoo_step(table, exclude=mask, **kwargs)
