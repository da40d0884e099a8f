"""``gradnca-onnx import``: a plain ONNX image classifier into a zoo.

torch is imported only when the command runs, so the rest of the CLI works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data.conventions import parse_intensity
from ..errors import InputError
from ..zoo.manifest import check_source_images
from ._errors import check_zoo_out, user_errors
from ._member import features_only_options, warn_if_features_only
from .export import INTENSITY_HELP, SOURCE_IMAGES_HELP, check_name


def _importers() -> Any:
    """The importers, or one line naming the torch extra when it is not installed."""
    from ..sources import require_torch

    require_torch("importing ONNX models", "onnx_ir", "onnxscript")
    from .. import importers

    return importers


def _two_nodes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--layers {value!r} must name two weight-bearing nodes (Conv, or "
                         "Gemm/MatMul with a constant weight): LAYER1,LAYER2")
    return parts


@click.command("import")
@click.argument("model", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--name", metavar="NAME", required=True, help="Model name in the zoo.")
@click.option("--out", "zoo_dir", required=True, metavar="ZOO_DIR",
              type=click.Path(path_type=Path), help="Zoo directory.")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Image height = width [default: the graph input's fixed size].")
@click.option("--norm", metavar="imagenet|half|MEAN,STD", default=None,
              help="Input normalisation [default: imagenet if --pretrained-on mentions ImageNet, "
                   "else half]. A graph with an integer input (uint8, int16, int32, int64) takes "
                   "pixel values 0..255 and normalises them itself: no --norm.")
@click.option("--intensity", metavar="CONVENTION", default=None, help=INTENSITY_HELP)
@click.option("--features-node", metavar="NODE", default=None,
              help="Node (or tensor) whose output is the feature vector [default: the input of "
                   "the last Gemm/MatMul].")
@click.option("--layers", metavar="LAYER1,LAYER2", default=None,
              help="The two S_FU layers: Conv (or Gemm/MatMul with constant weights) nodes "
                   "[default: the first two Conv nodes in topological order, else the first "
                   "two weight-bearing nodes].")
@click.option("--pretrained-on", metavar="TEXT", default="unknown", show_default=True,
              help="What the source model was trained on (manifest metadata).")
@click.option("--source-images", "source_images", metavar="N", default=None,
              help=SOURCE_IMAGES_HELP)
@click.option("--grads-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Fixed batch of grads.onnx (the engine pads/chunks other sizes).")
@click.option("--force", is_flag=True, help="Replace an existing model of the same name.")
@features_only_options("import", "an operator the importer cannot differentiate, fewer than "
                       "two weight-bearing nodes")
@user_errors
def import_cmd(model: Path, name: str, zoo_dir: Path, input_size: int | None, norm: str | None,
               intensity: str | None, features_node: str | None, layers: str | None,
               pretrained_on: str,
               source_images: str | None, grads_batch: int, force: bool, fallback: bool,
               features_only: bool) -> None:
    """Import an ONNX image classifier MODEL.onnx into ZOO_DIR/NAME."""
    convs = _two_nodes(layers)
    count = check_source_images(source_images)
    parse_intensity(intensity)  # before any work
    check_name(name)
    check_zoo_out(zoo_dir, name, {"MODEL.onnx": model}, force=force)
    out = _importers().import_onnx(model, zoo_dir, name=name, input_size=input_size, norm=norm,
                                   features_node=features_node, layers=convs,
                                   pretrained_on=pretrained_on, grads_batch=grads_batch,
                                   force=force, features_only=features_only,
                                   features_only_fallback=fallback, source_images=count,
                                   intensity=intensity)
    from ..zoo import read_manifest

    m = read_manifest(out)
    nodes = m.source.options.get("onnx_nodes", {})
    what = (f"conv nodes {nodes.get('conv1')} / {nodes.get('conv2')}" if m.has_grads else
            "features-only (no grads.onnx)")
    pixels = m.source.options.get("input_dtype")
    click.echo(f"imported {m.name} to {out}: D={m.feature_dim}, "
               f"K={m.num_classes if m.num_classes is not None else '-'}, "
               f"input {m.source.options.get('input_layout')} "
               f"{m.input.channels}x{m.input.size_text}"
               f"{f' ({pixels} pixels 0..255)' if pixels else ''}, {what}")
    warn_if_features_only(m, features_only)
