"""Hugging Face ``transformers`` models saved in a local directory (``hf:DIR``): image
classifiers and headless encoders (timm and MONAI live in ``timm_source`` and
``monai_source``).

The model is built from the library's own classes (never a download: ``local_files_only=True``
and no remote code); the directory's weights are loaded, and its ``preprocessor_config.json``
gives the input normalisation. The library is optional (the ``zoo`` extra); a missing one is
one :class:`~gradnca_onnx.errors.MissingExtraError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, SourceError, first_line, optional_import
from .base import LoadedModel, Member, ModelSource
from .building import jsonable
from .from_manifest import check_options, find_checkpoint


def _library(name: str, source: str) -> Any:
    return optional_import(name, "zoo", f"--arch {source}:...")


class HFImageClassifier(nn.Module):
    """A Hugging Face image classifier as ``forward(images) -> logits`` (a plain tensor)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits


#: The embedding of a headless Hugging Face encoder, by ``model_type``: what the library's own
#: classification head of that type reads (``cls``: the final hidden state of the class token,
#: as ``ViTForImageClassification`` reads it; DINOv2's ``pooler_output`` is the same tensor),
#: CLIP's image embedding (``get_image_features``: the vision tower's pooled output through the
#: projection), or the model's ``pooler_output`` (Swin, ConvNeXt: the average its classifier
#: reads; CLIP's vision tower: the post-layernorm class token). Other types: ``pooler_output``
#: when the model returns one, else ``cls``.
HF_EMBEDDINGS = {"vit": "cls", "deit": "cls", "dinov2": "cls", "dinov2_with_registers": "cls",
                 "clip": "clip-image-embeds", "clip_vision_model": "pooler",
                 "siglip_vision_model": "pooler", "swin": "pooler", "swinv2": "pooler",
                 "convnext": "pooler", "convnextv2": "pooler"}


#: Tokens before the patch tokens, by ``model_type``: the class token (and DeiT's distillation
#: token); DINOv2 with registers adds ``config.num_register_tokens``. Types not listed have no
#: class token (Swin, SigLIP), so ``cls`` is refused for them.
CLASS_TOKENS = {"vit": 1, "deit": 2, "dinov2": 1, "dinov2_with_registers": 1,
                "clip_vision_model": 1, "clip": 1}
#: The ``--features`` choices of a Hugging Face model.
HF_FEATURES = {
    "cls": "the final hidden state of the class token",
    "mean": "the final hidden states of the patch tokens, averaged",
    "pooler": "the model's pooler_output",
    "image-embeds": "CLIP's projected image embedding (get_image_features)",
}


class HFEmbedding(nn.Module):
    """A headless Hugging Face encoder as ``forward(images) -> embedding`` (batch, D).

    ``how`` is ``cls``, ``pooler``, ``mean`` (the patch tokens' hidden states averaged: the
    first ``prefix`` tokens, class and register tokens, left out; a feature map averaged over
    its height and width) or ``clip-image-embeds`` (:data:`HF_EMBEDDINGS`). The exporter uses
    the output itself as the features (``LoadedModel.head = ""``): no head, so no logits,
    never a random classifier.
    """

    def __init__(self, model: nn.Module, how: str, prefix: int = 1) -> None:
        super().__init__()
        self.model = model
        self.how = how
        self.prefix = prefix

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.how == "clip-image-embeds":
            pooled = self.model.vision_model(pixel_values=images).pooler_output
            return self.model.visual_projection(pooled)
        out = self.model(pixel_values=images)
        if self.how == "pooler":
            if out.pooler_output is None:
                raise InputError("--features pooler: this model returns no pooled output "
                                 "(built without a pooling layer); choose cls or mean")
            return out.pooler_output.flatten(1)
        hidden = out.last_hidden_state
        if self.how == "mean":
            return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else (
                hidden[:, self.prefix:].mean(dim=1))
        return hidden[:, 0]


def is_hub_id(reference: str) -> bool:
    """Whether ``reference`` reads as a Hub model id ``ORG/NAME[@REVISION]`` rather than a
    path (one ``/``, no leading ``/``, ``.`` or ``~``, no backslash)."""
    repo = reference.partition("@")[0]
    return (repo.count("/") == 1 and all(repo.split("/")) and "\\" not in reference
            and not reference.startswith((".", "~", "/")))


def hf_directory(reference: str | os.PathLike) -> tuple[Path, str | None]:
    """The ``save_pretrained`` directory ``reference`` names, and its Hub id when it is one:
    an existing directory, else a Hub id ``ORG/NAME[@REVISION]`` read offline from the local
    Hugging Face cache (nothing is downloaded)."""
    from .hub import hub_directory

    d = Path(reference)
    text = os.fspath(reference)
    if d.is_dir() or not is_hub_id(text):
        return d, None
    return hub_directory(text, "--arch hf:", "--arch hf:/path/DIR"), text


def _hf_weights(d: Path, trust_pickle: bool) -> list[Path]:
    weights = sorted(d.glob("*.safetensors"))
    if not weights and not trust_pickle:
        pickled = sorted(p.name for p in d.glob("*.bin"))
        if pickled:
            raise SourceError(f"--arch hf:{d} holds pickled weights ({', '.join(pickled)}), "
                             "whose loading runs code from the file; re-save them with "
                             "save_pretrained(DIR, safe_serialization=True), or pass "
                             "--trust-pickle only if you trust their source")
        raise SourceError(f"--arch hf:{d}: no model weights (*.safetensors) in {d}")
    return weights


def _hf_preprocessing(d: Path) -> tuple[tuple[tuple[float, ...], tuple[float, ...], str] | None,
                                        dict[str, Any]]:
    """The normalisation of ``d/preprocessor_config.json`` (the library's own preprocessing
    config, which its image processor applies) and what else it says (size, resampling), or
    ``(None, {})`` when the directory has none."""
    from ..io.loaders import load_json

    path = d / "preprocessor_config.json"
    if not path.is_file():
        return None, {}
    cfg = load_json(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(cfg, dict):
        raise SourceError(f"{path}: not a JSON object; re-save it with the image processor's "
                          "save_pretrained(DIR)")
    recorded = {k: cfg[k] for k in ("size", "crop_size", "resample", "do_resize",
                                    "do_center_crop", "do_rescale", "rescale_factor",
                                    "do_normalize") if k in cfg}
    if cfg.get("do_normalize", True) is False:
        return ((0.0,), (1.0,), "preprocessor_config.json (do_normalize: false)"), recorded
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    if mean is None or std is None:
        return None, recorded
    as_floats = [[float(v) for v in (x if isinstance(x, list) else [x])] for x in (mean, std)]
    return (tuple(as_floats[0]), tuple(as_floats[1]), "preprocessor_config.json"), recorded


def _hf_headless(cfg: Any) -> bool:
    """Whether the directory holds an encoder without a classification head (its saved
    architecture is not a ``*ForImageClassification``)."""
    names = getattr(cfg, "architectures", None) or []
    return not any(n.endswith("ForImageClassification") for n in names)


def load_hf(directory: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
            arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
            trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A Hugging Face ``transformers`` model saved with ``save_pretrained`` in a local
    directory (``config.json`` + ``model.safetensors``), or a Hub id ``ORG/NAME[@REVISION]``
    whose files are in the local Hugging Face cache (:func:`hf_directory`; the manifest then
    records the id): an image classifier, or a headless
    encoder (``Dinov2Model`` as RAD-DINO is, ``ViTModel``, ``CLIPVisionModel``, ``CLIPModel``,
    ``SwinModel``...).

    A classifier (a ``*ForImageClassification``) is loaded with
    ``AutoModelForImageClassification``: features are its classifier's input, logits its
    output. A headless encoder is loaded as itself (``AutoModel``, never given a random head):
    its features are the embedding its library defines (:data:`HF_EMBEDDINGS`), and it has no
    logits. Either way nothing is downloaded (``local_files_only=True``) and no code from the
    directory runs; pickled weights (``pytorch_model.bin``) are read only with
    ``trust_pickle``. The directory's ``preprocessor_config.json`` gives the input mean and std
    (an explicit ``--norm`` wins). The weights are inside the directory, so ``checkpoint`` and
    ``arch_kwargs`` are refused.
    """
    transformers = _library("transformers", "hf")
    d, hub_id = hf_directory(directory)
    if checkpoint is not None or arch_kwargs:
        raise SourceError(f"--arch hf:{d} reads its weights and configuration from the directory: "
                         "drop --checkpoint/--arch-kwarg")
    if not (d / "config.json").is_file():
        raise SourceError(f"--arch hf:{d}: no config.json in {d}; save the model there with "
                         "model.save_pretrained(DIR)")
    weights = _hf_weights(d, trust_pickle)
    torch.manual_seed(seed)
    transformers.utils.logging.set_verbosity_error()  # no progress bars or load reports
    transformers.utils.logging.disable_progress_bar()
    # Eager attention: torch.onnx cannot decompose the SDPA route of some models (measured:
    # Hugging Face Swin stops at a view of a non-contiguous attention output), and the eager
    # route computes the same attention in plain operators.
    kw = dict(local_files_only=True, trust_remote_code=False, use_safetensors=bool(weights),
              attn_implementation="eager")
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(d), local_files_only=True,
                                                      trust_remote_code=False)
        headless = _hf_headless(cfg)
        auto = transformers.AutoModel if headless else transformers.AutoModelForImageClassification
        model = auto.from_pretrained(str(d), **kw)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise SourceError(f"--arch hf:{d} could not be loaded as an image model: "
                         f"{type(exc).__name__}: {first_line(exc)}") from None
    cfg = model.config
    model_type = getattr(cfg, "model_type", None)
    vision = getattr(cfg, "vision_config", None)
    want = getattr(vision if vision is not None else cfg, "num_channels", None)
    if channels is not None and want is not None and channels != want:
        raise SourceError(f"--arch hf:{d}: --channels {channels} but its config says "
                         f"num_channels={want}")
    arch = (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
    normalisation, preprocessing = _hf_preprocessing(d)
    options: dict[str, Any] = {"model_type": model_type, "seed": seed}
    if preprocessing:
        options["preprocessing"] = preprocessing
    if headless:
        how = HF_EMBEDDINGS.get(model_type or "", "")
        if not how:
            how = "pooler" if getattr(model, "pooler", None) is not None else "cls"
        module: nn.Module = HFEmbedding(model, how, _prefix(cfg))
        options["embedding"] = how
    else:
        module = HFImageClassifier(model)
    ckpt = weights[0] if len(weights) == 1 else None
    return LoadedModel(module=module.eval(), kind="hf", reference=hub_id or d.name,
                       architecture=f"hf:{arch}", checkpoint=ckpt, options=jsonable(options),
                       head="" if headless else None, normalisation=normalisation)


def _prefix(cfg: Any) -> int:
    """The tokens before the patch tokens of a model of ``cfg`` (:data:`CLASS_TOKENS`)."""
    vision = getattr(cfg, "vision_config", None) or cfg
    tokens = CLASS_TOKENS.get(getattr(cfg, "model_type", "") or "", 0)
    return tokens + int(getattr(vision, "num_register_tokens", 0) or 0) if tokens else 0


def hf_features(loaded: LoadedModel, choice: str) -> LoadedModel:
    """``loaded`` (a Hugging Face model) with the embedding ``choice`` names
    (:data:`HF_FEATURES`); a classifier gives its encoder's (``base_model``), without logits.

    Raises
    ------
    SourceError
        ``image-embeds`` of a model without CLIP's projection, or ``cls`` of one without a
        class token.
    """
    import dataclasses

    model = loaded.module.model
    if isinstance(loaded.module, HFImageClassifier):
        model = model.base_model
    cfg = model.config
    kind = getattr(cfg, "model_type", "") or type(model).__name__
    projected = hasattr(model, "visual_projection")
    if choice == "image-embeds" and not projected:
        raise SourceError(f"--features image-embeds is CLIP's projected image embedding, which "
                          f"a {kind} model has not; choose cls, mean or pooler")
    if choice != "image-embeds" and projected:
        model = model.vision_model  # CLIP's vision tower: a CLIPModel needs text ids too
    if choice == "cls" and not _prefix(cfg):
        raise SourceError(f"--features cls: a {kind} model has no class token; choose mean or "
                          "pooler")
    how = "clip-image-embeds" if choice == "image-embeds" else choice
    options = {**loaded.options, "embedding": how}
    return dataclasses.replace(loaded, module=HFEmbedding(model, how, _prefix(cfg)).eval(),
                               head="", options=options)


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
    summary = ("a local save_pretrained directory of a transformers image model, or a Hub id "
               "ORG/NAME read from the local Hugging Face cache")
    reads_path = True
    feature_choices = HF_FEATURES

    def select_features(self, loaded: LoadedModel, choice: str) -> LoadedModel:
        from .features import check_choice

        check_choice(choice, self.feature_choices, "a Hugging Face model")
        if choice.startswith("module:"):
            return super().select_features(loaded, choice)
        return hf_features(loaded, choice)

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_hf(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                       trust_pickle=trust_pickle, seed=seed)

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        seed, _ = check_options(member)
        src = member.source
        if is_hub_id(src.reference) and checkpoint is None:
            # A Hub id: the same snapshot in this machine's cache, its weights' sha256 checked.
            directory, _ = hf_directory(src.reference)
            if src.checkpoint is not None:
                find_checkpoint(member, directory)
            return load_hf(src.reference, channels=member.manifest.input.channels,
                           trust_pickle=trust_pickle, seed=seed)
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


SOURCES = (HFSource(),)
