"""Reading an untrusted ONNX file: external data kept in its directory, standard ops only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Container

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from ..errors import InputError
from ..io.onnx_files import external_data, read_onnx

#: Oldest opset the interpreter reads (Squeeze/Unsqueeze/ReduceSum take axes as inputs from 13).
MIN_OPSET = 13
_STANDARD_DOMAINS = ("", "ai.onnx")

#: Integer image inputs the importer takes, read as pixel values 0..255 (ONNX element type ->
#: name); a classifier exported with its own Cast and normalisation inside takes these.
PIXEL_TYPES = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT16: "int16",
               onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64"}
#: ONNX floating-point element types (a float image input is normalised by the pipeline as
#: the manifest says; float tensors carry gradients).
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16)
#: The manifest normalisation of a pixel input: the pipeline's ``(x / 255 - 0) / (1 / 255)``
#: gives the pixel values 0..255 back (within float32 rounding, which the member rounds away).
PIXEL_NORM = f"0,{1 / 255!r}"
#: Range of the pixel values a pixel input receives (the pipeline's uint8 images).
PIXEL_RANGE = (0, 255)


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that leave ``base_dir`` (``..``, absolute, symlinks out).

    Raises
    ------
    ValueError
        Naming the tensor and its location.
    """
    root = base_dir.resolve()
    for tensor, location in external_data(model):
        where = f"tensor {tensor.name!r} stores its data at {location!r}"
        if not location or os.path.isabs(location) or Path(location).drive:
            raise InputError(f"{where}: external data must be a relative path inside the model's "
                             "directory; refused")
        target = (root / location).resolve()
        if target != root and root not in target.parents:
            raise InputError(f"{where}, outside the model's directory {root}; refused")
        if not target.is_file():
            raise InputError(f"{where}, which is missing next to the model")


def check_domains(model: onnx.ModelProto) -> None:
    """Refuse operators outside the standard ONNX domain (custom ops run code we cannot read)."""
    for node in model.graph.node:
        if node.domain not in _STANDARD_DOMAINS:
            raise InputError(f"node {node.name or '(unnamed)'!r} is a custom-domain operator "
                             f"{node.domain}::{node.op_type}; only standard ONNX operators can be "
                             "imported")


def opset_version(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (ValueError when older than :data:`MIN_OPSET`)."""
    versions = [o.version for o in model.opset_import if o.domain in _STANDARD_DOMAINS]
    version = max(versions) if versions else 0
    if version < MIN_OPSET:
        raise InputError(f"the model uses ONNX opset {version}; import needs opset {MIN_OPSET} "
                         "or newer (upgrade it with onnx.version_converter.convert_version)")
    return version


def image_input(graph: onnx.GraphProto, constants: Container[str]) -> onnx.ValueInfoProto:
    """The graph's one image input: its one input that is not a constant (initializer).

    Raises
    ------
    InputError
        The graph takes no input or several.
    """
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise InputError(f"the graph takes {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}); an image classifier takes one "
                         "image tensor")
    return inputs[0]


def pixel_input(image: onnx.ValueInfoProto) -> str | None:
    """The integer type of an image input read as pixels 0..255 (``"uint8"``...), ``None`` for
    a float input.

    Raises
    ------
    ValueError
        Any other element type (int8 cannot hold 0..255; bool, strings, ... are no images).
    """
    elem = image.type.tensor_type.elem_type
    if elem in FLOAT_TYPES:
        return None
    if elem in PIXEL_TYPES:
        return PIXEL_TYPES[elem]
    try:
        kind = onnx.TensorProto.DataType.Name(elem)
    except ValueError:  # not a known element type
        kind = str(elem)
    raise InputError(f"the graph's input {image.name!r} has element type {kind}; an imported "
                     "classifier takes float images or integer pixel values 0..255 (uint8, int16, "
                     "int32 or int64): export the model with one of those input types")


def pixel_normalisation(pixels: str | None, name: str, norm: str | None) -> str | None:
    """The normalisation of an imported member: ``norm`` for a float input, :data:`PIXEL_NORM`
    for a pixel input (the graph normalises its pixels itself).

    Raises
    ------
    ValueError
        ``norm`` given for a pixel input (the graph's own normalisation would run twice).
    """
    if pixels is None:
        return norm
    if norm is not None:
        raise InputError(f"--norm {norm}: the graph's input {name!r} is {pixels}, so it takes "
                         "pixel values 0..255 and normalises them itself; drop --norm")
    return PIXEL_NORM


def pixel_options(pixels: str | None) -> dict[str, str]:
    """The manifest's record (source options) of a pixel input; nothing for a float input."""
    if pixels is None:
        return {}
    low, high = PIXEL_RANGE
    return {"input_dtype": pixels,
            "input_values": f"pixels {low}..{high}, rounded and cast to {pixels}; the graph "
                            "normalises them itself"}


#: Operators whose constant inputs are weights: an infinite value there is a broken model
#: (elsewhere it can be a mask's fill value).
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
               "LayerNormalization", "InstanceNormalization")


def check_finite(model: onnx.ModelProto, src: str | os.PathLike) -> None:
    """Refuse a graph whose constants hold NaN, or whose weights hold inf, naming the tensor.

    The user's model is broken there (a diverged training run, a bad conversion); its features
    would be NaN and every score meaningless.
    """
    weights = {i for n in model.graph.node if n.op_type in _WEIGHT_OPS for i in n.input[1:]}
    tensors = [(t.name, t, "initializer") for t in model.graph.initializer]
    tensors += [(n.output[0], a.t, "Constant") for n in model.graph.node
                if n.op_type == "Constant" and n.output for a in n.attribute if a.HasField("t")]
    for name, tensor, kind in tensors:
        if tensor.data_type not in FLOAT_TYPES:
            continue
        arr = numpy_helper.to_array(tensor)
        bad = int(np.isnan(arr).sum())
        what = "NaN"
        if not bad and name in weights:
            bad, what = int(np.isinf(arr).sum()), "inf"
        if bad:
            raise InputError(f"{kind} {name!r} of {Path(src).name} holds {what} ({bad} of "
                             f"{arr.size} values): the model's weights are broken there; fix "
                             "the model (or its training) and export it to ONNX again")


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX classifier after the safety checks, with its external data.

    Parameters
    ----------
    path : path
        The ``.onnx`` file; external data files must sit inside its directory.

    Raises
    ------
    ValueError
        Missing or non-ONNX file, external data outside the file's directory, custom-domain
        operators, or an opset older than 13.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ONNX file {p} not found")
    model = read_onnx(p)
    if not model.graph.node or not model.opset_import:
        raise InputError(f"{p} is not an ONNX model (no graph)")
    check_domains(model)
    opset_version(model)
    check_external_data(model, p.parent)
    external_data_helper.load_external_data_for_model(model, str(p.parent))
    return model


#: Largest constant (elements) the simplifier may compute by folding: a transposed or rescaled
#: weight of a big classifier, not just shape arithmetic (onnxscript's default is 262144).
FOLD_LIMIT = 1 << 26


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold the constants of a checked graph and simplify it (onnxscript's optimizer passes).

    ``Identity`` and ``Constant`` nodes feeding weights (the legacy torch exporter's shared
    initializers), constant subgraphs and shape arithmetic on static shapes become
    initializers, so a Conv's weights are constants of the Conv itself. Only folding and
    clean-up passes run (onnxscript's ``fold_constants_ir``, then onnx-ir's identity
    elimination, initializer deduplication, common-subexpression elimination and unused-node
    removal), not ``optimize``'s pattern rewrites, which replace nodes under new names (the
    names ``--layers`` and the manifest use). Run after :func:`load_onnx`'s safety checks (the
    passes read no files: the external data is already in memory); the result is checked again
    for standard domains. A graph the passes cannot handle is returned unchanged (the
    interpreter reads unsimplified graphs too, and names what it cannot translate).
    """
    try:
        import onnx_ir as ir
        from onnx_ir.passes import common
        from onnxscript.optimizer import fold_constants_ir
    except ImportError:  # the torch extra brings onnxscript; without it, interpret as is
        return model
    try:
        graph = ir.serde.deserialize_model(model)
        common.InlinePass()(graph)
        for _ in range(2):
            fold_constants_ir(graph, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
            common.RemoveUnusedNodesPass()(graph)
        ir.passes.Sequential(
            common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
            common.IdentityEliminationPass(), common.DeduplicateInitializersPass(),
            common.CommonSubexpressionEliminationPass(), common.RemoveUnusedNodesPass(),
            common.OutputFixPass(), common.NameFixPass())(graph)
        out = ir.serde.serialize_model(graph)
    except Exception:  # noqa: BLE001 - any failure of the passes leaves the original graph
        return model
    if not out.graph.node:
        return model
    try:
        check_domains(out)
    except ValueError:
        return model
    return out


def toposort(nodes: list[onnx.NodeProto], known: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where every input is produced before use (``known`` exist
    already). The ONNX spec asks for topological order, but files from the wild do not
    always keep it."""
    done, order, pending = set(known), [], list(nodes)
    while pending:
        ready = [n for n in pending if all(not i or i in done for i in n.input)]
        if not ready:
            missing = sorted({i for n in pending for i in n.input if i and i not in done})
            raise InputError(f"the graph is not a DAG or uses undefined tensors {missing[:5]}")
        for n in ready:
            order.append(n)
            done.update(n.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    return order
