"""Zoo directories: the model-directory format shared by the exporters and the engine.

A zoo is a directory with one sub-directory per exported model, each holding
``features.onnx``, ``grads.onnx`` and ``manifest.json`` (a features-only member, manifest
schema 2, has no ``grads.onnx``). This package reads, validates, lists and publishes them;
it never imports torch or onnxruntime (running the graphs is :mod:`gradnca_onnx.engine`'s).
"""

from .integrity import FileEntry, file_entry, verify_files
from .listing import Zoo, ZooEntry, list_zoo, load_zoo
from .manifest import (
    BACKWARD_FILE,
    BACKWARD_OUTPUTS,
    CHUNK_SUM,
    FEATURES_FILE,
    FORWARD_FILE,
    GRADS_FILE,
    GRADS_INPUTS,
    GRADS_OUTPUTS,
    LAYER_RULES,
    MANIFEST_FILE,
    MIN_SCHEMA_VERSION,
    ORT_LEVELS,
    PAD_ZERO,
    SCHEMA_VERSION,
    BatchPolicy,
    InputSpec,
    LayerSpec,
    Manifest,
    SourceSpec,
    WEIGHTS_FILE,
    SplitSpec,
    check_model_name,
    load_manifest,
    read_manifest,
    residual_names,
    write_manifest,
)
from .normalisation import parse_normalisation

__all__ = [
    "BACKWARD_FILE", "BACKWARD_OUTPUTS", "CHUNK_SUM", "FEATURES_FILE", "FORWARD_FILE", "GRADS_FILE", "GRADS_INPUTS", "GRADS_OUTPUTS",
    "LAYER_RULES", "MANIFEST_FILE", "MIN_SCHEMA_VERSION", "ORT_LEVELS", "PAD_ZERO", "SCHEMA_VERSION", "WEIGHTS_FILE",
    "BatchPolicy", "FileEntry", "InputSpec", "LayerSpec", "Manifest", "SourceSpec", "SplitSpec", "Zoo", "ZooEntry",
    "check_model_name", "file_entry", "list_zoo", "load_manifest", "load_zoo",
    "parse_normalisation", "read_manifest", "residual_names", "verify_files", "write_manifest",
]
