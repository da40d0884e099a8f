"""Finding the feature layer and the two S_FU conv layers of an ``nn.Module``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .architectures import ArchSpec


@dataclass(frozen=True)
class LayerChoice:
    """Module paths: ``head`` (its input = features; ``""`` = the model output) and the convs."""

    head: str
    conv1: str
    conv2: str


def execution_order(model: nn.Module, example: torch.Tensor,
                    types: tuple[type, ...]) -> list[str]:
    """Paths of the modules of ``types`` in the order a forward pass first calls them."""
    order: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, types):
            handles.append(mod.register_forward_pre_hook(
                lambda _m, _a, name=name: None if name in order else order.append(name)))
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:
        raise ValueError(f"the model's forward pass failed on an input of shape "
                         f"{tuple(example.shape)}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''}; check "
                         "--input-size and --channels") from None
    finally:
        for h in handles:
            h.remove()
    return order


def resolve_module(model: nn.Module, path: str, what: str) -> nn.Module:
    """``model.get_submodule(path)`` with an error that lists close module paths."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"{what} {path!r} is not a module path of this model{hint}") from None


def check_conv(model: nn.Module, path: str) -> nn.Module:
    """The module at ``path``; it must hold a 4-D ``weight`` (a 2-D convolution)."""
    mod = resolve_module(model, path, "conv layer")
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError(f"conv layer {path!r} is a {type(mod).__name__} without a 4-D weight; "
                         "name Conv2d layers")
    return mod


def locate_layers(model: nn.Module, example: torch.Tensor, *, spec: ArchSpec | None = None,
                  head: str | None = None, convs: Sequence[str] | None = None) -> LayerChoice:
    """Choose the feature layer and the two conv layers.

    Precedence: the user's paths, then the paper's table (``spec``), then discovery by one
    forward pass on ``example``: the head is the last ``nn.Linear`` called (its input is the
    penultimate representation) and the convs are the first two ``nn.Conv2d`` called.

    Raises
    ------
    ValueError
        Unknown paths, fewer than two convolutions, the same layer twice, or no Linear head
        found (then name one with ``head``).
    """
    need_head = head is None and spec is None
    need_convs = convs is None and spec is None
    order: list[str] = []
    if need_head or need_convs:
        order = execution_order(model, example, (nn.Conv2d, nn.Linear))
    if head is None:
        if spec is not None:
            head = spec.head
        else:
            linears = [n for n in order if isinstance(model.get_submodule(n), nn.Linear)]
            if not linears:
                raise ValueError("the model calls no nn.Linear layer, so its feature layer is "
                                 "unknown; name the module whose input is the feature vector "
                                 "with --head (or --head '' to use the model's output)")
            head = linears[-1]
    if head:
        resolve_module(model, head, "feature layer (--head)")
    if convs is None:
        if spec is not None:
            convs = (spec.conv1, spec.conv2)
        else:
            found = [n for n in order if isinstance(model.get_submodule(n), nn.Conv2d)]
            if len(found) < 2:
                raise ValueError(
                    f"the model runs {len(found)} Conv2d layer(s) ({', '.join(found) or 'none'}); "
                    "S_FU compares the weight gradients of two conv layers"
                )
            convs = found[:2]
    convs = list(convs)
    if len(convs) != 2:
        raise ValueError(f"name exactly two conv layers (PATH1,PATH2); got {convs}")
    if convs[0] == convs[1]:
        raise ValueError(f"the two conv layers must differ; got {convs[0]!r} twice")
    for path in convs:
        check_conv(model, path)
    return LayerChoice(head=head, conv1=convs[0], conv2=convs[1])
