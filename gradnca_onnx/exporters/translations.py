"""ONNX translations (onnxscript) of backward ops: the ones torch's exporter cannot translate,
and the ones whose default translation onnxruntime runs slowly.

The gradient graph is traced at a fixed input size, so every shape is static here and the
pooling backward passes become products with small constant matrices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
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

    Both gradients are written as forward convolutions and matrix products, which onnxruntime
    runs at its forward speed: its ConvTranspose ran up to 2x slower than a Conv of the same
    size, and the former weight gradient, a Conv with an activation-sized kernel, took 0.51 s
    of a 4.2 s gradient pass (resnet18, 224 px, batch 32). See :func:`conv_input_grad` and
    :func:`conv_weight_grad`.
    """
    if transposed:
        raise NotImplementedError("gradients through transposed convolutions are not supported")
    nsp = len(input.shape) - 2
    if nsp not in (1, 2, 3):
        raise NotImplementedError(f"only 1-D to 3-D convolutions are supported, got {nsp}-D")
    conv = _ConvGeometry.of(input, weight, grad_output, stride, padding, dilation, groups)
    grad_input = conv_input_grad(grad_output, weight, conv) if output_mask[0] else None
    grad_weight = conv_weight_grad(grad_output, input, conv) if output_mask[1] else None
    grad_bias = None
    if output_mask[2]:
        grad_bias = op.ReduceSum(grad_output, op.Constant(value_ints=[0, *conv.spatial_axes]),
                                 keepdims=0)
    return (grad_input if grad_input is not None else _unused(),
            grad_weight if grad_weight is not None else _unused(),
            grad_bias if grad_bias is not None else _unused())


@dataclass(frozen=True)
class _ConvGeometry:
    """Static sizes of one forward convolution (the gradient graph has fixed shapes)."""

    n: int
    cin: int
    cout: int
    groups: int
    kernel: tuple[int, ...]
    in_sp: tuple[int, ...]
    out_sp: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @classmethod
    def of(cls, input: Any, weight: Any, grad_output: Any, stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int) -> "_ConvGeometry":
        nsp = len(input.shape) - 2
        return cls(int(input.shape[0]), int(input.shape[1]), int(grad_output.shape[1]),
                   int(groups), tuple(int(k) for k in weight.shape[2:]),
                   tuple(int(s) for s in input.shape[2:]),
                   tuple(int(s) for s in grad_output.shape[2:]),
                   *(tuple(_per_dim(v, nsp)) for v in (stride, padding, dilation)))

    @property
    def nsp(self) -> int:
        return len(self.kernel)

    @property
    def spatial_axes(self) -> list[int]:
        return list(range(2, 2 + self.nsp))


def _ints(values: Sequence[int]) -> Any:
    return op.Constant(value_ints=[int(v) for v in values])


def _flip(x: Any, axes: Sequence[int]) -> Any:
    """Reverse ``x`` along ``axes`` (a Slice with step -1)."""
    big = 1 << 62
    return op.Slice(x, _ints([-1] * len(axes)), _ints([-big] * len(axes)), _ints(axes),
                    _ints([-1] * len(axes)))


def conv_input_grad(grad_output: Any, weight: Any, conv: _ConvGeometry) -> Any:
    """The input gradient of a convolution.

    Stride 1: a convolution of the output gradient with the flipped kernel, input and output
    channels swapped within each group, which onnxruntime ran 1.0-1.7x faster than the
    equivalent ConvTranspose (resnet18's 3x3 layers at 224 px, batch 32). The weight
    rearrangement acts on a constant, which onnxruntime folds when it loads the graph.
    Strided: ConvTranspose. The sub-pixel form (one Conv over the stride's phases, zero-padded
    sub-kernels) was measured slower: 157 ms against 79 ms for resnet18's layer4.0.conv1 at
    224 px, batch 32, since its padded sub-kernels do 1.8x the multiply-adds.
    """
    if all(s == 1 for s in conv.stride) and all(
            d * (k - 1) >= p for d, k, p in zip(conv.dilation, conv.kernel, conv.padding)):
        w = _flip(_swap_channels(weight, conv.groups, conv.cout, conv.cin, conv.kernel),
                  conv.spatial_axes)
        pads = [d * (k - 1) - p for d, k, p in zip(conv.dilation, conv.kernel, conv.padding)]
        return op.Conv(grad_output, w, pads=pads * 2, dilations=list(conv.dilation),
                       group=conv.groups)
    out_pad = [conv.in_sp[i] - ((conv.out_sp[i] - 1) * conv.stride[i] - 2 * conv.padding[i]
                                + conv.dilation[i] * (conv.kernel[i] - 1) + 1)
               for i in range(conv.nsp)]
    return op.ConvTranspose(grad_output, weight, strides=list(conv.stride),
                            pads=list(conv.padding) * 2, dilations=list(conv.dilation),
                            group=conv.groups, output_padding=out_pad)


def _swap_channels(weight: Any, groups: int, cout: int, cin: int, sub: Sequence[int]) -> Any:
    """(g * cout_g, cin_g, *sub) -> (g * cin_g, cout_g, *sub): a group's channels swapped."""
    g, cout_g, cin_g = groups, cout // groups, cin // groups
    w = op.Reshape(weight, _ints([g, cout_g, cin_g, *sub]))
    w = op.Transpose(w, perm=[0, 2, 1, *range(3, 3 + len(sub))])
    return op.Reshape(w, _ints([g * cin_g, cout_g, *sub]))


#: Columns (taps x input channels) per matrix product of :func:`conv_weight_grad`: enough
#: for an efficient product, few enough that the gathered input stays a small multiple of it.
WEIGHT_GRAD_COLUMNS = 64
#: Fewest input channels for which the gathered-product form of the weight gradient pays:
#: with an RGB stem every tap is a thin product, and the convolution form was faster.
WEIGHT_GRAD_MIN_CIN = 16


def conv_weight_grad(grad_output: Any, input: Any, conv: _ConvGeometry) -> Any:
    """The weight gradient of a convolution.

    Ungrouped: ``dW[:, :, tap] = G @ X_tap^T`` with ``G`` the output gradient as
    (cout, n * out_pixels) and ``X_tap`` the input pixels that tap reads, gathered by strided
    slices; taps are taken in groups of about :data:`WEIGHT_GRAD_COLUMNS` columns per product.
    Grouped: a convolution whose "batch" is the input channel within a group and whose
    "channels" are (group, image), so that convolving with the output gradient sums over the
    images; stride and dilation swap roles.
    """
    if conv.groups == 1 and conv.cin >= WEIGHT_GRAD_MIN_CIN:
        return _weight_grad_gemm(grad_output, input, conv)
    return _weight_grad_conv(grad_output, input, conv)


def _weight_grad_gemm(grad_output: Any, input: Any, conv: _ConvGeometry) -> Any:
    nsp, ax = conv.nsp, conv.spatial_axes
    g = op.Transpose(grad_output, perm=[1, 0, *ax])
    g = op.Reshape(g, _ints([conv.cout, -1]))
    x = op.Transpose(input, perm=[1, 0, *ax])           # (cin, n, *in_sp)
    if any(conv.padding):
        x = op.Pad(x, _ints([0, 0, *conv.padding, 0, 0, *conv.padding]))
    taps = list(itertools.product(*(range(k) for k in conv.kernel)))
    per = max(1, WEIGHT_GRAD_COLUMNS // conv.cin)
    blocks = []
    for first in range(0, len(taps), per):
        cols = []
        for tap in taps[first:first + per]:
            lo = [tap[i] * conv.dilation[i] for i in range(nsp)]
            hi = [lo[i] + conv.stride[i] * (conv.out_sp[i] - 1) + 1 for i in range(nsp)]
            xs = op.Slice(x, _ints(lo), _ints(hi), _ints(ax), _ints(conv.stride))
            cols.append(op.Reshape(xs, _ints([conv.cin, -1])))
        xc = cols[0] if len(cols) == 1 else op.Concat(*cols, axis=0)
        blocks.append(op.Gemm(g, xc, transB=1))          # (cout, taps_in_block * cin)
    y = blocks[0] if len(blocks) == 1 else op.Concat(*blocks, axis=1)
    y = op.Reshape(y, _ints([conv.cout, len(taps), conv.cin]))
    y = op.Transpose(y, perm=[0, 2, 1])
    return op.Reshape(y, _ints([conv.cout, conv.cin, *conv.kernel]))


def _weight_grad_conv(grad_output: Any, input: Any, conv: _ConvGeometry) -> Any:
    nsp = conv.nsp
    sp = list(range(3, 3 + nsp))  # the spatial axes after (a, b, c) in the 5-D layouts below
    n, g = conv.n, conv.groups
    cin_g, cout_g = conv.cin // g, conv.cout // g
    x = op.Reshape(input, _ints([n, g, cin_g, *conv.in_sp]))
    x = op.Transpose(x, perm=[2, 1, 0, *sp])
    x = op.Reshape(x, _ints([cin_g, g * n, *conv.in_sp]))
    w = op.Reshape(grad_output, _ints([n, g, cout_g, *conv.out_sp]))
    w = op.Transpose(w, perm=[1, 2, 0, *sp])
    w = op.Reshape(w, _ints([g * cout_g, n, *conv.out_sp]))
    y = op.Conv(x, w, strides=list(conv.dilation), dilations=list(conv.stride),
                pads=list(conv.padding) * 2, group=g)
    y = op.Transpose(y, perm=[1, 0, *(a - 1 for a in sp)])
    # The result can exceed the kernel by rows the forward never reached, hence the slice.
    return op.Slice(y, _ints([0] * nsp), _ints(conv.kernel), _ints([a - 1 for a in sp]))


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


def _const(a: np.ndarray) -> Any:
    return op.Constant(value=ir.tensor(np.ascontiguousarray(a, np.float32)))


def _pool3d_backward(grad_output: Any, n: int, c: int, depth: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray) -> Any:
    """The input gradient of a separable 3-D pooling ``depth ⊗ rows ⊗ cols`` (each an
    (out, in) matrix): three products, one per axis, with no transposes (the depth axis is
    reached by folding H and W into one)."""
    (do, d), (_, h), (_, w) = depth.shape, rows.shape, cols.shape
    g = op.MatMul(grad_output, _const(cols))                      # (n, c, do, ho, w)
    g = op.MatMul(_const(rows.T), g)                              # (n, c, do, h, w)
    g = op.Reshape(g, _ints([n, c, do, h * w]))
    g = op.MatMul(_const(depth.T), g)                             # (n, c, d, h * w)
    return op.Reshape(g, _ints([n, c, d, h, w]))


def avg_pool3d_backward(grad_output: Any, self: Any, kernel_size: Sequence[int],
                        stride: Sequence[int], padding: Sequence[int], ceil_mode: bool,
                        count_include_pad: bool, divisor_override: int | None = None) -> Any:
    """``aten.avg_pool3d_backward`` as three products with constant pooling matrices (the
    3-D divisor is the product of the three axes' divisors, as in 2-D)."""
    k = _per_dim(kernel_size, 3)
    s = _per_dim(stride, 3) if len(stride) else k
    p = _per_dim(padding, 3)
    n, c, *size = (int(v) for v in self.shape)
    out = [int(v) for v in grad_output.shape[2:]]
    mats = [pool_matrix(size[i], out[i], k[i], s[i], p[i], count_include_pad)
            for i in range(3)]
    if divisor_override:
        mats = [(m > 0).astype(np.float64) for m in mats]
        mats[0] = mats[0] / float(divisor_override)
    return _pool3d_backward(grad_output, n, c, *mats)


def adaptive_avg_pool3d(self: Any, output_size: Sequence[int]) -> Any:
    """``aten._adaptive_avg_pool3d`` (no ONNX translation exists for an output other than
    1x1x1) as three products with ATen's constant window matrices; any batch size (Reshape's
    0 copies the batch and channel axes)."""
    d, h, w = (int(v) for v in self.shape[2:])
    do, ho, wo = _per_dim(output_size, 3)
    y = op.MatMul(self, _const(adaptive_pool_matrix(w, wo).T))    # (n, c, d, h, wo)
    y = op.MatMul(_const(adaptive_pool_matrix(h, ho)), y)         # (n, c, d, ho, wo)
    y = op.Reshape(y, _ints([0, 0, d, ho * wo]))
    y = op.MatMul(_const(adaptive_pool_matrix(d, do)), y)         # (n, c, do, ho * wo)
    return op.Reshape(y, _ints([0, 0, do, ho, wo]))


def adaptive_avg_pool3d_backward(grad_output: Any, self: Any) -> Any:
    """``aten._adaptive_avg_pool3d_backward`` as three products with constant matrices."""
    n, c, *size = (int(v) for v in self.shape)
    out = [int(v) for v in grad_output.shape[2:]]
    return _pool3d_backward(grad_output, n, c,
                            *(adaptive_pool_matrix(size[i], out[i]) for i in range(3)))


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


def _pool_args(kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int], nsp: int = 2
               ) -> tuple[list[int], list[int], list[int], list[int]]:
    k = _per_dim(kernel_size, nsp)
    s = _per_dim(stride, nsp) if len(stride) else k
    return k, s, _per_dim(padding, nsp), _per_dim(dilation, nsp)


def max_pool2d_with_indices(self: Any, kernel_size: Sequence[int], stride: Sequence[int] = (),
                            padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
                            ceil_mode: bool = False) -> tuple[Any, Any]:
    """``aten.max_pool2d_with_indices`` with the index offsets as a constant.

    ONNX numbers a MaxPool's indices over the whole tensor, ATen within each (image,
    channel) plane. The default translation finds each plane's offset with a second MaxPool
    (kernel 1, with indices) over the whole input, which took as long as the pooling itself;
    with the static shapes of the gradient graph the offsets are ``(n * C + c) * H * W``.
    """
    return _max_pool_with_indices(self, kernel_size, stride, padding, dilation, ceil_mode, 2)


def max_pool3d_with_indices(self: Any, kernel_size: Sequence[int], stride: Sequence[int] = (),
                            padding: Sequence[int] = (0, 0, 0),
                            dilation: Sequence[int] = (1, 1, 1),
                            ceil_mode: bool = False) -> tuple[Any, Any]:
    """``aten.max_pool3d_with_indices``: as :func:`max_pool2d_with_indices`, the offsets
    ``(n * C + c) * D * H * W`` a constant."""
    return _max_pool_with_indices(self, kernel_size, stride, padding, dilation, ceil_mode, 3)


def _max_pool_with_indices(self: Any, kernel_size: Sequence[int], stride: Sequence[int],
                           padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                           nsp: int) -> tuple[Any, Any]:
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation, nsp)
    n, c, *size = (int(v) for v in self.shape)
    values, flat = op.MaxPool(self, kernel_shape=k, strides=s, pads=p * 2, dilations=d,
                              ceil_mode=int(bool(ceil_mode)))
    plane = int(np.prod(size))
    offsets = (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, *([1] * nsp))
    return values, op.Sub(flat, op.Constant(value=ir.tensor(offsets)))


def max_pool3d_with_indices_backward(grad_output: Any, self: Any, kernel_size: Sequence[int],
                                     stride: Sequence[int], padding: Sequence[int],
                                     dilation: Sequence[int], ceil_mode: bool,
                                     indices: Any) -> Any:
    """``aten.max_pool3d_with_indices_backward`` (no ONNX translation exists): each output
    gradient added at its window's argmax, one ScatterElements per (image, channel) plane
    (ATen's indices count within the plane). Overlapping windows that share an argmax add up,
    as in ATen."""
    n, c, *size = (int(v) for v in self.shape)
    plane = int(np.prod(size))
    g = op.Reshape(grad_output, _ints([n * c, -1]))
    idx = op.Reshape(indices, _ints([n * c, -1]))
    zeros = op.ConstantOfShape(_ints([n * c, plane]),
                               value=ir.tensor(np.zeros(1, np.float32)))
    out = op.ScatterElements(zeros, idx, g, axis=1, reduction="add")
    return op.Reshape(out, _ints([n, c, *size]))


#: The ``custom_translation_table`` given to ``torch.onnx.export`` for feature graphs: forward
#: ops without an ONNX translation.
FEATURE_TRANSLATIONS: dict[Callable, Callable] = {
    torch.ops.aten._adaptive_avg_pool3d.default: adaptive_avg_pool3d,
}

#: The ``custom_translation_table`` given to ``torch.onnx.export`` for gradient graphs.
GRAD_TRANSLATIONS: dict[Callable, Callable] = {
    **FEATURE_TRANSLATIONS,
    torch.ops.aten.max_pool2d_with_indices.default: max_pool2d_with_indices,
    torch.ops.aten.convolution_backward.default: convolution_backward,
    torch.ops.aten.avg_pool2d_backward.default: avg_pool2d_backward,
    torch.ops.aten._adaptive_avg_pool2d_backward.default: adaptive_avg_pool2d_backward,
    torch.ops.aten.max_pool3d_with_indices.default: max_pool3d_with_indices,
    torch.ops.aten.max_pool3d_with_indices_backward.default: max_pool3d_with_indices_backward,
    torch.ops.aten.avg_pool3d_backward.default: avg_pool3d_backward,
    torch.ops.aten._adaptive_avg_pool3d_backward.default: adaptive_avg_pool3d_backward,
}
