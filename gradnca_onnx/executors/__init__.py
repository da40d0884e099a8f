"""Scale-out: the same units of work in this process or as Ray tasks.

``local`` runs tasks one after the other in this process; ``ray`` runs one Ray task per
unit (a model x target score, a fine-tuning run) with bounded retries of dead workers. The
driver alone combines results and writes files, so outputs are identical either way. Ray is
an optional extra, imported only when the ``ray`` executor is made.
"""

from .base import (
                   EXECUTORS,
                   Executor,
                   LocalExecutor,
                   RayExecutor,
                   TaskOutcome,
                   make_executor,
                   task_gpus,
)
from .finetuning import run_grid_on, train_task
from .ranking import rank, rank_targets

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "TaskOutcome",
    "make_executor",
    "rank",
    "rank_targets",
    "run_grid_on",
    "task_gpus",
    "train_task",
]
