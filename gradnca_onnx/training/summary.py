"""Ground truth from a run store: per (source, target), the test AUC of the lowest-val-loss run."""

from __future__ import annotations

import os
from typing import Union

from ..evaluation.ground_truth import ground_truth_from_runs
from ..evaluation.table import SourceTargetTable
from .store import RunStore, open_store

PathLike = Union[str, "os.PathLike[str]"]


def ground_truth(store: RunStore | PathLike, *, value: str = "test_auc") -> SourceTargetTable:
    """The sources x targets ground-truth table of the finished runs in ``store``.

    The paper's rule (REFERENCE 7): for each (source, target) pair, ``value`` (default the test
    AUC) of the finished run with the lowest validation loss; runs without a validation loss
    (every epoch diverged) are skipped, ties go to the run that started first. Pairs without a
    usable run are NaN.

    Raises
    ------
    ValueError
        An empty store, or a source (target) name that stands for two different sets of
        weights (data) in the store, which would mix different models in one row (column).
    """
    st = open_store(store)
    try:
        rows = st.runs(status="finished")
    finally:
        if st is not store:
            st.close()
    if not rows:
        raise ValueError(f"run store {st.path} has no finished runs; run `gradnca-onnx finetune` "
                         "first")
    for col, sha in (("source", "source_sha256"), ("target", "target_sha256")):
        seen: dict[str, str] = {}
        for r in rows:
            if seen.setdefault(r[col], r[sha]) != r[sha]:
                raise ValueError(
                    f"run store {st.path}: {col} name {r[col]!r} is used for two different "
                    f"{'models' if col == 'source' else 'datasets'}; give them distinct names "
                    f"(--{col}-name) and run again"
                )
    as_text = [{"source": r["source"], "target": r["target"],
                "val_loss": "" if r["val_loss"] is None else repr(r["val_loss"]),
                value: "" if r[value] is None else repr(r[value])} for r in rows]
    return ground_truth_from_runs(as_text, source_field="source", target_field="target",
                                  loss_field="val_loss", value_field=value,
                                  name=f"ground truth ({st.path})")
