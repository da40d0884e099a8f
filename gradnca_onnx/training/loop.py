"""One fine-tuning run: the paper's protocol (REFERENCE 7) on a prepared target.

Full fine-tuning (no frozen weights) of a model whose final layer is replaced by
Dropout(0.5) + Linear; SGD (Nesterov when momentum > 0) with weight decay; cosine annealing of
the learning rate over ``max_epochs`` (stepped once per epoch); after every epoch the
validation loss, AUC and accuracy; early stopping when the validation AUC has not improved
(strictly) for ``patience`` epochs; the weights of the best validation AUC are restored at the
end and scored on val and test.

Two decisions the paper does not spell out:

* A training loss that is not finite (a learning rate of 1.0 can diverge) ends the run with
  stop reason ``diverged`` without taking that step. Its outcome is the one the paper's runs
  would reach: NaN weights never improve the validation AUC again, so early stopping would
  restore the same best weights 50 epochs later.
* If a training set size leaves a last batch of one image, that image is skipped for the epoch
  (BatchNorm cannot normalise a batch of one in training mode).

Batch size 1 itself makes every batch one image: a model with BatchNorm layers cannot train so
and is refused before its run starts (:func:`check_batch_size`); a model without trains on
every image. A run that took no optimisation step at all is never a result: it fails.
"""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data import TargetData, normalize, resize, to_grey, to_rgb
from ..errors import InputError
from .augment import train_transform
from .grid import RunConfig
from .head import model_logits, replace_head
from .metrics import accuracy, auc_score


@dataclass
class EpochMetrics:
    """Metrics after one epoch (``epoch`` counts from 1)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    val_acc: float
    lr: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunResult:
    """Outcome of a run; val/test metrics are those of the best-validation-AUC weights."""

    epochs_run: int
    best_epoch: int | None
    stop_reason: str
    val_auc: float
    val_loss: float
    val_acc: float
    test_auc: float
    test_loss: float
    test_acc: float
    wall_time_s: float
    history: list[EpochMetrics] = field(default_factory=list)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The run-store result fields."""
        return {k: getattr(self, k) for k in (
            "epochs_run", "best_epoch", "stop_reason", "val_auc", "val_loss", "val_acc",
            "test_auc", "test_loss", "test_acc", "wall_time_s")}


@dataclass
class PreparedTarget:
    """A target's splits turned into tensors for one input size and normalisation."""

    train_images: torch.Tensor          # uint8 (N, C, S, S): input of the augmentation (2-D)
    train_labels: torch.Tensor
    train_inputs: torch.Tensor          # float32 normalised, for runs without augmentation
    val_inputs: torch.Tensor
    val_labels: torch.Tensor
    test_inputs: Optional[torch.Tensor]
    test_labels: Optional[torch.Tensor]
    task: str
    n_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    #: Volume targets: the inputs are ``(N, C, S, S, S)`` cubes of side ``image_size`` and the
    #: augmentation is random flips along each axis (:func:`flip_volumes`).
    volumetric: bool = False


def flip_volumes(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each volume of ``x`` (N, C, D, H, W) flipped along each spatial axis with p = 0.5: the
    3-D augmentation (the 2-D pipeline's crops, rotations and histogram steps have no
    standard 3-D counterpart in the paper; flips are what 3-D medical training commonly
    uses and keep the voxel values)."""
    flips = torch.rand(len(x), 3, generator=gen) < 0.5
    out = x.clone()
    for i in range(len(x)):
        dims = [2 + a for a in range(3) if flips[i, a]]
        if dims:
            out[i] = torch.flip(x[i:i + 1], dims)[0]
    return out


def _channels(images: np.ndarray, channels: int) -> np.ndarray:
    return to_rgb(images) if channels == 3 else to_grey(images) if channels == 1 else images


def _labels(data: TargetData) -> torch.Tensor:
    y = torch.from_numpy(np.array(data.labels))
    return y.float() if data.task == "multi-label" else y.long()


def is_3d_model(model: nn.Module) -> bool | None:
    """Whether ``model``'s first convolution module is a Conv3d (``None``: it has neither a
    Conv2d nor a Conv3d)."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    return None if first is None else isinstance(first, nn.Conv3d)


def check_trainable(train: TargetData, volumetric_model: bool | None = None) -> None:
    """Refuse a source whose dimensions do not match the target's: a 2-D model on volumes
    or a 3-D model on 2-D images (``volumetric_model`` ``None``: not known yet)."""
    if volumetric_model is None or volumetric_model == train.volumetric:
        return
    if train.volumetric:
        raise InputError(f"{train.name} holds volumes, but the source is a 2-D model: "
                         "fine-tune a 3-D source on it (export --depth, or --inflate-3d)")
    raise InputError(f"{train.name} holds 2-D images, but the source is a 3-D model: "
                     "fine-tune it on a volume target")


def prepare_target(train: TargetData, val: TargetData, test: TargetData | None, *,
                   image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                   channels: int = 3, resize_filter: str = "bilinear") -> PreparedTarget:
    """Channels, Pillow resize to ``image_size`` (when different) and normalisation, once.

    Validation and test images go through exactly the scoring pipeline of
    :func:`gradnca_onnx.data.preprocess`.
    """
    if channels not in (1, 3):
        raise InputError(f"the model takes {channels} input channels; only 1 or 3 are supported")
    for part in (val, test):
        if part is not None and (part.n_classes != train.n_classes or part.task != train.task):
            raise InputError(f"{part.name} {part.split}: {part.n_classes} classes ({part.task}) "
                             f"but train has {train.n_classes} ({train.task})")
    if train.volumetric:
        return _prepare_volumes(train, val, test, image_size=image_size, mean=mean, std=std,
                                channels=channels)

    def inputs(d: TargetData) -> tuple[torch.Tensor, np.ndarray]:
        x = resize(_channels(d.images, channels), image_size, filter=resize_filter)
        return torch.from_numpy(normalize(x, mean, std)), x

    train_inputs, train_u8 = inputs(train)
    val_inputs, _ = inputs(val)
    test_inputs = inputs(test)[0] if test is not None else None
    return PreparedTarget(
        train_images=torch.from_numpy(np.ascontiguousarray(train_u8.transpose(0, 3, 1, 2))),
        train_labels=_labels(train), train_inputs=train_inputs,
        val_inputs=val_inputs, val_labels=_labels(val),
        test_inputs=test_inputs, test_labels=_labels(test) if test is not None else None,
        task=train.task, n_classes=train.n_classes, mean=tuple(mean), std=tuple(std),
        image_size=image_size)


#: Most bytes the prepared float32 inputs of a volume target may take (the paper grid's
#: image_size 224 is for 2-D: 224^3 voxels per volume would need tens of GiB).
MAX_VOLUME_BYTES = 8 << 30


def _prepare_volumes(train: TargetData, val: TargetData, test: TargetData | None, *,
                     image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                     channels: int) -> PreparedTarget:
    """:func:`prepare_target` for volumes: trilinear resampling to ``image_size``^3 and
    normalisation, exactly the scoring pipeline's (:func:`~gradnca_onnx.data.volumes.
    preprocess_volumes`)."""
    from ..data.volumes import preprocess_volumes

    n = len(train) + len(val) + (len(test) if test is not None else 0)
    need = n * channels * image_size ** 3 * 4
    if need > MAX_VOLUME_BYTES:
        raise InputError(f"{train.name}: {n} volumes at the grid's image_size {image_size} "
                         f"({image_size}^3 voxels, {channels} channel(s)) need "
                         f"{need / 2 ** 30:.1f} GiB as float32 inputs; give a grid with a "
                         "smaller image_size for volumes (e.g. --preset quick, 28, or a grid "
                         "file with image_size 32 or 64)")

    def inputs(d: TargetData) -> torch.Tensor:
        size = None if d.spatial_size == (image_size,) * 3 else image_size
        return torch.from_numpy(preprocess_volumes(d.images[..., 0], mean=mean, std=std,
                                                   size=size, channels=channels))

    train_inputs = inputs(train)
    return PreparedTarget(
        train_images=train_inputs, train_labels=_labels(train), train_inputs=train_inputs,
        val_inputs=inputs(val), val_labels=_labels(val),
        test_inputs=inputs(test) if test is not None else None,
        test_labels=_labels(test) if test is not None else None, task=train.task,
        n_classes=train.n_classes, mean=tuple(mean), std=tuple(std), image_size=image_size,
        volumetric=True)


def _loss(logits: torch.Tensor, y: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    if task == "multi-label":
        return F.binary_cross_entropy_with_logits(logits, y, reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, task: str, *,
             batch_size: int = 256, device: str = "cpu") -> tuple[float, float, float, np.ndarray]:
    """``(loss, auc, accuracy, scores)`` of ``model`` in eval mode.

    ``loss`` is the mean cross-entropy per image (multi-label: mean binary cross-entropy per
    label), ``scores`` the float64 class probabilities (softmax; sigmoid for multi-label).
    """
    model.eval()
    logits = torch.cat([model_logits(model, inputs[i:i + batch_size].to(device)).float().cpu()
                        for i in range(0, len(inputs), batch_size)])
    loss = float(_loss(logits, labels, task))
    probs = torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=1)
    scores = probs.double().numpy()
    y = labels.numpy()
    return loss, auc_score(y, scores, task), accuracy(y, scores, task), scores


def _augment_batch(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   idx: torch.Tensor) -> torch.Tensor:
    # One image at a time, single-threaded: the ops are too small to gain from threads, and
    # on a busy machine intra-op threads make them many times slower (measured: 6x at 28 px).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.stack([transform(images[j]) for j in idx.tolist()])
    finally:
        torch.set_num_threads(threads)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer (of any dimension, SyncBatchNorm included)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_batch_size(model: nn.Module, batch_size: int, name: str = "the model") -> None:
    """Refuse a batch size ``model`` cannot train with, before any run starts.

    Raises
    ------
    ValueError
        Batch size 1 for a model with BatchNorm layers: in training mode BatchNorm needs at
        least two images per batch, so every batch would be skipped (or fail).
    """
    if batch_size == 1 and has_batchnorm(model):
        raise InputError(f"batch size 1 cannot fine-tune {name}: it has BatchNorm layers, which "
                         "need at least two images per batch in training mode; use "
                         "--batch-size 2 or more (batch_size in a grid file)")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's and torch's global generators; return a generator for the data order."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def finetune(model: nn.Module, data: PreparedTarget, config: RunConfig, *,
             head: str | None = None, device: str = "cpu",
             on_epoch: Callable[[EpochMetrics], None] | None = None,
             eval_batch_size: int = 256) -> RunResult:
    """Fine-tune ``model`` (in place: pass a copy) on ``data`` with ``config``.

    Parameters
    ----------
    model : nn.Module
        The source model; its final layer is replaced (see :func:`~.head.replace_head`).
    data : PreparedTarget
        From :func:`prepare_target` with ``config.image_size``.
    config : RunConfig
    head : str, optional
        Module path of the final layer (default: the last Linear called).
    device : str
        Torch device (``cpu``; ``cuda`` where available).
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochMetrics` (the run store records them).
    eval_batch_size : int

    Returns
    -------
    RunResult
    """
    if data.image_size != config.image_size:
        raise InputError(f"data prepared for {data.image_size} px, config says {config.image_size}")
    check_batch_size(model, config.batch_size)
    start = time.perf_counter()
    gen = seed_everything(config.seed)
    replace_head(model, data.n_classes, data.val_inputs[:1], head=head, dropout=config.dropout)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=config.nesterov)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.max_epochs)
    transform = train_transform(config.image_size, data.mean, data.std, augment=config.augment)
    n = len(data.train_labels)
    best_auc, best_epoch, best_state = -math.inf, None, None
    since_best, stop_reason, steps = 0, "max_epochs", 0
    history: list[EpochMetrics] = []
    for epoch in range(1, config.max_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        lr = opt.param_groups[0]["lr"]
        order = torch.randperm(n, generator=gen)
        total, seen, diverged = 0.0, 0, False
        for i in range(0, n, config.batch_size):
            idx = order[i:i + config.batch_size]
            if len(idx) < 2 and n > 1 and config.batch_size > 1:
                continue  # a last batch of one: BatchNorm cannot train on it
            if config.augment and data.volumetric:
                x = flip_volumes(data.train_inputs[idx], gen)
            elif config.augment:
                x = _augment_batch(transform, data.train_images, idx)
            else:
                x = data.train_inputs[idx]
            y = data.train_labels[idx]
            loss = _loss(model_logits(model, x.to(device)), y.to(device), data.task)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            total += loss.item() * len(idx)
            seen += len(idx)
        sched.step()
        val_loss, val_auc, val_acc, _ = evaluate(model, data.val_inputs, data.val_labels,
                                                 data.task, batch_size=eval_batch_size,
                                                 device=device)
        m = EpochMetrics(epoch, math.nan if diverged or not seen else total / seen, val_loss,
                         val_auc, val_acc, lr, time.perf_counter() - t0)
        history.append(m)
        if on_epoch is not None:
            on_epoch(m)
        if val_auc > best_auc:  # NaN never improves
            best_auc, best_epoch, since_best = val_auc, epoch, 0
            state = model.state_dict()
            best_state = OrderedDict((k, v.detach().cpu().clone()) for k, v in state.items())
            # Keep the module versions: without them some modules (torchvision's MNASNet)
            # refuse to load the state back.
            best_state._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
        else:
            since_best += 1
        if diverged:
            stop_reason = "diverged"
            break
        if since_best >= config.patience:
            stop_reason = "early_stopping"
            break
    if steps == 0:
        # Its scores would be the untrained model's, stored as if it were fine-tuned.
        why = ("the loss of the untrained model is not finite" if stop_reason == "diverged"
               else f"no batch of {config.batch_size} image(s) could be trained on")
        raise InputError(f"the run took no optimisation step ({why}); it is not a result")
    nan = math.nan
    result = RunResult(len(history), best_epoch, stop_reason, nan, nan, nan, nan, nan, nan, 0.0,
                       history)
    if best_state is not None:
        model.load_state_dict(best_state)
        result.val_loss, result.val_auc, result.val_acc, val_scores = evaluate(
            model, data.val_inputs, data.val_labels, data.task, batch_size=eval_batch_size,
            device=device)
        result.predictions["val"] = (data.val_labels.numpy(), val_scores)
        if data.test_inputs is not None and data.test_labels is not None:
            result.test_loss, result.test_auc, result.test_acc, test_scores = evaluate(
                model, data.test_inputs, data.test_labels, data.task,
                batch_size=eval_batch_size, device=device)
            result.predictions["test"] = (data.test_labels.numpy(), test_scores)
    result.wall_time_s = time.perf_counter() - start
    return result
