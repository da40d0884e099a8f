"""Atomic file writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

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
    err = OSError(exc.errno, exc.strerror or str(exc), str(target))
    return err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    The temporary file lives beside the target so that ``os.replace`` is a rename within one
    file system, which is atomic on POSIX and Windows. The file gets the mode a plain
    ``open()`` would give it (0644 under umask 022), not ``mkstemp``'s private 0600, so a zoo
    or a result written by one user can be read by others as the umask allows.

    Raises
    ------
    OSError
        Naming ``path`` (never the temporary file) when it cannot be written.
    """
    target = Path(path)
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
