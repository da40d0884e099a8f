"""The one ranking path: check once, score every member, combine over the zoo.

Every way of ranking goes through the same three steps, here:

1. :func:`plan_ranking`, the preamble: baseline metric names resolved, the scenario, the
   smoothed S_LP and every target checked, the zoo listed; the result is a :class:`RankPlan`.
2. :func:`score_entry`, the unit of work: one member on one target. It depends only on its
   arguments (the plan travels with it), so any process can run it: this one
   (:func:`rank_zoo`, :func:`rank_each`), a Ray worker (``executors.rank_targets``), or the
   resampling loop (``engine.resample``, which keeps the member's arrays).
3. :meth:`RankPlan.combine` (:func:`combine_zoo`): S over the zoo, the baseline metrics'
   zoo step, ranks.

A features-only member (manifest schema 2, no ``grads.onnx``) gets S_LP and every baseline
metric but no S_FU. The paper's score S needs both terms, so it is computed over the members
that have both, exactly as if the features-only members were absent; features-only members get
no S and no rank and are listed after the ranked members (best S_LP first, in the scenario's
direction), each with a note saying why. Baseline metrics are computed over every member that
has features, features-only ones included.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from numpy.typing import NDArray

from ..core._parallel import limited_threads
from ..data.dataset import TargetData
from ..errors import InputError, one_line
from ..results import ModelResult, ZooRanking
from ..scores import combine
from ..scores.combine import check_scenario, inverts_terms
from ..scores.label_prediction import check_jitters
from ..zoo import list_zoo, verify_files
from .bounded import bounded_target, check_max_samples
from .cache import FeatureCache
from .log import StageClock, log_member, log_plan
from .member import read_member_facts
from .options import Progress, RankOptions, callbacks_propagate, guarded
from .runtime import RuntimeConfig, ort_errors
from .scoring import PREPARED, check_scoring_target, score_arrays

if TYPE_CHECKING:
    from ..metrics.static import MemberFacts


def resolve_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """The baseline metric names of ``metrics`` (registry names or ``"all"``), ``[]`` for none."""
    if not metrics:
        return []
    # Imported only when metrics are asked for: scikit-learn and numba cost ~3 s to import.
    from ..metrics import resolve_names

    return resolve_names(metrics)


def zoo_entries(zoo_dir: str | Path, models: Sequence[str] | None = None) -> list[Any]:
    """The zoo's entries (``list_zoo``), restricted to ``models`` when given.

    Raises :class:`InputError` for an unknown model name or a zoo without any model.
    """
    entries = list_zoo(zoo_dir)
    if models:
        wanted = set(models)
        missing = wanted - {e.path.name for e in entries}
        if missing:
            raise InputError(f"zoo {zoo_dir} has no model named {sorted(missing)}")
        entries = [e for e in entries if e.path.name in wanted]
    if not entries:
        raise InputError(f"zoo directory {zoo_dir} holds no model (no sub-directory with a "
                         "manifest.json); export one with 'gradnca-onnx export'")
    return entries


@dataclass(frozen=True)
class RankPlan:
    """A checked ranking: how every member is scored and how the zoo is combined.

    Picklable (no callback): a Ray task receives it with its member and target.
    """

    scenario: str
    runtime: RuntimeConfig
    cache: FeatureCache
    resize: bool
    verify: bool
    metric_names: tuple[str, ...]
    faithful: bool
    lp_jitters: int
    within_family: bool = False
    #: The note of each subsampled target (by its sha256): ``engine.bounded``.
    sample_notes: tuple[tuple[str, str], ...] = ()

    def combine(self, target: TargetData,
                scored: Sequence[tuple[ModelResult, dict | None]]) -> ZooRanking:
        """The zoo step over one target's ``(result, per-model metric results)`` pairs."""
        per_model = {r.name: m for r, m in scored if m is not None}
        PREPARED.clear()  # every member has been scored: the shared input is not needed
        ranking = combine_zoo(target, [r for r, _ in scored], per_model, scenario=self.scenario,
                              metric_names=self.metric_names, faithful=self.faithful,
                              lp_jitters=self.lp_jitters, within_family=self.within_family)
        # first among the zoo's notes: the table, the CSV (every row) and the JSON show it
        ranking.notes[:0] = [note for sha, note in self.sample_notes if sha == target.sha256]
        return ranking


def plan_ranking(zoo_dir: str | Path, targets: Sequence[TargetData],
                 options: RankOptions) -> tuple[RankPlan, list[Any], list[TargetData]]:
    """The preamble of every ranking: settings checked, the zoo listed, before any work.

    Returns the plan, the zoo's entries (restricted to ``options.models``) and the targets to
    score: each one, or its subsample when it holds more than ``options.max_samples`` images
    (:func:`~gradnca_onnx.engine.bounded.bounded_target`; the plan keeps the notes).

    Raises
    ------
    InputError
        An unknown metric or scenario, a bad ``lp_jitters``, a target the score is undefined
        on, an unknown model name or a zoo without models.
    """
    metric_names = resolve_metrics(options.metrics)
    check_scenario(options.scenario)
    if options.runtime is not None:
        options.runtime.providers()  # a device this onnxruntime cannot use fails here, once
    check_jitters(options.lp_jitters, "lp_jitters")
    for target in targets:
        check_scoring_target(target)
    bound = check_max_samples(options.max_samples)
    bounded = [bounded_target(t, bound, options.sample_seed) for t in targets]
    entries = zoo_entries(zoo_dir, options.models)
    plan = RankPlan(scenario=options.scenario, runtime=options.runtime or RuntimeConfig(),
                    cache=options.cache or FeatureCache(None), resize=options.resize,
                    verify=options.verify, metric_names=tuple(metric_names),
                    faithful=options.faithful, lp_jitters=options.lp_jitters,
                    within_family=options.within_family,
                    sample_notes=tuple((t.sha256, n) for t, n in bounded if n is not None))
    log_plan(len(entries), len(targets), str(zoo_dir))
    return plan, entries, [t for t, _ in bounded]


def score_entry(entry: Any, target: TargetData, plan: RankPlan,
                progress: Progress | None = None) -> tuple[ModelResult, dict | None]:
    """The unit of work: one zoo entry scored on ``target`` as ``plan`` says.

    Returns the model's result (its ``error`` set when it cannot be scored) and its per-model
    baseline metric results (``None`` when it failed), which :meth:`RankPlan.combine` turns
    into zoo-level values. Depends only on its arguments, so any process can run it.
    """
    result, per_model, _ = score_entry_arrays(entry, target, plan, progress)
    return result, per_model


def score_entry_arrays(entry: Any, target: TargetData, plan: RankPlan,
                       progress: Progress | None = None
                       ) -> tuple[ModelResult, dict | None, dict[str, NDArray] | None]:
    """:func:`score_entry`, plus the model's arrays (features, logits, gradient norms, S_LP;
    ``None`` when it failed), as the cache holds them: what ``rank --resamples`` resamples.
    Logs one line for the member (:mod:`gradnca_onnx.engine.log`)."""
    clock = StageClock(progress)
    out = _score_entry_arrays(entry, target, plan, clock.progress)
    log_member(out[0], f"{target.name} ({target.split})", clock)
    return out


def _score_entry_arrays(entry: Any, target: TargetData, plan: RankPlan,
                        progress: Progress | None
                        ) -> tuple[ModelResult, dict | None, dict[str, NDArray] | None]:
    if not entry.ok:
        return ModelResult(name=entry.path.name, path=entry.path, error=entry.error), None, None
    manifest = entry.manifest
    try:
        # runtime.threads bounds every pool the member's scoring uses, not only onnxruntime's
        with limited_threads(plan.runtime.threads):
            if plan.verify:
                verify_files(entry.path, manifest.files)
            result, arrays = score_arrays(entry.path, manifest, target, runtime=plan.runtime,
                                          cache=plan.cache, resize=plan.resize,
                                          progress=progress, lp_jitters=plan.lp_jitters)
            per_model = (baseline_metrics(plan.metric_names, arrays["features"],
                                          target.labels, arrays.get("logits"),
                                          faithful=plan.faithful,
                                          member=member_facts(entry, plan.metric_names))
                         if plan.metric_names else None)
        return result, per_model, arrays
    except (ValueError, RuntimeError, OSError, *ort_errors()) as exc:
        # One bad member (a graph that contradicts its manifest, an onnxruntime failure) is
        # reported with its error; the rest of the zoo is still ranked.
        return failed_result(entry, one_line(exc)), None, None


def member_facts(entry: Any, metric_names: Sequence[str]) -> MemberFacts | None:
    """The static facts the static metrics among ``metric_names`` need (read from the
    member's files once), or ``None`` when none is asked for."""
    from ..metrics import METRICS

    facts = [name for name in metric_names if METRICS[name].needs_model]
    return read_member_facts(entry.path, facts, manifest=entry.manifest) if facts else None


def baseline_metrics(names: Sequence[str], features: NDArray, labels: NDArray,
                     logits: NDArray | None, *, faithful: bool, member: MemberFacts | None
                     ) -> dict[str, Any]:
    """One member's per-model baseline metric results (errors recorded, not raised)."""
    # Imported only when asked for: scikit-learn and numba cost ~3 s to import.
    from ..metrics import compute_metrics

    # A metric's warnings are in its result's note (shown as the model's notes by
    # combine_zoo), so they are not raised again here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_metrics(list(names), features, labels, logits, faithful=faithful,
                               errors="record", member=member)


def failed_result(entry: Any, error: str | None) -> ModelResult:
    """The result of a member that could not be scored, with what its manifest says."""
    manifest = getattr(entry, "manifest", None)
    if manifest is None:
        return ModelResult(name=entry.path.name, path=entry.path, error=error)
    return ModelResult(name=manifest.name, path=entry.path, error=error,
                       architecture=manifest.architecture, pretrained_on=manifest.pretrained_on)


def combine_zoo(target: TargetData, results: list[ModelResult],
                per_model_metrics: dict[str, dict], *, scenario: str = "dataset",
                metric_names: Sequence[str] = (), faithful: bool = False,
                lp_jitters: int = 0, within_family: bool = False) -> ZooRanking:
    """The zoo-level step: S over the zoo, baseline metrics, ranks.

    ``results`` are the per-model results in zoo order; ``per_model_metrics`` maps a scored
    model's name to its :func:`score_entry` metric results.

    S is min-max combined over the members that have both S_LP and S_FU only, so a
    features-only member changes no other member's S; it gets ``score`` and ``rank`` ``None``
    and a note, and is listed after the ranked members, ordered by S_LP (descending in the
    dataset scenario, ascending in the cross-domain one, where both terms are inverted).
    Baseline metrics cover every member that was scored, features-only ones included.
    """
    metric_names = list(metric_names)
    good = [r for r in results if r.ok]
    full = [r for r in good if r.features_only is None]
    partial = [r for r in good if r.features_only is not None]
    groups = _families(full) if within_family else {"": full}
    for group in groups.values():
        _combine_scores(group, scenario)
        _explain_zero_ties(group)
    notes = _zoo_notes(full, groups, within_family)
    for r in partial:
        r.notes.append(f"features-only member: S_FU not available ({r.features_only}); it has "
                       "no S and no rank, and is listed after the ranked models by S_LP; its "
                       "S_LP and baseline metrics compare with every other model's")
    if good:
        for name in metric_names:
            _zoo_metric(name, good, per_model_metrics, faithful)
        order = [r for group in groups.values() for r in _ranked(group)]
        sign = -1.0 if inverts_terms(scenario) else 1.0  # cross-domain: lower S_LP is better
        order += sorted(partial, key=lambda r: (-sign * r.lp, r.name))
        results = order + [r for r in results if not r.ok]
    return ZooRanking(target=target.name, split=target.split, n_samples=len(target),
                      n_classes=target.n_classes, scenario=scenario, models=results,
                      metrics=metric_names, lp_jitters=int(lp_jitters), order=target.order,
                      target_notes=list(target.notes), notes=notes,
                      within_family=bool(within_family), target_summary=target.describe())


def _families(full: list[ModelResult]) -> dict[str, list[ModelResult]]:
    """The members with S grouped by the family of their S_FU layers, families by name."""
    groups: dict[str, list[ModelResult]] = {}
    for r in full:
        groups.setdefault(r.family or "unknown", []).append(r)
    return dict(sorted(groups.items()))


def _zoo_notes(full: list[ModelResult], groups: dict[str, list[ModelResult]],
               within_family: bool) -> list[str]:
    """Notes on the ranking as a whole: S_FU compared across layer families, and what min-max
    over two members can say."""
    notes = []
    families = sorted({r.family or "unknown" for r in full})
    if len(families) > 1 and not within_family:
        listed = "; ".join(f"{f}: {', '.join(r.name for r in full if (r.family or 'unknown') == f)}"
                           for f in families)
        notes.append(f"S_FU is compared across layer families ({listed}): the gradient-norm "
                     "ratio of other kinds of layers (a transformer's patch embedding and "
                     "attention projection) is not on the scale of two convolutions' (the "
                     "paper's CNNs); rank --within-family ranks each family on its own")
    if any(len(g) == 2 for g in groups.values()):
        notes.append("min-max over two models maps each term to 0 and 1, so S only says whether "
                     "a model is the better one in both terms (S = 1) or not (S = 0)")
    return notes


def _explain_zero_ties(group: list[ModelResult]) -> None:
    """A note on every model min-max put at S = 0 when several share it: their tie says only
    that each is the lowest in one term, not that they are equally transferable."""
    zeros = [r for r in group if r.score == 0.0]
    if len(zeros) < 2:
        return
    lp_min = min(r.lp for r in group if r.lp is not None)
    for r in zeros:
        term = "S_LP" if r.lp == lp_min else "S_FU"
        others = ", ".join(o.name for o in zeros if o is not r)
        r.notes.append(f"S = 0 because its {term} is the lowest of the zoo (min-max maps the "
                       f"lowest value to 0 and S is a product); tied with {others}, whose order "
                       "is by name")


def _combine_scores(full: list[ModelResult], scenario: str) -> None:
    """S of every member with both terms; a constant term's warning becomes their note."""
    if not full:
        return
    from ..scores import ConstantTermWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConstantTermWarning)
        scores = combine([r.lp for r in full], [r.fu for r in full], scenario=scenario)
    for w in caught:
        for r in full:
            r.notes.append(str(w.message))
    for r, s in zip(full, scores):
        r.score = float(s)


def _zoo_metric(name: str, good: list[ModelResult], per_model_metrics: dict[str, dict],
                faithful: bool) -> None:
    """One baseline metric's zoo step over the scored members, with its notes."""
    from ..metrics import zoo_scores

    have = [r for r in good if r.name in per_model_metrics]
    # The zoo step's warnings (NCTI: a term constant over the zoo) become notes of every
    # model it covers, as combine's do; not raw warnings on the terminal.
    with warnings.catch_warnings(record=True) as zoo_caught:
        warnings.simplefilter("always")
        values = zoo_scores(name, [per_model_metrics[r.name][name] for r in have],
                            faithful=faithful)
    for r, v in zip(have, values):
        res = per_model_metrics[r.name][name]
        r.metrics[name] = None if not np.isfinite(v) else float(v)
        if res.note and (res.status != "ok" or not np.isfinite(v) or res.warned):
            r.notes.append(f"{name}: {res.note}")
        if res.terms is not None:
            r.notes.extend(f"{name}: {' '.join(str(w.message).split())}" for w in zoo_caught)


def _ranked(full: list[ModelResult]) -> list[ModelResult]:
    """The members with S, best first, each with its rank (rank 1 = best; ties share the
    better rank, their order broken by name)."""
    # Imported here: the evaluation package loads scipy.stats, which ranking from the cache
    # would otherwise not load.
    from ..evaluation.ranking import best_first_ranks

    order = sorted(full, key=lambda r: (-r.score, r.name))
    if order:
        ranks = best_first_ranks([r.score for r in order])
        for r, rank in zip(order, ranks):
            r.rank = int(rank)
    return order


@callbacks_propagate
def rank_each(zoo_dir: str | Path, targets: Sequence[TargetData], options: RankOptions, *,
              progress: Sequence[Progress | None] | None = None) -> list[ZooRanking]:
    """Rank the zoo on every target in this process (one plan for all of them).

    ``progress`` gives each target its own callback (default: ``options.progress``).
    Exceptions that are bugs propagate; a member that cannot be scored is reported in its
    result.
    """
    plan, entries, targets = plan_ranking(zoo_dir, targets, options)
    per_target = ([guarded(p) for p in progress] if progress is not None
                  else [options.progress] * len(targets))
    return [plan.combine(target, [score_entry(e, target, plan, tick) for e in entries])
            for target, tick in zip(targets, per_target)]


@callbacks_propagate
def rank_zoo(zoo_dir: str | Path, target: TargetData, options: RankOptions | None = None,
             **settings: Any) -> ZooRanking:
    """Score every model of a zoo on ``target`` and rank them.

    A model that cannot be scored (unreadable manifest, files failing their sha256, a graph
    onnxruntime cannot run) is reported with its error and ranked after the others; the rest
    are still scored. Raises :class:`InputError` when the target cannot be scored at all or
    the zoo holds no model.

    Parameters
    ----------
    zoo_dir : path of the zoo
    target : the target data
    options : :class:`~gradnca_onnx.engine.options.RankOptions`, optional
    **settings : any field of :class:`RankOptions` (``scenario``, ``runtime``, ``cache``,
        ``resize``, ``verify``, ``models``, ``metrics``, ``faithful``, ``progress``,
        ``lp_jitters``), replacing the one in ``options``

    ``metrics`` adds baseline metrics (``gradnca_onnx.metrics`` registry names or ``"all"``)
    computed from the same features and logits; ``faithful`` switches them to the released
    code's quirks. ``lp_jitters=K`` (K >= 2) uses the smoothed S_LP (the mean over ``K``
    feature jitters; an extension, the paper's S_LP by default) in S and in the output. The
    ranking itself is always by the score S; features-only members (no ``grads.onnx``) have
    no S and follow the ranked ones (see :func:`combine_zoo`).
    """
    return rank_each(zoo_dir, [target], RankOptions.of(options, **settings))[0]
