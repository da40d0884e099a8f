"""Plain ONNX image classifiers (from Keras, JAX, PyTorch, ...) into zoo model directories.

The ONNX graph becomes a torch module (:class:`OnnxNet`: one submodule per weighted node, torch
functions for the rest), which the exporters then trace into ``features.onnx`` and
``grads.onnx``. This package imports torch.
"""

from .api import build_module, import_onnx
from .graph import ImportPlan, OnnxNet
from .onnx_file import MIN_OPSET, check_domains, check_external_data, load_onnx
from .ops import SUPPORTED_OPS

__all__ = ["MIN_OPSET", "SUPPORTED_OPS", "ImportPlan", "OnnxNet", "build_module",
           "check_domains", "check_external_data", "import_onnx", "load_onnx"]
