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
