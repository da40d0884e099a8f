"""How sure is the ranking? Scoring class-stratified resamples of the target (``rank
--resamples``).

Per resample and model, S_LP and every baseline metric are recomputed from the cached features
and logits (no new forward pass). S_FU is either re-batched (the paper's batching rule on the
subsample's images, one pass of ``grads.onnx`` per batch: ``fu="rebatch"``) or estimated for
free by resampling the cached S_FU batches with replacement (``fu="batches"``). The identity
"resample" (every image, original order) reproduces the plain scores exactly.

The subsample design, the intervals and the rank statistics are
:mod:`gradnca_onnx.evaluation.resampling`'s; this module runs the passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..data.dataset import TargetData
from ..errors import InputError
from ..results import ZooRanking
from ..scores import feature_update_score, fu_batch_slices, label_prediction_score
from .options import (
    DEFAULT_FRACTION,
    Progress,
    RankOptions,
    Resampling,
    callbacks_propagate,
)
from .ranking import (
    RankPlan,
    baseline_metrics,
    member_facts,
    plan_ranking,
    score_entry_arrays,
)
from .runtime import RuntimeConfig
from .scoring import LP_SETTINGS, _grad_norms, _prepare, lp_settings

if TYPE_CHECKING:
    from ..metrics.static import MemberFacts

#: Version of the resampling block's layout (inside the ``rank/2`` schema).
SCHEME = "stratified-subsample-without-replacement"


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


def resample_member(features: NDArray, labels: NDArray, subsamples: Sequence[NDArray[np.int64]],
                    *, logits: NDArray | None = None, lp_settings: dict | None = None,
                    metric_names: Sequence[str] = (), faithful: bool = False,
                    member: MemberFacts | None = None,
                    fu: Callable[[int, NDArray[np.int64]], float] | None = None,
                    tick: Callable[[int], None] | None = None) -> Any:
    """S_LP, S_FU and the baseline metrics of one model on each subsample.

    Parameters
    ----------
    features, labels, logits : the model's cached arrays on the whole target
    subsamples : index arrays
        (:func:`~gradnca_onnx.evaluation.resampling.stratified_subsamples`)
    lp_settings : S_LP settings (default the paper's, :data:`LP_SETTINGS`)
    metric_names : baseline metrics (registry names) recomputed per resample
    member : the member's static facts, for static metrics
        (:func:`~gradnca_onnx.engine.member.read_member_facts`)
    fu : ``fu(i, indices) -> S_FU`` of resample ``i`` (NaN when undefined), or None
    tick : called with the number of resamples done

    Returns
    -------
    MemberResamples
        (:class:`~gradnca_onnx.evaluation.resampling.MemberResamples`)
    """
    from ..evaluation.resampling import (
        MemberResamples,  # scipy.stats: only when resampling
    )

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
            res = baseline_metrics(metric_names, f, y, None if logits is None else logits[idx],
                                   faithful=faithful, member=member)
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


def _draws(target: TargetData, resampling: Resampling,
           subsamples: Sequence[ArrayLike] | None
           ) -> tuple[list[NDArray[np.int64]], NDArray[np.int64]]:
    """The subsamples and the S_FU batch draws of every resample.

    Drawn (:mod:`gradnca_onnx.evaluation.resampling`) unless explicit ``subsamples`` are
    given; with those, the ``"batches"`` estimator takes every cached batch once.
    """
    from ..evaluation.resampling import batch_draws, grouped_subsamples, stratified_subsamples

    if subsamples is None:
        resampling.check()
        if target.groups is not None:  # a label table's patients: each drawn whole
            drawn = grouped_subsamples(target.labels, target.groups, resampling.n_resamples,
                                       fraction=resampling.fraction, seed=resampling.seed)
        else:
            drawn = stratified_subsamples(target.labels, resampling.n_resamples,
                                          fraction=resampling.fraction, seed=resampling.seed)
        return drawn, batch_draws(len(target), len(drawn), seed=resampling.seed)
    Resampling(max(2, len(subsamples)), resampling.seed, 1.0, resampling.level,
               resampling.fu).check()
    given = _check_subsamples(subsamples, len(target))
    every = np.tile(np.arange(len(fu_batch_slices(len(target)))), (len(given), 1))
    return given, every


@callbacks_propagate
def resample_zoo(zoo_dir: str | Path, target: TargetData, n_resamples: int, *, seed: int = 0,
                 fraction: float = DEFAULT_FRACTION, level: float = 0.95, fu: str = "rebatch",
                 subsamples: Sequence[NDArray[np.int64]] | None = None,
                 options: RankOptions | None = None, **settings: Any) -> ZooRanking:
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
    n_resamples, seed, fraction, level, fu : the fields of
        :class:`~gradnca_onnx.engine.options.Resampling`
    subsamples : explicit index arrays instead of drawn ones (e.g. ``[np.arange(n)]``, the
        identity resample, which reproduces the plain scores exactly); with them the
        ``"batches"`` estimator takes every cached batch once
    options, settings : as :func:`~gradnca_onnx.engine.rank_zoo`
    """
    resampling = Resampling(n_resamples, seed, fraction, level, fu)
    return resample_ranking(zoo_dir, target, resampling, RankOptions.of(options, **settings),
                            subsamples=subsamples)


@callbacks_propagate
def resample_ranking(zoo_dir: str | Path, target: TargetData, resampling: Resampling,
                     options: RankOptions, *,
                     subsamples: Sequence[NDArray[np.int64]] | None = None) -> ZooRanking:
    """:func:`resample_zoo` with its settings as options objects."""
    from ..evaluation.resampling import attach_resampling

    if subsamples is None:
        resampling.check()  # bad settings fail before the zoo is read
    plan, entries, (target,) = plan_ranking(zoo_dir, [target], options)
    subsamples, draws = _draws(target, resampling, subsamples)
    scored = []
    for entry in entries:
        result, per_model, arrays = score_entry_arrays(entry, target, plan, options.progress)
        samples = None
        if arrays is not None:
            per_model = per_model or {}
            samples = _resample_one(entry, target, arrays, subsamples, draws, resampling.fu,
                                    plan, options.progress)
        scored.append((result, per_model, samples))
    ranking = plan.combine(target, [(r, m) for r, m, _ in scored])
    attach_resampling(ranking, [(r, s) for r, _, s in scored], len(subsamples),
                      resampling.level, plan.faithful)
    ranking.resampling = _settings_block(resampling, subsamples, plan.lp_jitters)
    return ranking


def _settings_block(resampling: Resampling, subsamples: Sequence[NDArray], lp_jitters: int
                    ) -> dict[str, Any]:
    """The ranking's ``resampling`` block: the settings the intervals were made with."""
    level = resampling.level
    return {
        "n_resamples": len(subsamples), "seed": int(resampling.seed), "scheme": SCHEME,
        "fraction": float(resampling.fraction),
        "sizes": sorted({int(len(s)) for s in subsamples}), "fu_estimator": resampling.fu,
        "level": float(level), "interval": "percentile", "lp_jitters": int(lp_jitters),
        "rule": f"distinguishable from the top: P(S >= S of the plain rank-1 model) over the "
                f"resamples < {1.0 - level:.3g}",
    }


def _resample_one(entry: Any, target: TargetData, arrays: dict[str, NDArray],
                  subsamples: Sequence[NDArray[np.int64]], draws: NDArray[np.int64], fu: str,
                  plan: RankPlan, progress: Progress | None) -> Any:
    manifest = entry.manifest
    fu_fn = (_fu_function(entry, target, arrays, fu, draws, plan.runtime)
             if manifest.has_grads else None)
    tick = ((lambda done: progress(manifest.name, "resamples", done, len(subsamples)))
            if progress else None)
    return resample_member(arrays["features"], target.labels, subsamples,
                           logits=arrays.get("logits"),
                           lp_settings=lp_settings(manifest.feature_dim, plan.lp_jitters),
                           metric_names=plan.metric_names, faithful=plan.faithful,
                           member=member_facts(entry, plan.metric_names), fu=fu_fn,
                           tick=tick)
