"""File hashes recorded in a manifest, and the check that the files still match them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZooError
from ..io.hashing import sha256_file


@dataclass(frozen=True)
class FileEntry:
    """Size and SHA-256 of one file of a model directory."""

    sha256: str
    bytes: int


def file_entry(path: str | os.PathLike) -> FileEntry:
    """The :class:`FileEntry` of an existing file."""
    p = Path(path)
    return FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)


def confined_path(model_dir: str | os.PathLike, name: str) -> Path:
    """``model_dir/name``, refused unless it stays inside ``model_dir``.

    ``name`` must be a plain relative file name (no absolute path, no ``..``) and the file,
    if it exists, must not be a symlink leading out of the model directory.

    Raises
    ------
    ValueError
        A name or link that points outside the model directory.
    """
    root = Path(model_dir)
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
        raise ZooError(f"{root}: file name {name!r} in the manifest points outside the model "
                       "directory; a zoo may only name files inside its model directories")
    p = root / name
    if p.is_symlink() or p.exists():
        real, base = p.resolve(), root.resolve()
        if real != base and base not in real.parents:
            raise ZooError(f"{p} is a link to {real}, outside the model directory; copy the "
                           "file into the model directory instead of linking it")
    return p


def verify_files(model_dir: str | os.PathLike, files: dict[str, FileEntry], *,
                 hashes: bool = True) -> None:
    """Check that every listed file exists with the recorded size (and hash).

    Parameters
    ----------
    model_dir : path
        The model directory holding the files.
    files : dict
        File name (relative to ``model_dir``) to its recorded :class:`FileEntry`.
    hashes : bool, default=True
        Also recompute SHA-256; sizes alone catch truncation, hashes catch any change.

    Raises
    ------
    ValueError
        A file is missing, or its size or hash differs from the manifest.
    """
    root = Path(model_dir)
    for name, entry in files.items():
        p = confined_path(root, name)
        if not p.is_file():
            raise ZooError(f"{p} is listed in the manifest but missing; re-export the model")
        size = p.stat().st_size
        if size != entry.bytes:
            raise ZooError(
                f"{p} has {size} bytes but the manifest records {entry.bytes}; the file was "
                "changed or truncated: re-export the model"
            )
        if hashes:
            digest = sha256_file(p)
            if digest != entry.sha256:
                raise ZooError(
                    f"{p} does not match its sha256 in the manifest ({digest[:12]}... vs "
                    f"{entry.sha256[:12]}...); the file was changed: re-export the model"
                )
