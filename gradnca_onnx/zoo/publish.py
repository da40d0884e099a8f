"""Publishing a member into a zoo: its model directory appears atomically (all files at once, or
none). The exporters and the importers both publish through here."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError
from ..io.atomic import dir_mode
from .manifest import check_model_name

#: Suffixes of the hidden directories an export writes into the zoo (``.<name>.<pid>.<random>``).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.[^.]+\.(?:incoming|old)$")
_RENAME_EXCHANGE = 2  # linux/fs.h


def _unwritable(path: Path, exc: OSError) -> ValueError:
    reason = exc.strerror or type(exc).__name__
    return InputError(f"output directory {path} is not writable ({reason}); choose a directory "
                      "you can write to with --out")


def staging_dir(zoo_dir: str | os.PathLike, name: str, *, force: bool) -> Path:
    """Check the zoo and the name, and create a hidden staging directory inside the zoo.

    The staging directory sits in the zoo so that the final rename stays on one file system.

    Raises
    ------
    ValueError
        Bad name, a model of that name already present without ``force``, or a zoo directory
        that cannot be created or written.
    """
    check_model_name(name)
    zoo = Path(zoo_dir)
    if zoo.exists() and not zoo.is_dir():
        raise InputError(f"output {zoo} exists and is not a directory; choose a zoo directory "
                         "with --out")
    try:
        zoo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(zoo, exc) from None
    check_free(zoo, name, force=force)
    clean_leftovers(zoo)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".incoming",
                                        dir=zoo))
        os.chmod(staging, dir_mode())  # mkdtemp's 0700 would hide the model from other users
        return staging
    except OSError as exc:
        raise _unwritable(zoo, exc) from None


def missing_dirs(path: str | os.PathLike) -> list[Path]:
    """The directories of ``path`` that do not exist yet, deepest first (what ``staging_dir``
    will create), for :func:`remove_empty` when the export then fails."""
    out, p = [], Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_empty(dirs: list[Path]) -> None:
    """Remove ``dirs`` (deepest first) while they are empty: a failed export leaves the disk
    as it found it, never an empty zoo directory; anything someone else put there stays."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def clean_leftovers(zoo: Path) -> list[Path]:
    """Remove the staging and replaced-model directories of exports that were killed.

    An export names its hidden directories after its process id; one whose process no longer
    runs on this machine is a leftover. Directories of running exports are left alone.
    """
    removed = []
    try:
        children = list(zoo.iterdir())
    except OSError:
        return removed
    for d in children:
        m = _LEFTOVER.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and not _alive(int(m.group("pid"))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns ``False`` where the system cannot (no such call, or a file system without it).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def check_free(zoo: Path, name: str, *, force: bool) -> None:
    """Refuse to overwrite an existing model unless ``force``."""
    if (zoo / name).exists() and not force:
        raise InputError(f"model {name!r} already exists in {zoo}; pass --force to replace it "
                         "or choose another --name")


def publish(staging: Path, zoo_dir: str | os.PathLike, name: str, *, force: bool) -> Path:
    """Move a complete staging directory to ``zoo_dir/name``, replacing an old one if forced.

    A reader sees the old model or the new one, never neither: where the system can
    (Linux), the two directories are swapped in one atomic step and the old one, now at the
    staging path, is deleted. Elsewhere the old directory is renamed aside, the new one into
    place, then the old one deleted (a short moment without the model).
    """
    zoo = Path(zoo_dir)
    final = zoo / name
    check_free(zoo, name, force=force)
    if final.is_dir() and not final.is_symlink() and _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)
        return final
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".old", dir=zoo))
        os.replace(final, old / name)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old / name, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
