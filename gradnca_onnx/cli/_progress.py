"""The progress of the command line on standard error: rich bars on a terminal (``rank``,
``finetune``), one line per record in a log (:class:`LogLines`)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def rich_bars(*extra: str, transient: bool = False, enabled: bool = True) -> Any:
    """A ``rich.progress.Progress`` on stderr: description, bar, done/total, elapsed time,
    then one text column per ``extra`` template (e.g. ``"{task.fields[info]}"``).

    ``transient`` removes the bars when they stop; ``enabled`` false draws nothing. rich is
    imported here, when bars are made, so that commands which never draw one do not load it.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), *(TextColumn(column) for column in extra),
                    transient=transient, console=Console(stderr=True), disable=not enabled)


class LogLines(logging.Handler):
    """Prints the package's log records on standard error as ``gradnca-onnx COMMAND: [k/N]
    MESSAGE``, flushed at once (a batch job's log shows each member as it is done), and a
    summary when the command ends.

    ``k`` counts the per-member records, ``N`` is what the plan records announced.
    """

    def __init__(self, command: str) -> None:
        super().__init__(level=logging.INFO)
        self.command = command
        self.total = 0
        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            self.total += int(getattr(record, "gradnca_tasks", 0))
            status = getattr(record, "gradnca_member", None)
            if status is not None:
                self.done += 1
                self.failed += status == "failed"
                message = f"[{self.done}/{self.total or '?'}] {message}"
            self._write(message)
        except Exception:  # a log line must never end the ranking (logging's own rule)
            self.handleError(record)

    def summary(self) -> None:
        """One closing line: members done, failed, and the time taken (none if no work)."""
        if self.done:
            self._write(f"{self.done} model score(s) in {time.perf_counter() - self.started:.1f}"
                        f" s, {self.failed} failed")

    def _write(self, line: str) -> None:
        sys.stderr.write(f"gradnca-onnx {self.command}: {line}\n")
        sys.stderr.flush()
