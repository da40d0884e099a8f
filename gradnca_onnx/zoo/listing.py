"""Listing a zoo directory: one sub-directory per exported model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import ZooError
from .manifest import MANIFEST_FILE, Manifest, load_manifest


@dataclass(frozen=True)
class ZooEntry:
    """One model directory of a zoo: its manifest, or why it could not be read."""

    path: Path
    manifest: Manifest | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.manifest is not None


def list_zoo(zoo_dir: str | os.PathLike[str], *, verify: bool = False) -> list[ZooEntry]:
    """Every model directory in ``zoo_dir``, sorted by name, broken ones included.

    A sub-directory counts as a model directory when it holds a ``manifest.json`` (of any
    kind: one that is a directory, FIFO or broken link makes a broken member, not a skipped
    one); hidden directories (an export in progress writes to one) are skipped. A member whose
    manifest cannot be read or validated, for any reason, is listed with its error naming the
    file; the others are unaffected.

    Parameters
    ----------
    zoo_dir : path
    verify : bool, default=False
        Recompute file hashes (slow for large models); sizes are always checked.

    Raises
    ------
    ValueError
        ``zoo_dir`` does not exist or is not a directory.
    """
    root = Path(zoo_dir)
    if not root.is_dir():
        raise ZooError(f"zoo directory {root} does not exist or is not a directory")
    entries = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not os.path.lexists(sub / MANIFEST_FILE):
            continue
        try:
            manifest = load_manifest(sub, verify=verify)
        except (ValueError, OSError, RecursionError) as exc:
            entries.append(ZooEntry(path=sub, manifest=None, error=_member_error(sub, exc)))
            continue
        if manifest.name != sub.name:
            entries.append(ZooEntry(path=sub, manifest=None, error=(
                f"{sub / MANIFEST_FILE} names the model {manifest.name!r} but its directory is "
                f"{sub.name!r}; rename the directory or re-export")))
            continue
        entries.append(ZooEntry(path=sub, manifest=manifest))
    return entries


def _member_error(sub: Path, exc: BaseException) -> str:
    """One line for a member that cannot be read, naming its file (an ``OSError`` raised by
    ``read()`` carries no file name of its own)."""
    if isinstance(exc, ValueError):
        return " ".join(str(exc).split())
    where = getattr(exc, "filename", None) or sub / MANIFEST_FILE
    what = getattr(exc, "strerror", None) or type(exc).__name__
    return f"{where}: cannot be read ({what}); check the file or re-export the model"


def load_zoo(zoo_dir: str | os.PathLike[str], *,
             verify: bool = True) -> list[tuple[Path, Manifest]]:
    """All models of a zoo as ``(model_dir, manifest)``; any broken model is an error.

    Raises
    ------
    ValueError
        The zoo is empty, or a model directory fails validation (the message names it).
    """
    entries = list_zoo(zoo_dir, verify=verify)
    for e in entries:
        if not e.ok:
            raise ZooError(e.error)
    if not entries:
        raise ZooError(f"zoo directory {zoo_dir} holds no exported model; run gradnca-onnx "
                       "export --out to add one")
    return [(e.path, e.manifest) for e in entries]  # type: ignore[misc]


class Zoo:
    """A zoo directory: one sub-directory per exported model.

    Reading it lists its members (:func:`list_zoo`); a member whose manifest cannot be read is
    listed with its error, not dropped. ``gradnca_onnx.rank`` takes a ``Zoo`` or its path.

    Parameters
    ----------
    path : path of the zoo directory

    Raises
    ------
    ZooError
        ``path`` is not a directory.

    Examples
    --------
    >>> zoo = Zoo("zoo")                                     # doctest: +SKIP
    >>> zoo.names, [e.error for e in zoo.broken]             # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries: list[ZooEntry] = list_zoo(self.path)

    @property
    def names(self) -> list[str]:
        """The members' directory names, sorted (broken members included)."""
        return [e.path.name for e in self.entries]

    @property
    def broken(self) -> list[ZooEntry]:
        """The members whose manifest could not be read, each with its ``error``."""
        return [e for e in self.entries if not e.ok]

    def manifest(self, name: str) -> Manifest:
        """The manifest of member ``name``.

        Raises
        ------
        ZooError
            No such member, or one whose manifest could not be read (its error).
        """
        for e in self.entries:
            if e.path.name == name:
                if e.manifest is None:
                    raise ZooError(e.error or f"{e.path}: no manifest")
                return e.manifest
        raise ZooError(f"zoo {self.path} has no model named {name!r} (it has "
                       f"{', '.join(self.names) or 'none'})")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ZooEntry]:
        return iter(self.entries)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"Zoo({str(self.path)!r}, {len(self.entries)} member(s))"
