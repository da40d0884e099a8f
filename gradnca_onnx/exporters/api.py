"""``export_model``: one loaded model to a zoo model directory (two graphs and a manifest)."""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import sources
from ..data.conventions import Intensity, parse_intensity
from ..errors import InputError, first_line
from ..sources import LoadedModel
from ..sources.building import stem_channels
from ..zoo import (
    BACKWARD_FILE,
    FEATURES_FILE,
    FORWARD_FILE,
    GRADS_FILE,
    ORT_LEVELS,
    BatchPolicy,
    InputSpec,
    LayerSpec,
    SplitSpec,
)
from ..zoo.manifest import check_source_images
from .errors import (
    OOM_ADVICE,
    GradientGraphError,
    check_channels,
    export_cause,
    gib,
    is_out_of_memory,
    out_of_memory,
    physical_memory,
)
from .feature_model import FeatureModel, global_pools_as_means
from .layers import (
    FORWARD_FAILED,
    LayerChoice,
    feature_layer,
    forward_failed,
    locate_layers,
    weight_name,
)
from .member import (
    check_pretrained_on,
    default_normalisation,
    input_spec,
    normalisation_origin,
    publish_member,
)
from .onnx_export import export_features, export_grads, export_split
from .script_graph import (
    check_program_input,
    feature_graph,
    graph_feature_layer,
    locate_graph_layers,
    script_to_fx,
)
from .translations import OPSET
from .vjp_trace import named_tensors, trace_feature_vjp

__all__ = ["DEFAULT_GRADS_BATCH", "ExportOptions", "check_finite_weights", "check_trace_memory",
           "default_normalisation", "export_model", "sdpa_math"]

#: Default fixed batch of grads.onnx (the engine pads or chunks other batch sizes).
DEFAULT_GRADS_BATCH = 32
#: The manifest's ``features_only`` text when the user asked for a features-only member.
REQUESTED = "exported features-only on request (--features-only)"


@dataclass
class _Prepared:
    features: nn.Module        # forward(images) -> (features, logits) or (features,)
    features_only: nn.Module   # forward(images) -> (features,)
    grad_features: nn.Module   # forward(images) -> (features,), traced for the VJP
    grad_logits: nn.Module     # the same with the logits (the split forward returns them)
    w1: str | None             # qualified names of the S_FU weights in grad_features
    w2: str | None             # (None for a features-only export)
    layers: LayerChoice | None
    head: str                  # the feature layer ("" = the model output)
    pools_owner: nn.Module | None  # module whose global pools become means while tracing


def _prepare(loaded: LoadedModel, example: torch.Tensor, head: str | None,
             convs: Sequence[str] | None, *, features_only: bool = False,
             fallback: bool = False) -> tuple[_Prepared, str | None]:
    """The modules to export, and why there is no gradient graph (``None``: there is one)."""
    if loaded.kind == "torchscript":
        gm = script_to_fx(loaded.module, example)  # type: ignore[arg-type]
        return _prepare_graph(gm, head, convs, features_only=features_only, fallback=fallback)
    if loaded.kind == "torch_export":  # an FX graph of aten calls already
        gm = check_program_input(loaded.module, example)
        return _prepare_graph(gm, head, convs, features_only=features_only, fallback=fallback)
    model = loaded.module
    reason = None
    if features_only:
        head = feature_layer(model, example[:1], spec=loaded.spec, head=head)
        layers, reason = None, REQUESTED
    else:
        try:
            layers = locate_layers(model, example[:1], spec=loaded.spec, head=head, convs=convs)
        except GradientGraphError as exc:
            if not fallback:
                raise
            head = feature_layer(model, example[:1], spec=loaded.spec, head=head)
            layers, reason = None, exc.reason
    cut = layers.head if layers is not None else head
    w1 = f"model.{weight_name(model, layers.conv1)}" if layers is not None else None
    w2 = f"model.{weight_name(model, layers.conv2)}" if layers is not None else None
    prep = _Prepared(FeatureModel(model, cut), FeatureModel(model, cut, with_logits=False),
                     FeatureModel(model, cut, with_logits=False), FeatureModel(model, cut),
                     w1, w2, layers, cut, model)
    return prep, reason


def _prepare_graph(gm: torch.fx.GraphModule, head: str | None, convs: Sequence[str] | None,
                   *, features_only: bool, fallback: bool) -> tuple[_Prepared, str | None]:
    """:func:`_prepare` for a model given as an FX graph (TorchScript, torch.export): the
    layers read from the graph, the features cut out of it."""
    reason = REQUESTED if features_only else None
    try:
        layers = None if features_only else locate_graph_layers(gm, head=head, convs=convs)
    except GradientGraphError as exc:  # fewer than two convolutions in the graph
        if not fallback:
            raise
        layers, reason = None, exc.reason
    cut = layers.head if layers is not None else graph_feature_layer(gm, head)
    prep = _Prepared(feature_graph(gm, cut), feature_graph(gm, cut, with_logits=False),
                     feature_graph(gm, cut, with_logits=False, global_pool_as_mean=True),
                     feature_graph(gm, cut, global_pool_as_mean=True),
                     f"{layers.conv1}.weight" if layers else None,
                     f"{layers.conv2}.weight" if layers else None, layers, cut, None)
    return prep, reason


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@dataclass(frozen=True)
class ExportOptions:
    """How :func:`export_model` writes a member (its keyword arguments, in one object).

    Attributes
    ----------
    name : str, optional
        Model directory name (default: architecture, plus checkpoint file stem).
    input_size : int or (int, int), default=224
        Image height and width the graphs are traced at; the gradient graph is fixed to it.
    channels : int, optional
        Input channels (default: those of the model's first convolution).
    norm : str, optional
        ``imagenet``, ``half`` or ``MEAN,STD``; default ``imagenet`` when ``pretrained_on``
        mentions ImageNet, else ``half``.
    pretrained_on : str, default="unknown"
        What the source model was trained on (metadata for the manifest).
    head : str, optional
        Module whose input is the feature vector (``""``: the model's output); default: the
        paper's table for its architectures, else the last Linear layer the forward pass calls.
    convs : (str, str), optional
        The two layers of S_FU: modules with a weight (Conv1d/2d/3d, Linear) or weight
        parameters; default: the paper's table, else the first two convolutions the forward
        pass runs, else (fewer than two convolutions: a ViT) the first two weight-bearing
        layers whose weights receive a gradient from the features
        (:func:`gradnca_onnx.exporters.layers.default_layers`).
    grads_batch : int, default=32
        Fixed batch of ``grads.onnx`` (see :class:`gradnca_onnx.zoo.BatchPolicy`).
    force : bool, default=False
        Replace an existing model of the same name.
    ort_optimization : str, default="all"
        onnxruntime optimisation level recorded for the engine.
    verify : bool, default=True
        Run ``features.onnx`` in onnxruntime once and compare it with torch before publishing.
    features_only : bool, default=False
        Write ``features.onnx`` only (no S_FU): the member gets S_LP and the baseline metrics.
    features_only_fallback : bool, default=False
        Write a features-only member when the gradient graph cannot be built (fewer than two
        weight-bearing layers, an operator the gradient tracer or exporter cannot handle); the
        manifest's ``features_only`` says why.
    layer_rule : str, optional
        The rule recorded for ``convs`` (one of :data:`gradnca_onnx.zoo.LAYER_RULES`; default
        ``user`` when ``convs`` is given), for callers that chose them by a rule (the importer).
    split_pass : bool, default=True
        Also write the gradient pass split at the cotangent (``forward.onnx`` and
        ``backward.onnx``, manifest ``split``), so that the engine runs each image forward
        once. When the split cannot be exported the member is written without it (a warning
        says why) and the engine uses ``grads.onnx`` alone.
    source_images : int, optional
        How many images the source model was pre-trained on, as you state it (the manifest's
        ``source_images``, read by the static baseline of that name; nothing checks it).
        ``None``: not recorded, and that baseline is skipped for the member.
    intensity : str or Intensity, optional
        The intensity convention the model expects of a target's physical values
        (:mod:`gradnca_onnx.data.conventions`: ``window:-1000,1000:HU``, ``percentile:1,99``,
        ``zscore``); ``None`` or ``8bit``: 8-bit images, the paper's (nothing recorded).
    depth : int, optional
        A 3-D model's input depth: the graphs take ``(B, channels, depth, height, width)``
        volumes (manifest ``input.depth``, schema 7). ``None``: a 2-D model.
    """

    name: str | None = None
    input_size: int | tuple[int, int] = 224
    channels: int | None = None
    norm: str | None = None
    pretrained_on: str = "unknown"
    head: str | None = None
    convs: Sequence[str] | None = None
    grads_batch: int = DEFAULT_GRADS_BATCH
    force: bool = False
    ort_optimization: str = "all"
    verify: bool = True
    features_only: bool = False
    features_only_fallback: bool = False
    layer_rule: str | None = None
    split_pass: bool = True
    source_images: int | None = None
    intensity: str | Intensity | None = None
    depth: int | None = None

    def spatial(self) -> tuple[int, ...]:
        """The input's spatial shape: (height, width), or (depth, height, width)."""
        d = self.depth
        if d is None:
            return self.size()
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise InputError(f"depth must be a positive integer; got {d!r}")
        return (d, *self.size())

    def convention(self) -> Intensity:
        """``intensity`` as an :class:`Intensity` (refused with one line when malformed)."""
        if isinstance(self.intensity, Intensity):
            return self.intensity
        return parse_intensity(self.intensity)

    def size(self) -> tuple[int, int]:
        """``input_size`` as (height, width), refused unless positive integers."""
        size = ((self.input_size, self.input_size) if isinstance(self.input_size, int)
                else tuple(self.input_size))
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                 for s in size):
            raise InputError(f"input size must be a positive integer (or two); got "
                             f"{self.input_size!r}")
        return size  # type: ignore[return-value]

    def check(self) -> None:
        """Refuse, before any work, options that cannot make a member."""
        self.spatial()
        gb = self.grads_batch
        if isinstance(gb, bool) or not isinstance(gb, int) or gb < 1:
            raise InputError(f"grads batch must be a positive integer; got {gb!r}")
        if self.ort_optimization not in ORT_LEVELS:
            raise InputError(f"ort_optimization must be one of {list(ORT_LEVELS)}")
        check_pretrained_on(self.pretrained_on)
        check_source_images(self.source_images)
        self.convention()
        if self.features_only and self.convs is not None:
            raise InputError("--layers names the layers of S_FU, which a features-only export "
                             "does not compute; drop --layers or --features-only")


def export_model(loaded: LoadedModel, zoo_dir: str | os.PathLike,
                 options: ExportOptions | None = None, **kwargs: Any) -> Path:
    """Export ``loaded`` into ``zoo_dir/<name>/`` and return that directory.

    Parameters
    ----------
    loaded : LoadedModel
        From the source registry (:mod:`gradnca_onnx.sources`: ``create_model``,
        ``load_torchscript``, ``load_factory``, ``from_module``, ...).
    zoo_dir : path
        The zoo; created if missing.
    options : ExportOptions, optional
        How to export it; or give its fields as keyword arguments
        (``export_model(loaded, zoo, name="a", input_size=32)``), not both.

    Raises
    ------
    GradientGraphError
        (a ``ValueError``) The gradient graph cannot be built and ``features_only_fallback``
        is not set.
    ValueError
        Bad arguments, a model the exporter cannot handle (unknown layer paths, a forward pass
        that fails, ...), an unwritable zoo, or an existing name without ``force``.
    """
    if options is not None and kwargs:
        raise TypeError("export_model takes an ExportOptions or keyword arguments, not both")
    opts = options if options is not None else ExportOptions(**kwargs)
    opts.check()
    size = opts.size()
    name = opts.name or loaded.default_name
    chans = _channels(loaded.module, opts.channels, volumes=opts.depth is not None)
    check_dimensions(loaded.module, opts.depth, chans, opts.size())
    inp = input_spec(chans, size[0], size[1], opts.norm, opts.pretrained_on,
                     loaded.normalisation, opts.convention(), depth=opts.depth)
    check_trace_memory(opts.spatial(), chans, opts.grads_batch)
    check_finite_weights(loaded.module)
    try:
        return publish_member(zoo_dir, name, force=opts.force, write=lambda staging: _write(
            loaded, staging, name, inp, opts))
    except (RuntimeError, MemoryError) as exc:
        if is_out_of_memory(exc):  # torch's allocator, wherever it failed
            raise out_of_memory(exc, f"exporting {name} at {inp.size_text}") from None
        raise
    except InputError as exc:
        if loaded.options.get("inflate_3d") and str(exc).startswith(FORWARD_FAILED):
            # The usual advice (--input-size, --channels) misleads here: the 2-D network's
            # own forward code is what cannot take a volume.
            raise InputError(f"{first_line(exc).split('; check')[0]}; the inflated network "
                             "cannot run on volumes: its forward calls 2-D operations itself "
                             "(x.mean([2, 3]), F.adaptive_avg_pool2d, a reshape to 4-D), which "
                             "inflating its layers cannot change; inflate another 2-D CNN, or "
                             "give a 3-D model") from None
        raise


def check_dimensions(module: Any, depth: int | None, channels: int,
                     size: tuple[int, int]) -> None:
    """Refuse a 3-D model without ``depth`` and a 2-D CNN with one (one line, before tracing).

    Judged by the first convolution module, when its kind (Conv2d, Conv3d) disagrees with
    ``depth`` and a forward pass on such an input fails (a 2-D model may use a Conv3d inside,
    over its channels). A fixed graph (TorchScript, torch.export) is judged by its forward
    pass alone.
    """
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return
    first = next(((n, m) for n, m in module.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if first is None or isinstance(first[1], nn.Conv3d) == (depth is not None):
        return
    if _runs_on(module, (1, channels, *((depth,) if depth is not None else ()), *size)):
        return
    name, conv = first
    if isinstance(conv, nn.Conv3d) and depth is None:
        raise InputError(f"the model is 3-D (its first convolution {name!r} is a Conv3d): give "
                         "--depth D (in Python depth=D), the volume depth it takes, with "
                         "--input-size for height and width")
    if isinstance(conv, nn.Conv2d) and depth is not None:
        raise InputError(f"--depth {depth} is for 3-D models, but the model is 2-D (its first "
                         f"convolution {name!r} is a Conv2d): drop --depth, or inflate it to "
                         f"3-D with --inflate-3d {depth}")


def _runs_on(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether ``module``'s forward pass runs on zeros of ``shape``."""
    try:
        with torch.no_grad():
            module(torch.zeros(shape))
    except Exception:  # noqa: BLE001 - whatever fails, the input's dimensions do not fit
        return False
    return True


def _described(loaded: LoadedModel, opts: ExportOptions) -> Any:
    """The manifest's ``source`` block, with where the input normalisation came from."""
    from dataclasses import replace as _replace

    spec = sources.describe(loaded)
    origin = normalisation_origin(opts.norm, opts.pretrained_on, loaded.normalisation,
                                  opts.convention())
    return _replace(spec, options={**spec.options, "normalisation_from": origin})


def _channels(module: nn.Module, channels: int | None, *, volumes: bool = False) -> int:
    """The input channels: ``channels``, else the model's first convolution's (a Conv3d's
    for ``volumes``, a Conv2d's otherwise); refused unless a target can give them."""
    ndims = (5,) if volumes else (4,)
    chans = channels if channels is not None else (
        stem_channels(module.named_parameters(), ndims) or 3)
    if isinstance(chans, bool) or not isinstance(chans, int) or chans < 1:
        raise InputError(f"channels must be a positive integer; got {channels!r}")
    check_channels(chans, f"--channels {chans}" if channels is not None else
                   f"the model's first convolution takes {chans} input channels")
    return chans


def _write(loaded: LoadedModel, staging: Path, name: str, inp: InputSpec,
           opts: ExportOptions) -> dict[str, Any]:
    """Trace and write the graphs into ``staging``; the manifest's fields (but files,
    package version and time)."""
    size = inp.spatial
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, inp.channels, *size, generator=gen)
    head = opts.head if opts.head is not None else loaded.head  # --head wins over the source
    prep, reason = _prepare(loaded, example, head, opts.convs,
                            features_only=opts.features_only,
                            fallback=opts.features_only_fallback)
    feats, logits = _forward(prep, example)
    feature_dim = int(feats.shape[1])
    out_names = ["features"] + (["logits"] if logits is not None else [])
    _export_features(prep.features, example, staging / FEATURES_FILE, out_names, name)
    split = None
    if reason is None:
        reason, split = _grads_or_reason(prep, staging, inp.channels, size, opts.grads_batch,
                                         feature_dim, gen, out_names,
                                         fallback=opts.features_only_fallback,
                                         split=opts.split_pass)
    if opts.verify:
        _verify_features(staging / FEATURES_FILE, example, feats, logits, prep.features)
    return dict(
        name=name, architecture=loaded.architecture, pretrained_on=opts.pretrained_on.strip(),
        source=_described(loaded, opts), input=inp, layers=_layer_spec(prep, reason, opts),
        feature_dim=feature_dim, num_classes=int(logits.shape[1]) if logits is not None else None,
        opset=OPSET, batch_policy=BatchPolicy(grads_batch=opts.grads_batch if reason is None
                                              else None),
        ort_optimization=opts.ort_optimization, producer=_producer(), features_only=reason,
        split=split, source_images=check_source_images(opts.source_images))


def _forward(prep: _Prepared, example: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The features and logits of ``example``; a head whose output is not (batch, classes)
    gives no logits (and the graphs are then exported without them)."""
    try:
        with torch.no_grad():
            outs = prep.features(example)
    except Exception as exc:  # the model's own code fails: one line, as for the layer search
        raise forward_failed(example, exc) from None
    feats = outs[0]
    logits = outs[1] if len(outs) > 1 else None
    if logits is not None and (logits.ndim != 2 or logits.shape[0] != example.shape[0]):
        logits = None
        prep.features = prep.features_only
        prep.grad_logits = prep.grad_features
    return feats, logits


def _layer_spec(prep: _Prepared, reason: str | None, opts: ExportOptions) -> LayerSpec:
    """The manifest's ``layers`` block: the S_FU layers and their weight shapes, or only the
    feature layer for a features-only member."""
    if reason is not None:
        return LayerSpec(features=prep.head, conv1=None, conv2=None,
                         conv1_weight_shape=None, conv2_weight_shape=None)
    state = named_tensors(prep.grad_features)
    return LayerSpec(
        features=prep.layers.head, conv1=prep.layers.conv1, conv2=prep.layers.conv2,
        conv1_weight_shape=tuple(int(s) for s in state[prep.w1].shape),
        conv2_weight_shape=tuple(int(s) for s in state[prep.w2].shape),
        rule=(opts.layer_rule if (opts.layer_rule and opts.convs is not None)
              else prep.layers.rule))


def check_finite_weights(module: nn.Module) -> None:
    """Refuse a model whose parameters hold NaN or inf, or whose buffers hold NaN (naming
    the tensor): its features would be NaN (a buffer may hold inf as a mask's fill value)."""
    tensors = [(n, p, True) for n, p in module.named_parameters()]
    tensors += [(n, b, False) for n, b in module.named_buffers()]
    for name, t, is_param in tensors:
        if not t.is_floating_point():
            continue
        bad = int(torch.isnan(t).sum()) or (int(torch.isinf(t).sum()) if is_param else 0)
        if bad:
            raise InputError(f"{'parameter' if is_param else 'buffer'} {name!r} of the model holds "
                             f"NaN or inf ({bad} of {t.numel()} values): its weights are broken "
                             "there; fix the checkpoint (or its training) and export again")


def check_trace_memory(size: tuple[int, ...], channels: int, grads_batch: int) -> None:
    """Refuse, before any work, an export whose images alone exceed this machine's memory.

    The gradient graph is traced on ``grads_batch`` images (and the features on 2) of
    ``channels x size`` float32 values (``size``: (height, width) or (depth, height, width));
    the activations need more still, so this is a lower bound: a size past it can never export
    here (torch's allocator would fail after minutes). ``grads_batch=0``: a features-only
    member (2 images).
    """
    total = physical_memory()
    need = (grads_batch + 2) * channels * int(np.prod(size)) * 4
    if total and need > total:
        h, w = size[-2:]
        given = f"--input-size {h}" + (f"x{w}" if w != h else "")
        given += f" with --depth {size[0]}" if len(size) == 3 else ""
        given += f" with --grads-batch {grads_batch}" if grads_batch else ""
        advice = OOM_ADVICE if grads_batch else ("give a smaller --input-size, or use a "
                                                 "machine with more memory")
        raise InputError(f"{given} needs more than {gib(need)} for the example images alone, "
                         f"and this machine has {gib(total)}: {advice}")


def _export_features(module: nn.Module, example: torch.Tensor, path: Path,
                     out_names: list[str], name: str) -> None:
    import onnx

    try:
        export_features(module, example, path, out_names)
    except (RuntimeError, NotImplementedError, TypeError, AssertionError, KeyError,
            AttributeError, torch.onnx.errors.OnnxExporterError, onnx.checker.ValidationError
            ) as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(exc, f"exporting the features graph of {name}") from None
        raise InputError(f"torch.onnx could not export the features graph of {name} "
                         f"({export_cause(exc)}); the model cannot join a zoo from "
                         "PyTorch: export it to ONNX yourself and use gradnca-onnx import"
                         ) from None


def _grads_or_reason(prep: _Prepared, staging: Path, chans: int, size: tuple[int, ...],
                     grads_batch: int, feature_dim: int, gen: torch.Generator,
                     out_names: list[str], *, fallback: bool, split: bool
                     ) -> tuple[str | None, SplitSpec | None]:
    """Trace and export ``grads.onnx`` (and with ``split`` the split pass).

    Returns ``(None, split spec or None)``, or with ``fallback`` the one-line reason the
    gradient graph could not be built (otherwise that failure is a
    :class:`GradientGraphError`) and ``None``.
    """
    images = torch.randn(grads_batch, chans, *size, generator=gen)
    cotangent = torch.randn(grads_batch, feature_dim, generator=gen)
    owner = prep.pools_owner
    try:
        with contextlib.ExitStack() as stack:
            if owner is not None:
                stack.enter_context(global_pools_as_means(owner))
            # The math kernel of scaled-dot-product attention: its backward is made of ops
            # with ONNX translations (softmax, matmul); the fused CPU kernels' are not.
            stack.enter_context(sdpa_math())
            traced = trace_feature_vjp(prep.grad_logits, prep.w1, prep.w2, images, cotangent)
        # The further outputs are the logits (named as in features.onnx), or unnamed ones
        # that only the exported graph carries.
        aux = (out_names[1:] + [f"aux{i}" for i in range(traced.n_aux)])[:traced.n_aux]
        model = export_grads(traced.module(), images, cotangent, staging / GRADS_FILE,
                             aux_names=aux)
    except (*_EXPORT_ERRORS, MemoryError) as exc:
        if is_out_of_memory(exc):  # no fallback: a features-only member is not what helps
            raise out_of_memory(exc, f"tracing the gradient graph on {grads_batch} images"
                                ) from None
        err = GradientGraphError(f"the gradient graph of {prep.w1} and {prep.w2} could not be "
                                 f"traced or exported ({export_cause(exc)})", verb="export")
        if not fallback:
            raise err from None
        (staging / GRADS_FILE).unlink(missing_ok=True)
        return err.reason, None
    return None, (_export_split(model, staging, out_names) if split else None)


# What tracing and torch.onnx raise for a model they cannot handle; NotImplementedError is the
# translations' documented limit (transposed or 4-D+ convolutions). Each becomes the one-line
# GradientGraphError (or, with the fallback, a features-only member), as before this tuple.
_EXPORT_ERRORS = (RuntimeError, NotImplementedError, TypeError, AssertionError, IndexError,
                  KeyError, AttributeError, torch.onnx.errors.OnnxExporterError)




def _export_split(model: Any, staging: Path,
                  out_names: list[str]) -> SplitSpec | None:
    """Write ``forward.onnx`` and ``backward.onnx``; ``None`` (and a warning) if that fails.

    The member stays complete without them: the engine then runs ``grads.onnx``, which
    repeats the forward pass.
    """
    import warnings

    import onnx

    try:
        halves = export_split(model, staging, out_names)
    except (ValueError, onnx.checker.ValidationError, OSError) as exc:
        for name in (FORWARD_FILE, BACKWARD_FILE):
            (staging / name).unlink(missing_ok=True)
        warnings.warn(f"the split gradient pass could not be exported ({first_line(exc)}); "
                      "the member uses grads.onnx alone, which repeats the forward pass",
                      stacklevel=3)
        return None
    return SplitSpec(residuals=halves.residuals, residual_bytes=halves.residual_bytes)


@contextlib.contextmanager
def sdpa_math():
    """Restrict ``scaled_dot_product_attention`` to its math kernel inside the block."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch older than 2.3
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def _verify_features(path: Path, example: torch.Tensor, feats: torch.Tensor,
                     logits: torch.Tensor | None, module: nn.Module) -> None:
    """A cheap end-to-end check before publishing: onnxruntime must reproduce torch's forward.

    Within 1e-4 (relative, in norm) passes. A larger gap passes only when it is float32
    noise of an ill-conditioned model (e.g. BatchNorm with tiny running variances): onnxruntime
    within 10x torch's own float32 distance from the float64 forward, both measured against
    float64. (onnxruntime's CPU kernels accumulate in other orders; on such models they were
    measured at 4-8x torch's float32 error. A wrong graph is off by orders of magnitude more.)
    """
    import onnxruntime as ort

    if not all(bool(torch.isfinite(t).all()) for t in (feats, logits) if t is not None):
        # Finite weights (checked first) and still NaN/inf: the model's own computation; no
        # graph comparison can say more.
        raise InputError(f"the model gives NaN or inf features or logits on random images of "
                         f"shape {tuple(example.shape)}; check its forward pass and weights")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one small batch; idle threads only spin
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": example.numpy()})
    pairs = [(outs[0], feats)] + ([(outs[1], logits)] if logits is not None else [])
    errs = [_rel(got, want.numpy()) for got, want in pairs]
    if all(e <= 1e-4 for e in errs):
        return
    with torch.no_grad():
        ref = copy.deepcopy(module).double()(example.double())
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    for (got, want), err, r64 in zip(pairs, errs, ref):
        noise = _rel(want.double().numpy(), r64.numpy())
        err64 = _rel(got.astype(np.float64), r64.numpy())
        if not err64 <= max(1e-4, 10.0 * noise):
            raise InputError(f"exported features.onnx disagrees with torch (relative error "
                               f"{err:.2e}; vs float64 {err64:.2e}, torch's own float32 error "
                               f"{noise:.2e}); please report this model")


def _producer() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__}
