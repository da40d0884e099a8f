"""The one error surface of the command line: bad input becomes one line and exit code 2.

Every command is wrapped by :func:`user_errors`, which looks the exception up in one table,
:data:`ERROR_TABLE` (exception type -> how to say it in one line), prints ``Error: <line>`` on
stderr and exits with code 2. A message names the file or field, what is wrong and what to do.
Exceptions that are not in the table are bugs: they keep their traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import click

from ..zoo._atomic import directory_problem, probe_writable

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code of every bad-input error (click's usage errors use the same).
EXIT_BAD_INPUT = 2


class UserInputError(ValueError):
    """Bad input from the user: the message says what, where, and what to do."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def fail(message: str) -> None:
    """Print ``message`` as one ``Error:`` line on stderr and exit with code 2."""
    click.echo(f"Error: {one_line(message)}", err=True)
    raise SystemExit(EXIT_BAD_INPUT)


def _os_error(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or type(exc).__name__
    advice = {
        errno.ENOENT: "check the path",
        errno.EACCES: "check its permissions or choose another path",
        errno.EPERM: "check its permissions or choose another path",
        errno.EROFS: "the file system is read-only: choose another path",
        errno.ENOSPC: "free some disk space or choose another path",
        errno.EISDIR: "give a file, not a directory",
        errno.ENOTDIR: "a part of the path is a file, not a directory: fix the path",
        errno.EEXIST: "remove it or choose another path",
    }.get(exc.errno or 0, "check the path")
    return f"{where}: {what}; {advice}"


def _archive_error(exc: BaseException) -> str:
    return (f"a file is not a readable zip/npz archive ({type(exc).__name__}: {one_line(exc)}); "
            "it is corrupt or truncated: write or download it again")


def _memory_error(exc: BaseException) -> str:
    return ("out of memory while reading or scoring the input; use a smaller target (fewer or "
            "smaller images) or a machine with more memory")


def _ort_error(exc: BaseException) -> str:
    return (f"onnxruntime cannot load or run a graph ({type(exc).__name__}: "
            f"{one_line(exc)[:300]}); re-export the model")


def _ort_types() -> tuple[type, ...]:
    try:
        from ..zoo.sessions import ort_errors
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return ()
    return ort_errors()


#: Exception type -> its one-line message, first match wins (order: specific before general).
ERROR_TABLE: Sequence[tuple[tuple[type, ...] | Callable[[], tuple[type, ...]],
                            Callable[[BaseException], str]]] = (
    ((zipfile.BadZipFile, zlib.error, EOFError), _archive_error),
    ((ValueError,), lambda exc: str(exc) or type(exc).__name__),  # ours, UserInputError included
    ((OSError,), _os_error),  # FileNotFoundError, PermissionError, IsADirectoryError, ...
    ((MemoryError,), _memory_error),
    (_ort_types, _ort_error),
)


def describe(exc: BaseException) -> str | None:
    """The one-line message of a bad-input exception, or ``None`` when it is a bug."""
    for types, message in ERROR_TABLE:
        kinds = types() if callable(types) else types
        if kinds and isinstance(exc, kinds):
            return one_line(message(exc))
    return None


def user_errors(func: F) -> F:
    """Decorator for click commands: bad-input exceptions become one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SystemExit, KeyboardInterrupt, click.exceptions.ClickException,
                click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - looked up in the table, else re-raised
            message = describe(exc)
            if message is None:
                raise
            fail(message)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- output paths


def check_output_file(path: str | os.PathLike | None, option: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written.

    Its directory must exist and be writable, and the path must not be a directory.

    Raises
    ------
    UserInputError
        Naming the path and the option, and what to do.
    """
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UserInputError(f"{option} {p} is a directory; give a file path")
    if not parent.exists():
        probe = parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise UserInputError(f"{option} {p}: {probe} is a file, not a directory; fix the path")
        raise UserInputError(f"{option} {p}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UserInputError(f"{option} {p}: {parent} is a file, not a directory; fix the path")
    reason = probe_writable(parent)
    if reason:
        raise UserInputError(f"{option} {p}: directory {parent} is not writable ({reason}); "
                             "choose another path")


def check_output_dir(path: str | os.PathLike | None, option: str) -> None:
    """Refuse, before any work, an output directory that is a file or cannot be created."""
    if path is None:
        return
    p = Path(path)
    problem = directory_problem(p)
    if problem:
        raise UserInputError(f"{option} {p}: {problem}; fix the path or choose another "
                             "directory")
