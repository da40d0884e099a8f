"""One copy of the weights per member: the graphs of a member share one weights file.

(And each graph drops the per-node debugging metadata torch.onnx writes.)

A member holds up to four graphs (``features``, ``grads``, and the split pass's ``forward`` and
``backward``), cut from one network: saved self-contained, each carried its own copy of the
weights, so a member cost four to five times its checkpoint on disk. :func:`share_weights`
moves every tensor of at least :data:`INLINE_BYTES` out of the graphs into one file,
``weights.bin``, each distinct content once, and points the graphs at it with ONNX external
data (``location``, ``offset``, ``length``), which onnxruntime reads as it does any external
data. The file is listed and hashed in the manifest like the graphs, so the sha256 check covers
it, and the engine's confinement check (a graph's side files must be listed in the manifest and
inside the member) applies unchanged.

Only initializers of the main graph move: they are where exporters put weights, and every
ONNX reader supports external data there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

import onnx
from onnx import external_data_helper, numpy_helper

from ..io.onnx_files import external_data_locations, read_onnx
from ..zoo import WEIGHTS_FILE

#: Tensors smaller than this stay inside their graph (shapes, axes, small constants: a side
#: file entry costs more than it saves, and the graph stays readable without the file).
INLINE_BYTES = 1024
#: Offsets of tensors of at least this size are page-aligned (onnxruntime can map them
#: straight from the file); smaller ones are aligned to 64 bytes (a cache line).
PAGE = 4096
PAGE_ALIGNED_BYTES = 1 << 16


def share_weights(directory: str | os.PathLike[str], graphs: Iterable[str]) -> int:
    """Move the weights of ``graphs`` (file names in ``directory``) into one shared
    ``weights.bin``, each distinct tensor content once; returns the file's size in bytes.

    Each graph is loaded with its own external data (a graph past protobuf's 2 GB limit comes
    with a side file), rewritten to point into ``weights.bin``, saved and checked; the side
    files it used before are removed. Graphs are handled one at a time, so memory peaks at one
    graph's weights.
    """
    root = Path(directory)
    names = list(graphs)
    target = root / WEIGHTS_FILE
    fresh = root / (WEIGHTS_FILE + ".new")  # the graphs may still read the old one
    placed: dict[str, tuple[int, int]] = {}  # sha256 of the bytes -> (offset, length)
    old_sides: set[str] = set()  # removed at the end: two graphs may have shared one
    with open(fresh, "wb") as out:
        for name in names:
            path = root / name
            old_sides |= set(external_data_locations(read_onnx(path)))
            model = onnx.load(os.fspath(path))  # with its external data, if any
            _strip_trace_metadata(model.graph)
            for tensor in _movable(model.graph):
                _point_into(tensor, out, placed)
            onnx.save_model(model, os.fspath(path))
        size = out.tell()
    for side in old_sides - {WEIGHTS_FILE}:
        (root / side).unlink(missing_ok=True)
    if placed:
        os.replace(fresh, target)
    else:  # nothing large enough: no side file at all
        fresh.unlink()
        target.unlink(missing_ok=True)
    for name in names:
        onnx.checker.check_model(os.fspath(root / name), full_check=True)
    return size if placed else 0


def _strip_trace_metadata(graph: onnx.GraphProto) -> None:
    """Drop what torch.onnx records per node for debugging (the Python stack trace, the fx
    node, module names: ~2 KB a node, 7 MB of densenet121's four graphs, and the paths of the
    machine that exported it); no reader of a member uses them."""
    for node in graph.node:
        del node.metadata_props[:]
    for value in (*graph.value_info, *graph.input, *graph.output):
        del value.metadata_props[:]


def _movable(graph: onnx.GraphProto) -> Iterable[onnx.TensorProto]:
    """The main graph's initializers worth moving (strings cannot live in external data)."""
    for tensor in graph.initializer:
        if tensor.data_type == onnx.TensorProto.STRING:
            continue
        if _nbytes(tensor) >= INLINE_BYTES:
            yield tensor


def _nbytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _point_into(tensor: onnx.TensorProto, out: Any, placed: dict[str, tuple[int, int]]) -> None:
    """Write ``tensor``'s bytes to ``out`` (unless the same bytes are there already) and make
    it an external-data reference to them."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        del tensor.external_data[:]  # onnx.load has read the data into raw_data
        tensor.data_location = onnx.TensorProto.DEFAULT
    if not tensor.HasField("raw_data"):  # typed fields (float_data, ...): normalise to bytes
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    data = tensor.raw_data
    digest = hashlib.sha256(data).hexdigest()
    if digest not in placed:
        align = PAGE if len(data) >= PAGE_ALIGNED_BYTES else 64
        offset = -(-out.tell() // align) * align
        out.write(b"\0" * (offset - out.tell()))
        out.write(data)
        placed[digest] = (offset, len(data))
    offset, length = placed[digest]
    # set_external_data wants the bytes still present; they are dropped right after
    external_data_helper.set_external_data(tensor, WEIGHTS_FILE, offset=offset, length=length)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
