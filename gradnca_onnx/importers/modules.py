"""Torch modules holding the weights of an ONNX graph's Conv, BatchNormalization and head nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import GradientGraphError
from .ops import Attrs, resolve_pads


def _param(arr: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.as_tensor(np.array(arr, dtype=np.float32, copy=True)),
                        requires_grad=False)


class OnnxConv(nn.Conv2d):
    """An ONNX 2-D ``Conv`` (grouped, dilated, asymmetric or ``auto_pad`` padding).

    A subclass of ``nn.Conv2d`` so that the exporter finds it by module path; padding that
    ``nn.Conv2d`` cannot express (asymmetric, or SAME computed from the input size) is applied
    with ``F.pad`` first.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, attrs: Attrs) -> None:
        if weight.ndim != 4:
            raise GradientGraphError(f"Conv over {weight.ndim - 2} spatial dimension(s) is not "
                                     "supported (2-D image convolutions only)")
        group = int(attrs.get("group", 1))
        super().__init__(weight.shape[1] * group, weight.shape[0], tuple(weight.shape[2:]),
                         stride=tuple(attrs.get("strides", [1, 1])), padding=0,
                         dilation=tuple(attrs.get("dilations", [1, 1])), groups=group,
                         bias=bias is not None)
        self.weight = _param(weight)
        if bias is not None:
            self.bias = _param(bias)
        self.onnx_attrs = {k: v for k, v in attrs.items()
                           if k in ("auto_pad", "pads", "strides", "dilations")}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        begin, end = resolve_pads(x, self.onnx_attrs, self.kernel_size)
        if begin == end:
            return F.conv2d(x, self.weight, self.bias, self.stride, tuple(begin), self.dilation,
                            self.groups)
        x = F.pad(x, [begin[1], end[1], begin[0], end[0]])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class OnnxBatchNorm(nn.Module):
    """ONNX ``BatchNormalization`` in inference form (running statistics as buffers)."""

    def __init__(self, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray,
                 epsilon: float) -> None:
        super().__init__()
        for name, arr in (("weight", scale), ("bias", bias), ("running_mean", mean),
                          ("running_var", var)):
            self.register_buffer(name, torch.as_tensor(np.array(arr, dtype=np.float32, copy=True)))
        self.eps = float(epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


def linear(weight: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    """``nn.Linear`` with ``weight`` ``[out, in]`` (so "input of the last Linear" = features)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = _param(weight)
    if bias is not None:
        layer.bias = _param(bias.reshape(-1))
    return layer


class FeatureTap(nn.Module):
    """``forward(features, logits) -> logits``: a head whose input is a user-chosen tensor.

    The exporter reads the features as the input of its head module and the logits as its
    output; this lets the features come from any node while the classifier's logits stay.
    """

    def forward(self, features: torch.Tensor, *, logits: torch.Tensor) -> torch.Tensor:
        # ``logits`` is keyword-only because the exporter's pre-hook rewrites the positional
        # arguments to ``(features,)``.
        return logits


def gemm_as_linear(b: np.ndarray, c: np.ndarray | None, attrs: Attrs) -> nn.Linear | None:
    """A ``Gemm`` with constant B (and C of one value per output) as ``nn.Linear``, else None."""
    if attrs.get("transA", 0) or b.ndim != 2:
        return None
    weight = b if attrs.get("transB", 0) else b.T
    weight = float(attrs.get("alpha", 1.0)) * weight
    bias = None
    if c is not None:
        if c.size not in (1, weight.shape[0]):
            return None
        bias = float(attrs.get("beta", 1.0)) * np.broadcast_to(c.reshape(-1), (weight.shape[0],))
    return linear(weight, bias)


def as_float(arr: Any) -> bool:
    """Whether a constant is floating point (then it becomes a buffer, not a static value)."""
    return np.asarray(arr).dtype.kind == "f"
