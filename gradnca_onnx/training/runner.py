"""A hyper-parameter grid for one (source, target) pair, resumable through the run store.

Each run is an independent, idempotent task (:func:`run_one`): its key in the store is the
hash of the source's weights, the target's data and every hyper-parameter, so a finished run
is never repeated, and one that was in flight when its process died (``running`` in the store)
or failed is done again. :func:`run_grid` is the sequential loop over those tasks; a cluster
executor can call :func:`run_one` per task instead.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import traceback
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from .._version import __version__
from ..data import TargetData, load_target, split_subfolders, split_target
from ..data.medmnist import npz_keys, npz_kind
from ..data.table import TABLE_SUFFIXES, group_folds, read_label_table
from ..errors import InputError
from ..io.loaders import load_json
from .grid import PROTOCOL, GridSpec, RunConfig, check_seeds, load_grid
from .loop import (
    EpochMetrics,
    PreparedTarget,
    RunResult,
    check_batch_size,
    finetune,
    prepare_target,
)
from .source import Source, load_source
from .store import RunStore, open_store, run_key

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class TargetSplits:
    """Train, validation and test data of one target."""

    train: TargetData
    val: TargetData
    test: TargetData | None
    name: str
    path: str = ""
    description: str = ""

    @property
    def sha256(self) -> str:
        """One hash over the three splits' content hashes."""
        parts = [self.train.sha256, self.val.sha256, self.test.sha256 if self.test else ""]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    @property
    def task(self) -> str:
        return self.train.task

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    def key(self) -> dict[str, Any]:
        """What of the target determines a run's result (for the run key)."""
        return {"train": self.train.sha256, "val": self.val.sha256,
                "test": self.test.sha256 if self.test else None, "n_classes": self.n_classes}


def _check_split(d: TargetData, what: str) -> None:
    if d.labels.ndim == 1:
        present = np.unique(d.labels)
        if present.size < 2:
            raise InputError(f"target {d.source or d.name} {what}: only class {present.tolist()} "
                             "present; fine-tuning needs at least 2 classes in train, val and test")


def load_target_splits(path: PathLike, *, fold: int | None = 1, test: PathLike | None = None,
                       name: str | None = None, dedupe: bool = True, size: int | None = None,
                       seed: int = 42) -> TargetSplits:
    """The train/val/test data of a fine-tuning target.

    * Official MedMNIST npz: train and val = the paper's fold ``fold`` (default 1, drawn with
      the paper's rule), test = the full official test split. ``fold=None``: the full official
      train and val splits.
    * Paper fold npz: train/val of fold ``fold``; the test split comes from ``test`` (the
      official MedMNIST npz), which is then required.
    * Image folder with ``train``/``val``/``test`` sub-folders: those.
    * Image folder of class sub-folders only: a stratified 60/20/20 split seeded by ``seed``
      (:func:`~gradnca_onnx.data.split_target`), after removing byte-identical duplicates
      (``dedupe``) so that no image is in two splits.
    * Label table (``.csv``/``.tsv``): its split column's train/val/test rows; without one, a
      60/20/20 split of whole patients when it has a patient column (five folds of
      :func:`~gradnca_onnx.data.table.group_folds`: three train, one val, one test, so no
      patient's images are in two splits), else the stratified split of a folder.

    Raises
    ------
    ValueError
        Unreadable data, fewer than two classes in a split, or a fold file without ``test``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"target {p} does not exist; give a MedMNIST npz, a fold npz or an "
                         "image folder")
    if p.is_dir():
        have = split_subfolders(p)
        if have:
            missing = sorted(set(("train", "val", "test")) - set(have))
            if missing:
                raise InputError(f"{p} has split sub-folders {sorted(have)} but no {missing}; "
                                 "give train, val and test, or one folder per class only")
            tr = load_target(p, "train", dedupe=dedupe, size=size, name=name)
            va = load_target(p, "val", dedupe=dedupe, size=size, name=name)
            te = load_target(p, "test", dedupe=dedupe, size=size, name=name)
            desc = "train/val/test sub-folders"
        else:
            everything = load_target(p, "all", dedupe=dedupe, size=size, name=name)
            _check_split(everything, "images")
            tr, va, te = split_target(everything, seed=seed)
            desc = f"stratified 60/20/20 split, seed {seed}" + (", deduplicated" if dedupe else "")
    elif p.suffix.lower() in TABLE_SUFFIXES:
        tr, va, te, desc = _table_splits(p, name=name, size=size, seed=seed)
    else:
        kind = npz_kind(npz_keys(p))
        if kind == "folds":
            if test is None:
                raise InputError(f"{p} is a paper fold file without a test split; give the "
                                 "official MedMNIST npz with --test")
            f = 1 if fold is None else fold
            tr = load_target(p, "train", fold=f, name=name)
            va = load_target(p, "val", fold=f, name=name)
            te = load_target(test, "test", name=name)
            desc = f"fold {f} of {p.name}, test from {Path(test).name}"
        else:
            tr = load_target(p, "train", fold=fold, name=name)
            va = load_target(p, "val", fold=fold, name=name)
            te = load_target(p, "test", name=name)
            desc = (f"paper fold {fold} (seed 24) + official test" if fold else
                    "official train/val/test splits")
        if test is not None and kind != "folds":
            raise InputError("--test is only for paper fold files")
    for d, what in ((tr, "train"), (va, "val"), (te, "test")):
        _check_split(d, what)
    return TargetSplits(tr, va, te, name or tr.name, str(p), desc)


def _table_splits(p: Path, *, name: str | None, size: int | None, seed: int
                  ) -> tuple[TargetData, TargetData, TargetData, str]:
    """Train, val and test of a label table (see :func:`load_target_splits`)."""
    splits = read_label_table(p).splits
    if splits is not None:
        missing = [s for s in ("train", "val", "test") if s not in splits]
        if missing:
            raise InputError(f"{p}: the split column has no {', '.join(missing)} rows; give "
                             "train, val and test rows, or drop the split column")
        tr, va, te = (load_target(p, s, size=size, name=name) for s in ("train", "val", "test"))
        return tr, va, te, f"the split column of {p.name}"
    everything = load_target(p, "all", size=size, name=name)
    _check_split(everything, "images")
    if everything.groups is None:
        tr, va, te = split_target(everything, seed=seed)
        return tr, va, te, f"stratified 60/20/20 split, seed {seed}"
    fold = group_folds(everything.groups, everything.labels, 5, seed=seed)
    tr, va, te = (everything.subset(np.flatnonzero(np.isin(fold, f)), split=s)
                  for f, s in (([0, 1, 2], "train"), ([3], "val"), ([4], "test")))
    return tr, va, te, (f"60/20/20 split of whole patients ({len(set(everything.groups))}; "
                        f"five patient-keeping folds), seed {seed}")


class Progress(Protocol):
    """Receives progress events (the CLI draws progress bars from them)."""

    def grid_start(self, total: int, done: int) -> None: ...
    def run_start(self, config: RunConfig, index: int) -> None: ...
    def epoch(self, metrics: EpochMetrics) -> None: ...
    def run_end(self, config: RunConfig, result: RunResult | None, skipped: bool) -> None: ...


class _Silent:
    def grid_start(self, total: int, done: int) -> None:
        pass

    def run_start(self, config: RunConfig, index: int) -> None:
        pass

    def epoch(self, metrics: EpochMetrics) -> None:
        pass

    def run_end(self, config: RunConfig, result: RunResult | None, skipped: bool) -> None:
        pass


def _versions() -> dict[str, str]:
    import torch
    import torchvision

    return {"package_version": __version__, "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version()}


@dataclass
class GridOutcome:
    """What :func:`run_grid` did."""

    source: str
    target: str
    total: int
    skipped: int = 0
    finished: int = 0
    failed: int = 0
    keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def task_key(source: Source, target: TargetSplits, config: RunConfig) -> str:
    """The run-store key of one run."""
    return run_key(source.key(), target.key(), config.to_dict(), PROTOCOL)


def run_row(source: Source, target: TargetSplits, config: RunConfig, *, grid_name: str = "",
            device: str = "cpu") -> dict[str, Any]:
    """The static run-store columns of one run (names, ids, hyper-parameters, versions)."""
    cfg = config.to_dict()
    return {
        "source": source.name, "source_kind": source.identity.get("kind"),
        "source_reference": source.identity.get("reference"),
        "source_sha256": source.identity.get("weights_sha256"),
        "checkpoint_sha256": source.identity.get("checkpoint_sha256"),
        "target": target.name, "target_path": target.path, "target_sha256": target.sha256,
        "task": target.task, "n_classes": target.n_classes, "n_train": len(target.train),
        "n_val": len(target.val), "n_test": len(target.test) if target.test else None,
        "grid": grid_name, "device": device,
        **{k: (int(v) if isinstance(v, bool) else v) for k, v in cfg.items()},
        **_versions(),
        "config_json": json.dumps({"config": cfg, "source": source.key(), "target": target.key(),
                                   "target_description": target.description,
                                   "protocol": PROTOCOL}, sort_keys=True),
    }


def run_one(source: Source, target: TargetSplits, config: RunConfig, store: RunStore, *,
            grid_name: str = "", device: str = "cpu",
            prepared: PreparedTarget | None = None, progress: Progress | None = None,
            force: bool = False) -> tuple[str, RunResult | None]:
    """Run (or skip, when already finished) one fine-tuning task and record it in ``store``.

    Returns ``(key, result)``; ``result`` is ``None`` for a skipped run. An exception inside
    training marks the run ``failed`` (with the message) and is raised again.
    """
    key = task_key(source, target, config)
    if store.is_finished(key) and not force:
        return key, None
    progress = progress or _Silent()
    if prepared is None:
        prepared = prepare_target(target.train, target.val, target.test,
                                  image_size=config.image_size, mean=source.mean, std=source.std,
                                  channels=source.channels, resize_filter=config.resize_filter)
    row = run_row(source, target, config, grid_name=grid_name, device=device)
    store.start_run(key, row)

    def on_epoch(m: EpochMetrics) -> None:
        store.log_epoch(key, m.to_dict())
        progress.epoch(m)

    model = copy.deepcopy(source.module)
    try:
        result = finetune(model, prepared, config, head=source.head, device=device,
                          on_epoch=on_epoch)
    except Exception as exc:
        store.fail_run(key, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        raise
    store.finish_run(key, result.to_dict(), result.predictions)
    return key, result


def run_grid(source: Source | str | Any, target: TargetSplits | PathLike,
             grid: GridSpec | str, store: RunStore | PathLike, *, device: str = "cpu",
             progress: Progress | None = None, batch_sizes: tuple[int, ...] | None = None,
             stop_on_error: bool = False) -> GridOutcome:
    """Fine-tune ``source`` on ``target`` for every point of ``grid``, skipping finished runs.

    Parameters
    ----------
    source : Source, or anything :func:`~.source.load_source` accepts
    target : TargetSplits, or a path for :func:`load_target_splits`
    grid : GridSpec, or ``"paper"``, ``"quick"``, or a YAML/JSON grid file
    store : RunStore or path of the SQLite run store
    device : str
    progress : Progress, optional
    batch_sizes : tuple of int, optional
        Override the grid's batch sizes (needed for targets outside the paper's Table 1).
    stop_on_error : bool
        Re-raise the first failing run's error instead of recording it and going on.

    Returns
    -------
    GridOutcome
    """
    src = source if isinstance(source, Source) else load_source(source)
    tgt = target if isinstance(target, TargetSplits) else load_target_splits(target)
    spec = load_grid(grid).with_batch_sizes(batch_sizes)
    configs = spec.expand(tgt.name)
    for size in sorted({c.batch_size for c in configs}):  # before any run is recorded
        check_batch_size(src.module, size, src.name)
    st = open_store(store)
    progress = progress or _Silent()
    keys = [task_key(src, tgt, c) for c in configs]
    done = sum(st.is_finished(k) for k in keys)
    outcome = GridOutcome(src.name, tgt.name, len(configs), keys=keys)
    progress.grid_start(len(configs), done)
    prepared: dict[tuple[int, str], PreparedTarget] = {}
    try:
        for i, (cfg, key) in enumerate(zip(configs, keys)):
            if st.is_finished(key):
                # The latest names win: a pair renamed with --source-name keeps its runs.
                row = st.run(key) or {}
                if (row.get("source"), row.get("target")) != (src.name, tgt.name):
                    st.rename(key, source=src.name, target=tgt.name)
                outcome.skipped += 1
                progress.run_end(cfg, None, True)
                continue
            pk = (cfg.image_size, cfg.resize_filter)
            if pk not in prepared:
                prepared.clear()  # one input size at a time keeps memory bounded
                prepared[pk] = prepare_target(tgt.train, tgt.val, tgt.test,
                                              image_size=cfg.image_size, mean=src.mean,
                                              std=src.std, channels=src.channels,
                                              resize_filter=cfg.resize_filter)
            progress.run_start(cfg, i)
            _run_counted(src, tgt, cfg, st, spec.name, device, prepared[pk], progress, outcome,
                         cfg.label(), stop_on_error=stop_on_error)
    finally:
        if st is not store:
            st.close()
    return outcome


@dataclass
class ReplicateOutcome:
    """What :func:`run_seeds` did: the grid, then the seed replicates of its selection."""

    grid: GridOutcome
    selected_key: str
    selected: dict[str, Any]
    seeds: list[int]
    keys: list[str]
    skipped: int = 0
    finished: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def config_of(row: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` a stored run was made with (from its ``config_json``)."""
    try:
        cfg = load_json(row["config_json"], f"run {row.get('run_key', '?')[:12]}")["config"]
        names = {f.name for f in fields(RunConfig)}
        return RunConfig(**{k: v for k, v in cfg.items() if k in names})
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"run {row.get('run_key', '?')[:12]}: its stored configuration cannot "
                         f"be read ({exc}); it cannot be repeated") from None


def _selected_grid_run(store: RunStore, source: Source, target: TargetSplits
                       ) -> dict[str, Any]:
    from .summary import selected_runs

    row = selected_runs(store).get((source.name, target.name))
    if row is None:
        raise InputError(f"pair {source.name} -> {target.name}: no finished grid run with a "
                         "validation loss, so there is no selected configuration to repeat")
    if task_key(source, target, config_of(row)) != row["run_key"]:
        raise InputError(
            f"pair {source.name} -> {target.name}: the selected run {row['run_key'][:12]} was "
            "made from other source or target settings under the same names; give this source "
            "its own --source-name (or --target-name)")
    return row


def run_seeds(source: Source | str | Any, target: TargetSplits | PathLike,
              grid: GridSpec | str, store: RunStore | PathLike, seeds: list[int], *,
              device: str = "cpu", progress: Progress | None = None,
              batch_sizes: tuple[int, ...] | None = None,
              grid_progress: Progress | None = None) -> ReplicateOutcome:
    """The grid, then its selected configuration once per seed (``finetune --seeds``).

    The grid runs as in :func:`run_grid` (finished runs skipped). The selected configuration
    is that of the run :func:`~.summary.ground_truth` takes the pair's value from (lowest
    validation loss). It is repeated with every seed of ``seeds``, which is recorded in the
    store first; each replicate is an ordinary run (its key holds the seed), so a finished
    replicate is never redone and one cut off is redone by the next call. Replicates are left
    out of :func:`~.summary.ground_truth`; :func:`~.summary.replicate_ground_truths` reads them.

    Parameters
    ----------
    source, target, grid, store, device, batch_sizes
        As for :func:`run_grid`.
    seeds : list of int
        At least two distinct seeds (:func:`default_seeds` gives the grid's seed and the next).
    progress : Progress, optional
        Events of the replicate runs (``grid_start`` once with the seed count).
    grid_progress : Progress, optional
        Events of the grid runs (default: ``progress``).

    Returns
    -------
    ReplicateOutcome

    Raises
    ------
    ValueError
        Bad seeds, or no finished grid run with a validation loss to repeat.
    """
    seeds = check_seeds(seeds)
    src = source if isinstance(source, Source) else load_source(source)
    tgt = target if isinstance(target, TargetSplits) else load_target_splits(target)
    spec = load_grid(grid).with_batch_sizes(batch_sizes)
    st = open_store(store)
    progress = progress or _Silent()
    try:
        grid_out = run_grid(src, tgt, spec, st, device=device,
                            progress=grid_progress or progress, batch_sizes=None)
        selected = _selected_grid_run(st, src, tgt)
        base = config_of(selected)
        configs = [replace(base, seed=s) for s in seeds]
        keys = [task_key(src, tgt, c) for c in configs]
        st.record_replicates(selected["run_key"], seeds, keys, source=src.name, target=tgt.name)
        out = ReplicateOutcome(grid_out, selected["run_key"], selected, seeds, keys)
        progress.grid_start(len(seeds), sum(st.is_finished(k) for k in keys))
        _run_replicates(src, tgt, spec.name, st, configs, keys, out, device, progress)
    finally:
        if st is not store:
            st.close()
    return out


def _run_counted(src: Source, tgt: TargetSplits, cfg: RunConfig, st: RunStore, grid_name: str,
                 device: str, prepared: PreparedTarget, progress: Progress, outcome: Any,
                 label: str, *, stop_on_error: bool = False) -> None:
    """:func:`run_one`, counted in ``outcome`` (``finished``, or ``failed`` with the error
    under ``label``) and reported to ``progress``; the failure is recorded in the store and
    the other runs go on, unless ``stop_on_error``."""
    try:
        _, result = run_one(src, tgt, cfg, st, grid_name=grid_name, device=device,
                            prepared=prepared, progress=progress)
    except Exception as exc:  # noqa: BLE001 - recorded in the store, the others go on
        if stop_on_error:
            raise
        outcome.failed += 1
        outcome.errors.append(f"{label}: {type(exc).__name__}: {exc}")
        progress.run_end(cfg, None, False)
        return
    outcome.finished += 1
    progress.run_end(cfg, result, False)


def _run_replicates(src: Source, tgt: TargetSplits, grid_name: str, st: RunStore,
                    configs: list[RunConfig], keys: list[str], out: ReplicateOutcome,
                    device: str, progress: Progress) -> None:
    prepared: PreparedTarget | None = None
    for i, (cfg, key) in enumerate(zip(configs, keys)):
        if st.is_finished(key):
            out.skipped += 1
            progress.run_end(cfg, None, True)
            continue
        if prepared is None:
            prepared = prepare_target(tgt.train, tgt.val, tgt.test, image_size=cfg.image_size,
                                      mean=src.mean, std=src.std, channels=src.channels,
                                      resize_filter=cfg.resize_filter)
        progress.run_start(cfg, i)
        _run_counted(src, tgt, cfg, st, f"{grid_name} seed replicate", device, prepared,
                     progress, out, f"seed {cfg.seed}")
