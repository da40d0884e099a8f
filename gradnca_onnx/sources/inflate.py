"""Inflating a 2-D CNN to 3-D (``export --inflate-3d DEPTH``): an extension beyond the paper.

The rule is I3D's (Carreira and Zisserman, 2017), as Merlin and other 3-D medical models
initialise from 2-D weights: every ``Conv2d`` with a ``kh x kw`` kernel becomes a ``Conv3d``
with a ``kh x kh x kw`` kernel (the depth takes the height's size, stride, padding and
dilation), its 2-D kernel repeated ``kh`` times along the depth and divided by ``kh``. A volume
whose slices are all one image then gives every convolution the 2-D network's response, so the
inflated network starts from what the 2-D one learned. ``BatchNorm2d``, ``MaxPool2d``,
``AvgPool2d``, ``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` and ``Dropout2d`` become their 3-D
forms the same way (an adaptive pool's output ``(h, w)`` becomes ``(1, h, w)``, so the flattened
features keep the 2-D network's width and its classifier fits). Modules keep their names, so
the paper's layer table and a checkpoint's keys still apply.

What it cannot inflate: a network that calls 2-D functional ops in its ``forward``
(``F.adaptive_avg_pool2d`` in torchvision's DenseNet) fails on the 5-D input, and the exporter
says so in one line.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..errors import SourceError
from .base import LoadedModel

#: The rule recorded in the manifest's ``source.options.inflate_3d``.
INFLATE_RULE = "i3d: kh x kw kernels to kh x kh x kw, repeated along depth and divided by kh"


def _conv3d(conv: nn.Conv2d) -> nn.Conv3d:
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    padding: Any = conv.padding
    if not isinstance(padding, str):
        padding = (padding[0], padding[0], padding[1])
    out = nn.Conv3d(conv.in_channels, conv.out_channels, (kh, kh, kw), stride=(sh, sh, sw),
                    padding=padding, dilation=(dh, dh, dw), groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        w = conv.weight.detach()
        out.weight.copy_(w.unsqueeze(2).repeat(1, 1, kh, 1, 1) / kh)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    return out


def _batch_norm3d(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    out = nn.BatchNorm3d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                         bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out


def _pair(v: Any) -> tuple[Any, Any]:
    return (v, v) if not isinstance(v, (tuple, list)) else (v[0], v[1])


def _cube(v: Any) -> tuple[Any, Any, Any]:
    h, w = _pair(v)
    return h, h, w


def _max_pool3d(p: nn.MaxPool2d) -> nn.MaxPool3d:
    return nn.MaxPool3d(_cube(p.kernel_size), _cube(p.stride or p.kernel_size),
                        _cube(p.padding), _cube(p.dilation), p.return_indices, p.ceil_mode)


def _avg_pool3d(p: nn.AvgPool2d) -> nn.AvgPool3d:
    return nn.AvgPool3d(_cube(p.kernel_size), _cube(p.stride or p.kernel_size),
                        _cube(p.padding), p.ceil_mode, p.count_include_pad, p.divisor_override)


def _adaptive(p: nn.Module) -> nn.Module:
    h, w = _pair(p.output_size)
    cls = nn.AdaptiveAvgPool3d if isinstance(p, nn.AdaptiveAvgPool2d) else nn.AdaptiveMaxPool3d
    return cls((1, h, w))


_INFLATE = {
    nn.Conv2d: _conv3d,
    nn.BatchNorm2d: _batch_norm3d,
    nn.MaxPool2d: _max_pool3d,
    nn.AvgPool2d: _avg_pool3d,
    nn.AdaptiveAvgPool2d: _adaptive,
    nn.AdaptiveMaxPool2d: _adaptive,
    nn.Dropout2d: lambda d: nn.Dropout3d(d.p, d.inplace),
}


def inflate_module(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its 2-D layers inflated to 3-D (the module docstring's rule).

    Raises
    ------
    SourceError
        The model has no ``Conv2d`` (nothing to inflate), or has a 2-D layer type the rule
        does not cover (a ``ConvTranspose2d``).
    """
    out = copy.deepcopy(model)
    if not any(type(m) is nn.Conv2d for m in out.modules()):
        raise SourceError("--inflate-3d needs a 2-D CNN (the model has no nn.Conv2d); a 3-D "
                          "model is exported with --depth")
    for name, mod in list(out.named_modules()):
        make = _INFLATE.get(type(mod))
        if make is None:
            if type(mod).__name__.endswith("2d") and isinstance(mod, nn.Module) and not list(
                    mod.children()):
                raise SourceError(f"--inflate-3d: layer {name!r} is a {type(mod).__name__}, "
                                  "which the inflation rule does not cover")
            continue
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, make(mod))
    return out


def inflate_3d(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its module inflated (:func:`inflate_module`), the rule recorded in its
    options (``inflate_3d``), so a rebuilt member (fine-tuning) is inflated again."""
    if loaded.kind in ("torchscript", "torch_export", "onnx"):
        raise SourceError(f"--inflate-3d needs an nn.Module; a {loaded.kind} model is a fixed "
                          "graph: export the 2-D model from its PyTorch source")
    module = inflate_module(loaded.module)
    return replace(loaded, module=module.eval(), architecture=inflated_name(loaded.architecture),
                   options={**loaded.options, "inflate_3d": INFLATE_RULE})


def inflated_name(architecture: str) -> str:
    """The architecture name of an inflated model (``resnet18`` -> ``resnet18-inflated3d``):
    its default member name differs from the 2-D model's."""
    return f"{architecture}-inflated3d"
