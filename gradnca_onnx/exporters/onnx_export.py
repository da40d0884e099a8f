"""Writing the ONNX graphs with ``torch.onnx.export(dynamo=True)`` and checking them."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import onnx
import torch
from torch import nn

from ..zoo import (
    BACKWARD_FILE,
    BACKWARD_OUTPUTS,
    FORWARD_FILE,
    GRADS_INPUTS,
    GRADS_OUTPUTS,
)
from . import onnx_split
from .onnx_split import SplitGraphs
from .translations import FEATURE_TRANSLATIONS, GRAD_TRANSLATIONS, OPSET


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporter prints progress lines and warns (and logs, through onnx_ir and onnxscript)
    # about internals the user cannot act on.
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


#: Largest tensor (elements) the graph optimiser may fold into a constant. The default
#: (512 x 512) lets it store activation-sized tensors of ones from the SiLU/sigmoid backward
#: in the file (40 MB for efficientnet_v2_s at 64 px, batch 16); folding only up to the input
#: limit (8192) keeps them as cheap Expand ops that onnxruntime materialises when it loads.
FOLD_OUTPUT_LIMIT = 8192


def _optimize(program: "torch.onnx.ONNXProgram") -> None:
    # What torch.onnx.export(optimize=True) runs, with the smaller fold limit, and without
    # folding BatchNorm into the convolution before it: the folded weights would be new bytes,
    # while unfolded the features graph holds the checkpoint's own weights, which the gradient
    # graphs hold too, so the member stores them once (exporters.weights). onnxruntime folds
    # Conv + BatchNormalization itself when it loads the graph, so nothing runs slower.
    from onnxscript import optimizer
    from onnxscript.rewriter import onnx_fusions

    with _without_batchnorm_folding():
        optimizer.optimize_ir(program.model, output_size_limit=FOLD_OUTPUT_LIMIT)
    onnx_fusions.fuse(program.model)


@contextlib.contextmanager
def _without_batchnorm_folding() -> Iterator[None]:
    # optimize_ir reads the rewriter's default rules when it runs and takes no rule list, so
    # the BatchNorm rules (public objects) are left out of that tuple for the call.
    from onnxscript import rewriter
    from onnxscript.rewriter.rules import common

    folding = {common.fuse_batchnorm_into_conv_rule,
               common.fuse_batchnorm_into_conv_transpose_rule,
               common.fuse_batchnorm_into_gemm_rule}
    rules = rewriter._DEFAULT_REWRITE_RULES
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if r not in folding)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


def _save(program: "torch.onnx.ONNXProgram", path: str | os.PathLike) -> None:
    # Weights stay inside the .onnx file unless the model is beyond protobuf's 2 GB limit,
    # where the exporter writes them to a side file; the manifest hashes every file either way.
    program.save(os.fspath(path))
    onnx.checker.check_model(os.fspath(path), full_check=True)


def export_features(model: nn.Module, example: torch.Tensor, path: str | os.PathLike,
                    output_names: Sequence[str]) -> None:
    """Export ``model(images) -> (features[, logits])`` with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with _quiet():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=OPSET, input_names=["images"],
            output_names=list(output_names), dynamic_shapes=({0: batch},), verbose=False,
            optimize=False, custom_translation_table=FEATURE_TRANSLATIONS,
        )
        _optimize(program)
    _save(program, path)


def export_grads(module: nn.Module, images: torch.Tensor, cotangent: torch.Tensor,
                 path: str | os.PathLike, *, aux_names: Sequence[str] = ()) -> onnx.ModelProto:
    """Export a traced gradient module at the fixed shapes of ``images`` and ``cotangent``.

    ``module(images, cotangent)`` returns the features, the two weight gradients and
    ``aux_names`` further outputs (the logits). ``path`` gets the graph without them
    (``grads.onnx``); the whole exported graph is returned, for :func:`export_split`.
    """
    path = Path(path)
    full = path.with_name(path.name + ".full.onnx")
    try:
        with _quiet():
            program = torch.onnx.export(
                module, (images, cotangent), dynamo=True, opset_version=OPSET,
                input_names=list(GRADS_INPUTS),
                output_names=list(GRADS_OUTPUTS) + list(aux_names),
                custom_translation_table=GRAD_TRANSLATIONS, verbose=False, optimize=False,
            )
            _optimize(program)
        program.save(os.fspath(full))
        model = onnx.load(os.fspath(full))
    finally:
        for leftover in full.parent.glob(full.name + "*"):
            leftover.unlink()
    _write(onnx_split.prune(model, list(GRADS_OUTPUTS)), path)
    return model


def export_split(model: onnx.ModelProto, directory: str | os.PathLike,
                 forward_outputs: Sequence[str]) -> SplitGraphs:
    """Cut an :func:`export_grads` graph at the cotangent into ``forward.onnx`` (returning
    ``forward_outputs`` and the residuals) and ``backward.onnx`` in ``directory``."""
    halves = onnx_split.split(model, images=GRADS_INPUTS[0], cotangent=GRADS_INPUTS[1],
                              forward_outputs=list(forward_outputs),
                              backward_outputs=list(BACKWARD_OUTPUTS))
    _write(halves.forward, Path(directory) / FORWARD_FILE)
    _write(halves.backward, Path(directory) / BACKWARD_FILE)
    return halves


#: Graphs above this size keep their weights in a side file (protobuf's limit is 2 GB).
EXTERNAL_DATA_BYTES = 1 << 30


def _write(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, os.fspath(path), save_as_external_data=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, os.fspath(path))
    onnx.checker.check_model(os.fspath(path), full_check=True)
