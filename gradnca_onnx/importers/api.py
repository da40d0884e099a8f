"""``import_onnx``: a plain ONNX image classifier to a zoo model directory.

The full route converts the graph to a torch module and exports both graphs. When the gradient
graph cannot be built (:class:`GradientGraphError`: an operator the importer cannot
differentiate, fewer than two convolutions, an export failure), ``features_only_fallback``
writes a features-only member instead (:mod:`.features_only`); ``features_only`` asks for one
directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import sources
from ..errors import InputError, first_line
from ..exporters import DEFAULT_GRADS_BATCH, ExportOptions, export_model
from ..exporters.errors import check_channels, is_out_of_memory, out_of_memory
from ..exporters.layers import check_layer_order
from ..data.conventions import Intensity, parse_intensity
from ..zoo.manifest import check_source_images
from .errors import GradientGraphError
from .features_only import find_features, write_features_only
from .graph import ImportPlan, OnnxNet
from .onnx_file import (
    check_finite,
    load_onnx,
    opset_version,
    pixel_normalisation,
    pixel_options,
    simplify,
)

#: The manifest's ``features_only`` text when the user asked for a features-only member.
REQUESTED = "imported features-only on request (--features-only)"


def build_module(path: str | os.PathLike, *, features_node: str | None = None
                 ) -> tuple[OnnxNet, ImportPlan, int]:
    """Load ``path`` safely and build its torch interpreter; returns (module, plan, opset)."""
    model = load_onnx(path)
    opset = opset_version(model)
    model = simplify(model)
    net = OnnxNet(model, features_node=features_node).eval()
    return net, net.plan, opset


def _image_size(plan: ImportPlan | Any, input_size: int | None
                ) -> tuple[int, int, int | None]:
    """(height, width, channels or None) of the NCHW images the imported model takes.

    ``plan`` is an :class:`ImportPlan` or a :class:`~.features_only.FeaturesCut` (both carry
    ``input_name``, ``input_dims`` and ``layout``).
    """
    dims = plan.input_dims
    if len(dims) != 4:
        raise InputError(f"the graph's input {plan.input_name!r} has {len(dims)} dimensions; an "
                         "image classifier takes [batch, channels, height, width] (or NHWC)")
    c, h, w = (dims[3], dims[1], dims[2]) if plan.layout == "NHWC" else dims[1:]
    if input_size is None:
        if h is None or w is None:
            raise InputError(f"the graph's input {plan.input_name!r} has no fixed height and "
                             "width; give --input-size")
        return h, w, c
    if (h is not None and h != input_size) or (w is not None and w != input_size):
        raise InputError(f"--input-size {input_size} but the graph's input is fixed at {h}x{w}")
    return input_size, input_size, c


def _conv_paths(plan: ImportPlan, layers: Sequence[str] | None) -> tuple[list[str], str]:
    """The two S_FU layers (module paths) and the rule that chose them (``layers.rule``).

    Default: the first two Conv nodes in topological order that the features depend on
    (``first-two-convs``, the paper's rule); with fewer than two, the first two weight-bearing
    nodes whose weights the features depend on (Conv, or Gemm/MatMul with a constant weight:
    for a ViT the patch embedding and the first attention input projection;
    ``first-two-weight-layers``, an extension beyond the paper). ``layers``: the user's two
    weight-bearing nodes (``user``).
    """
    weights = plan.weight_layers or plan.convs
    if layers is None:
        if len(plan.convs) >= 2:
            return plan.convs[:2], "first-two-convs"
        if len(weights) >= 2:
            return weights[:2], "first-two-weight-layers"
        raise GradientGraphError(
            f"the graph runs {len(plan.convs)} Conv node(s) and {len(weights)} weight-bearing "
            f"node(s) before its features "
            f"({', '.join(plan.node_of[c] for c in weights) or 'none'}) and S_FU compares "
            "the weight gradients of two layers")
    layers = list(layers)
    if len(layers) != 2:
        raise InputError(f"--layers must name two different Conv (or Gemm/MatMul) nodes; got "
                         f"{layers}")
    by_node = {plan.node_of[c]: c for c in weights}
    out = []
    for name in layers:
        path = by_node.get(name) or (name if name in weights else None)
        if path is None:
            raise InputError(f"--layers {name!r} is not a Conv or Gemm/MatMul node with constant "
                             "weights that the features depend on; such nodes: "
                             f"{', '.join(plan.node_of[c] for c in weights)}")
        out.append(path)
    check_layer_order(layers, out, weights, where="graph (topological order)")
    return out, "user"


def import_onnx(path: str | os.PathLike, zoo_dir: str | os.PathLike, *, name: str,
                input_size: int | None = None, norm: str | None = None,
                features_node: str | None = None, layers: Sequence[str] | None = None,
                pretrained_on: str = "unknown", grads_batch: int = DEFAULT_GRADS_BATCH,
                force: bool = False, features_only: bool = False,
                features_only_fallback: bool = False,
                source_images: int | None = None, intensity: str | None = None) -> Path:
    """Import an ONNX classifier into ``zoo_dir/<name>/`` and return that directory.

    A features-only member (no ``grads.onnx``; S_LP and the baseline metrics, no S_FU) is
    written when ``features_only`` is set, or when ``features_only_fallback`` is set and the
    gradient graph cannot be built; its manifest's ``features_only`` says why.

    Parameters
    ----------
    path : path
        The ONNX file (opset 13+, standard operators; external data inside its directory).
    zoo_dir : path
        The zoo; created if missing.
    name : str
        Model directory name.
    input_size : int, optional
        Image height = width; default: the graph input's fixed size.
    norm : str, optional
        ``imagenet``, ``half`` or ``MEAN,STD`` (default as ``export_model``).
    features_node : str, optional
        Node (or tensor) whose output is the feature vector; default: the input of the last
        Gemm/MatMul with constant weights. Logits stay those of that head when it follows.
    layers : (str, str), optional
        The two S_FU layers (Conv, or Gemm/MatMul nodes with constant weights); default: the
        first two Conv nodes in topological order that the features depend on, else (a ViT)
        the first two weight-bearing nodes (see :func:`_conv_paths`).
    pretrained_on, grads_batch, force, source_images, intensity
        As :func:`gradnca_onnx.exporters.export_model` (``source_images``: how many images
        the source model was pre-trained on, as you state it; ``None``: not recorded;
        ``intensity``: the model's intensity convention, e.g. ``window:-1000,1000:HU``).
    features_only : bool, default=False
        Write a features-only member without trying the gradient graph.
    features_only_fallback : bool, default=False
        Write a features-only member when the gradient graph cannot be built.

    Raises
    ------
    GradientGraphError
        (a ``ValueError``) The gradient graph cannot be built (an operator the importer cannot
        differentiate, named with its node; fewer than two Conv nodes; an export failure) and
        neither ``features_only`` nor ``features_only_fallback`` is set.
    ValueError
        Unsafe or malformed file, custom operators, unknown node names, ``layers`` with
        ``features_only``, a features graph onnxruntime cannot run, an existing name without
        ``force``, a ``source_images`` that is not an integer >= 0.
    """
    source_images = check_source_images(source_images)  # before any work on the file
    convention = parse_intensity(intensity)
    src = Path(path)
    model = load_onnx(src)  # the safety checks run on the file as it is
    opset = opset_version(model)
    check_finite(model, src)  # before folding: the names are those the file holds
    model = simplify(model)  # constants folded: Identity/Constant-fed weights are initializers
    if features_only:
        if layers is not None:
            raise InputError("--layers names the conv layers of S_FU, which a features-only "
                             "import does not compute; drop --layers or --features-only")
        return _features_only(model, src, zoo_dir, name=name, input_size=input_size, norm=norm,
                              features_node=features_node, pretrained_on=pretrained_on,
                              opset=opset, force=force, reason=REQUESTED,
                              source_images=source_images, intensity=convention)
    try:
        return _full(model, src, zoo_dir, name=name, input_size=input_size, norm=norm,
                     features_node=features_node, layers=layers, pretrained_on=pretrained_on,
                     grads_batch=grads_batch, opset=opset, force=force,
                     source_images=source_images, intensity=convention)
    except GradientGraphError as exc:
        if not features_only_fallback:
            raise
        return _features_only(model, src, zoo_dir, name=name, input_size=input_size, norm=norm,
                              features_node=features_node, pretrained_on=pretrained_on,
                              opset=opset, force=force, reason=exc.reason,
                              source_images=source_images, intensity=convention)


def _full(model: Any, src: Path, zoo_dir: str | os.PathLike, *, name: str,
          input_size: int | None, norm: str | None, features_node: str | None,
          layers: Sequence[str] | None, pretrained_on: str, grads_batch: int, opset: int,
          force: bool, source_images: int | None, intensity: Intensity) -> Path:
    """Both graphs, through the torch interpreter and the exporter."""
    try:
        net = OnnxNet(model, features_node=features_node).eval()
    except (KeyError, StopIteration, IndexError, TypeError, NotImplementedError) as exc:
        # An attribute or input combination the interpreter does not know: the features graph
        # may still be fine (so --features-only-fallback applies), never a traceback.
        first = first_line(exc, 200)
        raise GradientGraphError(f"{src.name}: the importer could not interpret the graph",
                                 f"{type(exc).__name__}: {first}") from None
    plan = net.plan
    height, width, channels = _image_size(plan, input_size)
    convs, rule = _conv_paths(plan, layers)
    first = getattr(net, plan.convs[0]) if plan.convs else None
    if channels is None and first is None:
        raise InputError(f"the graph's input {plan.input_name!r} has no fixed channel count and "
                         "no Conv node tells it; export the model with a fixed channel dimension")
    channels = channels or int(first.weight.shape[1] * first.groups)
    check_channels(channels, f"the graph's input {plan.input_name!r} takes {channels} channels")
    norm = pixel_normalisation(plan.pixels, plan.input_name, norm)
    options = {"opset": opset, "input_layout": plan.layout, **pixel_options(plan.pixels),
               "dropped_transpose": plan.dropped_transpose,
               "features_tensor": plan.features_tensor,
               "onnx_nodes": {"features": plan.node_of.get(plan.head, plan.head),
                              "conv1": plan.node_of[convs[0]], "conv2": plan.node_of[convs[1]]}}
    loaded = sources.get("onnx").wrap(net, src, options)
    try:
        return export_model(loaded, zoo_dir, ExportOptions(
            name=name, input_size=(height, width), channels=channels, norm=norm,
            pretrained_on=pretrained_on, head=plan.head, convs=convs, grads_batch=grads_batch,
            force=force, layer_rule=rule, source_images=source_images, intensity=intensity))
    except (RuntimeError, NotImplementedError, TypeError, torch.onnx.errors.OnnxExporterError
            ) as exc:
        if is_out_of_memory(exc):  # what helps is less memory, not a features-only member
            raise out_of_memory(exc, f"importing {src.name}") from None
        first = first_line(exc)
        raise GradientGraphError(f"{src.name}: the imported graph could not be exported",
                                 f"{type(exc).__name__}: {first}") from None


def _features_only(model: Any, src: Path, zoo_dir: str | os.PathLike, *, name: str,
                   input_size: int | None, norm: str | None, features_node: str | None,
                   pretrained_on: str, opset: int, force: bool, reason: str,
                   source_images: int | None, intensity: Intensity) -> Path:
    """A features-only member: the original graph cut at its features (no torch involved)."""
    cut = find_features(model, features_node)
    height, width, channels = _image_size(cut, input_size)
    channels = channels or cut.first_conv_channels
    if channels is None:
        raise InputError(f"the graph's input {cut.input_name!r} has no fixed channel count and "
                         "no Conv node tells it; export the model with a fixed channel dimension")
    check_channels(channels, f"the graph's input {cut.input_name!r} takes {channels} channels")
    return write_features_only(model, src, zoo_dir, name=name, cut=cut, channels=channels,
                               height=height, width=width, reason=reason, norm=norm,
                               pretrained_on=pretrained_on, opset=opset, force=force,
                               source_images=source_images, intensity=intensity)
