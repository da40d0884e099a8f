"""Model libraries: timm (``timm:NAME``), Hugging Face ``transformers`` (``hf:DIR``) and
MONAI (``monai:NAME``).

Each source builds the model from the library's own constructor with random weights (never a
download: timm with ``pretrained=False``, Hugging Face from a local directory with
``local_files_only=True`` and no remote code) and then loads the user's checkpoint, as
:func:`~gradnca_onnx.sources.load_torchvision` does. The libraries are optional (the ``zoo``
extra); a missing one is one :class:`~gradnca_onnx.errors.MissingExtraError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SourceError, first_line, optional_import
from .base import LoadedModel, Member, ModelSource
from .building import build_for_state, jsonable, kwargs_signature, seeded, stem_channels
from .checkpoints import read_checkpoint
from .custom import pickled_module
from .from_manifest import ConstructorSource, check_options, find_checkpoint


def _library(name: str, source: str) -> Any:
    return optional_import(name, "zoo", f"--arch {source}:...")


def load_timm(name: str, checkpoint: str | os.PathLike | None = None, *,
              arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
              trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A timm model, ``timm.create_model(name, pretrained=False, **arch_kwargs)``, then loaded
    from ``checkpoint`` (state dict or ``.safetensors``; classes and input channels read from
    it as for torchvision).

    Parameters
    ----------
    name : str
        A timm model name (``timm.list_models()``), e.g. ``vit_tiny_patch16_224``.
    checkpoint, arch_kwargs, channels, trust_pickle, seed
        As :func:`~gradnca_onnx.sources.load_torchvision` (``img_size`` and
        ``in_chans`` are timm's own keyword arguments).
    """
    timm = _library("timm", "timm")
    if not name or not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:3] if name else []
        hint = f" (close: {', '.join(close)})" if close else ""
        raise SourceError(f"unknown timm model {name!r}{hint}; see timm.list_models()")
    kwargs = dict(arch_kwargs or {})
    if channels is not None:
        kwargs.setdefault("in_chans", channels)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    if isinstance(state, nn.Module):
        return pickled_module(state, ckpt, arch=f"timm:{name}")
    if state is not None and "in_chans" not in kwargs:
        stem = stem_channels(state.items())
        if stem is not None:
            kwargs["in_chans"] = stem

    def create(**kw: Any) -> nn.Module:
        try:
            return timm.create_model(name, pretrained=False, **kw)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            raise SourceError(f"cannot build timm model {name} with {kw}: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None

    create.__signature__ = kwargs_signature()  # type: ignore[attr-defined]
    where = f"checkpoint {ckpt} for timm:{name}" if ckpt else f"timm:{name}"
    model, used, _ = build_for_state(
        seeded(seed, create), kwargs, state, "", None, None, where,
        "Check --arch (and --arch-kwarg), or name the right checkpoint.")
    return LoadedModel(module=model, kind="timm", reference=name, architecture=f"timm:{name}",
                       checkpoint=ckpt, options=jsonable({"arch_kwargs": used, "seed": seed}))


def load_monai(name: str, checkpoint: str | os.PathLike | None = None, *,
               arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
               trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A MONAI network, ``monai.networks.nets.<name>(**arch_kwargs)``, then loaded from
    ``checkpoint``.

    Defaults for MONAI's required arguments: ``spatial_dims=2`` (2-D images),
    ``in_channels`` = ``channels`` or 3 (or the checkpoint's), ``out_channels`` = the
    checkpoint's classes, else 2.
    """
    monai = _library("monai", "monai")
    nets = monai.networks.nets
    fn = getattr(nets, name, None) if name and not name.startswith("_") else None
    if not (isinstance(fn, type) and issubclass(fn, nn.Module)):
        raise SourceError(f"unknown MONAI network {name!r}; see monai.networks.nets (e.g. "
                         "DenseNet121, EfficientNetBN, SEResNet50)")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    if isinstance(state, nn.Module):
        return pickled_module(state, ckpt, arch=f"monai:{name}")
    kwargs = {"spatial_dims": 2, **(arch_kwargs or {})}
    stem = stem_channels(state.items()) if state is not None else None
    kwargs.setdefault("in_channels", channels or stem or 3)
    if state is None:
        kwargs.setdefault("out_channels", 2)
    if kwargs.get("spatial_dims") != 2:
        raise SourceError(f"monai:{name} with spatial_dims={kwargs['spatial_dims']!r}: only 2-D "
                         "networks (spatial_dims=2) take the 2-D images a target holds")

    def create(**kw: Any) -> nn.Module:
        kw.setdefault("out_channels", 2)
        try:
            return fn(**kw)
        except (TypeError, ValueError, AssertionError) as exc:
            raise SourceError(f"cannot build monai:{name} with {kw}: {type(exc).__name__}: "
                             f"{first_line(exc)}") from None

    create.__signature__ = kwargs_signature("out_channels")  # type: ignore[attr-defined]
    where = f"checkpoint {ckpt} for monai:{name}" if ckpt else f"monai:{name}"
    model, used, _ = build_for_state(
        seeded(seed, create), kwargs, state, "", None, None, where,
        "Check --arch (and --arch-kwarg), or name the right checkpoint.",
        classes_arg="out_channels")
    return LoadedModel(module=model, kind="monai", reference=name, architecture=f"monai:{name}",
                       checkpoint=ckpt, options=jsonable({"arch_kwargs": used, "seed": seed}))


class HFImageClassifier(nn.Module):
    """A Hugging Face image classifier as ``forward(images) -> logits`` (a plain tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits


def load_hf(directory: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
            arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
            trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A Hugging Face ``transformers`` image classifier saved with ``save_pretrained`` in a
    local directory (``config.json`` + ``model.safetensors``).

    Loaded with ``AutoModelForImageClassification.from_pretrained(directory,
    local_files_only=True, trust_remote_code=False)``: nothing is downloaded and no code from
    the directory runs. Pickled weights (``pytorch_model.bin``) are read only with
    ``trust_pickle``. The weights are inside the directory, so ``checkpoint`` and
    ``arch_kwargs`` are refused.
    """
    transformers = _library("transformers", "hf")
    d = Path(directory)
    if checkpoint is not None or arch_kwargs:
        raise SourceError(f"--arch hf:{d} reads its weights and configuration from the directory: "
                         "drop --checkpoint/--arch-kwarg")
    if not (d / "config.json").is_file():
        raise SourceError(f"--arch hf:{d}: no config.json in {d}; save the model there with "
                         "model.save_pretrained(DIR)")
    weights = sorted(d.glob("*.safetensors"))
    if not weights and not trust_pickle:
        pickled = sorted(p.name for p in d.glob("*.bin"))
        if pickled:
            raise SourceError(f"--arch hf:{d} holds pickled weights ({', '.join(pickled)}), "
                             "whose loading runs code from the file; re-save them with "
                             "save_pretrained(DIR, safe_serialization=True), or pass "
                             "--trust-pickle only if you trust their source")
        raise SourceError(f"--arch hf:{d}: no model weights (*.safetensors) in {d}")
    torch.manual_seed(seed)
    transformers.utils.logging.set_verbosity_error()  # no progress bars or load reports
    transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            str(d), local_files_only=True, trust_remote_code=False,
            use_safetensors=bool(weights))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise SourceError(f"--arch hf:{d} could not be loaded as an image classifier: "
                         f"{type(exc).__name__}: {first_line(exc)}") from None
    cfg = model.config
    want = getattr(cfg, "num_channels", None)
    if channels is not None and want is not None and channels != want:
        raise SourceError(f"--arch hf:{d}: --channels {channels} but its config says "
                         f"num_channels={want}")
    arch = (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
    ckpt = weights[0] if len(weights) == 1 else None
    return LoadedModel(module=HFImageClassifier(model).eval(), kind="hf", reference=d.name,
                       architecture=f"hf:{arch}", checkpoint=ckpt,
                       options=jsonable({"model_type": getattr(cfg, "model_type", None),
                                          "seed": seed}))




class TimmSource(ConstructorSource):
    """``--arch timm:NAME``: ``timm.create_model(NAME, pretrained=False, **kwargs)``."""

    kind = "timm"
    addressable = True
    since_schema = 3
    summary = "a timm model name (timm.list_models()), e.g. timm:resnet18"

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_timm(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                         trust_pickle=trust_pickle, seed=seed)


class MonaiSource(ConstructorSource):
    """``--arch monai:NAME``: ``monai.networks.nets.NAME(**kwargs)``, 2-D."""

    kind = "monai"
    addressable = True
    since_schema = 3
    summary = "a MONAI network class (monai.networks.nets), e.g. monai:DenseNet121"

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_monai(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                          trust_pickle=trust_pickle, seed=seed)


class HFSource(ModelSource):
    """``--arch hf:DIR``: a Hugging Face image classifier saved with ``save_pretrained``.

    The manifest records the directory's name and its weights file (name and sha256); a
    member is rebuilt from the directory of that name next to the member, in its zoo or beside
    the zoo, or from the one given (``--checkpoint DIR/model.safetensors``), once the weights
    file's sha256 is the manifest's.
    """

    kind = "hf"
    addressable = True
    since_schema = 3
    summary = "a local save_pretrained directory of a transformers image classifier"
    reads_path = True

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_hf(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                       trust_pickle=trust_pickle, seed=seed)

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        seed, _ = check_options(member)
        src = member.source
        if src.checkpoint is None:
            # Sharded or pickled weights: the manifest names no one file whose hash would say
            # that a directory of the same name holds the exported weights.
            if checkpoint is None or not Path(checkpoint).is_dir():
                raise SourceError(
                    f"{member.path} was exported from the Hugging Face directory "
                    f"{src.reference!r}, whose weights the manifest does not name (sharded or "
                    "pickled); give that directory (--checkpoint DIR; checkpoint=DIR in Python) to "
                    "rebuild it")
            directory = Path(checkpoint)
        else:
            directory = find_checkpoint(member, checkpoint, folder=src.reference).parent
        return load_hf(directory, channels=member.manifest.input.channels,
                       trust_pickle=trust_pickle, seed=seed)


SOURCES = (TimmSource(), HFSource(), MonaiSource())
