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
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar, Union

import click

from ..errors import GradncaError, InputError
from ..io.atomic import directory_problem, not_regular, probe_writable

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code of every bad-input error (click's usage errors use the same).
EXIT_BAD_INPUT = 2


#: Bad input from the user (the package's :class:`~gradnca_onnx.errors.InputError`).
UserInputError = InputError


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


def _file_errors(exc: BaseException) -> tuple[type, ...]:
    # An OS error about a file the user named is bad input; one without a file name (a pipe,
    # a socket, an errno from deep inside a library) is not, and keeps its traceback.
    return (OSError,) if getattr(exc, "filename", None) is not None else ()


def _ort_types(exc: BaseException | None = None) -> tuple[type, ...]:
    try:
        from ..io.sessions import ort_errors
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return ()
    return ort_errors()


#: Exception type -> its one-line message, first match wins (order: specific before general).
ERROR_TABLE: Sequence[tuple[tuple[type, ...] | Callable[[BaseException], tuple[type, ...]],
                            Callable[[BaseException], str]]] = (
    ((zipfile.BadZipFile, zlib.error, EOFError), _archive_error),
    ((GradncaError,), lambda exc: str(exc) or type(exc).__name__),  # every error of ours
    (_file_errors, _os_error),  # FileNotFoundError, PermissionError, ... naming a file
    ((MemoryError,), _memory_error),
    (_ort_types, _ort_error),
)


def describe(exc: BaseException) -> str | None:
    """The one-line message of a bad-input exception, or ``None`` when it is a bug."""
    for types, message in ERROR_TABLE:
        kinds = types(exc) if callable(types) else types
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
        except BrokenPipeError:
            raise  # the reader went away (`| head`): not bad input; the group ends quietly
        except Exception as exc:  # noqa: BLE001 - looked up in the table, else re-raised
            message = describe(exc)
            if message is None:
                raise
            fail(message)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- output paths
#
# The policy: an output is a new file or an existing regular file, never a symbolic link, a
# device, a FIFO, a socket or a directory (the atomic writer in ``io.atomic`` refuses them
# again right before its rename), and never one of the command's own inputs nor a file inside
# an input directory (a zoo, a feature cache, a target folder).

_PathLike = Union[str, os.PathLike]
#: A command's inputs for the output checks: option (e.g. ``"--target"``) -> one path, several,
#: or ``None``. Paths that do not exist are skipped (they cannot be overwritten).
Inputs = Mapping[str, Union[_PathLike, Iterable[_PathLike], None]]


def _identity(path: _PathLike) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names (links followed), ``None`` when it is missing."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _chain(path: _PathLike) -> dict[tuple[int, int], int]:
    """Identity -> depth of ``path`` (0) and each existing directory above it (1, 2, ...).

    Identities, not names: a hard link, a symbolic link in a parent, ``..`` or a
    case-insensitive file system cannot hide that two paths are the same file.
    """
    real = Path(os.path.realpath(path))
    out: dict[tuple[int, int], int] = {}
    for depth, p in enumerate((real, *real.parents)):
        ident = _identity(p)
        if ident is not None:
            out.setdefault(ident, depth)
    return out


def _paths(value: Union[_PathLike, Iterable[_PathLike], None]) -> list[_PathLike]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return [v for v in value if v is not None]


def within(path: _PathLike, root: _PathLike) -> bool:
    """Whether ``path`` is ``root`` itself or lies inside the directory ``root``."""
    ident = _identity(root)
    return ident is not None and ident in _chain(path)


def check_not_input(path: _PathLike | None, option: str, inputs: Inputs | None) -> None:
    """Refuse output ``path`` of ``option`` when it is one of ``inputs`` or lies inside an
    input directory.

    Raises
    ------
    UserInputError
        Naming both options, e.g. "--out X.npz is the --target input; choose another path".
    """
    if path is None:
        return
    chain = _chain(path)
    for name, value in (inputs or {}).items():
        for inp in _paths(value):
            depth = chain.get(_identity(inp) or (-1, -1))
            if depth == 0:
                raise UserInputError(f"{option} {path} is the {name} input; choose another "
                                     "path")
            if depth is not None:
                raise UserInputError(f"{option} {path} is inside the {name} directory {inp}; "
                                     "choose a path outside it")


def _refuse_existing(path: Path, option: str, inputs: Inputs | None, advice: str) -> None:
    """Refuse an output path that holds something other than a regular file, or an input."""
    kind = not_regular(path)
    if kind == "a directory":
        raise UserInputError(f"{option} {path} is a directory; give a file path")
    if kind is not None:
        raise UserInputError(f"{option} {path} is {kind}, not a regular file; {advice}")
    check_not_input(path, option, inputs)


def check_output_file(path: str | os.PathLike | None, option: str = "--out",
                      inputs: Inputs | None = None, *, stdout: bool = False) -> None:
    """Refuse, before any work, an output file that cannot or must not be written.

    Its directory must exist and be writable; the path must be new or a regular file (a
    symbolic link is neither followed nor replaced; a directory, device, FIFO or socket is
    never replaced), and must not be one of ``inputs`` nor inside an input directory.

    Parameters
    ----------
    path : path-like or None
        The output file (``None``: nothing to check).
    option : str
        The option that names it, for the message.
    inputs : mapping of option -> path(s), optional
        The command's inputs, e.g. ``{"--target": paths, "--zoo": zoo_dir}``.
    stdout : bool
        Whether leaving ``option`` out writes to standard output (the message says so).

    Raises
    ------
    UserInputError
        Naming the path and the option, and what to do.
    """
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    advice = "give a path to a regular file" + (
        f" (to write to standard output, leave {option} out)" if stdout else "")
    _refuse_existing(p, option, inputs, advice)
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


def check_zoo_out(zoo_dir: _PathLike, name: str, inputs: Inputs, *, force: bool,
                  option: str = "--out") -> None:
    """Refuse a zoo output (``export``/``import --out ZOO``) that would destroy an input.

    ``--force`` replaces ``ZOO/NAME`` whole, so no input (a checkpoint, a model file) may lie
    inside it; and the zoo must not be inside the feature cache, whose ``cache clear`` and
    entries share that directory.

    Raises
    ------
    UserInputError
        Naming the input and what to do.
    """
    from ..engine.cache import default_cache_dir
    from ..zoo.manifest import check_model_name

    check_not_input(zoo_dir, option, {"feature cache": default_cache_dir()})
    try:
        check_model_name(name)
    except ValueError:
        return  # the exporter refuses the name itself, in its own words
    member = Path(zoo_dir) / name
    if not (force and member.exists()):
        return  # nothing is replaced (without --force the export refuses an existing name)
    for opt, value in inputs.items():
        for inp in _paths(value):
            if within(inp, member):
                raise UserInputError(f"{opt} {inp} is inside {member}, which --force replaces "
                                     "whole; move it out of the zoo first")


def check_output_dir(path: str | os.PathLike | None, option: str, inputs: Inputs | None = None,
                     files: Iterable[str] = ()) -> None:
    """Refuse, before any work, an output directory that is a file or cannot be created, is
    (inside) an input directory, or where one of the ``files`` it will receive is not a regular
    file or is an input."""
    if path is None:
        return
    p = Path(path)
    problem = directory_problem(p)
    if problem:
        raise UserInputError(f"{option} {p}: {problem}; fix the path or choose another "
                             "directory")
    check_not_input(p, option, inputs)
    for name in files:
        _refuse_existing(p / name, option, inputs,
                         f"remove it or give {option} another directory")
