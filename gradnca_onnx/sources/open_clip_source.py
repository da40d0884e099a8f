"""open_clip models (``--arch open_clip:NAME``): the image tower of a CLIP model, as open_clip
defines it.

* ``NAME`` is an open_clip architecture (``open_clip.list_models()``, e.g. ``ViT-B-32``), a
  Hugging Face Hub name ``hf-hub:ORG/NAME`` read offline from the local Hugging Face cache
  (BiomedCLIP is distributed so), or a local directory (``open_clip:/path/DIR`` or
  ``open_clip:local-dir:/path/DIR``) holding ``open_clip_config.json`` and its weights.
  Nothing is downloaded: the tower is built from the config with random weights, then filled
  from the directory's weights or ``--checkpoint`` (a whole CLIP state dict: its ``visual.``
  part is read).
* Only the image tower is built (the text tower is never needed, and a Hub model's text tower
  would need its tokenizer's config from the network). The module is
  :class:`OpenClipImageEmbeds`: ``model.encode_image(images)`` without normalisation, the
  embedding open_clip compares with text (``--features pooled``: the tower's pooled features
  before the projection).
* The input mean and std are the model's own preprocessing config (open_clip's
  ``PreprocessCfg`` with the config's ``preprocess_cfg`` on top, as ``visual.preprocess_cfg``
  holds it); its size, interpolation and resize mode are recorded in the manifest.
* ``--arch-kwarg KEY=VALUE`` sets a field of the config's ``vision_cfg`` (``image_size``,
  ``layers``, ``width``...) or ``embed_dim`` / ``quick_gelu``, as ``open_clip.create_model``'s
  overrides do (``image_size`` of a timm tower: ``set_input_size`` after loading).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..errors import SourceError, first_line, optional_import
from .base import LoadedModel, Member
from .building import build_for_state, jsonable, seeded, stem_channels
from .checkpoints import read_checkpoint
from .from_manifest import ConstructorSource, rebuild_located
from .hub import hub_directory, is_directory_reference, recorded_directory

#: The config file of an open_clip Hub repository or directory.
CONFIG_FILE = "open_clip_config.json"
#: Weight files of an open_clip Hub/local directory, in the order they are read.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: Where the input mean/std come from, for the manifest's ``normalisation_from``.
NORM_ORIGIN = "open_clip preprocess_cfg"
#: Top-level model config keys ``--arch-kwarg`` may set besides the ``vision_cfg`` fields.
MODEL_KEYS = ("embed_dim", "quick_gelu")
#: Prefixes under which a whole CLIP checkpoint holds the image tower (``module.``: DDP).
TOWER_PREFIXES = ("visual.", "module.visual.")


def _open_clip() -> Any:
    return optional_import("open_clip", "clip", "--arch open_clip:...")


class OpenClipImageEmbeds(nn.Module):
    """An open_clip image tower as ``forward(images) -> embedding``: what
    ``model.encode_image(images)`` returns (``normalize=False``), the tower's output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        # A CoCa tower also returns its tokens; encode_image keeps the pooled latent.
        return out[0] if isinstance(out, tuple) else out


class OpenClipPooled(nn.Module):
    """An open_clip image tower as ``forward(images) -> pooled features``: its output before
    the projection to the joint embedding space.

    For open_clip's ``VisionTransformer`` that is what the tower returns without its ``proj``
    (its own ``_embeds``, ``transformer`` and ``_pool``: the class token or average after
    ``ln_post``); for a timm trunk (``TimmModel``) the trunk's pre-logits, timm's
    ``forward_head(forward_features(x), pre_logits=True)``, before open_clip's projection head
    (or before the trunk's own classifier when that is the projection).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tower = self.model
        trunk = getattr(tower, "trunk", None)
        if trunk is not None:
            return trunk.forward_head(trunk.forward_features(images), pre_logits=True)
        tokens = tower.transformer(tower._embeds(images))
        pooled, _ = tower._pool(tokens)
        return pooled


def pooled_unsupported(tower: nn.Module) -> str | None:
    """Why ``tower`` has no pooled features apart from its projection (``None``: it has)."""
    kind = type(tower).__name__
    if kind == "TimmModel":
        if hasattr(getattr(tower, "head", None), "pool"):
            return "its attention pool is its projection"
        return None
    if kind == "VisionTransformer" and all(hasattr(tower, a) for a in
                                          ("_embeds", "transformer", "_pool")):
        return None
    if kind == "ModifiedResNet":
        return "its attention pool is its projection"
    return f"this open_clip ({_open_clip().__version__}) tower ({kind}) is not known here"


@dataclass
class _Named:
    """What an open_clip reference names: its model config (``embed_dim``, ``vision_cfg``...),
    the ``preprocess_cfg`` it states, and for a Hub or local directory its weights file."""

    arch: str
    model_cfg: dict[str, Any]
    preprocess: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None


def _is_named(name: str) -> bool:
    """Whether ``name`` is an open_clip architecture (not a Hub name or directory)."""
    return not (name.startswith("hf-hub:") or is_directory_reference(name))


def _named(name: str, trust_pickle: bool = False) -> _Named:
    """Resolve ``name``: an open_clip architecture, ``hf-hub:ORG/NAME`` or a directory."""
    open_clip = _open_clip()
    if name.startswith("hf-hub:"):
        hub_id = name[len("hf-hub:"):]
        directory = hub_directory(hub_id, "--arch open_clip:hf-hub:",
                                  "--arch open_clip:/path/DIR", marker=CONFIG_FILE)
        return _from_directory(directory, f"--arch open_clip:{name}",
                               hub_id.partition("@")[0], trust_pickle)
    if is_directory_reference(name):
        directory = Path(name.removeprefix("local-dir:"))
        return _from_directory(directory, f"--arch open_clip:{name}", directory.name,
                               trust_pickle)
    cfg = open_clip.get_model_config(name) if name else None
    if cfg is None:
        close = [m for m in open_clip.list_models() if name.lower() in m.lower()][:3]
        hint = f" (close: {', '.join(close)})" if close and name else ""
        raise SourceError(f"unknown open_clip model {name!r}{hint}; see open_clip.list_models()")
    return _Named(arch=name, model_cfg=cfg)


def _from_directory(directory: Path, where: str, arch: str, trust_pickle: bool) -> _Named:
    """The model config, preprocessing and weights of an open_clip directory (the layout of
    its Hub repositories: ``open_clip_config.json`` and ``open_clip_model.safetensors``)."""
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise SourceError(f"{where}: no {CONFIG_FILE} in {directory}; save the model there "
                          "as open_clip's push_to_hf_hub does (its config and weights)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{where}: {config} cannot be read as JSON "
                          f"({type(exc).__name__}: {first_line(exc)})") from None
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("vision_cfg"), dict):
        raise SourceError(f"{where}: {config} has no model_cfg with a vision_cfg; it is not "
                          "an open_clip model config")
    preprocess = data.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        raise SourceError(f"{where}: {config}: preprocess_cfg must be a JSON object")
    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if weights is None:
        raise SourceError(f"{where}: no weights ({' or '.join(WEIGHT_FILES)}) in {directory}")
    if weights.suffix == ".bin" and not trust_pickle:
        raise SourceError(f"{where}: {directory} holds pickled weights ({weights.name}), whose "
                          "loading runs code from the file; save them as "
                          f"{WEIGHT_FILES[0]}, or pass --trust-pickle only if you trust their "
                          "source")
    return _Named(arch=arch, model_cfg=model_cfg, preprocess=preprocess, weights=weights)


def _vision_fields() -> set[str]:
    from open_clip.model import CLIPVisionCfg

    return {f.name for f in dataclasses.fields(CLIPVisionCfg)} - {"timm_model_pretrained"}


def _split_kwargs(kwargs: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--arch-kwarg`` as (top-level model config keys, ``vision_cfg`` fields)."""
    allowed = _vision_fields()
    unknown = sorted(k for k in kwargs if k not in allowed and k not in MODEL_KEYS)
    if unknown:
        raise SourceError(f"{where}: --arch-kwarg {', '.join(unknown)} is not a vision_cfg "
                          f"field of open_clip nor one of {', '.join(MODEL_KEYS)}")
    top = {k: v for k, v in kwargs.items() if k in MODEL_KEYS}
    return top, {k: v for k, v in kwargs.items() if k not in MODEL_KEYS}


def _tower_builder(named: _Named, where: str) -> Any:
    """``build(**arch_kwargs) -> image tower`` as open_clip's model classes build it
    (``_build_vision_tower``), never with pretrained timm weights (a download)."""
    from open_clip import model as oc_model

    build_tower = getattr(oc_model, "_build_vision_tower", None)
    if build_tower is None:
        raise SourceError(f"{where}: this open_clip ({_open_clip().__version__}) has no "
                          "_build_vision_tower; install open_clip_torch 2.23 to 3.x")

    def create(**kw: Any) -> nn.Module:
        top, vision = _split_kwargs(kw, where)
        cfg = {**named.model_cfg, **top}
        vision_cfg = {**cfg["vision_cfg"], **vision, "timm_model_pretrained": False}
        try:
            return build_tower(cfg["embed_dim"], vision_cfg,
                               quick_gelu=bool(cfg.get("quick_gelu", False)), cast_dtype=None)
        except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
            raise SourceError(f"cannot build the open_clip image tower of {where} with {kw}: "
                              f"{type(exc).__name__}: {first_line(exc)}") from None

    # No num_classes: the tower has no classifier for build_for_state to resize.
    create.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
        for n in sorted(_vision_fields() | set(MODEL_KEYS))])
    return create


def _tower_state(state: dict[str, torch.Tensor], notes: dict[str, Any]
                 ) -> dict[str, torch.Tensor]:
    """The image tower's part of a whole CLIP state dict (a tower's own state unchanged)."""
    for prefix in TOWER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            notes["checkpoint_tower"] = prefix
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def resize_pos_embed(model: nn.Module, state: dict[str, torch.Tensor],
                     notes: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` with a ``positional_embedding`` saved for another image size resized to the
    tower's grid by open_clip's own ``resize_pos_embed`` (as its ``load_checkpoint`` does);
    ``notes`` gets ``pos_embed_resized_from`` and ``pos_embed_resized_to`` (the grids)."""
    from open_clip.model import resize_pos_embed as oc_resize

    own = getattr(model, "positional_embedding", None)
    saved = state.get("positional_embedding")
    if not (isinstance(own, torch.Tensor) and isinstance(saved, torch.Tensor)
            and saved.ndim == 2 and own.ndim == 2 and saved.shape != own.shape
            and saved.shape[1] == own.shape[1] and hasattr(model, "grid_size")):
        return state  # nothing to resize (another mismatch is refused by fit_state_dict)
    side = math.isqrt(saved.shape[0] - 1)
    if side * side != saved.shape[0] - 1:
        return state
    moved = {"visual.positional_embedding": saved}
    oc_resize(moved, SimpleNamespace(visual=model))
    notes["pos_embed_resized_from"] = [side, side]
    notes["pos_embed_resized_to"] = [int(g) for g in model.grid_size]
    return {**state, "positional_embedding": moved["visual.positional_embedding"]}


def preprocessing(tower: nn.Module, named: _Named) -> tuple[
        tuple[tuple[float, ...], tuple[float, ...], str] | None, dict[str, Any]]:
    """Set ``tower.preprocess_cfg`` as ``open_clip.create_model`` does (its defaults, the
    config's ``preprocess_cfg``, the tower's image size) and return ``(mean, std, origin)``
    (``None`` when the mean is not for the tower's input channels) and the rest of it."""
    from open_clip.model import get_model_preprocess_cfg, set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), named.preprocess)
    if getattr(tower, "image_size", None) is not None:
        cfg["size"] = tower.image_size
    set_model_preprocess_cfg(tower, cfg)
    cfg = get_model_preprocess_cfg(tower)
    prep = {k: v for k, v in cfg.items() if k not in ("mean", "std")}
    mean, std = tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"])
    chans = stem_channels(tower.named_parameters())
    if chans is not None and len(mean) != chans:
        prep["normalisation_not_used"] = (f"preprocess_cfg's mean/std are for {len(mean)} "
                                          f"channels, the model takes {chans}")
        return None, prep
    return (mean, std, NORM_ORIGIN), prep


def load_open_clip(name: str, checkpoint: str | os.PathLike | None = None, *,
                   arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
                   trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """The image tower of an open_clip model as :class:`OpenClipImageEmbeds`, filled from its
    directory's weights or ``checkpoint``.

    Parameters
    ----------
    name : str
        An open_clip model name (``open_clip.list_models()``), ``hf-hub:ORG/NAME`` read from
        the local Hugging Face cache, or a directory holding ``open_clip_config.json`` and
        weights (``/path/DIR`` or ``local-dir:/path/DIR``).
    checkpoint : path, optional
        A whole CLIP state dict (its ``visual.`` part is read) or the image tower's own
        (``.safetensors`` or ``torch.save``); for a Hub name or directory its weights file
        unless one is given. Without any the weights are random, seeded by ``seed``.
    arch_kwargs : dict, optional
        ``vision_cfg`` fields or ``embed_dim``/``quick_gelu`` that replace the config's.
    channels, trust_pickle, seed
        As :func:`~gradnca_onnx.sources.load_timm`.
    """
    _open_clip()
    named = _named(name, trust_pickle)
    where = f"open_clip:{name}"
    kwargs = dict(arch_kwargs or {})
    _split_kwargs(kwargs, where)
    ckpt = Path(checkpoint) if checkpoint is not None else named.weights
    notes: dict[str, Any] = {}
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    if isinstance(state, nn.Module):
        raise SourceError(f"checkpoint {ckpt} for {where} pickles a whole model; save its "
                          "state dict (torch.save(model.state_dict(), PATH)) and give that")
    if state is not None:
        state = _tower_state(state, notes)
        where = f"checkpoint {ckpt} for {where}"
    tower, used, _ = build_for_state(
        seeded(seed, _tower_builder(named, f"open_clip:{name}")), kwargs, state, "", None,
        channels, where, "Check --arch (and --arch-kwarg), or name the right checkpoint.",
        notes=notes, adapt=resize_pos_embed)
    if "image_size" in used and type(tower).__name__ == "TimmModel":
        # open_clip.create_model(force_image_size=...) resizes a timm trunk after loading.
        tower.set_input_size(used["image_size"])
    norm, prep = preprocessing(tower, named)
    options = {"arch_kwargs": used, "seed": seed, **notes, "preprocessing": prep,
               "tower": type(tower).__name__, "embedding": "image-embeds"}
    return LoadedModel(module=OpenClipImageEmbeds(tower).eval(), kind="open_clip",
                       reference=recorded_directory(name) if is_directory_reference(name)
                       else name, architecture=f"open_clip:{named.arch}", checkpoint=ckpt,
                       options=jsonable(options), head="", normalisation=norm)


class OpenClipSource(ConstructorSource):
    """``--arch open_clip:NAME``: the image tower of an open_clip model (its image embedding);
    NAME may be ``hf-hub:ORG/NAME`` (the local Hugging Face cache) or a directory.

    A member is rebuilt like a timm one: a named model from the manifest's options, seed and
    checkpoint; a Hub or directory model from the same name, its weights found again in the
    cache or directory (or given), once their sha256 is the manifest's.
    """

    kind = "open_clip"
    addressable = True
    since_schema = 3
    summary = ("an open_clip model name (open_clip.list_models()), e.g. open_clip:ViT-B-32, "
               "or open_clip:hf-hub:ORG/NAME (local Hugging Face cache) or open_clip:/path/DIR")
    feature_choices = {
        "image-embeds": "open_clip's image embedding, encode_image without normalisation "
                        "(default)",
        "pooled": "the image tower's pooled features before its projection",
    }

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_open_clip(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                              trust_pickle=trust_pickle, seed=seed)

    def select_features(self, loaded: LoadedModel, choice: str) -> LoadedModel:
        if choice not in self.feature_choices:
            return super().select_features(loaded, choice)
        tower = loaded.module.model
        if choice == "pooled":
            why = pooled_unsupported(tower)
            if why is not None:
                raise SourceError(f"--features pooled: {loaded.architecture} has no pooled "
                                  f"features apart from its projection ({why}); use "
                                  "image-embeds or module:PATH")
            module: nn.Module = OpenClipPooled(tower)
        else:
            module = OpenClipImageEmbeds(tower)
        return dataclasses.replace(loaded, module=module.eval(), head="",
                                   options={**loaded.options, "embedding": choice})

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        src = member.source
        if _is_named(src.reference):
            return super().rebuild(member, checkpoint=checkpoint, trust_pickle=trust_pickle)
        return rebuild_located(self, member, checkpoint, trust_pickle,
                               lambda ref: _named(ref, trust_pickle).weights)


SOURCES = (OpenClipSource(),)
