"""Rebuilding a zoo member's model from its manifest: the checkpoint it names, found and
checked, and the constructor options it records.

A member's manifest names its checkpoint by plain file name and sha256; the file is looked
for where it was given (``checkpoint=``, ``finetune --checkpoint``), else next to the member
directory, in its zoo, and beside the zoo, and used only when its sha256 is the manifest's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..errors import SourceError
from .base import LoadedModel, Member, ModelSource

#: The constructor keyword arguments a manifest may record, by source option name.
KWARGS_KEYS = ("arch_kwargs", "factory_kwargs")


def _plain_name(member: Member, value: str | None, field_name: str) -> str:
    # The manifest names files by their plain name; anything else (an absolute path, "..", a
    # sub-path) would read a file outside the zoo.
    if not value or Path(value).name != value or value in (".", "..") or "\\" in value:
        raise SourceError(f"{member.where(field_name)} {value!r} is not a plain file name; "
                          "pass the checkpoint with --checkpoint")
    return value


def find_checkpoint(member: Member, given: str | os.PathLike | None = None, *,
                    folder: str | None = None) -> Path:
    """The checkpoint file ``member``'s manifest names, its sha256 checked.

    Parameters
    ----------
    member : Member
    given : path, optional
        Where the user says it is (a directory: the file of the manifest's name inside it).
    folder : str, optional
        A directory the file lies in (Hugging Face: the ``save_pretrained`` directory, by the
        name the manifest records), looked for where the checkpoint would be.

    Raises
    ------
    SourceError
        A manifest name that is not a plain file name, a file whose sha256 is not the
        manifest's, or no file found (the message says to pass it with ``--checkpoint``).
    """
    from ..io.hashing import sha256_file

    src = member.source
    file_name = src.checkpoint or ""
    if given is not None:
        path = Path(given)
        candidates = [path / file_name if path.is_dir() and file_name else path]
    else:
        name = _plain_name(member, file_name, "checkpoint")
        inner = Path(_plain_name(member, folder, "reference")) / name if folder else Path(name)
        d = member.path
        candidates = [d / inner, d.parent / inner, d.parent.parent / inner]
    for c in candidates:
        if c.is_file():
            if src.checkpoint_sha256 and sha256_file(c) != src.checkpoint_sha256:
                raise SourceError(
                    f"checkpoint {c} does not match the sha256 in {member.where()} "
                    f"({src.checkpoint_sha256[:12]}...); give the checkpoint the model was "
                    "exported from")
            return c
    raise SourceError(
        f"{member.path} is an exported (ONNX) model, which cannot be fine-tuned; its manifest "
        f"names the checkpoint {file_name!r}, not found next to it: pass it with --checkpoint")


def find_directory(member: Member, given: str | os.PathLike | None = None) -> Path:
    """The local directory a ``local-dir:NAME`` member (timm, open_clip) was exported from:
    the directory of that name holding the weights file the manifest names (sha256-checked),
    next to the member, in its zoo or beside the zoo, or the one ``given``."""
    folder = Path(member.source.reference.removeprefix("local-dir:")).name
    return find_checkpoint(member, given, folder=folder).parent


def check_options(member: Member) -> tuple[int, dict[str, Any]]:
    """The seed and the constructor keyword arguments the manifest records, refused unless
    they are plain JSON data (a seed that is an integer, keyword names that are identifiers).

    Returns
    -------
    (int, dict)
        The seed (0 when absent) and the options, for :meth:`ModelSource.load`.
    """
    options = member.source.options
    if not isinstance(options, dict):
        raise SourceError(f"{member.where('options')} must be a JSON object")
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SourceError(f"{member.where('options.seed')} must be an integer")
    for key in KWARGS_KEYS:
        kw = options.get(key)
        if kw is not None and not (isinstance(kw, dict) and all(
                isinstance(k, str) and k.isidentifier() and not k.startswith("_") for k in kw)):
            raise SourceError(f"{member.where('options.' + key)} must map keyword names to "
                              "values; re-export the model")
    return seed, options


class ConstructorSource(ModelSource):
    """A source whose model a constructor builds from keyword arguments and a seed, then a
    checkpoint fills (torchvision, timm, MONAI, factories): rebuilt by calling it again with
    the manifest's options, seed and input channels and the checkpoint found by
    :func:`find_checkpoint`. A randomly initialised member comes back with the same weights.
    """

    #: The option that holds the constructor's keyword arguments.
    kwargs_key = "arch_kwargs"

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        seed, options = check_options(member)
        src = member.source
        ckpt = None
        if src.checkpoint is not None or checkpoint is not None:
            ckpt = find_checkpoint(member, checkpoint)
        return self.load(src.reference, ckpt, kwargs=options.get(self.kwargs_key),
                         channels=member.manifest.input.channels, trust_pickle=trust_pickle,
                         seed=seed)


def rebuild_located(source: "ConstructorSource", member: Member,
                    checkpoint: str | os.PathLike | None, trust_pickle: bool,
                    weights: Callable[[str], Path | None]) -> LoadedModel:
    """A timm or open_clip member whose reference is a Hub name or a directory, rebuilt: a
    ``local-dir:NAME`` from the directory of that name beside the member (or given), a Hub
    name from the same cache entry (``weights(reference)``: its weights file), the weights'
    sha256 checked either way; then built with the manifest's options and seed."""
    from .hub import is_directory_reference

    seed, options = check_options(member)
    src = member.source
    reference = src.reference
    ckpt: Path | None
    if is_directory_reference(reference):  # recorded by name: found beside the member
        directory = find_directory(member, checkpoint)
        reference, ckpt = str(directory), directory / (src.checkpoint or "")
    elif checkpoint is not None:
        ckpt = find_checkpoint(member, checkpoint)
    else:
        found = weights(reference)
        ckpt = find_checkpoint(member, found) if found is not None else None
    return source.load(reference, ckpt, kwargs=options.get(source.kwargs_key),
                       channels=member.manifest.input.channels, trust_pickle=trust_pickle,
                       seed=seed)
