"""Reading an ONNX file: its graph without the weights, and the external-data files it names.

An ONNX file may keep tensors in side files (``external_data`` entries with a ``location``).
Before any such file is read, the callers check where the locations point (the importer: inside
the file's directory; the engine: inside the model directory and listed in the manifest), so
the graph is always read here without its external data, and :func:`external_data` lists every
tensor that has some, wherever it hides (initializers, sparse initializers, attribute tensors,
subgraphs of control-flow nodes).
"""

from __future__ import annotations

import os
from typing import Iterator

import onnx
from google.protobuf.message import Error as ProtobufError
from onnx import external_data_helper

from ..errors import InputError, first_line

#: What ``onnx.load`` raises on a file that is not a readable ONNX model (protobuf's
#: DecodeError, a truncated or unreadable file, text that is not protobuf).
_READ_ERRORS = (ProtobufError, RuntimeWarning, ValueError, OSError)


def read_onnx(path: str | os.PathLike, *, hint: str = "") -> onnx.ModelProto:
    """The model of an ONNX file, without loading its external data.

    Parameters
    ----------
    path : path
        The ``.onnx`` file.
    hint : str, optional
        What to do about an unreadable file, appended to the message (e.g. ``"re-export the
        model"``).

    Raises
    ------
    InputError
        The file cannot be read as an ONNX model (one line naming it and the reason).
    """
    try:
        return onnx.load(os.fspath(path), load_external_data=False)
    except _READ_ERRORS as exc:
        tail = f"; {hint}" if hint else ""
        raise InputError(f"{path} is not an ONNX model ({first_line(exc)}){tail}") from None


def tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``graph``: initializers, the values and indices of sparse
    initializers, attribute tensors of its nodes, and those of every subgraph."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from tensors(attr.g)
            for g in attr.graphs:
                yield from tensors(g)


def external_data(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """``(tensor, location)`` of every tensor of ``model`` whose data lives in a side file;
    ``location`` is the file name as written in the model (``""`` when it names none)."""
    for tensor in tensors(model.graph):
        if external_data_helper.uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            yield tensor, info.get("location", "")


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """The distinct side-file names the tensors of ``model`` point to, in first-use order."""
    return list(dict.fromkeys(location for _, location in external_data(model)))
