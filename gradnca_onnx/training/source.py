"""The one place where a source specification becomes a ``torch.nn.Module`` to fine-tune.

Every model comes from the source registry (:mod:`gradnca_onnx.sources`), in the language of
``export --arch``: a torchvision name, ``timm:NAME``, ``hf:DIR``, ``monai:NAME``, a plugin's
``KIND:REFERENCE``, or a ``package.module:callable`` factory, each with an optional
checkpoint; or a Python module. This module decides what a specification is and records the
source's identity for the run store.

Exported model directories (a zoo member: ``features.onnx``, ``grads.onnx``,
``manifest.json``) hold ONNX inference graphs, which cannot be trained here. Their manifest
says how the weights were built, so a member is fine-tuned by rebuilding its model from that
description (:func:`gradnca_onnx.sources.rebuild`): a randomly initialised torchvision, timm,
MONAI or factory model from its recorded seed and options, a checkpointed one (a Hugging Face
directory included) when the checkpoint is found (``checkpoint=``, or the file the manifest
names next to the member or its zoo) and its sha256 is the manifest's. Factories run code a zoo
file names, so only with ``trust_code``; TorchScript files, Python modules and imported ONNX
files cannot be rebuilt and are refused with a message saying what to pass instead.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .. import sources
from ..errors import MissingExtraError, SourceError, first_line
from ..sources.building import stem_channels

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Source:
    """A source model ready to be copied for each fine-tuning run.

    Attributes
    ----------
    module : nn.Module
        The pre-trained model (never trained in place: each run works on a deep copy).
    name : str
        Row name in the ground-truth table (a manifest's model name, or the loader's default).
    identity : dict
        JSON-ready description of the weights (kind, reference, checkpoint and weights
        sha256, constructor options); part of every run key.
    mean, std : tuple of float
        Input normalisation of the source (REFERENCE 1: ImageNet statistics for
        ImageNet-pretrained sources, 0.5/0.5 otherwise).
    channels : int
        Input channels the model takes.
    head : str or None
        Module path of the final layer to replace (``None``: the last ``nn.Linear`` the
        forward pass calls).
    """

    module: nn.Module
    name: str
    identity: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    head: str | None = None
    input_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """What of the source determines a run's result (for :func:`~.store.run_key`)."""
        return {**self.identity, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels, "head": self.head}


def weights_sha256(module: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a module's state dict."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\0".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def load_source(spec: Union[str, PathLike, nn.Module, Any], *, arch: str | None = None,
                checkpoint: PathLike | None = None, normalisation: str | None = None,
                name: str | None = None, head: str | None = None, trust_pickle: bool = False,
                seed: int = 0, trust_code: bool = False,
                arch_kwargs: dict[str, Any] | None = None) -> Source:
    """Turn a source specification into a :class:`Source`.

    Parameters
    ----------
    spec : str, path, nn.Module or sources.LoadedModel
        * an exported model directory (with ``manifest.json``): rebuilt from its manifest
          (see the module docstring);
        * a checkpoint file (state dict, as the sources read them): needs ``arch``;
        * what ``export --arch`` names: a torchvision name (``resnet18``), ``timm:NAME``,
          ``hf:DIR``, ``monai:NAME`` (random initialisation seeded by ``seed``, or
          ``checkpoint``);
        * ``package.module:callable``: a factory (with an optional ``checkpoint``);
        * an ``nn.Module`` or a model from :mod:`gradnca_onnx.sources`.
    arch : str, optional
        Architecture of a checkpoint file, in the same language.
    checkpoint : path, optional
        Weights for a named ``spec``, or the checkpoint of an exported directory (for a
        Hugging Face member: a weights file of its ``save_pretrained`` directory).
    normalisation : str, optional
        ``imagenet``, ``half`` or ``MEAN,STD`` (see ``zoo.parse_normalisation``). Default: the
        manifest's for a model directory, else ``half`` (REFERENCE 1: mean/std 0.5 for every
        source that is not ImageNet-pretrained; say ``imagenet`` for ImageNet weights).
    name : str, optional
        Row name in the ground-truth table.
    head : str, optional
        Module path of the final layer to replace (default: the last Linear called).
    trust_pickle : bool
        Allow checkpoints that pickle whole modules (runs code from the file).
    seed : int
        Seed of a random initialisation.
    trust_code : bool
        Allow an exported directory whose manifest names a ``factory`` source to be rebuilt:
        that imports the named module and calls it with the manifest's options, i.e. runs code
        a zoo file names. Off by default (``finetune --trust-code``).
    arch_kwargs : dict, optional
        Constructor keyword arguments of a named source (``--arch-kwarg``).

    Raises
    ------
    ValueError
        A source that cannot be loaded or trained, with what to pass instead.
    """
    from ..zoo import parse_normalisation

    try:
        loaded, info = _load(spec, arch=arch, checkpoint=checkpoint, name=name,
                             trust_pickle=trust_pickle, seed=seed, trust_code=trust_code,
                             arch_kwargs=arch_kwargs)
    except ValueError:
        raise
    except (RuntimeError, TypeError, AttributeError, ImportError, OSError) as exc:
        if isinstance(exc, MissingExtraError):
            raise
        first = first_line(exc, 200)
        raise SourceError(f"source {spec!r} cannot be loaded: {type(exc).__name__}: {first}"
                          ) from None
    module = loaded.module
    if isinstance(module, torch.jit.ScriptModule):
        raise SourceError(f"source {spec!r} is TorchScript; {_not_trainable()}")
    if loaded.head == "" and head is None:
        # A headless encoder (its output is its library's embedding): the new head is added
        # on that embedding, as its library's own classifier would read it.
        from .head import WithHead

        module, head = WithHead(module), "head"
    channels = int(info.get("channels") or stem_channels(module.named_parameters()) or 3)
    if normalisation is not None:
        mean, std = parse_normalisation(normalisation, channels)
    elif "mean" in info:
        mean, std = info["mean"], info["std"]
    elif loaded.normalisation is not None:  # the model's own preprocessing config
        mean, std = parse_normalisation(
            f"{':'.join(map(repr, loaded.normalisation[0]))},"
            f"{':'.join(map(repr, loaded.normalisation[1]))}", channels)
    else:
        mean, std = parse_normalisation("half", channels)
    default = (loaded.reference.replace(":", ".") if loaded.kind == "factory"
               else loaded.default_name)
    return Source(module=module, name=name or info.get("name") or default,
                  identity=_identity(loaded), mean=tuple(float(v) for v in mean),
                  std=tuple(float(v) for v in std), channels=channels, head=head,
                  input_size=info.get("input_size"),
                  extra={k: v for k, v in info.items() if k == "pretrained_on"})


def _identity(loaded: Any) -> dict[str, Any]:
    """What identifies the weights in a run key (JSON-ready)."""
    identity = {"kind": loaded.kind, "reference": loaded.reference,
                "architecture": loaded.architecture,
                "checkpoint_sha256": loaded.checkpoint_sha256(),
                "weights_sha256": weights_sha256(loaded.module), "options": loaded.options}
    json.dumps(identity)  # must be JSON-ready for the run key
    return identity


def _not_trainable() -> str:
    return sources.get("torchscript").not_trainable  # type: ignore[attr-defined]


def _load(spec: Any, *, arch: str | None, checkpoint: PathLike | None, name: str | None,
          trust_pickle: bool, seed: int, trust_code: bool,
          arch_kwargs: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """The loaded model ``spec`` names, and what its manifest says (a member directory)."""
    if isinstance(spec, sources.LoadedModel):
        return spec, {}
    if isinstance(spec, nn.Module):
        return sources.get("module").wrap(spec, name=name), {}  # type: ignore[attr-defined]
    text = os.fspath(spec)
    p = Path(text)
    if p.is_dir():
        return _from_model_dir(p, checkpoint, trust_pickle, trust_code)
    named = dict(checkpoint=checkpoint, trust_pickle=trust_pickle, seed=seed,
                 arch_kwargs=arch_kwargs)
    if p.is_file():
        return _from_file(p, arch, **named), {}
    if ":" in text or text.isidentifier():
        if arch is not None:
            raise SourceError(f"--arch is for checkpoint files; {text!r} names a model")
        return _load_named(text, **named), {}
    raise SourceError(f"source {text!r} does not exist; give an exported model directory, a "
                      "checkpoint with --arch, a torchvision name (or timm:NAME, hf:DIR, "
                      "monai:NAME) or package.module:callable")


def _from_model_dir(path: Path, checkpoint: PathLike | None, trust_pickle: bool,
                    trust_code: bool) -> tuple[Any, dict[str, Any]]:
    """A member's model rebuilt from its manifest, and what the manifest says of its name
    and input."""
    loaded, member = sources.rebuild(path, checkpoint=checkpoint, trust_pickle=trust_pickle,
                                     trust_code=trust_code)
    m = member.manifest
    return loaded, {"name": m.name, "mean": tuple(m.input.mean), "std": tuple(m.input.std),
                    "channels": m.input.channels, "input_size": m.input.height,
                    "pretrained_on": m.pretrained_on}


def _from_file(p: Path, arch: str | None, *, checkpoint: PathLike | None, trust_pickle: bool,
               seed: int, arch_kwargs: dict[str, Any] | None) -> Any:
    """A checkpoint file given as the source, built by ``arch``."""
    from ..sources.checkpoints import is_exported_program_archive, is_torchscript_archive

    if is_torchscript_archive(p):
        raise SourceError(f"{p} is a TorchScript file; {_not_trainable()}")
    if is_exported_program_archive(p):
        why = sources.get("torch_export").not_rebuildable
        raise SourceError(f"{p} is a torch.export program, which {why}")
    if arch is None:
        raise SourceError(f"checkpoint {p} needs --arch: a torchvision name (e.g. resnet18), "
                          "timm:NAME, monai:NAME or package.module:callable")
    if checkpoint is not None:
        raise SourceError("give the checkpoint once: as --source or as --checkpoint")
    return _load_named(arch, checkpoint=p, trust_pickle=trust_pickle, seed=seed,
                       arch_kwargs=arch_kwargs)


def _load_named(ref: str, *, checkpoint: PathLike | None, trust_pickle: bool, seed: int,
                arch_kwargs: dict[str, Any] | None) -> Any:
    """What ``ref`` names in the ``--arch`` language (factories allowed)."""
    source, reference = sources.resolve(ref, factories=True, option="--source")
    if source.kind == sources.registry.DEFAULT_KIND:
        names = source.names()  # type: ignore[attr-defined]
        if reference not in names:
            close = difflib.get_close_matches(reference, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SourceError(f"source {ref!r} is not a file, a directory or a torchvision "
                              f"architecture{hint}; give an exported model directory, a "
                              "checkpoint with --arch, a torchvision name (or timm:NAME, "
                              "hf:DIR, monai:NAME) or package.module:callable")
    return source.load(reference, checkpoint, kwargs=arch_kwargs, trust_pickle=trust_pickle,
                       seed=seed)
