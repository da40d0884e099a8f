"""Which targets a ``rank`` run scores: target paths, and directories of targets expanded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import InputError


def _is_target_folder_of_folders(path: Path) -> bool:
    """Whether ``path`` holds targets (folders of class folders) rather than being one."""
    from ..data.folders import split_subfolders

    if split_subfolders(path):
        return False  # train/val/test sub-folders: one target with its splits
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(subdirs) and all(
        any(c.is_dir() and not c.name.startswith(".") for c in d.iterdir()) for d in subdirs)


def expand_targets(values: Iterable[str | os.PathLike]) -> tuple[list[Path], bool]:
    """The target paths of the ``--target`` values, and whether a directory of targets was
    given.

    A directory holding ``.npz`` files stands for those files; a directory whose every
    sub-folder has class sub-folders stands for those sub-folders; any other directory is one
    image-folder target.

    Raises
    ------
    InputError
        A value that does not exist.
    """
    paths: list[Path] = []
    expanded = False
    for value in values:
        p = Path(value)
        if not p.exists():
            raise InputError(f"target {p} does not exist")
        if p.is_dir():
            npz = sorted(f for f in p.glob("*.npz") if f.is_file())
            if npz:
                paths.extend(npz)
                expanded = True
                continue
            if _is_target_folder_of_folders(p):
                paths.extend(sorted(d for d in p.iterdir()
                                    if d.is_dir() and not d.name.startswith(".")))
                expanded = True
                continue
        paths.append(p)
    return paths, expanded
