"""What the sources that build a model share: head size and stem channels read from a
checkpoint, a seeded constructor, and the checks right after building."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import SourceError
from .checkpoints import fit_state_dict, match_prefix


def _last_linear(model: nn.Module, within: str = "") -> str | None:
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and (not within or n == within or
                                              n.startswith(within + "."))]
    return names[-1] if names else None


def _first_conv(model: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _with_in_channels(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """A freshly initialised copy of ``conv`` taking ``channels`` input channels."""
    if conv.groups != 1:
        raise SourceError(f"cannot change the input channels of a grouped stem convolution "
                         f"(groups={conv.groups})")
    return nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, 1, conv.bias is not None, conv.padding_mode)


def stem_channels(named: Iterable[tuple[str, Any]], ndims: tuple[int, ...] = (4, 5)
                  ) -> int | None:
    """The input channels of the first weight of ``ndims`` dimensions (4: a 2-D convolution,
    5: a 3-D one) among ``named`` (name, tensor) pairs, a module's parameters or a state
    dict's items: the stem convolution's, in registration order, for every common
    architecture (``None``: no convolution)."""
    return next((int(t.shape[1]) for name, t in named
                 if name.endswith("weight") and t.ndim in ndims), None)


def seeded(seed: int, fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``fn`` called after ``torch.manual_seed(seed)``, with ``fn``'s signature (which
    :func:`build_for_state` reads to know whether it takes ``num_classes``)."""
    def build(**kw: Any) -> nn.Module:
        torch.manual_seed(seed)
        return fn(**kw)

    try:
        build.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        pass
    return build


def kwargs_signature(*names: str) -> inspect.Signature:
    """A signature taking ``num_classes``, ``names`` and any keyword (for a library's
    ``create`` wrapper, whose real arguments only the library knows)."""
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in
              ("num_classes", *names)]
    params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_for_state(build: Callable[..., nn.Module], kwargs: dict[str, Any],
                     state: dict[str, torch.Tensor] | None, head_scope: str,
                     stem: str | None, channels: int | None, where: str, hint: str,
                     classes_arg: str = "num_classes", notes: dict[str, Any] | None = None,
                     adapt: Callable[[nn.Module, dict[str, torch.Tensor], dict[str, Any]],
                                     dict[str, torch.Tensor]] | None = None
                     ) -> tuple[nn.Module, dict[str, Any], int]:
    """Build a model whose head size and stem channels fit ``state``, then load it.

    The number of classes is read from the checkpoint's last Linear (within ``head_scope``)
    and passed as ``classes_arg`` (``num_classes``; MONAI: ``out_channels``) when the
    constructor takes it; the input channels are read from the stem convolution's weight and
    the stem is rebuilt when they differ. A wrapper's key prefix (Lightning's ``model.``,
    DDP's ``module.``) is stripped when only the stripped keys fit the model
    (:func:`~.checkpoints.match_prefix`), and ``adapt(model, state, notes)`` may convert the
    state to the built model (timm: position embeddings resampled to its grid). What was
    converted is written into ``notes`` (the manifest's source options).
    """
    kwargs = dict(kwargs)
    notes = {} if notes is None else notes
    model = _quiet_build(build, kwargs)
    if state is not None:
        state = match_prefix(model, state, notes)
        if adapt is not None:
            state = adapt(model, state, notes)
        head = _last_linear(model, head_scope)
        key = f"{head}.weight" if head else None
        if (key in state and classes_arg not in kwargs and _accepts(build, classes_arg)
                and state[key].shape[0] != model.get_submodule(head).out_features):
            kwargs[classes_arg] = int(state[key].shape[0])
            model = _quiet_build(build, kwargs)
    stem = stem or _first_conv(model)
    conv = model.get_submodule(stem) if stem else None
    ckpt_channels = None
    if state is not None and stem:
        ckpt_channels = stem_channels((k, v) for k, v in state.items() if k == f"{stem}.weight")
    if channels is not None and ckpt_channels is not None and channels != ckpt_channels:
        raise SourceError(f"{where}: --channels {channels} but the checkpoint's first conv "
                         f"({stem}) takes {ckpt_channels} channels")
    want = ckpt_channels or channels or (conv.in_channels if isinstance(conv, nn.Conv2d) else 3)
    if isinstance(conv, nn.Conv2d) and want != conv.in_channels:
        _set_module(model, stem, _with_in_channels(conv, want))
    if state is not None:
        fit_state_dict(model, state, where, hint)
    check_no_empty_layer(model, where)
    return model.eval(), kwargs, want


def _quiet_build(build: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    # torch warns while initialising a zero-size layer (num_classes=0); that layer is refused
    # in one line right after (check_no_empty_layer), so the warning would only repeat it raw.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return build(**kwargs)


def check_no_empty_layer(model: nn.Module, where: str) -> None:
    """Refuse, right after building, a model with a weight of no values (``num_classes=0``
    in torchvision gives ``Linear(512, 0)``): its logits would be empty, which the export
    found only after minutes of tracing.
    """
    for name, param in model.named_parameters():
        if param.numel() == 0:
            raise SourceError(f"{where}: parameter {name!r} has shape {tuple(param.shape)}, no "
                             "values (from num_classes=0 or a similar --arch-kwarg?); a zoo "
                             "member needs a head of 1 or more classes: give num_classes >= 1 "
                             "or leave it out")


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON data for the manifest: containers kept, anything else by its ``repr``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


