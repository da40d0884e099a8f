"""Features-only zoo members: the ONNX classifier's own graph, cut at its features.

When the gradient graph of S_FU cannot be built (an operator the importer cannot
differentiate, fewer than two convolutions, ...), the model can still be scored by S_LP and the
baseline metrics, which need only features and logits. Those come from the original graph
itself, cut at the feature tensor, so no operator has to be re-implemented or differentiated:
whatever onnxruntime runs, the member runs. The result is a model directory with
``features.onnx`` (the exporters' interface: ``images`` NCHW -> ``features`` [B, D] and, with a
head, ``logits`` [B, K]) and a schema-2 manifest whose ``features_only`` field says why there
is no ``grads.onnx``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InputError, first_line
from ..exporters.onnx_graph import ancestors
from ..zoo import FEATURES_FILE, BatchPolicy, LayerSpec
from ..zoo.manifest import check_source_images
from .onnx_file import (
    FLOAT_TYPES,
    PIXEL_RANGE,
    image_input,
    pixel_input,
    pixel_normalisation,
    pixel_options,
    toposort,
)

_NCHW = [0, 3, 1, 2]
_NHWC = [0, 2, 3, 1]
#: Tensor names the cut graph's interface owns; a graph tensor of the same name is renamed.
_RESERVED = ("images", "features", "logits")
#: Past this size a protobuf cannot be serialised in one piece; the weights go to a side file.
_PROTO_LIMIT = 1_800_000_000
EXTERNAL_DATA_FILE = "features.onnx.data"


@dataclass
class FeaturesCut:
    """Where the features are in an ONNX classifier graph (found without torch).

    The rules are those of :class:`~gradnca_onnx.importers.OnnxNet`: the features are the
    input of the last Gemm/MatMul with constant 2-D weights (logits: its output, a Keras
    ``MatMul + Add(bias)`` counted as one layer), or the output of the node (or the tensor)
    the user names, the logits then being those of the last such head that follows it.
    """

    input_name: str
    input_dims: list[int | None]
    layout: str                      # "NCHW" or "NHWC"
    pixels: str | None               # integer input type read as pixels 0..255, or None
    features_tensor: str
    logits_tensor: str | None
    head_node: str                   # the head node, or the user's features node
    first_conv_channels: int | None  # input channels of the first Conv, when one exists


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


@dataclass(frozen=True)
class _Const:
    """Shape and kind of a constant tensor (its values are never needed, and a head's weight
    can be hundreds of MB)."""

    shape: tuple[int, ...] | None   # None: a Constant whose value is not a tensor attribute
    is_float: bool


def _constants(graph: onnx.GraphProto) -> dict[str, _Const]:
    """Constant tensors by name: initializers and ``Constant`` node outputs."""
    out = {t.name: _Const(tuple(t.dims), t.data_type in FLOAT_TYPES) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            out[node.output[0]] = (_Const(tuple(value.dims), value.data_type in FLOAT_TYPES)
                                   if isinstance(value, onnx.TensorProto)
                                   else _Const(None, False))
    return out


def _ancestors(nodes: list[onnx.NodeProto], tensors: list[str]) -> set[str]:
    """Every tensor the given tensors are computed from (themselves included)."""
    return ancestors(nodes, tensors)[1]


def find_features(model: onnx.ModelProto, features_node: str | None = None) -> FeaturesCut:
    """Locate the image input, its layout, the feature tensor and the logits of a classifier.

    Parameters
    ----------
    model : onnx.ModelProto
        A classifier already read by :func:`~gradnca_onnx.importers.load_onnx`.
    features_node : str, optional
        Node (or tensor) whose output is the feature vector.

    Raises
    ------
    ValueError
        Not one image input, no classification head and no ``features_node``, or an unknown
        ``features_node``.
    """
    graph = model.graph
    consts = _constants(graph)
    image = image_input(graph, consts)
    pixels = pixel_input(image)
    if pixels is None and image.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise InputError(f"the graph's input {image.name!r} is not float32; a features-only "
                         "member takes float32 images (or integer pixels 0..255): export the "
                         "model with a float32 input")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in image.type.tensor_type.shape.dim]
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    order = toposort(nodes, set(consts) | {image.name})
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in order:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    labels = {id(n): n.name or f"{n.op_type}_{k}" for k, n in enumerate(order)}

    first_conv = next((k for k, n in enumerate(order) if n.op_type == "Conv"), None)
    before = order[:first_conv] if first_conv is not None else order
    transpose = next((n for n in before if n.op_type == "Transpose"
                      and list(_attr(n, "perm", [])) == _NCHW), None)
    layout = "NHWC" if (len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3)
                        and transpose is not None) else "NCHW"

    # Heads: Gemm/MatMul with a constant 2-D float weight (the interpreter's nn.Linear rule).
    heads: list[tuple[onnx.NodeProto, str]] = []
    for n in order:
        if n.op_type not in ("Gemm", "MatMul") or len(n.input) < 2:
            continue
        w = consts.get(n.input[1])
        if w is None or w.shape is None or len(w.shape) != 2 or not w.is_float:
            continue
        out = n.output[0]
        if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] and n.input[2] not in consts:
            continue
        if n.op_type == "MatMul":
            users = consumers.get(out, [])
            if len(users) == 1 and users[0].op_type == "Add" and out not in graph_outputs:
                other = [i for i in users[0].input if i != out]
                bias = consts.get(other[0]) if len(other) == 1 else None
                if (bias is not None and bias.shape is not None and bias.is_float
                        and int(np.prod(bias.shape)) == w.shape[1]):
                    out = users[0].output[0]  # Keras dense: MatMul + Add(bias) is one layer
        heads.append((n, out))

    if features_node:
        hit = next((n for n in order if labels[id(n)] == features_node), None)
        hit = hit or next((n for n in order if features_node in n.output), None)
        if hit is None:
            raise InputError(f"--features-node {features_node!r} is neither a node name nor a "
                             "tensor name of the graph")
        feat = features_node if features_node in hit.output else hit.output[0]
        head_node = labels[id(hit)]
        after = [out for n, out in heads if feat in _ancestors(order, [out])]
        logits = after[-1] if after else None
    else:
        if not heads:
            raise InputError("the graph has no Gemm/MatMul classification head with constant "
                             "weights; name the node whose output is the feature vector with "
                             "--features-node")
        node, logits = heads[-1]
        feat, head_node = node.input[0], labels[id(node)]

    needed = _ancestors(order, [feat])
    conv = next((n for n in order if n.op_type == "Conv" and set(n.output) & needed), None)
    channels = None
    weight = consts.get(conv.input[1]) if conv is not None and len(conv.input) > 1 else None
    if conv is not None and weight is not None and weight.shape and len(weight.shape) == 4:
        channels = int(weight.shape[1]) * int(_attr(conv, "group", 1))
    return FeaturesCut(input_name=image.name, input_dims=dims, layout=layout, pixels=pixels,
                       features_tensor=feat, logits_tensor=logits, head_node=head_node,
                       first_conv_channels=channels)


# --------------------------------------------------------------------------- the cut graph


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in ``graph`` and its subgraphs' reads."""
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        n.output[:] = [new if o == old else o for o in n.output]
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _rename(g, old, new)
    for coll in (graph.input, graph.output, graph.value_info):
        for v in coll:
            if v.name == old:
                v.name = new
    for t in graph.initializer:
        if t.name == old:
            t.name = new


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    names |= {v.name for v in graph.output} | {v.name for v in graph.value_info}
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
    return names


def build_features_graph(model: onnx.ModelProto, cut: FeaturesCut, *, channels: int,
                         height: int, width: int, with_logits: bool = True) -> onnx.ModelProto:
    """The classifier's graph cut to ``images [B, C, H, W] -> features [B, D] (, logits)``.

    An NHWC graph keeps its own transpose: a ``Transpose(perm=[0, 2, 3, 1])`` in front makes
    it take NCHW images like every zoo model (onnxruntime cancels the pair). The features are
    flattened to [B, D]; nodes that neither output needs are dropped, so an unrelated operator
    (an ArgMax output, a Softmax) costs nothing.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    feat, logits = cut.features_tensor, cut.logits_tensor if with_logits else None
    image = cut.input_name
    names = _all_names(g)
    for reserved in _RESERVED:
        if reserved not in names or (reserved == image == "images" and cut.layout == "NCHW"
                                     and cut.pixels is None):
            continue  # an NCHW float input already called "images" is the interface's own input
        new, k = f"{reserved}_orig", 1
        while new in names:
            k += 1
            new = f"{reserved}_orig{k}"
        _rename(g, reserved, new)
        names.add(new)
        feat, image = (new if feat == reserved else feat), (new if image == reserved else image)
        logits = new if logits == reserved else logits

    front: list[onnx.NodeProto] = []
    pixels = "images"
    if cut.pixels is not None:
        # Pixels 0..255 within float32 rounding (manifest PIXEL_NORM) back to the exact
        # integers of the graph's input type, as OnnxNet does.
        low, high = (numpy_helper.from_array(np.array(v, np.float32), f"gradnca_pixel_{k}")
                     for v, k in zip(PIXEL_RANGE, ("low", "high")))
        g.initializer.extend([low, high])
        elem = next(i for i in g.input if i.name == image).type.tensor_type.elem_type
        front += [helper.make_node("Round", ["images"], ["gradnca_rounded"], "gradnca_round"),
                  helper.make_node("Clip", ["gradnca_rounded", low.name, high.name],
                                   ["gradnca_clipped"], "gradnca_clip"),
                  helper.make_node("Cast", ["gradnca_clipped"], ["gradnca_pixels"],
                                   "gradnca_pixels", to=elem)]
        pixels = "gradnca_pixels"
    if cut.layout == "NHWC":
        front.append(helper.make_node("Transpose", [pixels], [image],
                                      "gradnca_images_to_nhwc", perm=_NHWC))
    elif image != pixels:
        front.append(helper.make_node("Identity", [pixels], [image], "gradnca_images"))
    back = [helper.make_node("Flatten", [feat], ["features"], "gradnca_features", axis=1)]
    if logits is not None:
        back.append(helper.make_node("Identity", [logits], ["logits"], "gradnca_logits"))
    nodes = front + list(g.node) + back
    outputs = ["features"] + (["logits"] if logits is not None else [])
    needed = _ancestors(nodes, outputs)
    initializers = [t for t in g.initializer if t.name in needed]
    known = {t.name for t in initializers} | {t.values.name for t in g.sparse_initializer}
    kept = toposort([n for n in nodes if set(n.output) & needed], known | {"images"})
    value_info = [v for v in g.value_info if v.name in needed]
    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(initializers)
    sparse = [t for t in g.sparse_initializer if t.values.name in needed]
    del g.sparse_initializer[:]
    g.sparse_initializer.extend(sparse)
    del g.value_info[:]
    g.value_info.extend(value_info)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                 ["batch", channels, height, width]))
    del g.output[:]
    g.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", None])
                    for o in outputs)
    return out


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one small check batch; idle threads only spin
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _save(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() > _PROTO_LIMIT:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=EXTERNAL_DATA_FILE)
    else:
        onnx.save_model(model, str(path))


def write_features_only(model: onnx.ModelProto, src: Path, zoo_dir: str | os.PathLike, *,
                        name: str, cut: FeaturesCut, channels: int, height: int, width: int,
                        reason: str, norm: str | None = None, pretrained_on: str = "unknown",
                        opset: int, force: bool = False,
                        source_images: int | None = None, intensity: Any = None) -> Path:
    """Write ``zoo_dir/<name>/`` with ``features.onnx`` and a features-only manifest.

    Parameters
    ----------
    model : onnx.ModelProto
        The classifier, read by :func:`~gradnca_onnx.importers.load_onnx` (safety checks
        done, external data loaded).
    src : Path
        Its file (name and sha256 go to the manifest's ``source``).
    zoo_dir : path
    name : str
    cut : FeaturesCut
        From :func:`find_features`.
    channels, height, width : int
        The NCHW images the member takes.
    reason : str
        Why there is no gradient graph (the manifest's ``features_only``).
    norm, pretrained_on, force, source_images
        As for :func:`~gradnca_onnx.importers.import_onnx`.
    opset : int
        The classifier's default-domain opset (the cut graph keeps it).

    Raises
    ------
    ValueError
        onnxruntime cannot run the cut graph, its features are not [B, D] at batch 2 (a
        reshape fixed to batch 1), or the name exists without ``force``.
    """
    from .. import sources
    from ..exporters.api import check_trace_memory
    from ..exporters.member import check_pretrained_on, input_spec, publish_member

    pretrained_on = check_pretrained_on(pretrained_on)
    source_images = check_source_images(source_images)
    inp = input_spec(channels, height, width, pixel_normalisation(cut.pixels, cut.input_name,
                                                                  norm), pretrained_on,
                     intensity=intensity)
    check_trace_memory((height, width), channels, 0)

    def write(staging: Path) -> dict[str, Any]:
        feats, logits = _write_cut_graph(model, src, cut, inp, staging)
        options = {"opset": opset, "input_layout": cut.layout, **pixel_options(cut.pixels),
                   "features_tensor": cut.features_tensor,
                   "onnx_nodes": {"features": cut.head_node}}
        import onnxruntime

        return dict(
            name=name, architecture=src.stem or "onnx", pretrained_on=pretrained_on,
            source=sources.get("onnx").describe_file(src, options), input=inp,
            layers=LayerSpec(features=cut.head_node, conv1=None, conv2=None,
                             conv1_weight_shape=None, conv2_weight_shape=None),
            feature_dim=int(feats.shape[1]),
            num_classes=int(logits.shape[1]) if logits is not None else None,
            opset=opset, batch_policy=BatchPolicy(grads_batch=None), ort_optimization="all",
            producer={"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            features_only=reason, source_images=source_images)

    return publish_member(zoo_dir, name, force=force, write=write)


def _write_cut_graph(model: onnx.ModelProto, src: Path, cut: FeaturesCut, inp: Any,
                     staging: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Write ``features.onnx`` (the cut graph) into ``staging`` and check it in onnxruntime on
    two images; returns their features and logits (``None``: the head's output is not
    (batch, classes), so the graph is cut without it, as the exporter does)."""
    channels, height, width = inp.channels, inp.height, inp.width
    path = staging / FEATURES_FILE
    example = np.random.default_rng(0).standard_normal(
        (2, channels, height, width)).astype(np.float32)
    with_logits = cut.logits_tensor is not None
    where = f"{src.name}: the features graph cut at {cut.features_tensor!r}"
    while True:
        graph = build_features_graph(model, cut, channels=channels, height=height,
                                     width=width, with_logits=with_logits)
        # onnx and onnxruntime raise their own exception types: each step is caught whole
        # and reported in one line.
        try:
            if graph.ByteSize() <= _PROTO_LIMIT:
                onnx.checker.check_model(graph)
        except Exception as exc:
            raise InputError(f"{where} is not a valid ONNX graph ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
        for f in staging.iterdir():
            f.unlink()
        _save(graph, path)
        del graph
        try:
            session = _session(path)
        except Exception as exc:
            raise InputError(f"{where} cannot be loaded by onnxruntime ("
                             f"{type(exc).__name__}: {first_line(exc)})") from None
        try:
            outs = session.run(None, {"images": example})
        except Exception as exc:
            raise InputError(f"{where} fails in onnxruntime on a batch of 2 images ("
                             f"{type(exc).__name__}: {first_line(exc)}); a reshape fixed to "
                             "batch 1 needs a re-export with a dynamic batch") from None
        del session
        feats = outs[0]
        if feats.ndim != 2 or feats.shape[0] != 2 or not np.isfinite(feats).all():
            raise InputError(f"{src.name}: the features tensor {cut.features_tensor!r} gives "
                             f"shape {list(feats.shape)} for 2 images, not [2, D] finite "
                             "values")
        logits = outs[1] if with_logits else None
        if logits is not None and (logits.ndim != 2 or logits.shape[0] != 2):
            with_logits = False  # as the exporter: a head that is not (batch, classes)
            continue
        return feats, logits
