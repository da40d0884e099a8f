"""Ground truth from a run store: per (source, target), the test AUC of the lowest-val-loss run.

Seed replicates (``finetune --seeds``) of a pair's selected configuration are not grid runs:
they are left out of :func:`ground_truth` (the selected run itself excepted) and give one
ground-truth table per seed through :func:`replicate_ground_truths`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Union

import numpy as np

from ..errors import InputError
from ..evaluation.table import SourceTargetTable
from .store import RunStore, open_store

PathLike = Union[str, "os.PathLike[str]"]


def ground_truth(store: RunStore | PathLike, *, value: str = "test_auc") -> SourceTargetTable:
    """The sources x targets ground-truth table of the finished runs in ``store``.

    The paper's rule (REFERENCE 7): for each (source, target) pair, ``value`` (default the test
    AUC) of the finished run with the lowest validation loss; runs without a validation loss
    (every epoch diverged) are skipped, ties go to the run that started first. Pairs without a
    usable run are NaN. Seed replicates (``finetune --seeds``) are not grid runs and are left
    out, except the selected run itself, which is the replicate of its own seed.

    Raises
    ------
    ValueError
        An empty store, or a source (target) name that stands for two different sets of
        weights (data) in the store, which would mix different models in one row (column).
    """
    st, rows = _grid_rows(store)
    # Names are compared stripped, as the run-log reader of `evaluate` does.
    best = _lowest_loss(rows, key=lambda r: (r["source"].strip(), r["target"].strip()))
    if not best:
        raise InputError(f"ground truth ({st.path}): none of the {len(rows)} runs has a "
                         "val_loss; nothing to select")
    sources = tuple(sorted({s for s, _ in best}))
    targets = tuple(sorted({t for _, t in best}))
    values = np.full((len(sources), len(targets)), np.nan)
    for (src, tgt), row in best.items():
        if row[value] is not None:
            values[sources.index(src), targets.index(tgt)] = float(row[value])
    return SourceTargetTable(sources, targets, values, f"ground truth ({st.path})")


def _lowest_loss(rows: Iterable[Mapping[str, Any]], key: Any
                 ) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Per ``key(row)``, the row with the lowest ``val_loss`` (the paper's rule): rows without
    one (every epoch diverged) skipped, ties to the first row (the run that started first)."""
    best: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in rows:
        loss = r["val_loss"]
        if loss is None or math.isnan(loss):
            continue
        k = key(r)
        if k not in best or loss < best[k]["val_loss"]:
            best[k] = r
    return best


def _replicate_only_keys(replicates: Iterable[Mapping[str, Any]]) -> set[str]:
    """Run keys that exist only as seed replicates (the selected runs themselves excluded)."""
    reps = list(replicates)
    selected = {r["selected_key"] for r in reps}
    return {r["run_key"] for r in reps if r["run_key"] not in selected}


def _check_names(rows: list[dict[str, Any]], path: Any) -> None:
    for col, sha in (("source", "source_sha256"), ("target", "target_sha256")):
        seen: dict[str, str] = {}
        for r in rows:
            if seen.setdefault(r[col], r[sha]) != r[sha]:
                raise InputError(
                    f"run store {path}: {col} name {r[col]!r} is used for two different "
                    f"{'models' if col == 'source' else 'datasets'}; give them distinct names "
                    f"(--{col}-name) and run again"
                )


def grid_runs(store: RunStore) -> list[dict[str, Any]]:
    """The finished grid runs of ``store`` (seed replicates left out), oldest start first.

    Raises
    ------
    ValueError
        No finished run, or a name that stands for two models (datasets).
    """
    skip = _replicate_only_keys(store.replicates())
    rows = [r for r in store.runs(status="finished") if r["run_key"] not in skip]
    if not rows:
        raise InputError(f"run store {store.path} has no finished runs; run `gradnca-onnx "
                         "finetune` first")
    _check_names(rows, store.path)
    return rows


def selected_runs(store: RunStore | PathLike) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (source, target) name pair, the grid run the ground truth takes its value from.

    The rule of :func:`ground_truth`: the finished grid run with the lowest validation loss,
    runs without one skipped, ties to the run that started first.

    Returns
    -------
    dict
        ``(source, target) -> run row``; pairs without a usable run are absent.
    """
    _, rows = _grid_rows(store)
    return _lowest_loss(rows, key=lambda r: (r["source"], r["target"]))  # type: ignore[return-value]


def replicate_ground_truths(store: RunStore | PathLike, *, value: str = "test_auc"
                            ) -> dict[int, SourceTargetTable]:
    """One ground-truth table per replicate seed (``finetune --seeds``).

    The table of seed ``s`` holds, per (source, target), ``value`` of the replicate with seed
    ``s`` of the pair's selected configuration (:func:`selected_runs`); a pair without a
    finished replicate of that seed is NaN. Rows and columns are those of
    :func:`ground_truth`, so the table of the grid's own seed equals it wherever the pair has
    replicates.

    Returns
    -------
    dict
        Seed -> table (named ``seed<S>``), seeds in the order first asked for.

    Raises
    ------
    ValueError
        The store holds no replicates of any selected configuration.
    """
    st = open_store(store)
    try:
        truth = ground_truth(st, value=value)
        chosen = selected_runs(st)
        by_selected: dict[str, dict[int, str]] = {}
        seeds: list[int] = []
        for r in st.replicates():
            by_selected.setdefault(r["selected_key"], {})[int(r["seed"])] = r["run_key"]
        current = {row["run_key"] for row in chosen.values()}
        for r in st.replicates():
            if r["selected_key"] in current:
                seeds += [int(x) for x in r["seeds"] if int(x) not in seeds]
        if not seeds:
            raise InputError(f"run store {st.path} has no seed replicates of a selected "
                             "configuration; run `gradnca-onnx finetune ... --seeds K` first")
        tables = {}
        for seed in seeds:
            values = np.full(truth.values.shape, np.nan)
            for (src, tgt), row in chosen.items():
                key = by_selected.get(row["run_key"], {}).get(seed)
                rep = st.run(key) if key else None
                if rep and rep["status"] == "finished" and rep[value] is not None:
                    values[truth.sources.index(src), truth.targets.index(tgt)] = rep[value]
            tables[seed] = SourceTargetTable(truth.sources, truth.targets, values,
                                             name=f"seed{seed}")
    finally:
        if st is not store:
            st.close()
    return tables


def _grid_rows(store: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The store (opened if a path) and its grid runs; a store opened here is closed again."""
    st = open_store(store)
    try:
        return st, grid_runs(st)
    finally:
        if st is not store:
            st.close()
