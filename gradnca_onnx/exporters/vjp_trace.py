"""Tracing the vector-Jacobian product of the features with respect to the two conv weights.

``torch.onnx.export`` cannot export a module that calls ``torch.func.vjp`` or
``torch.autograd.grad``. Tracing the VJP with ``make_fx`` instead gives a plain graph of ATen
forward and backward ops; a small module holding the weights as buffers (they become ONNX
initializers) then exports like any forward model.

The rewrites below keep the forward activations the backward reads (the *residuals* of the
split gradient pass, :mod:`gradnca_onnx.exporters.onnx_split`) few and small.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
from torch import fx, nn
from torch.func import functional_call, vjp
from torch.fx.experimental.proxy_tensor import make_fx

from ..errors import InputError


def named_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` by qualified name (shared tensors once)."""
    state = {n: p.detach() for n, p in module.named_parameters()}
    state.update({n: b for n, b in module.named_buffers()})
    return state


class GradModule(nn.Module):
    """A traced graph whose trailing inputs are the model's tensors, held as buffers.

    ``forward(images, cotangent)`` runs the graph on them followed by the tensors:
    ``(features, grad_w1, grad_w2, *aux)`` for a :class:`TracedVJP`.
    """

    def __init__(self, graph: fx.GraphModule, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.graph_module = graph
        self.n_tensors = len(tensors)
        for i, t in enumerate(tensors):
            self.register_buffer(f"w{i}", t)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tensors = [getattr(self, f"w{i}") for i in range(self.n_tensors)]
        return self.graph_module(*inputs, *tensors)


@dataclass
class TracedVJP:
    """The traced VJP: ``graph(images, cotangent, *tensors) -> (features, g1, g2, *aux)``.

    ``aux`` are the model's further outputs (the logits, ``n_aux`` of them).
    """

    graph: fx.GraphModule
    tensors: list[torch.Tensor]
    n_aux: int

    def module(self) -> GradModule:
        """``(images, cotangent) -> (features, grad_w1, grad_w2, *aux)``."""
        return GradModule(self.graph, self.tensors)


def trace_feature_vjp(features: Callable[..., tuple[torch.Tensor, ...]] | nn.Module,
                      w1_name: str, w2_name: str, images: torch.Tensor,
                      cotangent: torch.Tensor) -> TracedVJP:
    """Trace ``(features, d<features, cotangent>/dW1, .../dW2, *aux)`` at the given sizes.

    Parameters
    ----------
    features : nn.Module
        Eval-mode module whose ``forward(images)`` returns a tuple starting with the features
        (further outputs, the logits, come back as ``aux``).
    w1_name, w2_name : str
        Qualified names of the two conv weights among its parameters/buffers.
    images, cotangent : Tensor
        Example inputs; the traced graph is fixed to their shapes (real-mode tracing).
    """
    state = named_tensors(features)
    for name in (w1_name, w2_name):
        if name not in state:
            raise InputError(f"weight {name!r} is not a tensor of the model")
    names = list(state)

    def grads(images: torch.Tensor, cotangent: torch.Tensor, *tensors: torch.Tensor):
        base = dict(zip(names, tensors))

        def forward(w1: torch.Tensor, w2: torch.Tensor):
            out = functional_call(features, {**base, w1_name: w1, w2_name: w2}, (images,))
            return out[0], tuple(out[1:])

        feats, pullback, aux = vjp(forward, base[w1_name], base[w2_name], has_aux=True)
        g1, g2 = pullback(cotangent)
        return (feats, g1, g2, *aux)

    tensors = [state[n] for n in names]
    graph = make_fx(grads)(images, cotangent, *tensors)
    views_as_reshapes(graph)
    relu_masks(graph)
    shape_only_inputs(graph)
    eval_batch_norm_backward(graph)
    tensors += small_map_convs(graph, tensors, skip={names.index(w1_name), names.index(w2_name)})
    with torch.no_grad():
        n_aux = len(graph(images, cotangent, *tensors)) - 3
    return TracedVJP(graph, tensors, n_aux)


def relu_masks(graph: fx.GraphModule) -> None:
    """Rewrite ``threshold_backward(g, y, t)`` (ReLU's backward) as ``g * (y > t)``.

    Same values; the comparison reads only the forward's ``y``, so in the split graphs the
    residual is a one-byte mask instead of a float activation, and onnxruntime runs the
    product 3.3x faster than the default translation's Where (a (32, 64, 112, 112) batch).
    """
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.threshold_backward.default:
            grad, y, threshold = node.args
            with graph.graph.inserting_before(node):
                mask = graph.graph.call_function(torch.ops.aten.gt.Scalar, (y, threshold))
                prod = graph.graph.call_function(torch.ops.aten.mul.Tensor, (grad, mask))
            node.replace_all_uses_with(prod)
            graph.graph.erase_node(node)
    graph.recompile()


_aten = torch.ops.aten


def shape_only_inputs(graph: fx.GraphModule) -> None:
    """Give backward ops that read a forward tensor only for its shape a constant stand-in.

    A convolution's input gradient needs the input's shape, not its values (the weight
    gradient needs the values); max pooling's backward needs its input's shape and the
    indices. Without the stand-in each of these activations would be a residual of the split
    graphs (for resnet18: 45% of them).
    """
    for node in list(graph.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is _aten.convolution_backward.default and not node.args[-1][1]:
            _stand_in(graph.graph, node, 1)
        elif node.target in (_aten.max_pool2d_with_indices_backward.default,
                             _aten.max_pool3d_with_indices_backward.default):
            _stand_in(graph.graph, node, 1)
    graph.recompile()


def _stand_in(graph: fx.Graph, node: fx.Node, index: int) -> None:
    arg = node.args[index]
    val = arg.meta.get("val") if isinstance(arg, fx.Node) else None
    if not isinstance(val, torch.Tensor):
        return  # no recorded shape: keep the real tensor
    with graph.inserting_before(node):
        zeros = graph.call_function(_aten.zeros.default, (list(val.shape),),
                                    {"dtype": val.dtype, "device": val.device})
    zeros.meta["val"] = val
    node.update_arg(index, zeros)


def eval_batch_norm_backward(graph: fx.GraphModule) -> None:
    """Rewrite the eval-mode BatchNorm input gradient as ``g * weight / sqrt(var + eps)``.

    ATen's ``native_batch_norm_backward`` reads the normalised input even when, as in eval
    mode with only the input gradient asked for, the result does not depend on it; the
    product with a per-channel constant does not make the activation a residual.
    """
    for node in list(graph.graph.nodes):
        if not (node.op == "call_function"
                and node.target is _aten.native_batch_norm_backward.default):
            continue
        grad, x, weight, _, running_var, _, _, train, eps, mask = node.args
        users = list(node.users)
        if train or list(mask) != [True, False, False] or not all(
                u.target is operator.getitem and (u.args[1] == 0 or not u.users) for u in users):
            continue
        val = x.meta.get("val") if isinstance(x, fx.Node) else None
        if not isinstance(val, torch.Tensor) or not isinstance(running_var, fx.Node):
            continue
        g = graph.graph
        with g.inserting_before(node):
            scale = g.call_function(_aten.rsqrt.default,
                                    (g.call_function(_aten.add.Scalar, (running_var, eps)),))
            if weight is not None:
                scale = g.call_function(_aten.mul.Tensor, (weight, scale))
            shape = [1, int(val.shape[1])] + [1] * (val.dim() - 2)
            scale = g.call_function(_aten.reshape.default, (scale, shape))
            prod = g.call_function(_aten.mul.Tensor, (grad, scale))
        for u in users:
            u.replace_all_uses_with(prod)
            g.erase_node(u)
        g.erase_node(node)
    graph.recompile()


def views_as_reshapes(graph: fx.GraphModule) -> None:
    """Replace every ``aten.view`` of the traced graph by ``aten.reshape`` (same values).

    The strides seen while tracing in real mode need not be those ``torch.export`` later
    propagates with fake tensors (a backward through a permute, e.g. Swin's NHWC head), where
    a view of a non-contiguous tensor is refused; a reshape copies only where a view cannot.
    """
    views = (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default)
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in views:
            node.target = torch.ops.aten.reshape.default
    graph.recompile()


def small_map_convs(graph: fx.GraphModule, tensors: list[torch.Tensor], *,
                    skip: set[int]) -> list[torch.Tensor]:
    """Write the convolutions on the smallest feature maps as one matrix product per batch.

    A convolution is the product of the flattened input with the layer's (Cin·H·W,
    Cout·Ho·Wo) linear-map matrix. On the smallest maps that product does no more
    multiply-adds than the direct convolution (none with the zero padding) and runs as one
    batched GEMM instead of one small GEMM per image. Only matrices up to twice the size of
    the layer's weight (which the graph then no longer holds) are made: a 3x3 layer at 1x1
    (resnet18's last stage at 28 px) or at 2x2 (1.8x; its third stage), a strided one from
    2x2 to 1x1, a 1x1 layer at 1x1 (squeeze-excitation). On those onnxruntime ran the layer
    1.6-4.4x faster than its Conv (batch 183, one thread), and the strided one's input
    gradient, the product with the transpose, 7x faster than its ConvTranspose. The matrix is
    exact: each entry is one weight or zero.

    ``skip`` are indices into ``tensors`` (the two S_FU weights, whose gradients the graph
    computes). Returns the matrices; the graph reads them as placeholders after ``tensors``.
    """
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    weights = {node: i for i, node in enumerate(placeholders[-len(tensors):])} if tensors else {}
    matrices: list[torch.Tensor] = []
    made: dict[tuple, fx.Node] = {}
    last = placeholders[-1]
    for node in list(graph.graph.nodes):
        geometry = _small_map_geometry(node, weights, skip)
        if geometry is None:
            continue
        key = (geometry.weight, geometry.key)
        if key not in made:
            weight = tensors[weights[geometry.weight]]
            if geometry.size_in * geometry.size_out > 2 * weight.numel():
                continue  # e.g. a strided 3x3 layer from 4x4 to 2x2: 7x its weight
            matrix = geometry.matrix(weight)
            with graph.graph.inserting_after(last):
                last = made[key] = graph.graph.placeholder(f"small_map_{len(matrices)}")
            matrices.append(matrix)
        _as_product(graph.graph, node, geometry, made[key])
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return matrices


@dataclass(frozen=True)
class _SmallMap:
    """One convolution (or its input gradient) that :func:`small_map_convs` rewrites."""

    weight: fx.Node
    backward: bool
    n: int
    in_shape: tuple[int, ...]    # (Cin, H, W)
    out_shape: tuple[int, ...]   # (Cout, Ho, Wo)
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def key(self) -> tuple:
        return (self.in_shape, self.stride, self.padding, self.dilation)

    @property
    def size_in(self) -> int:
        return self.in_shape[0] * self.in_shape[1] * self.in_shape[2]

    @property
    def size_out(self) -> int:
        return self.out_shape[0] * self.out_shape[1] * self.out_shape[2]

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """(Cin·H·W, Cout·Ho·Wo): the convolution applied to each one-hot input, in float64
        (every entry is a single weight, so casting back is exact)."""
        w = weight.detach().double()
        rows = []
        for start in range(0, self.size_in, 1024):  # a block of the identity at a time
            rows_here = torch.arange(start, min(start + 1024, self.size_in))
            block = torch.zeros(len(rows_here), self.size_in, dtype=torch.float64)
            block[torch.arange(len(rows_here)), rows_here] = 1.0
            out = torch.nn.functional.conv2d(block.reshape(-1, *self.in_shape), w, None,
                                             self.stride, self.padding, self.dilation)
            assert tuple(out.shape[1:]) == self.out_shape
            rows.append(out.reshape(len(block), -1))
        return torch.cat(rows).to(weight.dtype).contiguous()


def _shape(value: object) -> tuple[int, ...] | None:
    val = value.meta.get("val") if isinstance(value, fx.Node) else None
    return tuple(int(d) for d in val.shape) if isinstance(val, torch.Tensor) else None


def _small_map_geometry(node: fx.Node, weights: dict[fx.Node, int],
                        skip: set[int]) -> _SmallMap | None:
    if node.op != "call_function":
        return None
    if node.target is _aten.convolution.default:
        x, w, _, stride, padding, dilation, transposed, _, groups = node.args
        backward, x_shape = False, _shape(x)
    elif node.target is _aten.convolution_backward.default:
        g, x, w, _, stride, padding, dilation, transposed, _, groups, mask = node.args
        if list(mask) != [True, False, False]:
            return None
        backward, x_shape = True, _shape(x)
    else:
        return None
    if (w not in weights or weights[w] in skip or transposed or groups != 1
            or x_shape is None or len(x_shape) != 4):
        return None
    cout, _, kh, kw = _shape(w)
    y_shape = (cout, *((h + 2 * p - d * (k - 1) - 1) // s + 1 for h, k, s, p, d in zip(
        x_shape[2:], (kh, kw), stride, padding, dilation)))
    return _SmallMap(w, backward, x_shape[0], x_shape[1:], y_shape, tuple(stride),
                     tuple(padding), tuple(dilation))


def _as_product(g: fx.Graph, node: fx.Node, geo: _SmallMap, matrix: fx.Node) -> None:
    """Replace ``node`` by ``reshape(reshape(x) @ matrix)`` (forward) or the product of the
    flattened output gradient with the matrix's transpose (input gradient)."""
    n, size_in, size_out = geo.n, geo.size_in, geo.size_out
    with g.inserting_before(node):
        if geo.backward:
            flat = g.call_function(_aten.reshape.default, (node.args[0], [n, size_out]))
            prod = g.call_function(_aten.mm.default,
                                   (flat, g.call_function(_aten.t.default, (matrix,))))
            out = g.call_function(_aten.reshape.default, (prod, [n, *geo.in_shape]))
        else:
            flat = g.call_function(_aten.reshape.default, (node.args[0], [n, size_in]))
            prod = g.call_function(_aten.mm.default, (flat, matrix))
            out = g.call_function(_aten.reshape.default, (prod, [n, *geo.out_shape]))
            bias = node.args[2]
            if bias is not None:
                out = g.call_function(_aten.add.Tensor, (out, g.call_function(
                    _aten.reshape.default, (bias, [1, geo.out_shape[0], 1, 1]))))
    if geo.backward:
        for user in list(node.users):
            if user.target is operator.getitem and user.args[1] == 0:
                user.replace_all_uses_with(out)
    else:
        node.replace_all_uses_with(out)
