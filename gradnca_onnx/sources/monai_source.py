"""MONAI networks (``--arch monai:NAME``), built from their own constructor signatures.

MONAI's networks name their arguments differently (``DenseNet121(in_channels,
out_channels)``, ``ResNet(n_input_channels, num_classes)``, ``EfficientNetBN(in_channels,
num_classes)``), so the input channels and the classes are passed under the names each
constructor (or, for one taking ``**kwargs``, the class it builds on) declares.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import SourceError, first_line, optional_import
from .base import LoadedModel
from .building import build_for_state, jsonable, kwargs_signature, seeded, stem_channels
from .checkpoints import read_checkpoint
from .custom import pickled_module
from .from_manifest import ConstructorSource

#: Names MONAI constructors give the input channels, and the classes, in the order tried.
CHANNEL_ARGS = ("in_channels", "n_input_channels")
CLASS_ARGS = ("out_channels", "num_classes")
#: Classes of a random-init network without a checkpoint.
DEFAULT_CLASSES = 2


def _parameters(cls: Callable[..., nn.Module]) -> set[str]:
    """The keyword names ``cls`` takes: its own, and for a constructor that passes
    ``**kwargs`` on (``SEResNet50``), those of the classes it builds on; for a builder function
    (``resnet10``), its own and those of the class it returns."""
    if not isinstance(cls, type):
        own = inspect.signature(cls).parameters
        names = {n for n, p in own.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        built = _built_class(cls)
        if built is not None and any(p.kind is p.VAR_KEYWORD for p in own.values()):
            names |= _parameters(built)
        return names
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        try:
            params = inspect.signature(klass.__init__).parameters
        except (TypeError, ValueError):
            break
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL,
                                                                  p.VAR_KEYWORD)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names


def _built_class(fn: Callable[..., Any]) -> type | None:
    """The ``nn.Module`` class a builder function declares it returns (``-> ResNet``)."""
    import typing

    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:  # noqa: BLE001 - an unresolvable annotation: not a builder we can read
        return None
    return ret if isinstance(ret, type) and issubclass(ret, nn.Module) else None


def _network(monai: Any, name: str) -> Callable[..., nn.Module] | None:
    """``monai.networks.nets.<name>``: a network class, or a builder function that declares an
    ``nn.Module`` class as its return (MONAI's ``resnet10`` ... ``resnet200``)."""
    fn = getattr(monai.networks.nets, name, None) if name and not name.startswith("_") else None
    if isinstance(fn, type) and issubclass(fn, nn.Module):
        return fn
    if inspect.isfunction(fn) and _built_class(fn) is not None:
        return fn
    return None


def _arg(names: set[str], choices: tuple[str, ...], what: str, net: str) -> str:
    found = next((n for n in choices if n in names), None)
    if found is None:
        raise SourceError(f"monai:{net} takes none of {', '.join(choices)} for its {what}; "
                          "it is not an image classifier gradnca-onnx can build")
    return found


def load_monai(name: str, checkpoint: str | os.PathLike | None = None, *,
               arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
               trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A MONAI network, ``monai.networks.nets.<name>(**arch_kwargs)``, then loaded from
    ``checkpoint``.

    Defaults for MONAI's arguments, under the names the constructor takes:
    ``spatial_dims=2`` (2-D images; 3 for volumes, exported with ``--depth``), the input channels (``in_channels`` or
    ``n_input_channels``) = ``channels`` or the checkpoint's or 3, the classes
    (``out_channels`` or ``num_classes``) = the checkpoint's, else 2, and ``pretrained=False``
    (nothing is downloaded: give the weights with ``checkpoint``).
    """
    monai = optional_import("monai", "zoo", "--arch monai:...")
    fn = _network(monai, name)
    if fn is None:
        raise SourceError(f"unknown MONAI network {name!r}; see monai.networks.nets (e.g. "
                          "DenseNet121, EfficientNetBN, SEResNet50, resnet18)")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    if isinstance(state, nn.Module):
        return pickled_module(state, ckpt, arch=f"monai:{name}")
    names = _parameters(fn)
    chans_arg = _arg(names, CHANNEL_ARGS, "input channels", name)
    classes_arg = _arg(names, CLASS_ARGS, "classes", name)
    kwargs = dict(arch_kwargs or {})
    if "spatial_dims" in names:
        kwargs.setdefault("spatial_dims", 2)
    if kwargs.get("spatial_dims", 2) not in (2, 3):
        raise SourceError(f"monai:{name} with spatial_dims={kwargs['spatial_dims']!r}: give 2 "
                          "(2-D images) or 3 (volumes, exported with --depth)")
    if "pretrained" in names:
        if kwargs.get("pretrained"):
            raise SourceError(f"monai:{name} with pretrained=true would download weights; give "
                              "them with --checkpoint instead")
        kwargs["pretrained"] = False
    stem = stem_channels(state.items()) if state is not None else None
    kwargs.setdefault(chans_arg, channels or stem or 3)
    if state is None:
        kwargs.setdefault(classes_arg, DEFAULT_CLASSES)
    create = seeded(seed, _constructor(fn, name, classes_arg))
    where = f"checkpoint {ckpt} for monai:{name}" if ckpt else f"monai:{name}"
    notes: dict[str, Any] = {}
    model, used, _ = build_for_state(
        create, kwargs, state, "", None, None, where,
        "Check --arch (and --arch-kwarg), or name the right checkpoint.",
        classes_arg=classes_arg, notes=notes)
    return LoadedModel(module=model, kind="monai", reference=name, architecture=f"monai:{name}",
                       checkpoint=ckpt,
                       options=jsonable({"arch_kwargs": used, "seed": seed, **notes}))


def _constructor(fn: Callable[..., nn.Module], name: str, classes_arg: str) -> Callable[..., nn.Module]:
    """``fn(**kw)`` with the classes defaulted, its failures as one SourceError line."""
    def create(**kw: Any) -> nn.Module:
        kw.setdefault(classes_arg, DEFAULT_CLASSES)
        try:
            return fn(**kw)
        except (TypeError, ValueError, AssertionError) as exc:
            raise SourceError(f"cannot build monai:{name} with {kw}: {type(exc).__name__}: "
                              f"{first_line(exc)}") from None

    extra = () if classes_arg == "num_classes" else (classes_arg,)  # it names num_classes
    create.__signature__ = kwargs_signature(*extra)  # type: ignore[attr-defined]
    return create


class MonaiSource(ConstructorSource):
    """``--arch monai:NAME``: ``monai.networks.nets.NAME(**kwargs)``, 2-D or 3-D
    (``spatial_dims``)."""

    kind = "monai"
    addressable = True
    since_schema = 3
    summary = "a MONAI network class (monai.networks.nets), e.g. monai:DenseNet121"

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_monai(reference, checkpoint, arch_kwargs=kwargs, channels=channels,
                          trust_pickle=trust_pickle, seed=seed)


SOURCES = (MonaiSource(),)
