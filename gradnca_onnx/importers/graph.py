"""An ONNX classifier graph as a static-control-flow ``nn.Module`` (the interpreter)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from ..errors import InputError
from ..exporters.onnx_graph import ancestors
from . import modules as m
from .errors import GradientGraphError, UnsupportedOperatorError
from .onnx_file import FLOAT_TYPES, PIXEL_RANGE, image_input, pixel_input, toposort
from .ops import _DTYPES, MODULE_OPS, STATIC_OPS, SUPPORTED_OPS, TENSOR_OPS, attributes

_NCHW = [0, 3, 1, 2]
#: Pad modes with a torch equivalent (element types that carry a gradient: FLOAT_TYPES).
_PAD_MODES = ("constant", "reflect", "edge")
#: Operators that only move or select the values of an integer pixel input (no arithmetic, so
#: torch and ONNX agree on them whatever the integer type).
_MOVES = ("Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice",
          "Gather", "Concat", "Split", "Expand", "Tile", "Pad")
#: Integer types that hold every pixel value 0..255 (a Cast to them changes no pixel).
_WIDE_INTS = (2, 5, 6, 7)


@dataclass
class _Step:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    module: str | None = None
    note: str = ""


@dataclass
class ImportPlan:
    """What the importer learnt about the graph (recorded in the manifest's source options)."""

    input_name: str
    input_dims: list[int | None]          # as declared by the file, in its own layout
    layout: str                           # "NCHW" or "NHWC"
    dropped_transpose: str | None
    pixels: str | None                    # integer input type read as pixels 0..255, or None
    head: str                             # module path for the exporter ("" = output)
    features_tensor: str
    convs: list[str] = field(default_factory=list)        # module paths, in topological order
    # Weight-bearing layers (Conv, and Gemm/MatMul with a constant weight of 2+ dims, as
    # nn.Linear) whose weights the features depend on, in topological order; convs among them.
    weight_layers: list[str] = field(default_factory=list)
    node_of: dict[str, str] = field(default_factory=dict)  # module path -> ONNX node name


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    a = attributes(node)
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise InputError(f"Constant node {node.name!r} has no supported value attribute")


def _label(node: onnx.NodeProto, i: int) -> str:
    return node.name or f"{node.op_type}_{i}"


def _unsupported(node: onnx.NodeProto, label: str, note: str = "") -> UnsupportedOperatorError:
    return UnsupportedOperatorError(node.op_type, label, note,
                                    f"supported operators: {', '.join(SUPPORTED_OPS)}")


@dataclass
class _Graph:
    """An ONNX classifier's graph, read once: constants, its one image input, the other nodes
    in topological order, and who reads what."""

    consts: dict[str, np.ndarray]
    image: onnx.ValueInfoProto
    pixels: str | None
    dims: list[int | None]
    order: list[onnx.NodeProto]
    labels: dict[int, str]
    consumers: dict[str, list[onnx.NodeProto]]
    graph_outputs: set[str]


def _read_graph(model: onnx.ModelProto) -> _Graph:
    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    image = image_input(graph, consts)
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = _constant_value(node)
        else:
            nodes.append(node)
    order = toposort(nodes, set(consts) | {image.name})
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in order:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in image.type.tensor_type.shape.dim]
    return _Graph(consts=consts, image=image, pixels=pixel_input(image), dims=dims, order=order,
                  labels={id(n): _label(n, i) for i, n in enumerate(order)},
                  consumers=consumers, graph_outputs={o.name for o in graph.output})


def _nhwc_input(g: _Graph) -> tuple[str, onnx.NodeProto | None]:
    """The input's layout, and the Transpose to NCHW that a Keras-style NHWC graph runs on
    its input first (dropped: the member takes NCHW images), if it is the input's only
    reader."""
    first_conv = next((k for k, n in enumerate(g.order) if n.op_type == "Conv"), None)
    transpose = next((n for n in g.order[:first_conv or 0] if n.op_type == "Transpose"
                      and list(attributes(n).get("perm", [])) == _NCHW), None)
    dims = g.dims
    layout = "NHWC" if (len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3)
                        and transpose is not None) else "NCHW"
    readers = g.consumers.get(g.image.name, [])
    if layout == "NHWC" and len(readers) == 1 and readers[0] is transpose:
        return layout, transpose
    return layout, None


class OnnxNet(nn.Module):
    """``forward(images NCHW) -> logits`` (or the chosen features), node by node in torch.

    Conv/BatchNormalization/Gemm/MatMul-with-constant-weights nodes are submodules named after
    their ONNX nodes; every other node is a torch function. Python control flow depends only on
    the graph, so tracing sees plain tensor ops.
    """

    def __init__(self, model: onnx.ModelProto, features_node: str | None = None) -> None:
        super().__init__()
        g = _read_graph(model)
        layout, dropped = _nhwc_input(g)
        order = [n for n in g.order if n is not dropped]
        steps = self._plan(order, g.consts, g.consumers, g.graph_outputs, g.labels)
        steps_by_node = {id(n): s for n, s in zip(order, steps)}
        ordered = [s for s in steps if s is not None]
        feat, logits_tensor, head = self._features(ordered, features_node)
        self._keep_needed(ordered, feat, logits_tensor, order, steps_by_node)
        self._check_differentiable(order, steps_by_node,
                                   {g.image.name} | ({dropped.output[0]} if dropped else set()),
                                   g.pixels)
        self._hold_constants(g.consts)
        self._input = g.image.name
        self._alias = dropped.output[0] if dropped is not None else None
        self._nhwc = layout == "NHWC"
        self._pixels = _DTYPES[g.image.type.tensor_type.elem_type] if g.pixels else None
        self._features = feat
        self._logits = logits_tensor
        self.plan = self._import_plan(g, layout, dropped, head, feat)

    def _features(self, ordered: list[_Step], features_node: str | None
                  ) -> tuple[str, str | None, str]:
        """The feature tensor, the logits tensor (or ``None``) and the exporter's head path:
        the input of the last linear head, or the user's node (or tensor)."""
        linears = [s for s in ordered if s.module and isinstance(self._modules[s.module],
                                                                 nn.Linear)]
        if not features_node:
            if not linears:
                raise InputError("the graph has no Gemm/MatMul classification head with constant "
                                 "weights; name the node whose output is the feature vector "
                                 "with --features-node")
            return linears[-1].inputs[0], linears[-1].outputs[0], linears[-1].module or ""
        hit = next((s for s in ordered if s.name == features_node), None)
        hit = hit or next((s for s in ordered if features_node in s.outputs), None)
        if hit is None:
            raise InputError(f"--features-node {features_node!r} is neither a node name nor "
                             "a tensor name of the graph")
        feat = features_node if features_node in hit.outputs else hit.outputs[0]
        after = [s for s in linears if feat in self._ancestors(ordered, s.outputs[0])]
        if not after:
            return feat, None, ""
        self.features_tap = m.FeatureTap()
        return feat, after[-1].outputs[0], "features_tap"

    def _keep_needed(self, ordered: list[_Step], feat: str, logits: str | None,
                     order: list[onnx.NodeProto], steps_by_node: dict) -> None:
        """Keep the steps (and the weights) the features and logits need; refuse, naming the
        node, an operator among them that the interpreter cannot run."""
        needed = self._ancestors(ordered, logits or feat) | self._ancestors(ordered, feat)
        self._steps = [s for s in ordered if set(s.outputs) & needed]
        for s in self._steps:
            if s.op not in TENSOR_OPS and s.module is None:
                node = next(n for n in order if steps_by_node[id(n)] is s)
                raise _unsupported(node, s.name, s.note)
        kept = {s.module for s in self._steps if s.module}
        for path in list(self._modules):
            if path not in kept and path != "features_tap":
                del self._modules[path]

    def _hold_constants(self, consts: dict[str, np.ndarray]) -> None:
        """The constants the kept steps read: float arrays as buffers (they follow the module's
        device and dtype), scalars and the rest as static NumPy values."""
        used = {i for s in self._steps for i in s.inputs}
        self._static: dict[str, np.ndarray] = {}
        self._buffers_of: dict[str, str] = {}
        for k, (tname, arr) in enumerate(consts.items()):
            if tname not in used:
                continue
            # Scalars stay static: they are bounds and fill values (Clip, Pad) that torch needs
            # as Python numbers, and plain constants elsewhere.
            if m.as_float(arr) and np.asarray(arr).size > 1:
                bname = f"const_{k}"
                self.register_buffer(bname, torch.as_tensor(np.array(arr, dtype=np.float32)))
                self._buffers_of[tname] = bname
            else:
                self._static[tname] = np.asarray(arr)

    def _import_plan(self, g: "_Graph", layout: str, dropped: onnx.NodeProto | None, head: str,
                     feat: str) -> ImportPlan:
        """What the importer learnt, for the exporter and the manifest."""
        feat_ancestors = self._ancestors(self._steps, feat)
        convs = [s.module for s in self._steps if s.op == "Conv" and s.module
                 and set(s.outputs) & feat_ancestors]
        weight_layers = [s.module for s in self._steps if s.module
                         and isinstance(self._modules[s.module], (nn.Conv2d, nn.Linear))
                         and set(s.outputs) & feat_ancestors]
        return ImportPlan(
            input_name=g.image.name, input_dims=g.dims, layout=layout,
            dropped_transpose=g.labels[id(dropped)] if dropped is not None else None,
            pixels=g.pixels, head=head, features_tensor=feat, convs=[c for c in convs if c],
            weight_layers=weight_layers,
            node_of={s.module: s.name for s in self._steps if s.module})

    # ------------------------------------------------------------------ building

    def _plan(self, order: list[onnx.NodeProto], consts: dict[str, np.ndarray],
              consumers: dict[str, list[onnx.NodeProto]], graph_outputs: set[str],
              labels: dict[int, str]) -> list[_Step | None]:
        steps: list[_Step | None] = []
        fused: set[int] = set()
        taken: set[str] = set()

        def path_for(label: str) -> str:
            base = re.sub(r"\W", "_", label).strip("_") or "node"
            base = base if not base[0].isdigit() else f"n{base}"
            path, k = base, 1
            while path in taken or path.startswith("const_") or path == "features_tap":
                k += 1
                path = f"{base}_{k}"
            taken.add(path)
            return path

        def const(name: str) -> np.ndarray | None:
            return consts.get(name) if name else None

        for node in order:
            label = labels[id(node)]
            a = attributes(node)
            if id(node) in fused:
                steps.append(None)
                continue
            step = _Step(node.op_type, label, list(node.input), list(node.output), a)
            op = node.op_type
            if op == "Conv":
                w, b = const(node.input[1]), const(node.input[2]) if len(node.input) > 2 else None
                if w is None or (len(node.input) > 2 and node.input[2] and b is None):
                    raise GradientGraphError(f"Conv node {label!r} computes its weights at run "
                                             "time (only constant conv weights are "
                                             "differentiated)")
                step.module = path_for(label)
                self.add_module(step.module, m.OnnxConv(w, b, a))
                step.inputs = step.inputs[:1]
            elif op == "BatchNormalization":
                if a.get("training_mode", 0):
                    raise InputError(f"BatchNormalization node {label!r} is in training mode; "
                                     "export the model in inference mode")
                params = [const(i) for i in node.input[1:5]]
                if any(p is None for p in params):
                    raise InputError(f"BatchNormalization node {label!r} has non-constant "
                                     "statistics")
                step.module = path_for(label)
                self.add_module(step.module, m.OnnxBatchNorm(*params, a.get("epsilon", 1e-5)))
                step.inputs, step.outputs = step.inputs[:1], step.outputs[:1]
            elif op in ("Gemm", "MatMul"):
                b = const(node.input[1])
                layer = None
                if b is not None and m.as_float(b) and b.ndim == 2:
                    if op == "Gemm":
                        has_c = len(node.input) > 2 and bool(node.input[2])
                        c = const(node.input[2]) if has_c else None
                        if not has_c or (c is not None and m.as_float(c)):
                            layer = m.gemm_as_linear(b, c, a)
                    else:
                        bias, out = None, node.output[0]
                        users = consumers.get(out, [])
                        # Keras/TF exports a dense layer as MatMul + Add(bias): one Linear.
                        if (len(users) == 1 and users[0].op_type == "Add"
                                and out not in graph_outputs):
                            other = [i for i in users[0].input if i != out]
                            cb = const(other[0]) if len(other) == 1 else None
                            if cb is not None and m.as_float(cb) and cb.size == b.shape[1]:
                                bias = cb
                                fused.add(id(users[0]))
                                step.outputs = list(users[0].output)
                        layer = m.linear(b.T, bias)
                if layer is not None:
                    step.module = path_for(label)
                    self.add_module(step.module, layer)
                    step.inputs = step.inputs[:1]
            if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
                if consumers.get(node.output[1]):
                    step.op, step.note = "MaxPoolWithIndices", " with its Indices output used"
            if node.op_type == "Dropout" and len(node.output) > 1 and consumers.get(
                    node.output[1]):
                step.op, step.note = "DropoutMask", " with its mask output used"
            if step.module is None and step.op in TENSOR_OPS and step.op != "Split":
                step.outputs = step.outputs[:1]
            steps.append(step)
        return steps

    def _check_differentiable(self, order: list[onnx.NodeProto], steps_by_node: dict,
                              image: set[str], pixels: str | None) -> None:
        """Refuse, naming the node, what the interpreter cannot differentiate faithfully: a Pad
        mode torch has no equivalent for, and a Cast of activations to a non-float type (the
        gradient stops there, so S_FU would silently see zeros).

        ``image``: the tensors holding the input (with a dropped transpose, its output too).
        A ``pixels`` (integer) input may only be moved (:data:`_MOVES`) and cast: integer
        arithmetic (a Div that truncates, a Sub that wraps) is not what torch computes, so a
        graph doing any is refused (a :class:`GradientGraphError`: its features-only member
        runs the original graph) rather than run differently.
        """
        runtime, integer = (set(), set(image)) if pixels else (set(image), set())
        for s in self._steps:
            node = next(n for n in order if steps_by_node[id(n)] is s)
            if s.op == "Pad" and s.attrs.get("mode", "constant") not in _PAD_MODES:
                raise _unsupported(node, s.name, f" in mode {s.attrs['mode']!r}")
            if s.op == "Cast" and s.attrs.get("to") not in _DTYPES:
                raise _unsupported(node, s.name, f" to ONNX element type {s.attrs.get('to')}")
            if s.op in ("Shape", "Size"):  # shapes carry no gradient
                continue
            if any(i in integer for i in s.inputs):
                if s.op == "Cast" and s.attrs["to"] in FLOAT_TYPES:
                    runtime.update(s.outputs)
                elif s.op in _MOVES or (s.op == "Cast" and s.attrs["to"] in _WIDE_INTS):
                    integer.update(s.outputs)
                else:  # the features graph (onnxruntime) still computes it exactly
                    raise GradientGraphError(
                        f"node {s.name!r} ({s.op}) computes on the graph's {pixels} input before "
                        "its Cast to float, which the importer does not reproduce in torch (for "
                        "S_FU, export the model with a float input)")
                continue
            live = any(i in runtime for i in s.inputs)
            if live and s.op == "Cast" and s.attrs["to"] not in FLOAT_TYPES:
                raise _unsupported(node, s.name, " of activations to a non-float type (not "
                                   "differentiable)")
            if live:
                runtime.update(s.outputs)

    @staticmethod
    def _ancestors(steps: list[_Step], tensor: str) -> set[str]:
        return ancestors(steps, [tensor], reads=lambda s: s.inputs, writes=lambda s: s.outputs)[1]

    # ------------------------------------------------------------------ running

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        values: dict[str, Any] = dict(self._static)
        for tname, bname in self._buffers_of.items():
            values[tname] = getattr(self, bname)
        if self._pixels is not None:
            # The pipeline gives pixels 0..255 within float32 rounding (manifest PIXEL_NORM):
            # the integer values the graph takes, rounded back exactly.
            images = images.round().clamp(*PIXEL_RANGE).to(self._pixels)
        if self._alias is not None:
            values[self._alias] = images  # the dropped NHWC->NCHW transpose
        else:
            values[self._input] = images.permute(0, 2, 3, 1) if self._nhwc else images
        for s in self._steps:
            ins = [values[i] if i else None for i in s.inputs]
            if s.module is not None:
                out: Any = getattr(self, s.module)(ins[0])
            elif s.op in STATIC_OPS and all(v is None or isinstance(v, np.ndarray) for v in ins):
                out = np.asarray(STATIC_OPS[s.op](ins, s.attrs))  # np.take may give a scalar
            else:
                out = TENSOR_OPS[s.op](ins, s.attrs)
            if isinstance(out, list):  # Split: one tensor per output
                values.update((name, v) for name, v in zip(s.outputs, out) if name)
            else:
                values[s.outputs[0]] = out
        if self._logits is None:
            return values[self._features]
        if hasattr(self, "features_tap"):
            return self.features_tap(values[self._features], logits=values[self._logits])
        return values[self._logits]


__all__ = ["ImportPlan", "OnnxNet", "MODULE_OPS"]
