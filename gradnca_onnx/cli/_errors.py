"""Turning bad input into one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class UserInputError(ValueError):
    """Bad input from the user: the message says what, where, and what to do."""


def fail(message: str) -> None:
    """Print ``message`` as one line on stderr and exit with code 2."""
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    raise SystemExit(2)


def user_errors(func: F) -> F:
    """Decorator for click commands: bad-input exceptions become one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                PermissionError) as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]
