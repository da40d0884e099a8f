"""A module that returns an ``nn.Module``'s penultimate features (and its head's logits)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..errors import InputError


class FeatureModel(nn.Module):
    """``forward(images) -> (features,)`` or ``(features, logits)``.

    Features are the input of the module at ``head`` (flattened to ``[B, D]``), logits that
    module's output on them; with ``head=""`` the model's own output is the features. Layers
    after the head still run in torch but nothing depends on them, so they drop out of the
    exported graphs.
    """

    def __init__(self, model: nn.Module, head: str, *, with_logits: bool = True) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.with_logits = with_logits and bool(head)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.head:
            out = self.model(images)
            if not isinstance(out, torch.Tensor):
                raise InputError("the model returns a "
                                 f"{type(out).__name__}, not a tensor; name the feature layer "
                                 "with --head")
            return (torch.flatten(out, 1),)
        head = self.model.get_submodule(self.head)
        seen: dict[str, torch.Tensor] = {}
        calls: list[int] = []

        def pre_hook(_m: nn.Module, args: tuple) -> None:
            calls.append(1)
            seen.setdefault("x", args[0])

        # Hooks record the head's first input and output. (Raising from a hook to skip the
        # rest of the forward pass would be cheaper, but torch.export loses track of the
        # module stack when a submodule call exits by an exception.)
        pre = head.register_forward_pre_hook(pre_hook)
        post = head.register_forward_hook(lambda _m, _a, out: seen.setdefault("y", out))
        try:
            self.model(images)
        finally:
            pre.remove()
            post.remove()
        if "x" not in seen:
            raise InputError(f"the forward pass never called the feature layer {self.head!r}; "
                             "name a module the model uses (--head)")
        if len(calls) > 1:
            # A shared module: its first input is one of several, and its first output is not
            # the model's logits.
            raise InputError(f"the feature layer {self.head!r} is called {len(calls)} times in "
                             "one forward pass (a shared module), so its input is not one "
                             "feature vector nor its output the logits: name with --head a "
                             "module called once (the classification head), or --head '' for "
                             "the model's output")
        feats = torch.flatten(seen["x"], 1)
        if not self.with_logits:
            return (feats,)
        return feats, seen["y"]


class _MeanHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)


class _MeanL(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1, keepdim=True)


@contextlib.contextmanager
def global_pools_as_means(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily replace every ``AdaptiveAvgPool2d(1)`` by a mean over H and W, and every
    ``AdaptiveAvgPool1d(1)`` by a mean over the last axis.

    Each pair is the same function, but the pool's backward on a channels-last tensor
    (ConvNeXt) or a transposed token sequence (Hugging Face Swin's pooler) traces to an
    ``as_strided_scatter`` that no ONNX translation handles, while the mean's backward is a
    plain broadcast.
    """
    swapped = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1), [1, 1]):
            mean: nn.Module = _MeanHW()
        elif isinstance(mod, nn.AdaptiveAvgPool1d) and mod.output_size in (1, (1,), [1]):
            mean = _MeanL()
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not child:
            continue
        swapped.append((parent, child, mod))
        setattr(parent, child, mean)
    try:
        yield model
    finally:
        for parent, child, mod in swapped:
            setattr(parent, child, mod)
