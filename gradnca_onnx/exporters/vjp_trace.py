"""Tracing the vector-Jacobian product of the features with respect to the two conv weights.

``torch.onnx.export`` cannot export a module that calls ``torch.func.vjp`` or
``torch.autograd.grad``. Tracing the VJP with ``make_fx`` instead gives a plain graph of ATen
forward and backward ops; a small module holding the weights as buffers (they become ONNX
initializers) then exports like any forward model.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import fx, nn
from torch.func import functional_call, vjp
from torch.fx.experimental.proxy_tensor import make_fx


def named_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` by qualified name (shared tensors once)."""
    state = {n: p.detach() for n, p in module.named_parameters()}
    state.update({n: b for n, b in module.named_buffers()})
    return state


class GradModule(nn.Module):
    """``forward(images, cotangent) -> (features, grad_w1, grad_w2)`` over a traced graph."""

    def __init__(self, graph: fx.GraphModule, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.graph_module = graph
        self.n_tensors = len(tensors)
        for i, t in enumerate(tensors):
            self.register_buffer(f"w{i}", t)

    def forward(self, images: torch.Tensor, cotangent: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tensors = [getattr(self, f"w{i}") for i in range(self.n_tensors)]
        return self.graph_module(images, cotangent, *tensors)


def trace_feature_vjp(features: Callable[..., tuple[torch.Tensor, ...]] | nn.Module,
                      w1_name: str, w2_name: str, images: torch.Tensor,
                      cotangent: torch.Tensor) -> GradModule:
    """Trace ``(features, d<features, cotangent>/dW1, .../dW2)`` at the given input sizes.

    Parameters
    ----------
    features : nn.Module
        Eval-mode module whose ``forward(images)`` returns a tuple starting with the features.
    w1_name, w2_name : str
        Qualified names of the two conv weights among its parameters/buffers.
    images, cotangent : Tensor
        Example inputs; the traced graph is fixed to their shapes (real-mode tracing).
    """
    state = named_tensors(features)
    for name in (w1_name, w2_name):
        if name not in state:
            raise ValueError(f"weight {name!r} is not a tensor of the model")
    names = list(state)

    def grads(images: torch.Tensor, cotangent: torch.Tensor, *tensors: torch.Tensor):
        base = dict(zip(names, tensors))

        def forward(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
            return functional_call(features, {**base, w1_name: w1, w2_name: w2}, (images,))[0]

        feats, pullback = vjp(forward, base[w1_name], base[w2_name])
        g1, g2 = pullback(cotangent)
        return feats, g1, g2

    tensors = [state[n] for n in names]
    graph = make_fx(grads)(images, cotangent, *tensors)
    views_as_reshapes(graph)
    return GradModule(graph, tensors)


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
