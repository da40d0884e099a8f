"""Python warnings on the command line: one plain ``Warning:`` line each (issue 24, item 21).

Python shows a warning as ``path/to/module.py:356: CategoryWarning: message`` followed by the
source line that raised it: a file and a line of code the user did not write and cannot act
on. While a command runs, :func:`plain_warnings` shows each warning that reaches the terminal
as ``Warning: <message>`` on stderr, on one line, instead. Which warnings are shown is still
decided by Python's filters (``-W``, ``PYTHONWARNINGS``), and code inside a command that
records warnings (``warnings.catch_warnings(record=True)``, e.g. to turn them into a model's
notes) still gets them. The library API is unchanged.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, TextIO

import click

from ._errors import one_line


def _show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: the message only, as one ``Warning:`` line."""
    click.echo(f"Warning: {one_line(message)}", err=True)


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Show warnings as one ``Warning:`` line each while the block runs (see module doc)."""
    previous: Any = warnings.showwarning
    warnings.showwarning = _show
    try:
        yield
    finally:
        warnings.showwarning = previous
