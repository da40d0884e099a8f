"""Fine-tuning grids on an executor: one task per grid run, the run store written by the driver.

Workers only train and return a :class:`~gradnca_onnx.training.loop.RunResult`; this process
writes each run to the SQLite store as its result arrives (start, epochs, finish), so the store
has one writer and never sees half a run from a dead worker. A run interrupted between those
writes (Ctrl-C) stays ``running`` and is redone on resume; finished runs are skipped.
"""

from __future__ import annotations

import copy
from contextlib import closing
from typing import Any

from .base import Executor, LocalExecutor, task_gpus

# One prepared target per worker process: consecutive runs of a grid mostly share the input
# size, and Ray reuses worker processes, so most tasks skip the preprocessing.
_PREPARED: dict[tuple, Any] = {}


def train_task(source: Any, target: Any, config: Any, *, device: str = "cpu",
               threads: int | None = None) -> Any:
    """Fine-tune a copy of ``source`` on ``target`` with ``config``; nothing is written.

    A pure function of its arguments (seeded inside :func:`~gradnca_onnx.training.loop.finetune`),
    so a retried task gives the same result.

    Returns
    -------
    RunResult
        With the per-epoch history and the val/test predictions.
    """
    import torch

    from ..training.loop import finetune, prepare_target

    if threads:
        torch.set_num_threads(threads)
    key = (target.sha256, tuple(source.mean), tuple(source.std), source.channels,
           config.image_size, config.resize_filter)
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare_target(target.train, target.val, target.test,
                                        image_size=config.image_size, mean=source.mean,
                                        std=source.std, channels=source.channels,
                                        resize_filter=config.resize_filter)
    return finetune(copy.deepcopy(source.module), _PREPARED[key], config, head=source.head,
                    device=device)


def run_grid_on(executor: Executor | None, source: Any, target: Any, grid: Any, store: Any, *,
                device: str = "cpu", threads: int | None = None, progress: Any = None,
                batch_sizes: tuple[int, ...] | None = None) -> Any:
    """:func:`~gradnca_onnx.training.run_grid` with one executor task per unfinished run.

    Parameters
    ----------
    executor : LocalExecutor or RayExecutor, optional
        Default: a :class:`LocalExecutor`.
    source, target, grid, store, device, batch_sizes
        As for :func:`~gradnca_onnx.training.run_grid`.
    threads : int, optional
        torch CPU threads inside each task.
    progress : training Progress, optional
        Gets ``grid_start`` and ``run_end`` (per-epoch events stay inside the workers).

    Returns
    -------
    GridOutcome
        Failed runs (an exception, or a worker that died more often than the executor
        retries) are counted, recorded as ``failed`` with their error, and redone by the next
        call; the other runs finish.
    """
    from ..training.grid import load_grid
    from ..training.runner import (
        GridOutcome,
        TargetSplits,
        _Silent,
        load_target_splits,
        run_row,
        task_key,
    )
    from ..training.source import Source, load_source
    from ..training.store import open_store

    executor = executor or LocalExecutor()
    src = source if isinstance(source, Source) else load_source(source)
    tgt = target if isinstance(target, TargetSplits) else load_target_splits(target)
    spec = load_grid(grid).with_batch_sizes(batch_sizes)
    configs = spec.expand(tgt.name)
    gpus = task_gpus(executor, device)
    # In a Ray task the one visible GPU is always cuda:0, whatever index the driver named.
    task_device = "cuda" if gpus and device.startswith("cuda") else device
    st = open_store(store)
    progress = progress or _Silent()
    keys = [task_key(src, tgt, c) for c in configs]
    outcome = GridOutcome(src.name, tgt.name, len(configs), keys=keys)
    try:
        todo = []
        for cfg, key in zip(configs, keys):
            if st.is_finished(key):
                row = st.run(key) or {}
                if (row.get("source"), row.get("target")) != (src.name, tgt.name):
                    st.rename(key, source=src.name, target=tgt.name)
                outcome.skipped += 1
            else:
                todo.append((cfg, key))
        progress.grid_start(len(configs), outcome.skipped)
        src_ref, tgt_ref = executor.share(src), executor.share(tgt)
        calls = [((src_ref, tgt_ref, cfg), {"device": task_device, "threads": threads})
                 for cfg, _ in todo]
        with closing(executor.map(train_task, calls, num_gpus=gpus)) as outcomes:
            for out in outcomes:
                cfg, key = todo[out.index]
                st.start_run(key, run_row(src, tgt, cfg, grid_name=spec.name, device=device))
                if not out.ok:
                    st.fail_run(key, out.error or "failed")
                    outcome.failed += 1
                    outcome.errors.append(f"{cfg.label()}: {out.error}")
                    progress.run_end(cfg, None, False)
                    continue
                result = out.value
                for m in result.history:
                    st.log_epoch(key, m.to_dict())
                st.finish_run(key, result.to_dict(), result.predictions)
                outcome.finished += 1
                progress.run_end(cfg, result, False)
    finally:
        if executor.in_process:
            _PREPARED.clear()  # the driver keeps no tensors once the grid is done
        if st is not store:
            st.close()
    return outcome
