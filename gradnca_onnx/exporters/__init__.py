"""PyTorch models to portable ONNX graphs: features/logits and first-two-conv gradients.

This package imports torch (install the ``torch`` extra). Get a model from the source
registry (:mod:`gradnca_onnx.sources`: ``create_model`` for torchvision, ``timm:``, ``hf:``,
``monai:``; ``load_factory``, ``load_torchscript``, ``from_module``), then write it into a zoo
with :func:`export_model`. Everything after export (:mod:`gradnca_onnx.zoo`, the engine) needs
only onnxruntime.
"""

from .api import DEFAULT_GRADS_BATCH, ExportOptions, default_normalisation, export_model
from .errors import GradientGraphError
from .feature_model import FeatureModel
from .layers import LayerChoice, locate_layers
from .translations import GRAD_TRANSLATIONS, OPSET
from .vjp_trace import trace_feature_vjp

__all__ = [
    "DEFAULT_GRADS_BATCH", "ExportOptions", "FeatureModel", "GRAD_TRANSLATIONS",
    "GradientGraphError", "LayerChoice", "OPSET", "default_normalisation", "export_model",
    "locate_layers", "trace_feature_vjp",
]
