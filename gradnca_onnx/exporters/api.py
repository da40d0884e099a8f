"""``export_model``: one loaded model to a zoo model directory (two graphs and a manifest)."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..zoo import (
    FEATURES_FILE,
    GRADS_FILE,
    ORT_LEVELS,
    BatchPolicy,
    InputSpec,
    LayerSpec,
    Manifest,
    SourceSpec,
    file_entry,
    parse_normalisation,
    write_manifest,
)
from .feature_model import FeatureModel, global_pools_as_means
from .layers import LayerChoice, locate_layers
from .loading import LoadedModel, checkpoint_digest
from .model_dir import publish, staging_dir
from .onnx_export import export_features, export_grads
from .script_graph import feature_graph, locate_graph_layers, script_to_fx
from .translations import OPSET
from .vjp_trace import named_tensors, trace_feature_vjp

#: Default fixed batch of grads.onnx (the engine pads or chunks other batch sizes).
DEFAULT_GRADS_BATCH = 32


@dataclass
class _Prepared:
    features: nn.Module        # forward(images) -> (features, logits) or (features,)
    features_only: nn.Module   # forward(images) -> (features,)
    grad_features: nn.Module   # forward(images) -> (features,), traced for the VJP
    w1: str                    # qualified names of the conv weights in grad_features
    w2: str
    layers: LayerChoice
    pools_owner: nn.Module | None  # module whose global pools become means while tracing


def default_normalisation(pretrained_on: str) -> str:
    """``imagenet`` for sources whose description mentions ImageNet, else ``half`` (REFERENCE 1)."""
    return "imagenet" if "imagenet" in pretrained_on.lower() else "half"


def _guess_channels(module: nn.Module) -> int:
    # The first 4-D weight in registration order is the stem for every common architecture.
    for name, p in module.named_parameters():
        if name.endswith("weight") and p.ndim == 4:
            return int(p.shape[1])
    return 3


def _prepare(loaded: LoadedModel, example: torch.Tensor, head: str | None,
             convs: Sequence[str] | None) -> _Prepared:
    if loaded.kind == "torchscript":
        gm = script_to_fx(loaded.module, example)  # type: ignore[arg-type]
        layers = locate_graph_layers(gm, head=head, convs=convs)
        cut = layers.head
        return _Prepared(feature_graph(gm, cut), feature_graph(gm, cut, with_logits=False),
                         feature_graph(gm, cut, with_logits=False, global_pool_as_mean=True),
                         f"{layers.conv1}.weight", f"{layers.conv2}.weight", layers, None)
    model = loaded.module
    layers = locate_layers(model, example[:1], spec=loaded.spec, head=head, convs=convs)
    return _Prepared(FeatureModel(model, layers.head),
                     FeatureModel(model, layers.head, with_logits=False),
                     FeatureModel(model, layers.head, with_logits=False),
                     f"model.{layers.conv1}.weight", f"model.{layers.conv2}.weight", layers, model)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def export_model(loaded: LoadedModel, zoo_dir: str | os.PathLike, *, name: str | None = None,
                 input_size: int | tuple[int, int] = 224, channels: int | None = None,
                 norm: str | None = None, pretrained_on: str = "unknown",
                 head: str | None = None, convs: Sequence[str] | None = None,
                 grads_batch: int = DEFAULT_GRADS_BATCH, force: bool = False,
                 ort_optimization: str = "all", verify: bool = True) -> Path:
    """Export ``loaded`` into ``zoo_dir/<name>/`` and return that directory.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`load_torchvision`, :func:`load_torchscript`, :func:`load_factory` or
        :func:`from_module`.
    zoo_dir : path
        The zoo; created if missing.
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
        The two conv layers of S_FU; default: the paper's table, else the first two Conv2d
        layers the forward pass calls.
    grads_batch : int, default=32
        Fixed batch of ``grads.onnx`` (see :class:`gradnca_onnx.zoo.BatchPolicy`).
    force : bool, default=False
        Replace an existing model of the same name.
    ort_optimization : str, default="all"
        onnxruntime optimisation level recorded for the engine.
    verify : bool, default=True
        Run ``features.onnx`` in onnxruntime once and compare it with torch before publishing.

    Raises
    ------
    ValueError
        Bad arguments, a model the exporter cannot handle (fewer than two convolutions,
        unknown layer paths, ...), an unwritable zoo, or an existing name without ``force``.
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                             for s in size):
        raise ValueError(f"input size must be a positive integer (or two); got {input_size!r}")
    if isinstance(grads_batch, bool) or not isinstance(grads_batch, int) or grads_batch < 1:
        raise ValueError(f"grads batch must be a positive integer; got {grads_batch!r}")
    if ort_optimization not in ORT_LEVELS:
        raise ValueError(f"ort_optimization must be one of {list(ORT_LEVELS)}")
    if not pretrained_on or not pretrained_on.strip():
        raise ValueError("--pretrained-on must not be empty (use 'unknown')")
    name = name or loaded.default_name
    chans = channels if channels is not None else _guess_channels(loaded.module)
    if isinstance(chans, bool) or not isinstance(chans, int) or chans < 1:
        raise ValueError(f"channels must be a positive integer; got {channels!r}")
    mean, std = parse_normalisation(norm or default_normalisation(pretrained_on), chans)

    staging = staging_dir(zoo_dir, name, force=force)
    try:
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(2, chans, *size, generator=gen)
        prep = _prepare(loaded, example, head, convs)
        with torch.no_grad():
            outs = prep.features(example)
        feats = outs[0]
        logits = outs[1] if len(outs) > 1 else None
        if logits is not None and (logits.ndim != 2 or logits.shape[0] != example.shape[0]):
            logits = None  # a head whose output is not (batch, classes) gives no logits
            prep.features = prep.features_only
        feature_dim = int(feats.shape[1])
        num_classes = int(logits.shape[1]) if logits is not None else None
        out_names = ["features"] + (["logits"] if logits is not None else [])
        export_features(prep.features, example, staging / FEATURES_FILE, out_names)

        images = torch.randn(grads_batch, chans, *size, generator=gen)
        cotangent = torch.randn(grads_batch, feature_dim, generator=gen)
        owner = prep.pools_owner
        with global_pools_as_means(owner) if owner is not None else contextlib.nullcontext():
            grad_module = trace_feature_vjp(prep.grad_features, prep.w1, prep.w2, images,
                                            cotangent)
        export_grads(grad_module, images, cotangent, staging / GRADS_FILE)
        del grad_module

        if verify:
            _verify_features(staging / FEATURES_FILE, example, feats, logits, prep.features)

        state = named_tensors(prep.grad_features)
        layer_spec = LayerSpec(
            features=prep.layers.head, conv1=prep.layers.conv1, conv2=prep.layers.conv2,
            conv1_weight_shape=tuple(int(s) for s in state[prep.w1].shape),
            conv2_weight_shape=tuple(int(s) for s in state[prep.w2].shape))
        manifest = Manifest(
            name=name, architecture=loaded.architecture, pretrained_on=pretrained_on.strip(),
            source=SourceSpec(kind=loaded.kind, reference=loaded.reference,
                              checkpoint=loaded.checkpoint.name if loaded.checkpoint else None,
                              checkpoint_sha256=checkpoint_digest(loaded),
                              options=dict(loaded.options)),
            input=InputSpec(channels=chans, height=size[0], width=size[1], mean=mean, std=std),
            layers=layer_spec, feature_dim=feature_dim, num_classes=num_classes, opset=OPSET,
            batch_policy=BatchPolicy(grads_batch=grads_batch),
            ort_optimization=ort_optimization,
            files={p.name: file_entry(p) for p in sorted(staging.iterdir()) if p.is_file()},
            package_version=__version__, producer=_producer(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        write_manifest(staging, manifest)
        return publish(staging, zoo_dir, name, force=force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


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
            raise RuntimeError(f"exported features.onnx disagrees with torch (relative error "
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
