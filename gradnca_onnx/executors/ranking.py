"""Ranking a zoo on targets: :func:`rank` (what ``gradnca-onnx rank`` does) and
:func:`rank_targets` (one task per (model, target) on an executor, combined on the driver)."""

from __future__ import annotations

import os
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..data.dataset import TargetData
from ..engine.cache import FeatureCache
from ..engine.folds import rank_folds
from ..engine.options import RankOptions, Resampling, callbacks_propagate
from ..engine.ranking import (
    RankPlan,
    failed_result,
    plan_ranking,
    rank_zoo,
    score_entry,
)
from ..engine.resample import resample_ranking
from ..engine.runtime import RuntimeConfig
from ..engine.targets import RankTargets, load_rank_targets
from ..errors import InputError
from ..results import Rankings, ZooRanking
from .base import Executor, LocalExecutor, task_gpus


@callbacks_propagate
def rank_targets(zoo_dir: str | Path, targets: Sequence[TargetData], *,
                 executor: Executor | None = None, options: RankOptions | None = None,
                 **settings: Any) -> list[ZooRanking]:
    """Rank the models of a zoo on every target, one task per (model, target).

    The engine's ranking path (:func:`~gradnca_onnx.engine.ranking.plan_ranking`, then
    :func:`~gradnca_onnx.engine.ranking.score_entry` per task, then the zoo step here), so the
    result equals ``[rank_zoo(zoo_dir, t, ...) for t in targets]`` whichever executor runs
    the tasks. A task that fails (its worker died more often than the executor retries, or an
    unexpected exception) is reported as that model's error on that target.

    With Ray, the zoo directory and the cache directory must be reachable at the same path on
    every node (a shared file system); target data travel through the object store.

    Parameters
    ----------
    zoo_dir : path
    targets : sequence of TargetData
        Distinct names (they label the rows of a combined result).
    executor : LocalExecutor or RayExecutor, optional
        Default: a :class:`LocalExecutor`.
    options, settings
        As for :func:`~gradnca_onnx.engine.rank_zoo`. In-process executors get per-model
        ``progress``; others report finished tasks as ``progress("zoo", "tasks", done,
        total)``.

    Returns
    -------
    list of ZooRanking
        One per target, in the order given.

    Raises
    ------
    InputError
        No target, two targets with one name, a target that cannot be scored, an unknown
        scenario or model name, a zoo without models.
    """
    options = RankOptions.of(options, **settings)
    if not targets:
        raise InputError("give at least one target")
    names = [t.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two targets are named {twice[0]!r}; each target needs its own name "
                         "(rename a file or folder)")
    executor = executor or LocalExecutor()
    if options.cache is not None and options.cache.root is not None:
        options = RankOptions.of(options, cache=FeatureCache(options.cache.root.resolve()))
    # Workers may start in another directory: give them absolute paths.
    plan, entries, targets = plan_ranking(Path(zoo_dir).resolve(), targets, options)
    slots = _run(executor, plan, entries, targets, options.progress)
    return [plan.combine(target, row) for target, row in zip(targets, slots)]


def _run(executor: Executor, plan: RankPlan, entries: list[Any], targets: Sequence[TargetData],
         progress: Any) -> list[list[Any]]:
    """Every (model, target) task on ``executor``: per target, the ``score_entry`` outcomes in
    zoo order (a failed task as that model's error)."""
    gpus = task_gpus(executor, _task_device(executor, plan.runtime.device))
    shared = [executor.share(t) for t in targets]
    calls = [((entry, handle, plan), {"progress": progress if executor.in_process else None})
             for handle in shared for entry in entries]
    slots: list[list[Any]] = [[None] * len(entries) for _ in targets]
    with closing(executor.map(score_entry, calls, num_gpus=gpus)) as outcomes:
        for done, out in enumerate(outcomes, 1):
            ti, ei = divmod(out.index, len(entries))
            slots[ti][ei] = out.value if out.ok else (failed_result(entries[ei], out.error), None)
            if progress is not None and not executor.in_process:
                progress("zoo", "tasks", done, len(calls))
    return slots


def _task_device(executor: Executor, device: str) -> str:
    """The device a task asks a GPU for: ``auto`` means CPU on Ray when this environment has
    no CUDA onnxruntime."""
    if device == "auto" and not executor.in_process:
        import onnxruntime as ort

        # Nodes share one environment: without onnxruntime-gpu here a task could not use the
        # GPU it held, and holding one would cap the tasks in flight at the number of GPUs.
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "cpu"
    return device


@callbacks_propagate
def rank(zoo_dir: str | os.PathLike[str], targets: RankTargets | Sequence[str | os.PathLike],
         options: RankOptions | None = None, *, split: str | None = None,
         size: int | tuple[int, int] | None = None, resampling: Resampling | None = None,
         folds: bool = False, executor: Executor | None = None,
         **settings: Any) -> Rankings:
    """Rank a zoo on targets as ``gradnca-onnx rank`` does; every output is a method of the
    result (``to_table``, ``to_csv``, ``to_json``, ``plot``).

    Parameters
    ----------
    zoo_dir : path of the zoo, or a :class:`~gradnca_onnx.zoo.Zoo`
    targets : target paths (files, folders, directories of targets; see
        :func:`~gradnca_onnx.engine.targets.expand_targets`), or targets already loaded by
        :func:`~gradnca_onnx.engine.targets.load_rank_targets`
    options, settings : as :func:`~gradnca_onnx.engine.rank_zoo`
    split, size : how target paths are loaded (``rank --split``, ``--size``)
    resampling : ``rank --resamples``: how sure each score and rank is
        (:func:`~gradnca_onnx.engine.resample.resample_zoo`)
    folds : ``rank --folds``: the spread over the paper's folds of each target
        (:func:`~gradnca_onnx.engine.folds.rank_folds`)
    executor : where the (model, target) tasks run (default: this process); resampling and
        folds run in this process only

    Returns
    -------
    Rankings
        One ranking per target; rendered as several targets when several were given (or a
        directory of them).
    """
    # A path from here on: a Zoo (os.PathLike) would reach the engine's messages as its repr.
    zoo_dir = Path(zoo_dir)
    options = RankOptions.of(options, **settings)
    executor = executor or LocalExecutor()
    check_sureness(resampling is not None, folds, executor.in_process)
    if not isinstance(targets, RankTargets):
        targets = load_rank_targets(targets, split, size=size, folds=folds)
    if resampling is not None or folds:
        rankings = [rank_folds(zoo_dir, path, options) if folds else
                    resample_ranking(zoo_dir, target, resampling, options)  # type: ignore
                    for path, target in zip(targets.paths, targets.data)]
    elif executor.in_process and not targets.several:
        rankings = [rank_zoo(zoo_dir, targets.data[0], options)]
    else:
        rankings = rank_targets(zoo_dir, targets.data, executor=executor,
                                options=_one_thread_on_workers(options, executor))
    return Rankings(rankings, several_targets=targets.several)


def check_sureness(resamples: bool, folds: bool, in_process: bool = True) -> None:
    """Refuse ``--resamples`` with ``--folds``, and either on workers (they run here)."""
    if resamples and folds:
        raise InputError("give --resamples or --folds, not both (run rank twice)")
    if (resamples or folds) and not in_process:
        raise InputError("--resamples and --folds run in this process; use --executor local")


def _one_thread_on_workers(options: RankOptions, executor: Executor) -> RankOptions:
    """A Ray task asks for one CPU: onnxruntime's default of one thread per core would
    oversubscribe every node, so tasks run on one thread unless ``threads`` is set."""
    runtime = options.runtime or RuntimeConfig()
    if executor.in_process or runtime.threads is not None:
        return options
    return RankOptions.of(options, runtime=replace(runtime, threads=1))
