"""Reading a zoo member's static facts for the static baselines (``params``,
``source_images``): the parameter count of its ``features.onnx`` and what its manifest records.

The metrics themselves (:mod:`gradnca_onnx.metrics.static`) take these numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..errors import InputError
from ..zoo.manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from ..metrics.static import MemberFacts

#: ONNX tensor element types counted as parameters (float16, float, double, bfloat16).
_FLOAT_TYPES = frozenset({1, 10, 11, 16})
#: The facts a static metric can ask for.
FACTS = ("params", "source_images")


def count_parameters(model_dir: str | os.PathLike) -> int:
    """Number of floating-point weights in a member's ``features.onnx``.

    Every floating-point initializer of the graph counts (weights, biases and the batch-norm
    statistics an export keeps); integer initializers (shapes, indices) do not. Tensors stored
    as external data count by their declared shape, without being read.

    Parameters
    ----------
    model_dir : path of a zoo member (the folder holding ``features.onnx``)

    Returns
    -------
    int

    Raises
    ------
    InputError
        No ``features.onnx`` in ``model_dir``, or a file onnx cannot parse.
    """
    import onnx

    path = Path(model_dir) / "features.onnx"
    if not path.is_file():
        raise InputError(f"{model_dir}: no features.onnx to count parameters in")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX graph ({type(exc).__name__})") from None
    total = 0
    for init in model.graph.initializer:
        if init.data_type in _FLOAT_TYPES:
            total += int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
    return total


def read_member_facts(model_dir: str | os.PathLike, facts: Iterable[str] = FACTS, *,
                      manifest: Manifest | None = None) -> MemberFacts:
    """The static facts of a zoo member that ``facts`` names, read from its files.

    Parameters
    ----------
    model_dir : path of the zoo member
    facts : which to read (``params``: the graph's initializers; ``source_images``: the
        manifest), so that a metric not asked for costs no read
    manifest : the member's manifest when already loaded (else it is read, validated, the ONNX
        files not checked)

    Returns
    -------
    MemberFacts
        A fact that cannot be read (no ``features.onnx``, a manifest that does not validate)
        is in ``problems`` with why; its metric then reports that error.
    """
    # Imported here: the metrics package loads scikit-learn and numba (seconds).
    from ..metrics.static import MemberFacts

    values: dict[str, int | None] = {}
    problems: dict[str, str] = {}
    readers = {"params": lambda: count_parameters(model_dir),
               "source_images": lambda: (manifest or read_manifest(model_dir)).source_images}
    for name in facts:
        try:
            values[name] = readers[name]()
        except ValueError as exc:
            problems[name] = str(exc)
    return MemberFacts(**values, problems=problems)
