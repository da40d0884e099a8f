"""Zoo directories: the model-directory format shared by the exporters and the engine.

A zoo is a directory with one sub-directory per exported model, each holding
``features.onnx``, ``grads.onnx`` and ``manifest.json`` (a features-only member, manifest
schema 2, has no ``grads.onnx``). This module reads, validates and
lists them and runs the gradient graph's batch policy; it never imports torch.
"""

from ._atomic import atomic_write_bytes, atomic_write_text
from .batching import grads_batch_size, run_grads
from .integrity import FileEntry, file_entry, sha256_file, verify_files
from .listing import ZooEntry, list_zoo, load_zoo
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
    SplitSpec,
    check_model_name,
    load_manifest,
    read_manifest,
    residual_names,
    write_manifest,
)
from .normalisation import parse_normalisation
from .sessions import open_session, session_options

__all__ = [
    "BACKWARD_FILE", "BACKWARD_OUTPUTS", "CHUNK_SUM", "FEATURES_FILE", "FORWARD_FILE", "GRADS_FILE", "GRADS_INPUTS", "GRADS_OUTPUTS",
    "LAYER_RULES", "MANIFEST_FILE", "MIN_SCHEMA_VERSION", "ORT_LEVELS", "PAD_ZERO", "SCHEMA_VERSION",
    "BatchPolicy", "FileEntry", "InputSpec", "LayerSpec", "Manifest", "SourceSpec", "SplitSpec", "ZooEntry",
    "atomic_write_bytes", "atomic_write_text", "check_model_name", "file_entry",
    "grads_batch_size", "list_zoo", "load_manifest", "load_zoo", "open_session",
    "parse_normalisation", "read_manifest", "residual_names", "run_grads", "session_options", "sha256_file",
    "verify_files", "write_manifest",
]
