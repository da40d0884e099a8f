"""Finding the feature layer and the two S_FU conv layers of an ``nn.Module``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError, first_line
from ..sources.architectures import ArchSpec
from .errors import GradientGraphError, is_out_of_memory, out_of_memory


@dataclass(frozen=True)
class LayerChoice:
    """Module paths: ``head`` (its input = features; ``""`` = the model output), the two S_FU
    layers, and the rule that chose them (one of :data:`gradnca_onnx.zoo.LAYER_RULES`).

    A layer path names a module whose ``weight`` S_FU differentiates, or a weight parameter
    itself (an ``nn.MultiheadAttention``'s ``in_proj_weight``); :func:`weight_name` maps it to
    the parameter.
    """

    head: str
    conv1: str
    conv2: str
    rule: str = "user"


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
        raise forward_failed(example, exc) from None
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
        raise InputError(f"{what} {path!r} is not a module path of this model{hint}") from None


def weight_name(model: nn.Module, path: str) -> str:
    """The parameter S_FU differentiates for layer ``path``: ``path.weight`` when ``path`` is a
    module with a weight, else ``path`` itself when it names a weight parameter.

    Raises
    ------
    ValueError
        ``path`` is neither, or its weight has fewer than two dimensions (a norm layer's scale
        is not a weight-bearing layer in the sense of S_FU).
    """
    try:
        param = model.get_parameter(path)
        name = path
    except AttributeError:
        mod = resolve_module(model, path, "S_FU layer")
        param = getattr(mod, "weight", None)
        name = f"{path}.weight"
        if not isinstance(param, torch.Tensor):
            raise InputError(f"S_FU layer {path!r} is a {type(mod).__name__} without a weight; "
                             "name a Conv or Linear layer (or a weight parameter)") from None
    if param.ndim < 2:
        raise InputError(f"S_FU layer {path!r} has a {param.ndim}-D weight (a norm or scale "
                         "layer); name a Conv or Linear layer (or a weight parameter of 2 or more "
                         "dimensions)")
    return name


def _layer_path(param: str) -> str:
    # "a.b.weight" -> "a.b" (the paper's module naming); other weights keep their own name.
    return param[: -len(".weight")] if param.endswith(".weight") else param


def weight_order(model: nn.Module, example: torch.Tensor) -> tuple[list[str], set[str]]:
    """Weight parameters (2+ dimensions, a name ending in ``weight``, not an embedding table) in
    the order the forward pass first uses them, and the set of those a convolution consumes as
    its kernel.

    Recorded below autograd (a dispatch mode), so functional calls count too: ``F.linear`` on
    a Swin block's ``qkv.weight``, ``nn.MultiheadAttention``'s ``in_proj_weight``, timm's
    ``F.conv2d`` in weight-standardised or "same"-padded convolutions.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    # An embedding table's weight (CLIP's position_embedding, a token table) is looked up,
    # not applied as a layer: never an S_FU layer (issue 27: it had been chosen as CLIP's
    # second "layer").
    tables = {f"{m_name}.weight" if m_name else "weight" for m_name, m in model.named_modules()
              if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    ids = {id(p): n for n, p in model.named_parameters()
           if p.ndim >= 2 and n.rpartition(".")[2].endswith("weight") and n not in tables}
    order: list[str] = []
    convs: set[str] = set()
    conv_ops = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_overrideable.default)

    class _Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for a in tree_leaves((args, kwargs or {})):
                name = ids.get(id(a))
                if name is not None and name not in order:
                    order.append(name)
            if func in conv_ops and len(args) > 1 and id(args[1]) in ids:
                convs.add(ids[id(args[1])])
            return func(*args, **(kwargs or {}))

    try:
        with torch.no_grad(), _Record():
            model(example)
    except Exception as exc:
        raise forward_failed(example, exc) from None
    return order, convs


#: How the one-line error of a failed forward pass begins (:func:`forward_failed`).
FORWARD_FAILED = "the model's forward pass failed"


def forward_failed(example: torch.Tensor, exc: Exception) -> ValueError:
    """The one-line error of a model whose forward pass failed on ``example``."""
    if isinstance(exc, InputError):  # our own wrapper's one line (--features, --head) says it
        return exc
    if is_out_of_memory(exc):
        return out_of_memory(exc, f"running the model on an input of shape "
                                  f"{tuple(example.shape)}")
    return InputError(f"{FORWARD_FAILED} on an input of shape "
                      f"{tuple(example.shape)}: {type(exc).__name__}: "
                      f"{first_line(exc, 200)}; check "
                      "--input-size and --channels")


def _with_gradient(model: nn.Module, head: str, example: torch.Tensor,
                   names: list[str]) -> list[str]:
    """The subset of ``names`` whose weights the features depend on (autograd connects them).

    Connection, not a non-zero value: the choice must not depend on the weights, or a
    random-init model (timm's ResNets zero the last BatchNorm of every block, so the residual
    convolutions get exactly zero gradient) and its fine-tuned checkpoint would differ.
    """
    from .feature_model import FeatureModel

    params = dict(model.named_parameters())
    with torch.enable_grad():
        (feats,) = FeatureModel(model, head, with_logits=False)(example)
        # A random direction, not the plain sum (the sum of LayerNorm-ed features is constant).
        direction = torch.randn(feats.shape, generator=torch.Generator().manual_seed(0))
        grads = torch.autograd.grad((feats * direction.to(feats.dtype)).sum(),
                                    [params[n] for n in names], allow_unused=True)
    return [n for n, g in zip(names, grads) if g is not None]


def default_layers(model: nn.Module, example: torch.Tensor, head: str) -> tuple[list[str], str]:
    """The two S_FU layers of a model outside the paper's table, and the rule that chose them.

    The paper's rule first: the first two convolutions in forward order (``first-two-convs``).
    A model that runs fewer than two (a ViT runs one, its patch embedding) gets the first two
    weight-bearing layers whose weights receive a gradient from the features
    (``first-two-weight-layers``: for a ViT the patch embedding and the first block's attention
    input projection), an extension beyond the paper.
    """
    order, conv_weights = weight_order(model, example)
    used = _with_gradient(model, head, example, order) if order else []
    convs = [n for n in used if n in conv_weights]
    if len(convs) >= 2:
        return [_layer_path(n) for n in convs[:2]], "first-two-convs"
    if len(used) >= 2:
        return [_layer_path(n) for n in used[:2]], "first-two-weight-layers"
    raise GradientGraphError(f"the features depend on {len(used)} weight-bearing layer(s) "
                             f"({', '.join(map(_layer_path, used)) or 'none'}) and S_FU compares "
                             "the weight gradients of two", verb="export")


def feature_layer(model: nn.Module, example: torch.Tensor, *, spec: ArchSpec | None = None,
                  head: str | None = None) -> str:
    """The module whose input is the feature vector: ``head``, else the paper's table, else the
    last ``nn.Linear`` one forward pass calls (``""``: the model's output)."""
    if head is None:
        if spec is not None:
            head = spec.head
        else:
            order = execution_order(model, example, (nn.Linear,))
            if not order:
                raise InputError("the model calls no nn.Linear layer, so its feature layer is "
                                 "unknown; name the module whose input is the feature vector "
                                 "with --head (or --head '' to use the model's output)")
            head = order[-1]
    if head:
        resolve_module(model, head, "feature layer (--head)")
    return head


def check_layer_order(given: Sequence[str], keys: Sequence[str], order: Sequence[str], *,
                      where: str) -> None:
    """Refuse a user's two S_FU layers that are one layer, or that run in the other order.

    S_FU = ||dW2|| / ||dW1|| of the first and second layer in forward order; given the other
    way round it is silently the reciprocal, and the model moves to the other end of the
    ranking.

    Parameters
    ----------
    given : (str, str)
        The layers as the user named them (``--layers A,B``).
    keys : (str, str)
        What each resolves to (a weight parameter, a module path), as listed in ``order``.
    order : sequence of str
        Keys in the order the model runs them; a key missing from it is not checked.
    where : str
        The order's name in the message (``forward pass``, ``graph (topological order)``).

    Raises
    ------
    ValueError
        Naming both layers, the order they run in, and what to give.
    """
    a, b = given
    if keys[0] == keys[1]:
        raise InputError(f"--layers {a},{b} names the same layer twice; S_FU compares the weight "
                         "gradients of two different layers: give the first and the second one "
                         "in the order they run")
    if keys[0] in order and keys[1] in order and order.index(keys[0]) > order.index(keys[1]):
        raise InputError(f"--layers {a},{b}: {b!r} runs before {a!r} in the {where}, and S_FU = "
                         "||dW2|| / ||dW1|| takes LAYER1 as the one that runs first (this order "
                         f"gives its reciprocal): give --layers {b},{a}")


def locate_layers(model: nn.Module, example: torch.Tensor, *, spec: ArchSpec | None = None,
                  head: str | None = None, convs: Sequence[str] | None = None) -> LayerChoice:
    """Choose the feature layer and the two S_FU layers.

    Precedence: the user's paths, then the paper's table (``spec``), then discovery by one
    forward pass on ``example``: the head is the last ``nn.Linear`` called (its input is the
    penultimate representation) and the layers are chosen by :func:`default_layers`.

    Raises
    ------
    ValueError
        Unknown paths, fewer than two weight-bearing layers, the same layer twice, a layer
        without a 2-D or larger weight, or no Linear head found (then name one with ``head``).
    """
    head = feature_layer(model, example, spec=spec, head=head)
    if convs is not None:
        rule = "user"
    elif spec is not None:
        convs, rule = (spec.conv1, spec.conv2), "paper-table"
    else:
        convs, rule = default_layers(model, example, head)
    convs = list(convs)
    if len(convs) != 2:
        raise InputError(f"name exactly two S_FU layers (PATH1,PATH2); got {convs}")
    names = [weight_name(model, path) for path in convs]
    # The table and the default rule choose in forward order themselves; the user's order is
    # checked by one more forward pass.
    order = weight_order(model, example)[0] if rule == "user" and names[0] != names[1] else []
    check_layer_order(convs, names, order, where="forward pass")
    return LayerChoice(head=head, conv1=convs[0], conv2=convs[1], rule=rule)
