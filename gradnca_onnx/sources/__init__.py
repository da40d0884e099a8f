"""The one registry of model sources: every way a model enters the package.

=============  ==========================================  =================================
kind           reference (``--arch`` / option)             rebuilt from a manifest
=============  ==========================================  =================================
torchvision    ``NAME`` (``--arch resnet18``)              yes (+ checkpoint, sha256-checked)
timm           ``timm:NAME``                               yes (+ checkpoint)
hf             ``hf:DIR`` (a ``save_pretrained`` folder)   yes (the folder, its weights
                                                           sha256-checked)
monai          ``monai:NAME``                              yes (+ checkpoint)
open_clip      ``open_clip:NAME`` (image tower only)       yes (+ checkpoint, or the Hub/
                                                           directory weights, sha256-checked)
factory        ``--factory package.module:callable``       only with ``trust_code``
torchscript    ``--torchscript FILE``                      no: its head cannot be replaced
torch_export   ``--torchscript FILE.pt2`` (torch.export    no: a fixed graph, like
               ``.save``; or ``--checkpoint`` alone)       TorchScript
module         an ``nn.Module`` given to the Python API    no: no manifest can build it
onnx           ``gradnca-onnx import FILE.onnx``           no: an ONNX graph is not trainable
=============  ==========================================  =================================

Each is a :class:`ModelSource` registered once (:func:`get`, :func:`kinds`); other packages
register theirs through the entry-point group :data:`ENTRY_POINT_GROUP`. ``export``,
``import``, ``finetune`` and the manifest's ``source`` block all go through it:
:func:`create_model` builds what ``--arch`` names, :func:`describe` writes the ``source``
block, :func:`rebuild` builds a zoo member's model again from it.

Importing this package does not import torch; the built-in sources do, when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import optional_import
from .architectures import PAPER_ARCHITECTURES, ArchSpec
from .base import LoadedModel, Member, ModelSource
from .registry import (
    ENTRY_POINT_GROUP,
    addressable,
    choose_features,
    create_model,
    describe,
    get,
    kinds,
    load_plugins,
    rebuild,
    register,
    resolve,
)

#: What the torch extra installs, for the commands that need it.
TORCH_MODULES = ("torch", "torchvision")

# Torch-dependent names, imported on first access.
_LAZY = {
    "torchvision_architectures": "torchvision_models", "load_torchvision": "torchvision_models",
    "load_timm": "timm_source", "load_hf": "libraries", "load_monai": "monai_source",
    "load_open_clip": "open_clip_source",
    "HFImageClassifier": "libraries",
    "load_factory": "custom", "load_torchscript": "custom", "from_module": "custom",
    "load_exported_program": "exported_program",
    "read_checkpoint": "checkpoints", "unwrap_state_dict": "checkpoints",
    "stem_channels": "building", "ConstructorSource": "from_manifest",
    "inflate_3d": "inflate", "video_architectures": "torchvision_models",
}

__all__ = [
    "ENTRY_POINT_GROUP", "PAPER_ARCHITECTURES", "ArchSpec", "ConstructorSource",
    "HFImageClassifier", "LoadedModel", "Member", "ModelSource", "TORCH_MODULES", "addressable",
    "choose_features", "create_model", "describe", "from_module", "get", "inflate_3d", "kinds",
    "load_exported_program", "load_factory", "load_hf", "load_monai", "load_open_clip",
    "load_plugins", "load_timm", "load_torchscript", "load_torchvision",
    "read_checkpoint", "rebuild", "register", "require_torch", "resolve", "stem_channels",
    "torchvision_architectures", "unwrap_state_dict", "video_architectures",
]


def require_torch(purpose: str, *more: str) -> None:
    """Raise :class:`~gradnca_onnx.errors.MissingExtraError` (naming the torch extra) unless
    torch, torchvision and ``more`` (e.g. ``onnxscript``) can be imported.

    Parameters
    ----------
    purpose : str
        What needs them, for the message (``export``, ``fine-tuning``).
    """
    for module in (*TORCH_MODULES, *more):
        optional_import(module, "torch", purpose)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
