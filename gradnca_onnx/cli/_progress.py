"""The rich progress bars of the command line (``rank``, ``finetune``), on stderr."""

from __future__ import annotations

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
