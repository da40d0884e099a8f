"""ONNX translations (onnxscript) for the three backward ops torch's exporter cannot translate.

The gradient graph is traced at a fixed input size, so every shape is static here and the
pooling backward passes become products with small constant matrices.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import opset18 as op

#: ONNX opset the exporters target (the translations below use opset-18 operators).
OPSET = 18


def _per_dim(values: Sequence[int], n: int) -> list[int]:
    v = [int(x) for x in values]
    return v * n if len(v) == 1 else v


def _unused() -> Any:
    # The exporter needs a value for every output of a multi-output op; the optimiser drops
    # the ones nobody consumes.
    return op.Constant(value_float=0.0)


def convolution_backward(grad_output: Any, input: Any, weight: Any, bias_sizes: Any,
                         stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                         transposed: bool, output_padding: Sequence[int], groups: int,
                         output_mask: Sequence[bool]) -> tuple[Any, Any, Any]:
    """``aten.convolution_backward`` for 1-D, 2-D and 3-D non-transposed convolutions.

    Input gradient: ConvTranspose with the forward weight, and the output_padding that gives
    back the input size (the forward's floor division dropped up to stride-1 rows).
    Weight gradient: a convolution whose "batch" is the input channel within a group and whose
    "channels" are (group, image), so that convolving with the output gradient sums over the
    images; stride and dilation swap roles. The result can exceed the kernel by rows the
    forward never reached, hence the slice.
    """
    if transposed:
        raise NotImplementedError("gradients through transposed convolutions are not supported")
    nsp = len(input.shape) - 2
    if nsp not in (1, 2, 3):
        raise NotImplementedError(f"only 1-D to 3-D convolutions are supported, got {nsp}-D")
    sp = list(range(3, 3 + nsp))  # the spatial axes after (a, b, c) in the 5-D layouts below
    stride, padding, dilation = (_per_dim(v, nsp) for v in (stride, padding, dilation))
    kernel = [int(k) for k in weight.shape[2:]]
    in_sp = [int(s) for s in input.shape[2:]]
    out_sp = [int(s) for s in grad_output.shape[2:]]
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        out_pad = [in_sp[i] - ((out_sp[i] - 1) * stride[i] - 2 * padding[i]
                               + dilation[i] * (kernel[i] - 1) + 1) for i in range(nsp)]
        grad_input = op.ConvTranspose(grad_output, weight, strides=stride, pads=padding * 2,
                                      dilations=dilation, group=groups, output_padding=out_pad)
    if output_mask[1]:
        n, cin, cout = int(input.shape[0]), int(input.shape[1]), int(grad_output.shape[1])
        g = int(groups)
        cin_g, cout_g = cin // g, cout // g
        x = op.Reshape(input, op.Constant(value_ints=[n, g, cin_g, *in_sp]))
        x = op.Transpose(x, perm=[2, 1, 0, *sp])
        x = op.Reshape(x, op.Constant(value_ints=[cin_g, g * n, *in_sp]))
        w = op.Reshape(grad_output, op.Constant(value_ints=[n, g, cout_g, *out_sp]))
        w = op.Transpose(w, perm=[1, 2, 0, *sp])
        w = op.Reshape(w, op.Constant(value_ints=[g * cout_g, n, *out_sp]))
        y = op.Conv(x, w, strides=dilation, dilations=stride, pads=padding * 2, group=g)
        y = op.Transpose(y, perm=[1, 0, *(a - 1 for a in sp)])
        grad_weight = op.Slice(y, op.Constant(value_ints=[0] * nsp),
                               op.Constant(value_ints=kernel),
                               op.Constant(value_ints=[a - 1 for a in sp]))
    if output_mask[2]:
        grad_bias = op.ReduceSum(grad_output, op.Constant(value_ints=[0, *(a - 1 for a in sp)]),
                                 keepdims=0)
    return (grad_input if grad_input is not None else _unused(),
            grad_weight if grad_weight is not None else _unused(),
            grad_bias if grad_bias is not None else _unused())


def pool_matrix(length: int, out_length: int, kernel: int, stride: int, padding: int,
                count_include_pad: bool) -> np.ndarray:
    """(out_length, length) matrix of one axis of ``avg_pool2d``: entry = 1/divisor in window.

    Mirrors ATen's divisor: the window is clipped to the padded input for
    ``count_include_pad=True`` and to the input itself otherwise (ceil-mode windows included).
    The 2-D divisor is the product of the two axes' divisors, so the pooling is separable.
    """
    a = np.zeros((out_length, length))
    for o in range(out_length):
        start = o * stride - padding
        end = min(start + kernel, length + padding)
        lo, hi = max(start, 0), min(end, length)
        a[o, lo:hi] = 1.0 / ((end - start) if count_include_pad else (hi - lo))
    return a


def adaptive_pool_matrix(length: int, out_length: int) -> np.ndarray:
    """(out_length, length) matrix of one axis of ``adaptive_avg_pool2d`` (ATen's windows)."""
    a = np.zeros((out_length, length))
    for o in range(out_length):
        lo = (o * length) // out_length
        hi = -((-(o + 1) * length) // out_length)
        a[o, lo:hi] = 1.0 / (hi - lo)
    return a


def _pool_backward(grad_output: Any, rows: np.ndarray, cols: np.ndarray) -> Any:
    # Forward pooling is rows @ x @ cols.T, so the input gradient is rows.T @ g @ cols.
    g = op.MatMul(grad_output, op.Constant(value=ir.tensor(cols.astype(np.float32))))
    return op.MatMul(op.Constant(value=ir.tensor(np.ascontiguousarray(rows.T, np.float32))), g)


def avg_pool2d_backward(grad_output: Any, self: Any, kernel_size: Sequence[int],
                        stride: Sequence[int], padding: Sequence[int], ceil_mode: bool,
                        count_include_pad: bool, divisor_override: int | None = None) -> Any:
    """``aten.avg_pool2d_backward`` as two products with constant pooling matrices."""
    k = _per_dim(kernel_size, 2)
    s = _per_dim(stride, 2) if len(stride) else k
    p = _per_dim(padding, 2)
    (h, w), (ho, wo) = self.shape[2:], grad_output.shape[2:]
    rows = pool_matrix(int(h), int(ho), k[0], s[0], p[0], count_include_pad)
    cols = pool_matrix(int(w), int(wo), k[1], s[1], p[1], count_include_pad)
    if divisor_override:
        rows = (rows > 0) / float(divisor_override)
        cols = (cols > 0).astype(np.float64)
    return _pool_backward(grad_output, rows, cols)


def adaptive_avg_pool2d_backward(grad_output: Any, self: Any) -> Any:
    """``aten._adaptive_avg_pool2d_backward`` as two products with constant pooling matrices."""
    (h, w), (ho, wo) = self.shape[-2:], grad_output.shape[-2:]
    return _pool_backward(grad_output, adaptive_pool_matrix(int(h), int(ho)),
                          adaptive_pool_matrix(int(w), int(wo)))


#: The ``custom_translation_table`` given to ``torch.onnx.export`` for gradient graphs.
GRAD_TRANSLATIONS: dict[Callable, Callable] = {
    torch.ops.aten.convolution_backward.default: convolution_backward,
    torch.ops.aten.avg_pool2d_backward.default: avg_pool2d_backward,
    torch.ops.aten._adaptive_avg_pool2d_backward.default: adaptive_avg_pool2d_backward,
}
