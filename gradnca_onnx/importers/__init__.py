"""Plain ONNX image classifiers (from Keras, JAX, PyTorch, ...) into zoo model directories.

The ONNX graph becomes a torch module (:class:`OnnxNet`: one submodule per weighted node, torch
functions for the rest), which the exporters then trace into ``features.onnx`` and
``grads.onnx``. When the gradient graph cannot be built (:class:`GradientGraphError`), the
original graph cut at its features can still join the zoo as a features-only member
(:func:`write_features_only`). This package imports torch.
"""

from .api import build_module, import_onnx
from .errors import FALLBACK_FLAG, GradientGraphError, UnsupportedOperatorError
from .features_only import (
                        FeaturesCut,
                        build_features_graph,
                        find_features,
                        write_features_only,
)
from .graph import ImportPlan, OnnxNet
from .onnx_file import (
                        MIN_OPSET,
                        check_domains,
                        check_external_data,
                        load_onnx,
                        simplify,
)
from .ops import SUPPORTED_OPS

__all__ = ["FALLBACK_FLAG", "MIN_OPSET", "SUPPORTED_OPS", "FeaturesCut", "GradientGraphError",
           "ImportPlan", "OnnxNet", "UnsupportedOperatorError", "build_features_graph",
           "build_module", "check_domains", "check_external_data", "find_features",
           "import_onnx", "load_onnx", "simplify", "write_features_only"]
