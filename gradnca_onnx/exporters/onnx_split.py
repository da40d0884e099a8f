"""Cutting an exported gradient graph at the cotangent (ONNX level, no re-export).

The traced VJP is exported once, as a graph from ``(images, cotangent)`` to the features, the
two weight gradients and the logits. From it come ``grads.onnx`` (without the logits) and the
split pass: ``forward.onnx`` holds the nodes that depend on the images but not on the
cotangent, and returns the features, the logits and the *residuals*, the tensors of the
forward that backward nodes read; ``backward.onnx`` holds the nodes that depend on the
cotangent and reads the residuals as inputs. Nodes that depend on neither (arithmetic on
weights, constants) go into whichever half uses them. Every node of the two halves is a node
of ``grads.onnx``, so the split pass computes exactly what ``grads.onnx`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError
from ..zoo import residual_names
from .onnx_graph import ancestors


@dataclass
class SplitGraphs:
    """``forward.onnx`` and ``backward.onnx``, and the residuals' size per batch (bytes)."""

    forward: onnx.ModelProto
    backward: onnx.ModelProto
    residuals: int
    residual_bytes: int


def prune(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """The graph restricted to ``outputs`` (nodes and initializers nothing needs dropped)."""
    g = model.graph
    keep = _needed(g, outputs)
    return _rebuild(model, [n for i, n in enumerate(g.node) if i in keep], list(g.input),
                    [o for name in outputs for o in g.output if o.name == name], {})


def split(model: onnx.ModelProto, *, images: str, cotangent: str, forward_outputs: list[str],
          backward_outputs: list[str]) -> SplitGraphs:
    """Cut ``model`` at its ``cotangent`` input (see the module docstring)."""
    g = model.graph
    have = {o.name for o in g.output}
    absent = [o for o in [*forward_outputs, *backward_outputs] if o not in have]
    if absent:
        raise InputError(f"the gradient graph has no output(s) {absent}")
    infos = _value_infos(model)
    on_images = _dependents(g, images)
    backward_nodes = _backward_nodes(g, cotangent, forward_outputs, infos)
    read = {i for k in backward_nodes for i in g.node[k].input}
    produced_backward = {o for k in backward_nodes for o in g.node[k].output}
    residuals = [t for t in _tensor_order(g) if t in read and t in on_images
                 and t not in produced_backward]
    names = dict(zip(residuals, residual_names(len(residuals))))
    missing = [t for t in residuals if t not in infos]
    if missing:
        raise InputError(f"no type and shape recorded for residual tensor(s) {missing[:3]}")
    res_infos = [_renamed(infos[t], names[t]) for t in residuals]
    outputs = {o.name: o for o in g.output}

    fwd_keep = _needed(g, forward_outputs + residuals, stop={cotangent})
    if fwd_keep & backward_nodes:
        raise InputError("the forward outputs depend on the cotangent")
    fwd_nodes = [n for k, n in enumerate(g.node) if k in fwd_keep]
    # A residual that is also a graph input (the images, which the first layer's weight
    # gradient reads) or a forward output is copied out; any other is renamed in place.
    copied = [t for t in residuals if t == images or t in forward_outputs]
    extra = [helper.make_node("Identity", [t], [names[t]]) for t in copied]
    forward = _rebuild(model, fwd_nodes + extra, [i for i in g.input if i.name == images],
                       [outputs[o] for o in forward_outputs] + res_infos,
                       {t: n for t, n in names.items() if t not in copied})

    bwd_keep = _needed(g, backward_outputs, stop=set(residuals) | {cotangent})
    backward = _rebuild(model, [n for k, n in enumerate(g.node) if k in bwd_keep],
                        [i for i in g.input if i.name == cotangent] + res_infos,
                        [outputs[o] for o in backward_outputs], names)
    return SplitGraphs(forward, backward, len(residuals),
                       sum(_bytes(infos[t]) for t in residuals))


def _dependents(g: onnx.GraphProto, root: str) -> set[str]:
    found = {root}
    for node in g.node:  # ONNX nodes are in topological order
        if any(i in found for i in node.input):
            found.update(o for o in node.output if o)
    return found


#: Operators that only move, copy or widen data: where they feed the backward alone, running
#: them in the backward keeps their (no smaller) input as the residual instead of their
#: output, e.g. a 0/1 mask rather than its float cast, a convolution's input rather than
#: the gathered patches of its weight gradient.
MOVEMENT_OPS = frozenset({"Cast", "CastLike", "Concat", "Expand", "Flatten", "Identity", "Pad",
                          "Reshape", "Slice", "Squeeze", "Transpose", "Unsqueeze",
                          "Constant", "ConstantOfShape"})


def _backward_nodes(g: onnx.GraphProto, cotangent: str, forward_outputs: list[str],
                    infos: dict[str, onnx.ValueInfoProto]) -> set[int]:
    """Indices of the backward's nodes: those that depend on the cotangent, and, walking
    back, those whose every consumer is a backward node, that the forward outputs do not
    need, and that are data movement or do not shrink their input (so moving them there
    never enlarges the residuals)."""
    on_cotangent = _dependents(g, cotangent)
    backward = {k for k, n in enumerate(g.node) if any(i in on_cotangent for i in n.input)}
    forward = _needed(g, forward_outputs, stop={cotangent})
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(g.node):
        for i in n.input:
            consumers.setdefault(i, []).append(k)
    graph_outputs = {o.name for o in g.output}
    initializers = {t.name for t in g.initializer}
    for k in reversed(range(len(g.node))):
        if k in backward or k in forward:
            continue
        node = g.node[k]
        outs = [o for o in node.output if o]
        users = [u for o in outs for u in consumers.get(o, [])]
        if not users or any(u not in backward for u in users) or graph_outputs & set(outs):
            continue
        ins = [i for i in node.input if i and i not in initializers]
        if node.op_type in MOVEMENT_OPS or (
                all(t in infos for t in ins + outs)
                and sum(_bytes(infos[t]) for t in ins) <= sum(_bytes(infos[t]) for t in outs)):
            backward.add(k)
    return backward


def _tensor_order(g: onnx.GraphProto) -> list[str]:
    """Graph inputs, then node outputs, in graph order (a stable residual numbering)."""
    return [i.name for i in g.input] + [o for n in g.node for o in n.output if o]


def _needed(g: onnx.GraphProto, outputs: list[str], stop: Collection[str] = ()) -> set[int]:
    """Indices of the nodes ``outputs`` need, not looking past ``stop`` tensors."""
    return ancestors(g.node, outputs, stop)[0]


def _rebuild(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
             inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
             rename: dict[str, str]) -> onnx.ModelProto:
    """A model with ``nodes`` (tensors renamed by ``rename``) and the initializers they use."""
    copies = []
    for n in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.input[:] = [rename.get(i, i) for i in c.input]
        c.output[:] = [rename.get(o, o) for o in c.output]
        copies.append(c)
    used = {i for n in copies for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    produced = {o for n in copies for o in n.output}
    value_info = [v for v in model.graph.value_info
                  if v.name in produced and v.name not in rename]
    graph = helper.make_graph(copies, model.graph.name, inputs, outputs, inits,
                              value_info=value_info)
    out = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version, producer_name=model.producer_name,
                            producer_version=model.producer_version)
    out.functions.extend(model.functions)
    return out


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    infos = {v.name: v for v in g.value_info}
    infos.update({v.name: v for v in g.input})
    infos.update({v.name: v for v in g.output})
    return {k: v for k, v in infos.items() if _static(v)}


def _static(v: onnx.ValueInfoProto) -> bool:
    t = v.type.tensor_type
    return (v.type.HasField("tensor_type") and t.HasField("shape")
            and all(d.HasField("dim_value") for d in t.shape.dim))


def _renamed(v: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    c = onnx.ValueInfoProto()
    c.CopyFrom(v)
    c.name = name
    return c


def _bytes(v: onnx.ValueInfoProto) -> int:
    t = v.type.tensor_type
    size = int(np.prod([d.dim_value for d in t.shape.dim], dtype=np.int64))
    return size * np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
