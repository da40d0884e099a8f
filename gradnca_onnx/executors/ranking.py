"""Ranking one zoo on several targets: one task per (model, target), combined on the driver."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Sequence

from ..data.dataset import TargetData
from ..engine.cache import FeatureCache
from ..engine.runtime import RuntimeConfig
from ..engine.scoring import (
    Progress,
    check_scenario,
    check_scoring_target,
    combine_zoo,
    score_entry,
    zoo_entries,
)
from ..errors import InputError
from ..results import ModelResult, ZooRanking
from ..scores.label_prediction import check_jitters
from .base import Executor, LocalExecutor, task_gpus


def rank_targets(zoo_dir: str | Path, targets: Sequence[TargetData], *,
                 executor: Executor | None = None, scenario: str = "dataset",
                 runtime: RuntimeConfig | None = None, cache: FeatureCache | None = None,
                 resize: bool = True, verify: bool = True, models: Sequence[str] | None = None,
                 metrics: str | Sequence[str] | None = None, faithful: bool = False,
                 progress: Progress | None = None, lp_jitters: int = 0) -> list[ZooRanking]:
    """Rank the models of a zoo on every target, one task per (model, target).

    Each task is :func:`gradnca_onnx.engine.scoring.score_entry` (the unit of
    :func:`~gradnca_onnx.engine.rank_zoo`); the zoo-level step (:func:`combine_zoo`) runs here,
    so the result equals ``[rank_zoo(zoo_dir, t, ...) for t in targets]`` whichever executor
    runs the tasks. A task that fails (its worker died more often than the executor retries,
    or an unexpected exception) is reported as that model's error on that target.

    With Ray, the zoo directory and the cache directory must be reachable at the same path on
    every node (a shared file system); target data travel through the object store.

    Parameters
    ----------
    zoo_dir : path
    targets : sequence of TargetData
        Distinct names (they label the rows of a combined result).
    executor : LocalExecutor or RayExecutor, optional
        Default: a :class:`LocalExecutor`.
    scenario, runtime, cache, resize, verify, models, metrics, faithful, lp_jitters
        As for :func:`~gradnca_onnx.engine.rank_zoo`.
    progress : callable, optional
        In-process executors get per-model progress; others report finished tasks as
        ``progress("zoo", "tasks", done, total)``.

    Returns
    -------
    list of ZooRanking
        One per target, in the order given.

    Raises
    ------
    ValueError
        No target, two targets with one name, a target that cannot be scored, an unknown
        scenario or model name, a zoo without models.
    """

    if not targets:
        raise InputError("give at least one target")
    names = [t.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two targets are named {twice[0]!r}; each target needs its own name "
                         "(rename a file or folder)")
    metric_names = _resolve_metrics(metrics) if metrics else []
    check_scenario(scenario)
    check_jitters(lp_jitters, "lp_jitters")
    for target in targets:
        check_scoring_target(target)
    executor = executor or LocalExecutor()
    runtime = runtime or RuntimeConfig()
    # Workers may start in another directory: give them absolute paths.
    entries = zoo_entries(Path(zoo_dir).resolve(), models)
    if cache is not None and cache.root is not None:
        cache = FeatureCache(cache.root.resolve())
    device = runtime.device
    if device == "auto" and not executor.in_process:
        import onnxruntime as ort

        # Nodes share one environment: without onnxruntime-gpu here a task could not use the
        # GPU it held, and holding one would cap the tasks in flight at the number of GPUs.
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            device = "cpu"
    gpus = task_gpus(executor, device)
    shared = [executor.share(t) for t in targets]
    kwargs = dict(runtime=runtime, cache=cache, resize=resize, verify=verify,
                  metric_names=metric_names, faithful=faithful, lp_jitters=lp_jitters,
                  progress=progress if executor.in_process else None)
    calls = [((entry, handle), kwargs) for handle in shared for entry in entries]
    slots: list[list[tuple[ModelResult, dict | None] | None]] = [
        [None] * len(entries) for _ in targets]
    with closing(executor.map(score_entry, calls, num_gpus=gpus)) as outcomes:
        for done, out in enumerate(outcomes, 1):
            ti, ei = divmod(out.index, len(entries))
            slots[ti][ei] = out.value if out.ok else (_failed(entries[ei], out.error), None)
            if progress is not None and not executor.in_process:
                progress("zoo", "tasks", done, len(calls))
    rankings = []
    for target, row in zip(targets, slots):
        results, per_model = [], {}
        for result, metric_results in row:  # type: ignore[misc]
            results.append(result)
            if metric_results is not None:
                per_model[result.name] = metric_results
        rankings.append(combine_zoo(target, results, per_model, scenario=scenario,
                                    metric_names=metric_names, faithful=faithful,
                                    lp_jitters=lp_jitters))
    return rankings


def _failed(entry: object, error: str | None) -> ModelResult:
    manifest = getattr(entry, "manifest", None)
    path = getattr(entry, "path")
    if manifest is None:
        return ModelResult(name=path.name, path=path, error=error)
    return ModelResult(name=manifest.name, path=path, error=error,
                       architecture=manifest.architecture, pretrained_on=manifest.pretrained_on)


def _resolve_metrics(metrics):
    # Imported only when metrics are asked for: scikit-learn and numba cost ~3 s to import.
    from ..metrics import resolve_names

    return resolve_names(metrics)
