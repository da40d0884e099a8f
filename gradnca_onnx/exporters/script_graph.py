"""TorchScript models and torch.export programs as FX graphs: conversion, layer discovery,
the input's static sizes and the feature cut.

TorchScript modules cannot be re-parametrised (``functional_call``) nor exported by
``torch.export``; torch's TorchScript-to-ExportedProgram converter turns them into an FX
``GraphModule`` whose weights keep their module paths (``conv1.weight``), which every later
step handles like any other module. A ``torch.export.save`` program's ``module()`` is such a
graph already.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Sequence

import torch
from torch import fx, nn

from ..errors import InputError, first_line
from .errors import GradientGraphError
from .layers import LayerChoice, check_layer_order

_aten = torch.ops.aten
CONV_OPS = {_aten.conv2d.default, _aten.convolution.default, _aten._convolution.default}
LINEAR_OPS = {_aten.linear.default}


def script_to_fx(script_module: torch.jit.ScriptModule, example: torch.Tensor) -> fx.GraphModule:
    """Convert a loaded TorchScript module to an FX ``GraphModule`` (same weights and names).

    ``aten::warn`` nodes (scripted torchvision models warn about their return type) have no
    outputs and no FX counterpart, so they are dropped first.
    """
    from torch._export.converter import TS2EPConverter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            converter = TS2EPConverter(script_module, (example,))
            for node in converter.ts_graph.findAllNodes("aten::warn"):
                node.destroy()
            gm = converter.convert().module()
        except Exception as exc:  # the converter raises many internal types
            msg = first_line(exc, 200)
            raise InputError(f"cannot convert the TorchScript model to a graph: {msg}") from None
    return gm  # already eval: ep.module() forbids .eval(), the ScriptModule was put in eval first


def check_program_input(gm: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    """``gm`` (a ``torch.export`` program's module) if it runs on images shaped like
    ``example`` at any batch size; else one line saying how to re-export it.

    A dimension exported as static is a plain int in the input placeholder's recorded value
    (a dynamic one is a ``SymInt``); a static batch is baked into the program's reshapes, so
    the gradient graph (traced at another batch) could not be built from it.
    """
    _check_eval_mode(gm)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    val = inputs[0].meta.get("val") if len(inputs) == 1 else None
    if not isinstance(val, torch.Tensor):
        return gm  # no recorded shape (an older archive): the export itself will tell
    name, shape = inputs[0].name, tuple(val.shape)
    if len(shape) != example.ndim:
        raise InputError(f"the torch.export program's input {name!r} has {len(shape)} "
                         f"dimensions ({_dims(shape)}); the exporter feeds it images "
                         f"[B, C, H, W]")
    if isinstance(shape[0], int):
        dynamic = f'dynamic_shapes={{"{name}": {{0: torch.export.Dim("batch")}}}}'
        raise InputError(f"the torch.export program was exported with a static batch of "
                         f"{shape[0]} (input {name!r}: {_dims(shape)}), which its graph bakes "
                         f"in; re-export it with {dynamic}")
    if isinstance(shape[1], int) and shape[1] != example.shape[1]:
        raise InputError(f"the torch.export program takes {shape[1]} input channels (input "
                         f"{name!r}: {_dims(shape)}), not {example.shape[1]}: give "
                         f"--channels {shape[1]}")
    size, want = shape[2:], tuple(example.shape[2:])
    if any(isinstance(s, int) and s != w for s, w in zip(size, want)):
        raise InputError(f"the torch.export program was exported for {_dims(size, 'x')} images "
                         f"(input {name!r}: {_dims(shape)}), not {_dims(want, 'x')}: give "
                         f"--input-size {size[0]} or re-export it at this size")
    return gm


#: Operators whose ``training`` flag a program exported in training mode sets: their position.
_TRAINING_FLAG = {_aten.batch_norm.default: 5, _aten.dropout.default: 2,
                  _aten.feature_dropout.default: 2, _aten.alpha_dropout.default: 2,
                  _aten.feature_alpha_dropout.default: 2}


def _check_eval_mode(gm: fx.GraphModule) -> None:
    """Refuse a program traced in training mode: its BatchNorm uses the batch's statistics
    (and dropout is random), so an image's features would depend on the batch it is in, and
    ``.module()`` cannot be switched to eval mode afterwards."""
    for node in gm.graph.nodes:
        at = _TRAINING_FLAG.get(node.target) if node.op == "call_function" else None
        if at is not None and len(node.args) > at and node.args[at] is True:
            raise InputError(f"the torch.export program was exported in training mode "
                             f"({node.target} with training=True); call model.eval() before "
                             "torch.export.export and save it again")


def _dims(shape: Sequence[object], sep: str = ", ") -> str:
    """``[2, 3, 32, 32]`` (or ``32x32``), a dynamic size as its symbol."""
    text = sep.join(str(s) for s in shape)
    return text if sep == "x" else f"[{text}]"


def _attr(node: object) -> str | None:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        return str(node.target)
    return None


def _weight_path(node: fx.Node) -> str | None:
    w = _attr(node.args[1]) if len(node.args) > 1 else None
    return w[: -len(".weight")] if w and w.endswith(".weight") else None


def graph_layers(gm: fx.GraphModule) -> tuple[list[str], list[str]]:
    """Module paths of the conv and linear layers, in the graph's (execution) order."""
    convs, linears = [], []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        path = _weight_path(node)
        if path is None:
            continue
        if node.target in CONV_OPS and path not in convs:
            convs.append(path)
        elif node.target in LINEAR_OPS and path not in linears:
            linears.append(path)
    return convs, linears


def _uses(node: fx.Node, prefix: str) -> bool:
    return any((a := _attr(x)) is not None and (a.startswith(prefix + ".") or a == prefix)
               for x in node.all_input_nodes)


def _param_derived(node: fx.Node, memo: dict[fx.Node, bool]) -> bool:
    if node not in memo:
        if node.op == "get_attr":
            memo[node] = True
        elif node.op == "placeholder":
            memo[node] = False
        else:
            ins = node.all_input_nodes
            memo[node] = bool(ins) and all(_param_derived(i, memo) for i in ins)
    return memo[node]


def feature_graph(gm: fx.GraphModule, head: str, *, with_logits: bool = True,
                  global_pool_as_mean: bool = False) -> fx.GraphModule:
    """A ``GraphModule`` returning ``(features,)`` or ``(features, logits)``.

    Features are the data input of the first operation that uses a weight under ``head``
    (flattened to ``[B, D]``); logits are the output of the last such operation. With
    ``head=""`` the graph's own (first) output is the features. ``global_pool_as_mean``
    rewrites ``adaptive_avg_pool2d(x, 1)`` as a mean over H and W (see
    :func:`~gradnca_onnx.exporters.feature_model.global_pools_as_means`).
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(gm.graph, env)
    if global_pool_as_mean:
        for node in list(graph.nodes):
            if node.target is _aten.adaptive_avg_pool2d.default and \
                    list(node.args[1]) in ([1, 1], [1]):
                with graph.inserting_after(node):
                    mean = graph.call_function(_aten.mean.dim, (node.args[0], [-1, -2], True))
                node.replace_all_uses_with(mean)
                graph.erase_node(node)
    if head:
        users = [n for n in graph.nodes if n.op == "call_function" and _uses(n, head)]
        if not users:
            raise InputError(f"feature layer {head!r}: no operation of the model uses its weights")
        memo: dict[fx.Node, bool] = {}
        data = [i for i in users[0].all_input_nodes if not _param_derived(i, memo)]
        if len(data) != 1:
            raise InputError(f"feature layer {head!r}: its first operation "
                             f"({users[0].target}) does not take exactly one data input")
        feat_src, logits = data[0], users[-1]
    else:
        feat_src = out[0] if isinstance(out, (tuple, list)) else out
        logits, with_logits = None, False
    # graph_copy leaves out the output node, so new nodes append after everything else.
    feats = graph.call_function(_aten.flatten.using_ints, (feat_src, 1))
    graph.output((feats, logits) if with_logits else (feats,))
    out_gm = fx.GraphModule(gm, graph)
    out_gm.graph.eliminate_dead_code()  # needs the owning module for its purity checks
    out_gm.graph.lint()
    out_gm.recompile()
    return out_gm


def check_graph_conv(gm: nn.Module, path: str) -> None:
    """``path.weight`` must be a 4-D tensor of the graph (TorchScript, torch.export)."""
    state = dict(gm.named_parameters())
    state.update(dict(gm.named_buffers()))
    w = state.get(f"{path}.weight")
    if w is None:
        names = sorted({k.rsplit(".", 1)[0] for k in state if k.endswith(".weight")})
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise InputError(f"conv layer {path!r} is not a layer of this model's graph{hint}")
    if w.ndim != 4:
        raise InputError(f"conv layer {path!r} has a {w.ndim}-D weight; name Conv2d layers")


def graph_feature_layer(gm: fx.GraphModule, head: str | None = None) -> str:
    """The feature layer of a model's graph: ``head``, else its last linear."""
    if head is None:
        _, linears = graph_layers(gm)
        if not linears:
            raise InputError("the model's graph has no linear layer, so its feature layer is "
                             "unknown; name it with --head (or --head '' for the output)")
        head = linears[-1]
    return head


def locate_graph_layers(gm: fx.GraphModule, *, head: str | None = None,
                        convs: Sequence[str] | None = None) -> LayerChoice:
    """Feature layer and conv layers of a model's graph (TorchScript, torch.export).

    Defaults as for modules (:func:`~gradnca_onnx.exporters.layers.locate_layers`), read from the
    graph, whose order is the execution order: the last linear layer, the first two convs.
    """
    found_convs, _ = graph_layers(gm)
    head = graph_feature_layer(gm, head)
    rule = "user" if convs is not None else "first-two-convs"
    if convs is None:
        if len(found_convs) < 2:
            raise GradientGraphError(f"the model's graph runs {len(found_convs)} Conv2d "
                                     f"layer(s) ({', '.join(found_convs) or 'none'}) and S_FU "
                                     "compares the weight gradients of two", verb="export")
        convs = found_convs[:2]
    convs = list(convs)
    if len(convs) != 2:
        raise InputError(f"name exactly two different conv layers; got {convs}")
    for c in convs:
        check_graph_conv(gm, c)
    check_layer_order(convs, convs, found_convs, where="forward pass")
    return LayerChoice(head=head, conv1=convs[0], conv2=convs[1], rule=rule)
