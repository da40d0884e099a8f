"""Static baselines: properties of a zoo member that do not look at the target at all.

Public benchmarks of transferability metrics report that such baselines (model size, the size
of the source data) are hard to beat, so ``rank --metrics all`` reports them beside the
target-based metrics. Two exist:

* ``params``: the parameter count of the member's ``features.onnx``, read from the graph;
* ``source_images``: the size of the source dataset, as the member's manifest records it
  (schema 5, ``export``/``import --source-images N``). It is what the exporter's user stated,
  not something the package can verify; a manifest that does not record it gives no value
  (the metric is skipped with a note), never an estimate.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..zoo.manifest import read_manifest

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


def params(model_dir: str | os.PathLike) -> float:
    """The ``params`` baseline: :func:`count_parameters` (higher is better), as a float."""
    return float(count_parameters(model_dir))


def source_images(model_dir: str | os.PathLike) -> float | None:
    """The ``source_images`` baseline: how many images the source model was pre-trained on.

    Read from the member's ``manifest.json`` through the manifest loader (validated, the ONNX
    files not read), as the exporter's user stated it (higher is better).

    Parameters
    ----------
    model_dir : path of a zoo member (the folder holding ``manifest.json``)

    Returns
    -------
    float or None
        The recorded count, or ``None`` when the manifest does not record it (a manifest
        older than schema 5, or a member exported without ``--source-images``).

    Raises
    ------
    ValueError
        No ``manifest.json`` in ``model_dir``, or one that does not validate.
    """
    count = read_manifest(model_dir).source_images
    return None if count is None else float(count)
