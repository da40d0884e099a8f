"""Static baselines: properties of a zoo member that do not look at the target at all.

Public benchmarks of transferability metrics report that such baselines (model size, the size
of the source data) are hard to beat, so ``rank --metrics all`` reports them beside the
target-based metrics. Only ``params`` exists: the zoo manifest records no source-dataset size
(adding it would change the manifest schema), so that baseline is not computed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: ONNX tensor element types counted as parameters (float16, float, double, bfloat16).
_FLOAT_TYPES = frozenset({1, 10, 11, 16})


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
    ValueError
        No ``features.onnx`` in ``model_dir``, or a file onnx cannot parse.
    """
    import onnx

    path = Path(model_dir) / "features.onnx"
    if not path.is_file():
        raise ValueError(f"{model_dir}: no features.onnx to count parameters in")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX graph ({type(exc).__name__})") from None
    total = 0
    for init in model.graph.initializer:
        if init.data_type in _FLOAT_TYPES:
            total += int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
    return total


def params(model_dir: str | os.PathLike) -> float:
    """The ``params`` baseline: :func:`count_parameters` (higher is better), as a float."""
    return float(count_parameters(model_dir))
