"""PyTorch models to portable ONNX graphs: features/logits and first-two-conv gradients.

This package imports torch (install the ``torch`` extra). Load a model with
:func:`create_model` (torchvision, ``timm:``, ``hf:``, ``monai:``), :func:`load_torchscript`,
:func:`load_factory` or :func:`from_module`, then write it into a zoo with :func:`export_model`. Everything after
export (:mod:`gradnca_onnx.zoo`, the engine) needs only onnxruntime.
"""

from .api import DEFAULT_GRADS_BATCH, default_normalisation, export_model
from .architectures import PAPER_ARCHITECTURES, ArchSpec
from .checkpoints import read_checkpoint, unwrap_state_dict
from .errors import GradientGraphError
from .feature_model import FeatureModel
from .layers import LayerChoice, locate_layers
from .loading import (
    LoadedModel,
    from_module,
    load_factory,
    load_torchscript,
    load_torchvision,
    torchvision_architectures,
)
from .sources import SOURCES, create_model, load_hf, load_monai, load_timm
from .translations import GRAD_TRANSLATIONS, OPSET
from .vjp_trace import trace_feature_vjp

__all__ = [
    "DEFAULT_GRADS_BATCH", "GRAD_TRANSLATIONS", "OPSET", "PAPER_ARCHITECTURES", "ArchSpec",
    "FeatureModel", "GradientGraphError", "LayerChoice", "SOURCES", "LoadedModel", "create_model", "default_normalisation", "export_model",
    "from_module", "load_factory", "load_hf", "load_monai", "load_timm", "load_torchscript", "load_torchvision", "locate_layers",
    "read_checkpoint", "torchvision_architectures", "trace_feature_vjp", "unwrap_state_dict",
]
