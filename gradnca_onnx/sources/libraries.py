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

from ..errors import SourceError, first_line, optional_import
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


class HFEmbedding(nn.Module):
    """A headless Hugging Face encoder as ``forward(images) -> embedding`` (batch, D).

    ``how`` is ``cls``, ``pooler``, ``mean`` (the hidden states averaged over tokens) or
    ``clip-image-embeds`` (:data:`HF_EMBEDDINGS`). The exporter uses the output itself as the
    features (``LoadedModel.head = ""``): no head, so no logits, never a random classifier.
    """

    def __init__(self, model: nn.Module, how: str) -> None:
        super().__init__()
        self.model = model
        self.how = how

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.how == "clip-image-embeds":
            pooled = self.model.vision_model(pixel_values=images).pooler_output
            return self.model.visual_projection(pooled)
        out = self.model(pixel_values=images)
        if self.how == "pooler":
            return out.pooler_output.flatten(1)
        if self.how == "mean":
            return out.last_hidden_state.mean(dim=1)
        return out.last_hidden_state[:, 0]


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
    directory (``config.json`` + ``model.safetensors``): an image classifier, or a headless
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
    d = Path(directory)
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
        module: nn.Module = HFEmbedding(model, how)
        options["embedding"] = how
    else:
        module = HFImageClassifier(model)
    ckpt = weights[0] if len(weights) == 1 else None
    return LoadedModel(module=module.eval(), kind="hf", reference=d.name,
                       architecture=f"hf:{arch}", checkpoint=ckpt, options=jsonable(options),
                       head="" if headless else None, normalisation=normalisation)


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


SOURCES = (HFSource(),)
