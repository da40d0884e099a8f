"""How sure is the ranking? Class-stratified resamples of the target (``rank --resamples``).

Scheme: each resample is a class-stratified subsample *without replacement* of a fixed
fraction of the target (default one half: "half-sampling", an m-out-of-n subsample with
m = n/2), kept in the target's order. Without replacement no image is ever its own duplicate
neighbour, so S_LP's self-inclusive 5-NN is not biased upward as under a plain bootstrap; and
at fraction one half the finite-population factor (1 - f) / f is 1, so the spread of a
mean-like score over half-samples matches its sampling spread at the full n. The same
subsamples are used for every model (a paired design), so S can be recombined over the zoo per
resample and models are compared on the same images.

Per resample and model, S_LP and every baseline metric are recomputed from the cached features
and logits (no new forward pass). S_FU is either re-batched (the paper's batching rule on the
subsample's images, one pass of ``grads.onnx`` per batch: ``fu="rebatch"``) or estimated for
free by resampling the cached S_FU batches with replacement (``fu="batches"``). The identity
"resample" (every image, original order) reproduces the plain scores exactly.

Summary per model: percentile intervals of S, S_LP, S_FU and every metric; P(rank 1) (ties at
the top share the credit); the rank interval; and P(S >= S of the top model), the top model
being the plain ranking's first: a model is *distinguishable from the top* when that
probability is below ``alpha = 1 - level``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..data.dataset import TargetData
from ..errors import InputError
from ..scores import (
    combine,
    feature_update_score,
    fu_batch_slices,
    label_prediction_score,
)
from ..scores.label_prediction import check_jitters
from .cache import FeatureCache
from .runtime import RuntimeConfig
from ..results import ModelResult, ZooRanking
from .scoring import (
    LP_SETTINGS,
    Progress,
    _grad_norms,
    _prepare,
    check_scenario,
    check_scoring_target,
    combine_zoo,
    lp_settings,
    score_entry_arrays,
    zoo_entries,
)

#: How S_FU is resampled: re-batched gradient passes, or the cached batches resampled.
FU_ESTIMATORS = ("rebatch", "batches")
#: Default fraction of each class kept per resample (half-sampling).
DEFAULT_FRACTION = 0.5
#: Version of the resampling block's layout (inside the ``rank/2`` schema).
SCHEME = "stratified-subsample-without-replacement"


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


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the image subsamples and the S_FU batch draws."""
    a, b = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def stratified_subsamples(labels: ArrayLike, n_resamples: int, *,
                          fraction: float = DEFAULT_FRACTION, seed: int = 0
                          ) -> list[NDArray[np.int64]]:
    """Class-stratified subsamples without replacement, each sorted (the target's order).

    Each class c of n_c images keeps ``max(2, floor(fraction * n_c + 1/2))`` of them (all of
    them when n_c is smaller), so every class still forms a triplet.

    Parameters
    ----------
    labels : array-like of shape (n,), integer classes
    n_resamples : int
    fraction : float in (0, 1]; 1 gives the identity resample every time
    seed : int

    Returns
    -------
    list of int64 index arrays into the target
    """
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        raise InputError("cannot resample an empty target")
    if not 0.0 < float(fraction) <= 1.0:
        raise InputError(f"fraction must be in (0, 1]; got {fraction!r}")
    rng, _ = _rngs(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    take = [min(idx.size, max(2, int(np.floor(fraction * idx.size + 0.5)))) for idx in classes]
    if sum(take) < 6:
        raise InputError(f"a resample of {sum(take)} images is too small for S_FU (six "
                         "batches); raise --fraction")
    out = []
    for _ in range(int(n_resamples)):
        parts = [rng.choice(idx, k, replace=False) for idx, k in zip(classes, take)]
        out.append(np.sort(np.concatenate(parts)).astype(np.int64))
    return out


def batch_draws(n_samples: int, n_resamples: int, *, seed: int = 0) -> NDArray[np.int64]:
    """For the cheap S_FU estimator: per resample, the S_FU batches drawn with replacement.

    Returns an array (n_resamples, k) of batch indices, k = number of batches of the target.
    """
    k = len(fu_batch_slices(n_samples))
    _, rng = _rngs(seed)
    return rng.integers(0, k, size=(int(n_resamples), k)).astype(np.int64)


def _check_subsamples(subsamples: Sequence[ArrayLike], n: int) -> list[NDArray[np.int64]]:
    """Explicit subsamples: integer indices into the target, at least six images each."""
    out = []
    for i, s in enumerate(subsamples):
        idx = np.asarray(s)
        if idx.ndim != 1 or idx.size < 6 or not np.issubdtype(idx.dtype, np.integer) \
                or idx.min() < 0 or idx.max() >= n:
            raise InputError(f"subsample {i}: need at least six integer indices in [0, {n})")
        out.append(idx.astype(np.int64))
    if not out:
        raise InputError("subsamples: give at least one index array")
    return out


def _fu_or_nan(w1: NDArray, w2: NDArray) -> float:
    try:
        return feature_update_score(w1, w2)
    except ValueError:  # no violating triplet in any batch of this resample
        return float("nan")


@dataclass
class MemberResamples:
    """One model's per-resample values (NaN where a value is undefined in that resample)."""

    lp: NDArray[np.float64]
    fu: NDArray[np.float64] | None
    metrics: dict[str, list[Any]] = field(default_factory=dict)


def resample_member(features: NDArray, labels: NDArray, subsamples: Sequence[NDArray[np.int64]],
                    *, logits: NDArray | None = None, lp_settings: dict | None = None,
                    metric_names: Sequence[str] = (), faithful: bool = False,
                    model_dir: Path | None = None,
                    fu: Callable[[int, NDArray[np.int64]], float] | None = None,
                    tick: Callable[[int], None] | None = None) -> MemberResamples:
    """S_LP, S_FU and the baseline metrics of one model on each subsample.

    Parameters
    ----------
    features, labels, logits : the model's cached arrays on the whole target
    subsamples : index arrays (:func:`stratified_subsamples`)
    lp_settings : S_LP settings (default the paper's, :data:`LP_SETTINGS`)
    metric_names : baseline metrics (registry names) recomputed per resample
    model_dir : the member's folder, for static metrics
    fu : ``fu(i, indices) -> S_FU`` of resample ``i`` (NaN when undefined), or None
    tick : called with the number of resamples done
    """
    if metric_names:  # imported only when asked for (scikit-learn, numba: seconds)
        from ..metrics import compute_metrics

    settings = dict(LP_SETTINGS if lp_settings is None else lp_settings)
    n = len(subsamples)
    lp = np.empty(n)
    fus = None if fu is None else np.empty(n)
    per_metric: dict[str, list[Any]] = {name: [] for name in metric_names}
    for i, idx in enumerate(subsamples):
        f, y = features[idx], labels[idx]
        lp[i] = label_prediction_score(f, y, **settings)
        if fus is not None:
            fus[i] = fu(i, idx)  # type: ignore[misc]
        if metric_names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = compute_metrics(list(metric_names), f, y,
                                      None if logits is None else logits[idx],
                                      faithful=faithful, errors="record", model_dir=model_dir)
            for name in metric_names:
                per_metric[name].append(res[name])
        if tick:
            tick(i + 1)
    return MemberResamples(lp=lp, fu=fus, metrics=per_metric)


def _fu_function(entry: Any, target: TargetData, arrays: dict[str, NDArray], how: str,
                 draws: NDArray[np.int64], runtime: RuntimeConfig
                 ) -> Callable[[int, NDArray[np.int64]], float]:
    """The S_FU of resample ``i``: re-batched through ``grads.onnx``, or from batch draws."""
    w1, w2 = arrays["grad_norms_w1"], arrays["grad_norms_w2"]
    if how == "batches":
        return lambda i, idx: _fu_or_nan(w1[draws[i]], w2[draws[i]])
    manifest = entry.manifest
    x = _prepare(target, manifest)
    feats, labels = arrays["features"], target.labels
    sessions: dict[str, Any] = {}

    def rebatched(i: int, idx: NDArray[np.int64]) -> float:
        n1, n2 = _grad_norms(entry.path, manifest, x[idx], feats[idx], labels[idx], runtime,
                             lambda stage, total: (lambda done: None), sessions)
        return _fu_or_nan(n1, n2)

    return rebatched


# ------------------------------------------------------------------------- zoo level
def _percentiles(values: NDArray, level: float) -> dict[str, Any] | None:
    """``{"lo", "median", "hi", "n"}`` over the finite values, or None if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    a = (1.0 - level) / 2.0
    lo, med, hi = np.quantile(v, [a, 0.5, 1.0 - a])
    return {"lo": float(lo), "median": float(med), "hi": float(hi), "n": int(v.size)}


def _ranks(scores: NDArray[np.float64]) -> NDArray[np.int64]:
    """Rank 1 = best; ties share the better rank (as the plain ranking)."""
    return 1 + (scores[None, :] > scores[:, None]).sum(axis=1)


def zoo_resample_scores(lp: NDArray, fu: NDArray, scenario: str) -> NDArray[np.float64]:
    """S per resample (rows) and model (columns); rows with any undefined term are NaN."""
    out = np.full(lp.shape, np.nan)
    for r in range(lp.shape[0]):
        if np.isfinite(lp[r]).all() and np.isfinite(fu[r]).all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[r] = combine(lp[r], fu[r], scenario=scenario)
    return out


def rank_statistics(scores: NDArray[np.float64], top: int, level: float) -> list[dict[str, Any]]:
    """P(rank 1), the rank interval and the comparison with the top model, per model.

    ``rank_probabilities[k - 1]`` is the share of resamples in which the model has rank k
    (ties share the better rank, so a column of the heat map may sum to more than 1).

    ``scores`` is (n_resamples, n_models) of S; rows holding NaN are left out. ``top`` is the
    column of the plain ranking's first model.
    """
    ok = np.isfinite(scores).all(axis=1)
    s = scores[ok]
    alpha = 1.0 - level
    n_models = scores.shape[1]
    if s.shape[0] == 0:
        return [{"p_rank1": None, "rank_interval": None, "p_at_least_top": None,
                 "distinguishable_from_top": None, "is_top": j == top,
                 "rank_probabilities": None, "n": 0}
                for j in range(n_models)]
    ranks = np.array([_ranks(row) for row in s])
    best = s == s.max(axis=1, keepdims=True)
    credit = (best / best.sum(axis=1, keepdims=True)).mean(axis=0)
    a = alpha / 2.0
    out = []
    for j in range(n_models):
        p_top = float(np.mean(s[:, j] >= s[:, top]))
        out.append({
            "p_rank1": float(credit[j]),
            "rank_interval": [int(np.quantile(ranks[:, j], a, method="lower")),
                              int(np.quantile(ranks[:, j], 1.0 - a, method="higher"))],
            "p_at_least_top": p_top,
            "distinguishable_from_top": bool(j != top and p_top < alpha),
            "is_top": j == top,
            "rank_probabilities": [float(np.mean(ranks[:, j] == k))
                                   for k in range(1, n_models + 1)],
            "n": int(s.shape[0]),
        })
    return out


def _metric_matrix(name: str, members: Sequence[MemberResamples], n: int,
                   faithful: bool) -> NDArray[np.float64]:
    """(n_resamples, n_members) of a metric after its zoo step, per resample."""
    from ..metrics import zoo_scores

    out = np.empty((n, len(members)))
    for r in range(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[r] = zoo_scores(name, [m.metrics[name][r] for m in members], faithful=faithful)
    return out


@dataclass
class _Scored:
    result: ModelResult
    samples: MemberResamples | None


def _summaries(scored: list[_Scored], ranking: ZooRanking, n: int, level: float,
               faithful: bool) -> None:
    """Attach every model's resampling block to ``ranking``'s results."""
    have = [s for s in scored if s.samples is not None]
    full = [s for s in have if s.result.features_only is None]
    stats: dict[str, dict] = {}
    s_matrix = None
    if full:
        lp = np.column_stack([s.samples.lp for s in full])  # type: ignore[union-attr]
        fu = np.column_stack([s.samples.fu for s in full])  # type: ignore[union-attr]
        s_matrix = zoo_resample_scores(lp, fu, ranking.scenario)
        top_name = next(m.name for m in ranking.models if m.rank == 1)
        top = [s.result.name for s in full].index(top_name)
        for s, st, col in zip(full, rank_statistics(s_matrix, top, level), s_matrix.T):
            stats[s.result.name] = {**st, "score": _percentiles(col, level)}
    metric_cols = {name: _metric_matrix(name, [s.samples for s in have], n, faithful)
                   for name in ranking.metrics}
    for j, s in enumerate(have):
        st = stats.get(s.result.name, {})
        block = {
            "score": st.get("score"),
            "lp": _percentiles(s.samples.lp, level),  # type: ignore[union-attr]
            "fu": None if s.samples.fu is None else _percentiles(s.samples.fu, level),
            "metrics": {name: _percentiles(metric_cols[name][:, j], level)
                        for name in ranking.metrics},
            "p_rank1": st.get("p_rank1"), "rank_interval": st.get("rank_interval"),
            "p_at_least_top": st.get("p_at_least_top"),
            "distinguishable_from_top": st.get("distinguishable_from_top"),
            "is_top": bool(st.get("is_top", False)),
            "rank_probabilities": st.get("rank_probabilities"),
            "n_scored": st.get("n", 0),
        }
        s.result.resampling = block
        if s.samples.fu is not None and not np.isfinite(s.samples.fu).all():  # type: ignore
            bad = int((~np.isfinite(s.samples.fu)).sum())  # type: ignore[arg-type]
            s.result.notes.append(f"S_FU undefined (no violating triplet) in {bad} of {n} "
                                  "resamples; those resamples are left out of S and the ranks")


def resample_zoo(zoo_dir: str | Path, target: TargetData, n_resamples: int, *, seed: int = 0,
                 fraction: float = DEFAULT_FRACTION, level: float = 0.95, fu: str = "rebatch",
                 scenario: str = "dataset", runtime: RuntimeConfig | None = None,
                 cache: FeatureCache | None = None, resize: bool = True, verify: bool = True,
                 models: Sequence[str] | None = None, metrics: str | Sequence[str] | None = None,
                 faithful: bool = False, progress: Progress | None = None,
                 subsamples: Sequence[NDArray[np.int64]] | None = None,
                 lp_jitters: int = 0) -> ZooRanking:
    """:func:`~gradnca_onnx.engine.rank_zoo`, plus how sure each number and rank is.

    The plain ranking is computed (and cached) first; then every model is scored on each of
    ``n_resamples`` class-stratified subsamples of the target from its cached arrays (see the
    module docstring). Each ranked result gets a ``resampling`` block (percentile intervals of
    S, S_LP, S_FU and every metric at ``level``; ``p_rank1``; ``rank_interval``;
    ``p_at_least_top`` and ``distinguishable_from_top``); features-only members get S_LP and
    metric intervals only; failed members none. The ranking's ``resampling`` holds the
    settings, and its schema becomes ``gradnca-onnx/rank/2``.

    Parameters
    ----------
    n_resamples, seed, fraction, level : resampling settings (same seed, same output)
    fu : ``"rebatch"`` (a ``grads.onnx`` pass per batch of each resample) or ``"batches"``
        (the cached S_FU batches drawn with replacement; no pass)
    subsamples : explicit index arrays instead of drawn ones (e.g. ``[np.arange(n)]``, the
        identity resample, which reproduces the plain scores exactly); with them the
        ``"batches"`` estimator takes every cached batch once
    Other parameters as :func:`~gradnca_onnx.engine.rank_zoo`.
    """
    from ..metrics import resolve_names

    explicit = subsamples
    if subsamples is None:
        check_resample_options(n_resamples, fraction, level, fu, seed)
        subsamples = stratified_subsamples(target.labels, n_resamples, fraction=fraction,
                                           seed=seed)
    else:
        check_resample_options(max(2, len(subsamples)), 1.0, level, fu, seed)
        subsamples = _check_subsamples(subsamples, len(target))
    check_scenario(scenario)
    check_jitters(lp_jitters, "lp_jitters")
    check_scoring_target(target)
    metric_names = resolve_names(metrics) if metrics else []
    runtime = runtime or RuntimeConfig()
    n = len(subsamples)
    draws = (batch_draws(len(target), n, seed=seed) if explicit is None else
             np.tile(np.arange(len(fu_batch_slices(len(target)))), (n, 1)))
    scored: list[_Scored] = []
    per_model_metrics: dict[str, dict] = {}
    for entry in zoo_entries(zoo_dir, models):
        result, per_model, arrays = score_entry_arrays(
            entry, target, runtime=runtime, cache=cache, resize=resize, verify=verify,
            metric_names=metric_names, faithful=faithful, progress=progress,
            lp_jitters=lp_jitters)
        samples = None
        if arrays is not None:
            per_model_metrics[result.name] = per_model or {}
            samples = _resample_one(entry, target, arrays, subsamples, draws, fu, runtime,
                                    metric_names, faithful, progress, lp_jitters)
        scored.append(_Scored(result, samples))
    ranking = combine_zoo(target, [s.result for s in scored], per_model_metrics,
                          scenario=scenario, metric_names=metric_names, faithful=faithful,
                          lp_jitters=lp_jitters)
    _summaries(scored, ranking, n, level, faithful)
    ranking.resampling = {
        "n_resamples": n, "seed": int(seed), "scheme": SCHEME, "fraction": float(fraction),
        "sizes": sorted({int(len(s)) for s in subsamples}), "fu_estimator": fu,
        "level": float(level), "interval": "percentile", "lp_jitters": int(lp_jitters),
        "rule": f"distinguishable from the top: P(S >= S of the plain rank-1 model) over the "
                f"resamples < {1.0 - level:.3g}",
    }
    return ranking


def _resample_one(entry: Any, target: TargetData, arrays: dict[str, NDArray],
                  subsamples: Sequence[NDArray[np.int64]], draws: NDArray[np.int64], fu: str,
                  runtime: RuntimeConfig, metric_names: Sequence[str], faithful: bool,
                  progress: Progress | None, lp_jitters: int = 0) -> MemberResamples:
    manifest = entry.manifest
    fu_fn = (_fu_function(entry, target, arrays, fu, draws, runtime)
             if manifest.has_grads else None)
    tick = ((lambda done: progress(manifest.name, "resamples", done, len(subsamples)))
            if progress else None)
    return resample_member(arrays["features"], target.labels, subsamples,
                           logits=arrays.get("logits"),
                           lp_settings=lp_settings(manifest.feature_dim, lp_jitters),
                           metric_names=metric_names, faithful=faithful, model_dir=entry.path,
                           fu=fu_fn, tick=tick)
