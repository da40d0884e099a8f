"""The package's one atomic file writer: readers see the old file or the new one, never half.

Every output of the package (manifests, rank JSON/CSV, tables, figures, caches, npz files)
goes through :func:`atomic_write_bytes`. A new file gets the mode a plain ``open()`` would give
it, 0666 less the umask (0644 under umask 022), not ``mkstemp``'s private 0600.

The output-path policy of the package lives here: an output is a new file or an existing
regular file. A symbolic link is neither followed nor replaced, and a device, FIFO, socket or
directory is never replaced (:func:`not_regular`, checked again right before each rename).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Mapping

import numpy as np
from numpy.typing import NDArray

from ..errors import NotRegularFileError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory: 0777 less the umask (0755 under umask 022)."""
    return 0o777 & ~current_umask()


def _unwritable(target: Path, exc: OSError) -> OSError:
    """The error of a failed write, naming the file asked for (not the temporary file)."""
    if isinstance(exc, NotRegularFileError):
        return exc
    err = OSError(exc.errno, exc.strerror or str(exc), str(target))
    return err


#: File type bits -> how a message names them (a regular file is the one allowed output).
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def not_regular(path: str | os.PathLike) -> str | None:
    """What stands at ``path`` when it is neither missing nor a regular file, else ``None``.

    ``lstat``, not ``stat``: a symbolic link is reported as one, whatever it points to
    (writing through it would change a file the user did not name; replacing it would drop
    the link). E.g. ``"a FIFO"``, ``"a symbolic link"``, ``"a character device"``.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # a file in the middle of the path: the write itself says so
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refuse_not_regular(target: Path) -> None:
    """Raise :class:`NotRegularFileError` when ``target`` may not be replaced by a write."""
    kind = not_regular(target)
    if kind is not None:
        raise NotRegularFileError(errno.EEXIST, f"{kind}, not a regular file, is there (left "
                                  "as it is)", str(target))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    The temporary file lives beside the target so that ``os.replace`` is a rename within one
    file system, which is atomic on POSIX and Windows. The file gets the mode a plain
    ``open()`` would give it (0644 under umask 022), not ``mkstemp``'s private 0600, so a zoo
    or a result written by one user can be read by others as the umask allows.

    Only a missing path or a regular file is replaced: a symbolic link, device, FIFO, socket
    or directory at ``path`` is refused before the temporary file is made, and again right
    before the rename (one that appeared while the data was written).

    Raises
    ------
    NotRegularFileError
        When something other than a regular file is at ``path`` (nothing is changed).
    OSError
        Naming ``path`` (never the temporary file) when it cannot be written.
    """
    target = Path(path)
    _refuse_not_regular(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _refuse_not_regular(target)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(target, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text variant of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: str | os.PathLike, arrays: Mapping[str, NDArray], *,
                 compressed: bool = False) -> Path:
    """Write ``arrays`` as an npz file with :func:`atomic_write_bytes` (missing parent
    directories are created).

    Parameters
    ----------
    path : path
        The npz file; written as named (``np.savez`` would append ``.npz`` to a name without it).
    arrays : mapping of str to ndarray
        The npz keys and their arrays.
    compressed : bool, default=False
        ``np.savez_compressed`` instead of ``np.savez``.

    Returns
    -------
    Path
        ``path``.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # A file object, not a name: np.savez would append ".npz" to a name without it.
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(out, buf.getvalue())
    return out


def probe_writable(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory`` (``None`` if it can).

    A real probe (a temporary file created and removed at once), since ``os.access`` says
    yes to root even on a read-only file system.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".gradnca-probe-", dir=directory)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    os.unlink(name)
    return None


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (created and) written as a directory, or ``None``: the nearest
    existing ancestor must be a writable directory."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    reason = probe_writable(probe)
    return f"{probe} is not writable ({reason})" if reason else None
