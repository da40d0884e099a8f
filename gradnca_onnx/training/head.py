"""Replacing a model's final classification layer by the paper's new head, Dropout + Linear."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def _output(out: object) -> torch.Tensor:
    # googlenet / inception return (logits, aux...) named tuples in training mode.
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise InputError(f"the model returns a {type(out).__name__}; fine-tuning needs a logits tensor")


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's main output (logits) for ``x``."""
    return _output(model(x))


def _eval_output(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """The model's output on ``example`` in eval mode, without gradients (its mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model_logits(model, example)
    finally:
        model.train(was_training)


def _output_width(model: nn.Module, example: torch.Tensor) -> int:
    out = _eval_output(model, example)
    if out.ndim != 2:
        raise InputError(f"the encoder outputs shape {tuple(out.shape)}, not (batch, features)")
    return int(out.shape[1])


def find_head(model: nn.Module, example: torch.Tensor) -> str:
    """Module path of the last ``nn.Linear`` the forward pass calls (the final layer).

    For the paper's nine architectures this is the final Linear of REFERENCE section 2
    (``fc``, ``classifier``, ``classifier.1``, ``classifier.6``, ...); for mobilenet_v3_small
    it is ``classifier.3``, so its hidden Linear(576, 1024) is kept and fine-tuned.
    """
    from ..exporters.layers import execution_order

    was_training = model.training
    model.eval()
    try:
        order = execution_order(model, example, (nn.Linear,))
    finally:
        model.train(was_training)
    if not order:
        raise InputError("the model calls no nn.Linear layer; name its final layer with --head")
    return order[-1]


class WithHead(nn.Module):
    """A headless encoder (its output is the embedding its library defines) with a place for
    the new head: ``head`` is an ``nn.Identity`` until :func:`replace_head` puts the paper's
    Dropout + Linear there, reading the embedding."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head: nn.Module = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


def replace_head(model: nn.Module, n_outputs: int, example: torch.Tensor, *,
                 head: str | None = None, dropout: float = 0.5) -> str:
    """Replace the final layer in place by ``Sequential(Dropout(dropout), Linear(in, n_outputs))``.

    Parameters
    ----------
    model : nn.Module
    n_outputs : int
        Classes of the target (labels, for multi-label).
    example : tensor (1, C, H, W)
        An input, to find the final layer by a forward pass and to check the result.
    head : str, optional
        Module path of the layer to replace (default: :func:`find_head`): an ``nn.Linear``, or
        a block that is replaced as a whole (the new Linear takes the input width of the
        block's first Linear).
    dropout : float

    Returns
    -------
    str
        The replaced module path.

    Raises
    ------
    ValueError
        No Linear layer, an unknown path, or a replacement that does not become the output
        (the model's output must have ``n_outputs`` columns afterwards).
    """
    path = find_head(model, example) if head is None else head
    try:
        old = model.get_submodule(path)
    except AttributeError:
        raise InputError(f"head {path!r} is not a module path of the model") from None
    # A block (e.g. mobilenet_v3_small's whole classifier) is replaced as a unit: its first
    # Linear's input width is the width of the features that reach it. An Identity (a headless
    # encoder's WithHead) passes the embedding through: its width is the output's.
    first = next((m for m in old.modules() if isinstance(m, nn.Linear)), None)
    if isinstance(old, nn.Identity):
        width = _output_width(model, example)
    elif first is None:
        raise InputError(f"head {path!r} is a {type(old).__name__} without a Linear layer")
    else:
        width = first.in_features
    new = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_outputs))
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    out = _eval_output(model, example)
    if out.ndim != 2 or out.shape[1] != n_outputs:
        raise InputError(f"after replacing {path!r} the model outputs shape {tuple(out.shape)}, "
                         f"not (batch, {n_outputs}): name the final layer with --head")
    return path
