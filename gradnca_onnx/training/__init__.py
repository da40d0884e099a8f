"""Ground-truth fine-tuning (REFERENCE section 7): the paper's protocol, resumable grids, a run
store, and the ground-truth table that ``evaluate`` reads.

The grid, run store, metrics and summary parts need no torch; the training parts
(:func:`finetune`, :func:`run_grid`, :func:`load_source`, ...) import torch when first used,
so ``import gradnca_onnx.training`` works in a scoring-only install.

>>> from gradnca_onnx import training
>>> out = training.run_grid("resnet18", "breastmnist.npz", "quick", "runs.sqlite")  # doctest: +SKIP
>>> training.ground_truth("runs.sqlite").to_csv("truth.csv")                        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from .grid import (
    PAPER,
    PAPER_BATCH_SIZES,
    PRESETS,
    PROTOCOL,
    QUICK,
    GridSpec,
    RunConfig,
    check_seeds,
    default_seeds,
    load_grid,
)
from .metrics import accuracy, auc_score, binary_auc
from .store import RunStore, open_store, run_key
from .summary import ground_truth, replicate_ground_truths, selected_runs

# Torch-dependent names, imported on first access.
_LAZY = {
    "EpochMetrics": "loop", "PreparedTarget": "loop", "RunResult": "loop", "evaluate": "loop",
    "finetune": "loop", "prepare_target": "loop",
    "replace_head": "head", "find_head": "head",
    "train_transform": "augment",
    "Source": "source", "load_source": "source", "weights_sha256": "source",
    "GridOutcome": "runner", "TargetSplits": "runner", "load_target_splits": "runner",
    "run_grid": "runner", "run_one": "runner", "task_key": "runner",
    "ReplicateOutcome": "runner", "run_seeds": "runner",
    "config_of": "runner",
}

__all__ = sorted([
    "GridSpec", "PAPER", "PAPER_BATCH_SIZES", "PRESETS", "PROTOCOL", "QUICK", "RunConfig",
    "RunStore", "accuracy", "auc_score", "binary_auc", "check_seeds", "default_seeds", "ground_truth", "load_grid", "open_store",
    "run_key", "replicate_ground_truths", "selected_runs", *_LAZY,
])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
