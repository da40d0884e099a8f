"""The ``gradnca-onnx`` command line: thin click wrappers over the library API.

Each sub-command lives in its own module and registers itself on :data:`main` when imported
below.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import click

from .._version import __version__


class _OneLineUsageError(click.ClickException):
    """A command-line usage error shown as the package shows every bad input: one line."""

    exit_code = 2


class _Group(click.Group):
    """click's group, with usage errors (an option that is not an integer, an unknown option)
    as one ``Error:`` line and exit code 2 instead of click's usage block."""

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:  # a bare group prints its help, as click does
        raise
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        raise _OneLineUsageError(exc.format_message() + hint) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gradnca-onnx")
def main() -> None:
    """Rank pre-trained models by how well they will transfer to a target dataset."""


# Sub-command modules (one per command family); each imports ``main`` and decorates onto it.
from . import _commands  # noqa: E402,F401
