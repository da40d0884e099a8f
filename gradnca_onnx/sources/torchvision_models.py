"""torchvision's classification architectures (``--arch NAME``), random or from a checkpoint.

The video classifiers (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ...) are 3-D CNNs over
``(B, 3, T, H, W)`` clips: exported with ``--depth`` they rank volume targets, each volume's
depth taking the place of time, with the Kinetics normalisation their weights' own transforms
define (an extension beyond the paper, which ranks 2-D CNNs).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SourceError
from .architectures import PAPER_ARCHITECTURES
from .base import LoadedModel
from .building import build_for_state, jsonable
from .checkpoints import read_checkpoint
from .custom import pickled_module
from .from_manifest import ConstructorSource


def torchvision_architectures() -> list[str]:
    """Names of torchvision's image- and video-classification architectures."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models)
                  + video_architectures())


def video_architectures() -> list[str]:
    """Names of torchvision's video classifiers (3-D inputs ``(B, 3, T, H, W)``)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models.video)


def video_normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """The mean and std of a video classifier's weights' own transforms (Kinetics-400), and
    where they came from (the manifest's ``normalisation_from``)."""
    import torchvision

    weights = list(torchvision.models.get_model_weights(arch))[0]
    t = weights.transforms()
    return (tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std),
            f"torchvision {type(weights).__name__}.{weights.name} transforms (mean/std)")


def load_torchvision(arch: str, checkpoint: str | os.PathLike | None = None, *,
                     arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
                     trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A torchvision architecture, randomly initialised or loaded from a checkpoint.

    Parameters
    ----------
    arch : str
        A torchvision classification model name (e.g. ``resnet18``).
    checkpoint : path, optional
        State dict (plain, or under ``net``/``state_dict``/..., ``module.`` prefixes allowed).
        The number of classes is read from its last Linear layer and the input channels from
        its first convolution. Without a checkpoint the weights are random (seeded by ``seed``).
    arch_kwargs : dict, optional
        Extra constructor arguments (e.g. ``{"transform_input": True}`` for googlenet).
    channels : int, optional
        Input channels; must match the checkpoint when both are given.
    trust_pickle : bool, default=False
        Allow a checkpoint that pickles a whole module (runs code from the file).
    seed : int, default=0
        Seed of the random initialisation (and of layers the checkpoint does not cover).
    """
    import torchvision

    names = torchvision_architectures()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SourceError(f"unknown architecture {arch!r}{hint}; see torchvision.models."
                          "list_models() for the names, or use --torchscript/--factory")
    spec = PAPER_ARCHITECTURES.get(arch)
    kwargs = {**(spec.defaults if spec else {}), **(arch_kwargs or {})}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    options: dict[str, Any] = {"arch_kwargs": {}, "seed": seed}
    if isinstance(state, nn.Module):
        return pickled_module(state, ckpt, spec=spec, arch=arch)
    if (state is not None and "aux_logits" in kwargs and "aux_logits" not in (arch_kwargs or {})
            and any(p.startswith("aux") for k in state for p in k.split(".")[:3])):
        kwargs["aux_logits"] = True  # a googlenet/inception checkpoint saved with its aux heads

    def build(**kw: Any) -> nn.Module:
        torch.manual_seed(seed)
        try:
            return torchvision.models.get_model(arch, weights=None, **kw)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"cannot build {arch} with {kw}: {exc}") from None

    where = f"checkpoint {ckpt} for {arch}" if ckpt else arch
    model, used, _ = build_for_state(
        build, kwargs, state, spec.head if spec else "", spec.conv1 if spec else None, channels,
        where, "Check --arch (and --arch-kwarg), or name the right checkpoint.", notes=options)
    options["arch_kwargs"] = used
    norm = video_normalisation(arch) if arch in video_architectures() else None
    return LoadedModel(module=model, kind="torchvision", reference=arch, architecture=arch,
                       checkpoint=ckpt, options=jsonable(options), spec=spec,
                       normalisation=norm)


class TorchvisionSource(ConstructorSource):
    """``--arch NAME``: ``torchvision.models.get_model(NAME, weights=None)``."""

    kind = "torchvision"
    addressable = True
    summary = "a torchvision image or video classification architecture, e.g. resnet18, r3d_18"

    def names(self) -> list[str]:
        """The architectures it knows (:func:`torchvision_architectures`)."""
        return torchvision_architectures()

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_torchvision(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                                trust_pickle=trust_pickle, seed=seed)


SOURCES = (TorchvisionSource(),)
