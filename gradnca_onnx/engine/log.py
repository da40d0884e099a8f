"""What a ranking reports as it goes, through the standard ``logging`` module.

Every ranking path logs, on the ``gradnca_onnx`` logger at level INFO, one record when a plan
is made (how many members on how many targets) and one per member scored (name, target, how
long each stage took, cached or not, the error or the notes). A pipeline sees them with
``logging.basicConfig(level=logging.INFO)``; ``gradnca-onnx rank`` prints them when its
standard error is not a terminal (a batch job's log), where progress bars would print nothing
until the end. Nothing is logged at WARNING or above: failures are in the results.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .options import Progress

if TYPE_CHECKING:
    from ..results import ModelResult

LOGGER = logging.getLogger("gradnca_onnx")

#: ``extra`` keys of the records: the number of (member, target) tasks of a plan, and the
#: status of the member of a per-member record (``ranked``, ``features-only``, ``failed``).
TASKS_KEY = "gradnca_tasks"
MEMBER_KEY = "gradnca_member"


class StageClock:
    """Times the stages of one member from its progress ticks.

    A stage ends at its last tick (``done == total``); its time is measured from the end of
    the stage before it (or from the clock's start), so the stages add up to the time spent.
    :attr:`progress` forwards every tick to the caller's callback.
    """

    def __init__(self, progress: Progress | None) -> None:
        self._caller = progress
        self._start = self._last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def progress(self, model: str, stage: str, done: int, total: int) -> None:
        if done >= total:
            now = time.perf_counter()
            self.stages[stage] = self.stages.get(stage, 0.0) + now - self._last
            self._last = now
        if self._caller is not None:
            self._caller(model, stage, done, total)

    def seconds(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self._start


def log_plan(n_members: int, n_targets: int, zoo: str) -> None:
    """The record that opens a ranking: how many member scores it will log."""
    LOGGER.info("%d model(s) of %s to score on %d target(s)", n_members, zoo, n_targets,
                extra={TASKS_KEY: n_members * n_targets})


def log_member(result: ModelResult, target: str, clock: StageClock) -> None:
    """One line for a member scored (or failed) on ``target``."""
    LOGGER.info("%s", member_line(result, target, clock), extra={MEMBER_KEY: result.status})


def member_line(result: ModelResult, target: str, clock: StageClock) -> str:
    """``NAME on TARGET: STATUS in S s (stage S s, ...) [cached]; notes: ...``"""
    total = clock.seconds()
    stages = dict(clock.stages)
    rest = total - sum(stages.values())
    if stages and rest >= 0.05:
        stages["scores"] = rest  # after the last pass: S_LP, the metrics
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    head = f"{result.name} on {target}: {result.status} in {total:.1f} s"
    head += f" ({timing})" if timing else ""
    head += " from the cache" if result.cached else ""
    if result.error is not None:
        return f"{head}; error: {result.error}"
    if result.notes:
        return f"{head}; notes: {' | '.join(' '.join(n.split()) for n in result.notes)}"
    return head
