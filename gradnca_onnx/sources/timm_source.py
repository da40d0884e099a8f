"""timm models (``--arch timm:NAME``), as timm defines them.

* The model is built by ``timm.create_model(NAME, pretrained=False)`` (never a download) and
  filled from the user's checkpoint. ``NAME`` may also be a Hugging Face Hub name
  (``hf-hub:timm/vit_small_patch14_dinov2.lvd142m``), read offline from the local Hugging Face
  cache, or a local directory (``timm:/path/DIR`` or ``timm:local-dir:/path/DIR``) holding
  timm's ``config.json`` and ``model.safetensors`` (``timm.models.save_for_hf``).
* A headless model (``num_classes=0``, or a classifier that is an ``Identity``) exports the
  embedding timm defines, ``forward_head(forward_features(x), pre_logits=True)``
  (:class:`TimmEmbedding`): the class token or the average, as its own ``global_pool`` says.
* The input mean and std are the model's ``pretrained_cfg`` (``--norm`` still wins); its
  input size, interpolation and crop are recorded in the manifest.
* A ViT checkpoint saved at another image size has its position embeddings resampled to the
  built model's grid by timm's own ``resample_abs_pos_embed``, and the manifest says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SourceError, first_line, optional_import
from .base import LoadedModel, Member
from .building import build_for_state, jsonable, kwargs_signature, seeded, stem_channels
from .checkpoints import read_checkpoint
from .custom import pickled_module
from .from_manifest import ConstructorSource, rebuild_located
from .hub import hub_directory, is_directory_reference, recorded_directory

#: Weight files of a timm Hub/local directory, in the order they are read.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: The ``pretrained_cfg`` fields recorded in the manifest besides mean and std.
PREPROCESSING = ("input_size", "interpolation", "crop_pct", "crop_mode")
#: Where the input mean/std come from, for the manifest's ``normalisation_from``.
NORM_ORIGIN = "timm pretrained_cfg"


def _timm() -> Any:
    return optional_import("timm", "zoo", "--arch timm:...")


#: The ``--features`` choices of a timm model.
TIMM_FEATURES = {
    "pre-logits": "forward_head(forward_features(x), pre_logits=True): the model's own pooling",
    "cls": "the class token of forward_features (after the final norm)",
    "mean": "forward_features averaged over the patch tokens (or a feature map's height and "
            "width)",
}


class TimmEmbedding(nn.Module):
    """A timm model as ``forward(images) -> embedding``: by default (``how="pre-logits"``)
    timm's own ``forward_head(forward_features(images), pre_logits=True)``; ``cls`` the class
    token of ``forward_features``; ``mean`` its patch tokens averaged (the model's
    ``num_prefix_tokens`` left out), or a feature map's height and width."""

    def __init__(self, model: nn.Module, how: str = "pre-logits") -> None:
        super().__init__()
        self.model = model
        self.how = how

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(images)
        if self.how == "pre-logits":
            return self.model.forward_head(tokens, pre_logits=True)
        if tokens.ndim == 4:  # a CNN's feature map (NCHW, or NHWC for timm's NHWC models)
            nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
            return tokens.mean(dim=(1, 2) if nhwc else (2, 3))
        if self.how == "cls":
            return tokens[:, 0]
        prefix = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        return tokens[:, prefix:].mean(dim=1)


def timm_features(loaded: LoadedModel, choice: str) -> LoadedModel:
    """``loaded`` (a timm model) with the embedding ``choice`` names (:data:`TIMM_FEATURES`).

    ``pre-logits`` of a classifier is its classifier's input already (kept, with its logits);
    any other choice replaces the classifier (no logits).

    Raises
    ------
    SourceError
        ``cls`` of a model without a class token.
    """
    import dataclasses

    module = loaded.module
    model = module.model if isinstance(module, TimmEmbedding) else module
    if choice == "pre-logits" and not isinstance(module, TimmEmbedding):
        return loaded
    if choice == "cls" and getattr(model, "cls_token", None) is None:
        raise SourceError(f"--features cls: the timm model {loaded.architecture} has no class "
                          "token; choose pre-logits or mean")
    return dataclasses.replace(loaded, module=TimmEmbedding(model, choice).eval(), head="",
                               options={**loaded.options, "embedding": choice})


@dataclass
class _Named:
    """What a timm reference names: the architecture, and for a Hub or local directory its
    ``pretrained_cfg``, saved constructor arguments and weights file."""

    arch: str
    pretrained_cfg: dict[str, Any] | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None


def _named(name: str) -> _Named:
    """Resolve ``name``: a timm architecture, ``hf-hub:ORG/NAME`` or a directory."""
    timm = _timm()
    if name.startswith("hf-hub:") or is_directory_reference(name):
        if name.startswith("hf-hub:"):
            directory = hub_directory(name[len("hf-hub:"):], "--arch timm:hf-hub:", "--arch timm:/path/DIR")
        else:
            directory = Path(name.removeprefix("local-dir:"))
        return _from_directory(directory, f"--arch timm:{name}")
    if not name or not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:3] if name else []
        hint = f" (close: {', '.join(close)})" if close else ""
        raise SourceError(f"unknown timm model {name!r}{hint}; see timm.list_models()")
    return _Named(arch=name)


def _from_directory(directory: Path, where: str) -> _Named:
    """The architecture, config and weights of a timm ``save_for_hf`` directory."""
    from timm.models._hub import load_model_config_from_path

    config = directory / "config.json"
    if not config.is_file():
        raise SourceError(f"{where}: no config.json in {directory}; save the model there with "
                          "timm.models.save_for_hf(model, DIR, safe_serialization=True)")
    try:
        cfg, arch, model_args = load_model_config_from_path(directory)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{where}: {config} is not a timm model config "
                          f"({type(exc).__name__}: {first_line(exc)})") from None
    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if weights is None:
        raise SourceError(f"{where}: no weights ({' or '.join(WEIGHT_FILES)}) in {directory}")
    if not _timm().is_model(arch):
        raise SourceError(f"{where}: {config} names the architecture {arch!r}, which this timm "
                          f"({_timm().__version__}) does not know; upgrade timm")
    cfg = {k: v for k, v in cfg.items() if k not in ("file", "source", "hf_hub_id")}
    return _Named(arch=arch, pretrained_cfg=cfg, model_args=dict(model_args or {}),
                  weights=weights)


def load_timm(name: str, checkpoint: str | os.PathLike | None = None, *,
              arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
              trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A timm model, ``timm.create_model(name, pretrained=False, **arch_kwargs)``, then loaded
    from ``checkpoint`` (state dict or ``.safetensors``; classes and input channels read from
    it as for torchvision).

    Parameters
    ----------
    name : str
        A timm model name (``timm.list_models()``), e.g. ``vit_tiny_patch16_224``; a Hub name
        ``hf-hub:ORG/NAME`` read from the local Hugging Face cache; or a directory holding
        timm's ``config.json`` and weights (``/path/DIR`` or ``local-dir:/path/DIR``).
    checkpoint, arch_kwargs, channels, trust_pickle, seed
        As :func:`~gradnca_onnx.sources.load_torchvision` (``img_size`` and
        ``in_chans`` are timm's own keyword arguments). For a Hub name or a directory the
        checkpoint is its weights file unless one is given.
    """
    timm = _timm()
    named = _named(name)
    kwargs = {**named.model_args, **(arch_kwargs or {})}
    if channels is not None:
        kwargs.setdefault("in_chans", channels)
    ckpt = Path(checkpoint) if checkpoint is not None else named.weights
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    if isinstance(state, nn.Module):
        return pickled_module(state, ckpt, arch=f"timm:{name}")
    if state is not None and "in_chans" not in kwargs:
        stem = stem_channels(state.items())
        if stem is not None:
            kwargs["in_chans"] = stem
    cfg = {"pretrained_cfg": named.pretrained_cfg} if named.pretrained_cfg else {}

    def create(**kw: Any) -> nn.Module:
        try:
            return timm.create_model(named.arch, pretrained=False, **cfg, **kw)
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            raise SourceError(f"cannot build timm model {named.arch} with {kw}: "
                              f"{type(exc).__name__}: {first_line(exc)}") from None

    create.__signature__ = kwargs_signature()  # type: ignore[attr-defined]
    where = f"checkpoint {ckpt} for timm:{name}" if ckpt else f"timm:{name}"
    notes: dict[str, Any] = {}
    model, used, _ = build_for_state(
        seeded(seed, create), kwargs, state, "", None, None, where,
        "Check --arch (and --arch-kwarg), or name the right checkpoint.", notes=notes,
        adapt=resample_pos_embed)
    return _loaded(model, name, named.arch, ckpt,
                   {"arch_kwargs": used, "seed": seed, **notes})


def _loaded(model: nn.Module, name: str, arch: str, ckpt: Path | None,
            options: dict[str, Any]) -> LoadedModel:
    """The LoadedModel of a built timm model: headless ones wrapped to return timm's
    embedding, the preprocessing of its ``pretrained_cfg`` recorded."""
    norm, prep = data_config(model)
    if prep:
        options["preprocessing"] = prep
    head = None
    if is_headless(model):
        model, head = TimmEmbedding(model).eval(), ""
        options["embedding"] = "pre-logits"
    reference = recorded_directory(name) if is_directory_reference(name) else name
    return LoadedModel(module=model, kind="timm", reference=reference, architecture=f"timm:{arch}",
                       checkpoint=ckpt, options=jsonable(options), head=head,
                       normalisation=norm)


def is_headless(model: nn.Module) -> bool:
    """Whether the timm model has no classifier (``num_classes=0``: an ``Identity``)."""
    get = getattr(model, "get_classifier", None)
    if get is None or not hasattr(model, "forward_head"):
        return False
    classifier = get()
    return getattr(model, "num_classes", None) == 0 or isinstance(classifier, nn.Identity)


def data_config(model: nn.Module) -> tuple[tuple[tuple[float, ...], tuple[float, ...], str]
                                           | None, dict[str, Any]]:
    """The model's ``pretrained_cfg`` as timm resolves it: ``(mean, std, origin)`` (``None``
    when it gives no mean/std for the model's input channels) and the rest of its
    preprocessing (input size, interpolation, crop)."""
    from timm.data import resolve_model_data_config

    try:
        cfg = resolve_model_data_config(model)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, {}
    prep = {k: cfg[k] for k in PREPROCESSING if k in cfg}
    mean, std = cfg.get("mean"), cfg.get("std")
    chans = stem_channels(model.named_parameters())
    if mean is None or std is None or (chans is not None and len(mean) != chans):
        if mean is not None:
            prep["normalisation_not_used"] = (f"pretrained_cfg's mean/std are for {len(mean)} "
                                              f"channels, the model takes {chans}")
        return None, prep
    norm = (tuple(float(m) for m in mean), tuple(float(s) for s in std), NORM_ORIGIN)
    return norm, prep


def resample_pos_embed(model: nn.Module, state: dict[str, torch.Tensor],
                       notes: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` with an absolute position embedding saved for another image size resampled
    to ``model``'s patch grid, by timm's own ``resample_abs_pos_embed`` (as timm does when it
    loads pretrained weights at another ``img_size``); ``notes`` gets
    ``pos_embed_resized_from`` (the checkpoint's grid) and ``pos_embed_resized_to``."""
    from timm.layers import resample_abs_pos_embed

    own = getattr(model, "pos_embed", None)
    saved = state.get("pos_embed")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if not (isinstance(own, torch.Tensor) and isinstance(saved, torch.Tensor) and grid
            and own.ndim == 3 and saved.ndim == 3 and saved.shape != own.shape
            and saved.shape[-1] == own.shape[-1]):
        return state  # nothing to resample (a shape mismatch of another kind is refused later)
    prefix = 0 if getattr(model, "no_embed_class", False) else int(
        getattr(model, "num_prefix_tokens", 1))
    side = (saved.shape[1] - prefix) ** 0.5
    if side != int(side) or own.shape[1] - prefix != grid[0] * grid[1]:
        return state  # not a square grid timm can resample: fit_state_dict says what differs
    old = [int(side), int(side)]
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(saved, new_size=list(grid), old_size=old,
                                                num_prefix_tokens=prefix)
    notes["pos_embed_resized_from"] = old
    notes["pos_embed_resized_to"] = [int(g) for g in grid]
    return state


class TimmSource(ConstructorSource):
    """``--arch timm:NAME``: ``timm.create_model(NAME, pretrained=False, **kwargs)``; NAME may
    be ``hf-hub:ORG/NAME`` (the local Hugging Face cache) or a directory.

    A Hub or directory member is rebuilt from the same name (its weights file found again in
    the cache or directory, or given), once the weights' sha256 is the manifest's.
    """

    kind = "timm"
    addressable = True
    since_schema = 3
    summary = ("a timm model name (timm.list_models()), e.g. timm:resnet18, or "
               "timm:hf-hub:ORG/NAME (local Hugging Face cache) or timm:/path/DIR")
    feature_choices = TIMM_FEATURES

    def select_features(self, loaded: LoadedModel, choice: str) -> LoadedModel:
        from .features import check_choice

        check_choice(choice, self.feature_choices, "a timm model")
        if choice.startswith("module:"):
            return super().select_features(loaded, choice)
        return timm_features(loaded, choice)

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_timm(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                         trust_pickle=trust_pickle, seed=seed)

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        src = member.source
        if not (src.reference.startswith("hf-hub:") or is_directory_reference(src.reference)):
            return super().rebuild(member, checkpoint=checkpoint, trust_pickle=trust_pickle)
        return rebuild_located(self, member, checkpoint, trust_pickle,
                               lambda ref: _named(ref).weights)


SOURCES = (TimmSource(),)
