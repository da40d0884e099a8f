"""The ``gradnca-onnx`` command line: thin click wrappers over the library API.

Each sub-command lives in its own module, listed in :data:`~._commands.COMMANDS`; the group
imports a command's module only when that command runs or ``--help`` lists it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Iterator

import click

from .._version import __version__
from ._commands import COMMANDS
from ._warnings import plain_warnings


class _OneLineUsageError(click.ClickException):
    """A command-line usage error shown as the package shows every bad input: one line."""

    exit_code = 2


#: Exit status when the reader of standard output went away (``| head``): 128 + SIGPIPE, what
#: a shell reports for ``ls`` in ``ls | head``.
EXIT_BROKEN_PIPE = 141


class _Group(click.Group):
    """click's group, with usage errors (an option that is not an integer, an unknown option)
    as one ``Error:`` line and exit code 2 instead of click's usage block, a closed output
    pipe as a quiet exit (:func:`_quiet_broken_pipe`), and the sub-commands of
    :data:`~._commands.COMMANDS` imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in COMMANDS:
            return command
        module, attribute = COMMANDS[name].split(":")
        command = getattr(importlib.import_module(f".{module}", __name__), attribute)
        self.add_command(command, name)  # the next look-up finds it at once
        return command

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        with _quiet_broken_pipe(), _one_line_usage(), plain_warnings():
            return super().invoke(ctx)


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """End quietly, like ``ls | head``, when the reader of standard output has gone away.

    Standard output is flushed here, inside the guard, so a write still buffered at exit
    cannot fail later; after a broken pipe it is pointed at ``/dev/null`` so that Python's
    own flush at exit finds nothing to complain about. Exit status 141 (128 + SIGPIPE).
    """
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # no real descriptor (tests, wrappers)
            pass
        raise SystemExit(EXIT_BROKEN_PIPE) from None


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
