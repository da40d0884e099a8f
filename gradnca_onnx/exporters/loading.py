"""Building a model from a torchvision name, a TorchScript file or a factory, plus a checkpoint."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import SourceError, first_line
from ..io.hashing import sha256_file
from .architectures import PAPER_ARCHITECTURES, ArchSpec
from .checkpoints import fit_state_dict, is_torchscript_archive, read_checkpoint


@dataclass
class LoadedModel:
    """A model ready for export, with where it came from.

    ``module`` is an ``nn.Module`` in eval mode, or a ``torch.jit.ScriptModule`` for
    ``kind="torchscript"``. ``spec`` is the paper's layer table entry for the nine
    architectures, else ``None``.
    """

    module: nn.Module
    kind: str
    reference: str
    architecture: str
    checkpoint: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    spec: ArchSpec | None = None

    @property
    def default_name(self) -> str:
        """Model name used when the user gives none: architecture (+ checkpoint stem)."""
        base = self.architecture if self.kind != "torchscript" else Path(self.reference).stem
        if self.checkpoint is not None and self.kind != "torchscript":
            base = f"{base}-{self.checkpoint.stem}"
        safe = "".join(c if c.isalnum() or c in "._+-" else "-" for c in base).strip("-.")
        return safe[:128] or "model"


def torchvision_architectures() -> list[str]:
    """Names of torchvision's image-classification architectures."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


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


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _build_for_state(build: Callable[..., nn.Module], kwargs: dict[str, Any],
                     state: dict[str, torch.Tensor] | None, head_scope: str,
                     stem: str | None, channels: int | None, where: str, hint: str,
                     classes_arg: str = "num_classes"
                     ) -> tuple[nn.Module, dict[str, Any], int]:
    """Build a model whose head size and stem channels fit ``state``, then load it.

    The number of classes is read from the checkpoint's last Linear (within ``head_scope``)
    and passed as ``classes_arg`` (``num_classes``; MONAI: ``out_channels``) when the
    constructor takes it; the input channels are read from the stem convolution's weight and
    the stem is rebuilt when they differ.
    """
    kwargs = dict(kwargs)
    model = _quiet_build(build, kwargs)
    if state is not None:
        head = _last_linear(model, head_scope)
        key = f"{head}.weight" if head else None
        if (key in state and classes_arg not in kwargs and _accepts(build, classes_arg)
                and state[key].shape[0] != model.get_submodule(head).out_features):
            kwargs[classes_arg] = int(state[key].shape[0])
            model = _quiet_build(build, kwargs)
    stem = stem or _first_conv(model)
    conv = model.get_submodule(stem) if stem else None
    ckpt_channels = None
    if (state is not None and stem and f"{stem}.weight" in state
            and state[f"{stem}.weight"].ndim == 4):
        ckpt_channels = int(state[f"{stem}.weight"].shape[1])
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


def load_torchvision(arch: str, checkpoint: str | os.PathLike | None = None, *,
                     arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
                     trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A torchvision architecture, randomly initialised or loaded from a checkpoint.

    Parameters
    ----------
    arch : str
        A torchvision classification model name (e.g. ``resnet18``).
    checkpoint : path, optional
        State dict (plain, or under ``net``/``state_dict``/..., ``module.`` prefixes allowed).
        The number of classes is read from its last Linear layer and the input channels from
        its first convolution. Without a checkpoint the weights are random (seeded by ``seed``).
    arch_kwargs : dict, optional
        Extra constructor arguments (e.g. ``{"transform_input": True}`` for googlenet).
    channels : int, optional
        Input channels; must match the checkpoint when both are given.
    trust_pickle : bool, default=False
        Allow a checkpoint that pickles a whole module (runs code from the file).
    seed : int, default=0
        Seed of the random initialisation (and of layers the checkpoint does not cover).
    """
    import torchvision

    names = torchvision_architectures()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SourceError(f"unknown architecture {arch!r}{hint}; see torchvision.models."
                         "list_models() for the names, or use --torchscript/--factory")
    spec = PAPER_ARCHITECTURES.get(arch)
    kwargs = {**(spec.defaults if spec else {}), **(arch_kwargs or {})}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    options: dict[str, Any] = {"arch_kwargs": {}, "seed": seed}
    if isinstance(state, nn.Module):
        return _from_module(state, ckpt, options, spec=spec, arch=arch)
    if (state is not None and "aux_logits" in kwargs and "aux_logits" not in (arch_kwargs or {})
            and any(k.startswith("aux") for k in state)):
        kwargs["aux_logits"] = True  # a googlenet/inception checkpoint saved with its aux heads

    def build(**kw: Any) -> nn.Module:
        torch.manual_seed(seed)
        try:
            return torchvision.models.get_model(arch, weights=None, **kw)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"cannot build {arch} with {kw}: {exc}") from None

    where = f"checkpoint {ckpt} for {arch}" if ckpt else arch
    model, used, _ = _build_for_state(
        build, kwargs, state, spec.head if spec else "", spec.conv1 if spec else None, channels,
        where, "Check --arch (and --arch-kwarg), or name the right checkpoint.")
    options["arch_kwargs"] = used
    return LoadedModel(module=model, kind="torchvision", reference=arch, architecture=arch,
                       checkpoint=ckpt, options=_jsonable(options), spec=spec)


def load_factory(factory: str, checkpoint: str | os.PathLike | None = None, *,
                 factory_kwargs: dict[str, Any] | None = None, channels: int | None = None,
                 trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A model built by ``package.module:callable`` (importable), then loaded from a checkpoint.

    The callable is called with ``factory_kwargs`` (plus ``num_classes`` read from the
    checkpoint when it accepts that argument) and must return an ``nn.Module``.
    """
    mod_name, sep, attr = factory.partition(":")
    if not sep or not mod_name or not attr:
        raise SourceError(f"factory {factory!r} must look like package.module:callable")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SourceError(f"factory {factory!r}: cannot import {mod_name!r} ({exc})") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise SourceError(f"factory {factory!r}: {attr!r} is not a callable in {mod_name!r}")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    options: dict[str, Any] = {"factory_kwargs": {}, "seed": seed}
    if isinstance(state, nn.Module):
        return _from_module(state, ckpt, options)

    def build(**kw: Any) -> nn.Module:
        torch.manual_seed(seed)
        out = fn(**kw)
        if not isinstance(out, nn.Module):
            raise SourceError(f"factory {factory!r} returned a {type(out).__name__}, "
                             "not a torch.nn.Module")
        return out

    build.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    where = f"checkpoint {ckpt} for {factory}" if ckpt else factory
    model, used, _ = _build_for_state(build, factory_kwargs or {}, state, "", None, channels,
                                      where, "Check the factory and its keyword arguments.")
    options["factory_kwargs"] = used
    return LoadedModel(module=model, kind="factory", reference=factory,
                       architecture=type(model).__name__, checkpoint=ckpt,
                       options=_jsonable(options))


def load_torchscript(path: str | os.PathLike) -> LoadedModel:
    """A TorchScript model file (``torch.jit.save``); its weights are inside it."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"TorchScript file {p} not found")
    if not is_torchscript_archive(p):
        raise SourceError(f"{p} is not a TorchScript file (torch.jit.save); for a checkpoint "
                         "use --checkpoint with --arch or --factory")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # the TorchScript loader raises several internal types
        raise SourceError(f"TorchScript file {p} could not be loaded: "
                         f"{first_line(exc, 200)}"
                         ) from None
    return LoadedModel(module=module.eval(), kind="torchscript", reference=p.name,
                       architecture=str(getattr(module, "original_name", "ScriptModule")),
                       checkpoint=p, options={})


def from_module(module: nn.Module, *, name: str | None = None) -> LoadedModel:
    """Wrap an ``nn.Module`` built in Python (``kind="module"``)."""
    if not isinstance(module, nn.Module):
        raise SourceError(f"expected a torch.nn.Module, got {type(module).__name__}")
    arch = name or type(module).__name__
    return LoadedModel(module=module.eval(), kind="module", reference=arch, architecture=arch)


def _from_module(module: nn.Module, ckpt: Path | None, options: dict[str, Any],
                 spec: ArchSpec | None = None, arch: str | None = None) -> LoadedModel:
    # A trusted pickled module replaces whatever --arch would have built; the table still
    # applies when the user says which architecture it is.
    arch = arch or type(module).__name__
    return LoadedModel(module=module.eval(), kind="module", reference=arch, architecture=arch,
                       checkpoint=ckpt, options=_jsonable({"pickled_module": True}), spec=spec)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def checkpoint_digest(loaded: LoadedModel) -> str | None:
    """SHA-256 of the checkpoint (or TorchScript) file, recorded in the manifest."""
    return sha256_file(loaded.checkpoint) if loaded.checkpoint is not None else None
