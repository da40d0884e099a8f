"""Which targets a ``rank`` run scores: target paths, directories of targets expanded, loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

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


@dataclass
class RankTargets:
    """The targets of a ranking run, loaded.

    ``paths`` are the target files and folders (directories of targets expanded); ``data``
    holds each one's :class:`~gradnca_onnx.data.dataset.TargetData`, or ``None`` for ``rank
    --folds``, which loads each path's paper folds itself; ``several`` is true when the run
    reports several targets in one document (several paths, or a directory of targets).
    """

    paths: list[Path]
    data: list[Any]
    several: bool


def load_rank_targets(values: Iterable[str | os.PathLike], split: str | None = None, *,
                      size: int | tuple[int, int] | None = None,
                      folds: bool = False,
                      columns: dict[str, str | None] | None = None) -> RankTargets:
    """Expand ``values`` (:func:`expand_targets`) and load each target's ``split``.

    Parameters
    ----------
    values : the ``--target`` values: files, folders, or directories of targets
    split : as :func:`~gradnca_onnx.data.dataset.load_target` (default per kind of target)
    size : folders: resize every image to this size while loading
    folds : load nothing (``rank --folds`` loads the folds of each path)
    columns : label tables: the column of each role (``load_target``'s ``columns``)

    Raises
    ------
    InputError
        A value that does not exist, no target at all, or a target that cannot be read.
    """
    from ..data.load import load_target

    values = list(values)
    paths, expanded = expand_targets(values)
    if not paths:
        raise InputError(f"no target found in {', '.join(map(str, values))}")
    data = [None if folds else load_target(p, split, size=size, columns=columns)
            for p in paths]
    return RankTargets(paths, data, expanded or len(paths) > 1)
