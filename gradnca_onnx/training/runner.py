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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from .._version import __version__
from ..data import TargetData, load_target, split_subfolders, split_target
from ..data.medmnist import npz_keys, npz_kind
from .grid import PROTOCOL, GridSpec, RunConfig, load_grid
from .loop import EpochMetrics, PreparedTarget, RunResult, finetune, prepare_target
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
            raise ValueError(f"target {d.source or d.name} {what}: only class {present.tolist()} "
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

    Raises
    ------
    ValueError
        Unreadable data, fewer than two classes in a split, or a fold file without ``test``.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"target {p} does not exist; give a MedMNIST npz, a fold npz or an "
                         "image folder")
    if p.is_dir():
        have = split_subfolders(p)
        if have:
            missing = sorted(set(("train", "val", "test")) - set(have))
            if missing:
                raise ValueError(f"{p} has split sub-folders {sorted(have)} but no {missing}; "
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
    else:
        kind = npz_kind(npz_keys(p))
        if kind == "folds":
            if test is None:
                raise ValueError(f"{p} is a paper fold file without a test split; give the "
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
            raise ValueError("--test is only for paper fold files")
    for d, what in ((tr, "train"), (va, "val"), (te, "test")):
        _check_split(d, what)
    return TargetSplits(tr, va, te, name or tr.name, str(p), desc)


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
            try:
                _, result = run_one(src, tgt, cfg, st, grid_name=spec.name, device=device,
                                    prepared=prepared[pk], progress=progress)
            except Exception as exc:
                if stop_on_error:
                    raise
                outcome.failed += 1
                outcome.errors.append(f"{cfg.label()}: {type(exc).__name__}: {exc}")
                progress.run_end(cfg, None, False)
                continue
            outcome.finished += 1
            progress.run_end(cfg, result, False)
    finally:
        if st is not store:
            st.close()
    return outcome
