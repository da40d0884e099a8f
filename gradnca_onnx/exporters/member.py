"""What every writer of a zoo member shares: the input block of the manifest, and the staged
write (graphs and manifest into a hidden directory, published whole or not at all).

Used by :func:`~gradnca_onnx.exporters.export_model` and by the importer's features-only
members (:func:`~gradnca_onnx.importers.features_only.write_features_only`).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .._version import __version__
from ..data.conventions import Intensity
from ..errors import InputError
from ..zoo import InputSpec, Manifest, file_entry, parse_normalisation, write_manifest
from ..zoo.manifest import write_version
from ..zoo.publish import missing_dirs, publish, remove_empty, staging_dir
from .weights import share_weights


#: The mean/std of a z-scored model unless ``--norm`` says otherwise.
ZSCORE_NORM = "0,1"


def default_normalisation(pretrained_on: str) -> str:
    """``imagenet`` for sources whose description mentions ImageNet, else ``half`` (REFERENCE 1)."""
    return "imagenet" if "imagenet" in pretrained_on.lower() else "half"


def check_pretrained_on(pretrained_on: str) -> str:
    """``pretrained_on`` stripped; refused when empty (``unknown`` says that nothing is known)."""
    if not pretrained_on or not pretrained_on.strip():
        raise InputError("--pretrained-on must not be empty (use 'unknown')")
    return pretrained_on.strip()


def input_spec(channels: int, height: int, width: int, norm: str | None,
               pretrained_on: str,
               library: tuple[tuple[float, ...], tuple[float, ...], str] | None = None,
               intensity: Intensity | None = None, depth: int | None = None) -> InputSpec:
    """The manifest's ``input`` block: ``norm`` (``imagenet``, ``half``, ``MEAN,STD``), else the
    model's own config (``library``), else :func:`default_normalisation` of ``pretrained_on``
    (:func:`normalisation_origin` says which); and the intensity convention (``None`` or
    ``8bit``: none recorded). A ``zscore`` model's mean and std default to 0 and 1 (its
    images are z-scores already). ``depth``: a 3-D model's input depth."""
    convention = intensity if intensity is not None else Intensity()
    if convention.channels is not None and convention.channels != channels:
        raise InputError(f"--intensity {convention.text()} gives {convention.channels} "
                         f"channels (one per window), but the model takes {channels}; give one "
                         "window per input channel")
    if norm is None and convention.kind == "zscore":
        norm = ZSCORE_NORM
    if norm is None and library is not None:
        mean, std = parse_normalisation(_as_spec(library[0], library[1]), channels)
    else:
        mean, std = parse_normalisation(norm or default_normalisation(pretrained_on), channels)
    return InputSpec(channels=channels, height=height, width=width, mean=mean, std=std,
                     intensity=None if convention.is_default else convention.to_dict(),
                     depth=depth)


def normalisation_origin(norm: str | None, pretrained_on: str,
                         library: tuple[tuple[float, ...], tuple[float, ...], str] | None,
                         intensity: Intensity | None = None) -> str:
    """Where :func:`input_spec` took the mean and std from, for the manifest."""
    if norm is not None:
        return "--norm"
    if intensity is not None and intensity.kind == "zscore":
        return "zscore (the images are z-scores: mean 0, std 1)"
    if library is not None:
        return library[2]
    return (f"guessed from --pretrained-on ({default_normalisation(pretrained_on)}: "
            f"{'it names' if 'imagenet' in pretrained_on.lower() else 'it does not name'} "
            "ImageNet); give --norm to state it")


def _as_spec(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    return f"{':'.join(repr(float(m)) for m in mean)},{':'.join(repr(float(s)) for s in std)}"


def publish_member(zoo_dir: str | os.PathLike, name: str, *, force: bool,
                   write: Callable[[Path], dict[str, Any]]) -> Path:
    """Write the member ``zoo_dir/name`` whole, or leave the zoo as it was.

    ``write(staging)`` writes the graphs into the staging directory and returns the manifest's
    fields but ``files``, ``package_version`` and ``created``, which are filled here from what
    it wrote. The directory is then published in one rename (replacing an existing member only
    with ``force``); on any failure the staging directory, and the zoo directories this call
    created, are removed.
    """
    new_dirs = missing_dirs(zoo_dir)
    published = None
    staging = staging_dir(zoo_dir, name, force=force)
    try:
        fields = write(staging)
        share_weights(staging, sorted(p.name for p in staging.glob("*.onnx")))
        fields.setdefault("schema_version", write_version(fields["input"].intensity,
                                                          fields["input"].depth))
        manifest = Manifest(
            **fields, package_version=__version__,
            files={p.name: file_entry(p) for p in sorted(staging.iterdir()) if p.is_file()},
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write_manifest(staging, manifest)
        published = publish(staging, zoo_dir, name, force=force)
        return published
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if published is None:  # a failed write leaves no empty zoo behind
            remove_empty(new_dirs)
