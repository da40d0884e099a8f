"""Creating a model directory inside a zoo atomically (all files appear at once, or none)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..zoo import check_model_name


def _unwritable(path: Path, exc: OSError) -> ValueError:
    reason = exc.strerror or type(exc).__name__
    return ValueError(f"output directory {path} is not writable ({reason}); choose a directory "
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
        raise ValueError(f"output {zoo} exists and is not a directory; choose a zoo directory "
                         "with --out")
    try:
        zoo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(zoo, exc) from None
    check_free(zoo, name, force=force)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".incoming", dir=zoo))
    except OSError as exc:
        raise _unwritable(zoo, exc) from None


def check_free(zoo: Path, name: str, *, force: bool) -> None:
    """Refuse to overwrite an existing model unless ``force``."""
    if (zoo / name).exists() and not force:
        raise ValueError(f"model {name!r} already exists in {zoo}; pass --force to replace it "
                         "or choose another --name")


def publish(staging: Path, zoo_dir: str | os.PathLike, name: str, *, force: bool) -> Path:
    """Move a complete staging directory to ``zoo_dir/name``, replacing an old one if forced.

    A reader sees the old model or the new one: the old directory is first renamed aside,
    then the new one renamed into place, then the old one deleted.
    """
    zoo = Path(zoo_dir)
    final = zoo / name
    check_free(zoo, name, force=force)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=zoo))
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
