"""Models the user's own code defines: a factory (``package.module:callable``), a TorchScript
file, an ``nn.Module`` object, and a checkpoint that pickles a whole module."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SourceError, first_line
from .architectures import ArchSpec
from .base import TRAIN_ORIGINAL, LoadedModel, Member, ModelSource
from .building import build_for_state, jsonable
from .checkpoints import is_exported_program_archive, is_torchscript_archive, read_checkpoint
from .from_manifest import ConstructorSource

def _callable(factory: str) -> Any:
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
    return fn


def load_factory(factory: str, checkpoint: str | os.PathLike | None = None, *,
                 factory_kwargs: dict[str, Any] | None = None, channels: int | None = None,
                 trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """A model built by ``package.module:callable`` (importable), then loaded from a checkpoint.

    The callable is called with ``factory_kwargs`` (plus ``num_classes`` read from the
    checkpoint when it accepts that argument) and must return an ``nn.Module``.
    """
    fn = _callable(factory)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = read_checkpoint(ckpt, trust_pickle=trust_pickle) if ckpt is not None else None
    options: dict[str, Any] = {"factory_kwargs": {}, "seed": seed}
    if isinstance(state, nn.Module):
        return pickled_module(state, ckpt)

    def build(**kw: Any) -> nn.Module:
        torch.manual_seed(seed)
        out = fn(**kw)
        if not isinstance(out, nn.Module):
            raise SourceError(f"factory {factory!r} returned a {type(out).__name__}, "
                              "not a torch.nn.Module")
        return out

    build.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    where = f"checkpoint {ckpt} for {factory}" if ckpt else factory
    model, used, _ = build_for_state(build, factory_kwargs or {}, state, "", None, channels,
                                     where, "Check the factory and its keyword arguments.",
                                     notes=options)
    options["factory_kwargs"] = used
    return LoadedModel(module=model, kind="factory", reference=factory,
                       architecture=type(model).__name__, checkpoint=ckpt,
                       options=jsonable(options))


def load_torchscript(path: str | os.PathLike) -> LoadedModel:
    """A TorchScript model file (``torch.jit.save``); its weights are inside it."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"TorchScript file {p} not found")
    if not is_torchscript_archive(p):
        raise SourceError(f"{p} is not a TorchScript file (torch.jit.save) nor a torch.export "
                          "program (.pt2); for a checkpoint use --checkpoint with --arch or "
                          "--factory")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # the TorchScript loader raises several internal types
        raise SourceError(f"TorchScript file {p} could not be loaded: "
                          f"{first_line(exc, 200)}") from None
    return LoadedModel(module=module.eval(), kind="torchscript", reference=p.name,
                       architecture=str(getattr(module, "original_name", "ScriptModule")),
                       checkpoint=p, options={})


def from_module(module: nn.Module, *, name: str | None = None) -> LoadedModel:
    """Wrap an ``nn.Module`` built in Python (``kind="module"``)."""
    if not isinstance(module, nn.Module):
        raise SourceError(f"expected a torch.nn.Module, got {type(module).__name__}")
    arch = name or type(module).__name__
    return LoadedModel(module=module.eval(), kind="module", reference=arch, architecture=arch)


def pickled_module(module: nn.Module, ckpt: Path | None, spec: ArchSpec | None = None,
                   arch: str | None = None) -> LoadedModel:
    """A module unpickled from a trusted checkpoint (``--trust-pickle``): it replaces whatever
    ``--arch`` would have built; the paper's table still applies when the user says which
    architecture it is."""
    arch = arch or type(module).__name__
    return LoadedModel(module=module.eval(), kind="module", reference=arch, architecture=arch,
                       checkpoint=ckpt, options=jsonable({"pickled_module": True}), spec=spec)


def load_whole_model(checkpoint: str | os.PathLike, *, trust_pickle: bool = False
                     ) -> LoadedModel:
    """The whole model a checkpoint pickles (``torch.save(model, PATH)``), or a
    ``torch.export.save`` program (:func:`~.exported_program.load_exported_program`), with no
    architecture named: it builds itself, so only with ``trust_pickle`` (loading either runs
    code from the file).

    Raises
    ------
    SourceError
        Without ``trust_pickle`` (the message says why), or a checkpoint holding weights only,
        which need the architecture they fit (``--arch``).
    """
    p = Path(checkpoint)
    if is_exported_program_archive(p):  # a torch.export program names its model too
        from .exported_program import load_exported_program

        return load_exported_program(p, trust_pickle=trust_pickle)
    state = read_checkpoint(p, trust_pickle=trust_pickle)
    if isinstance(state, nn.Module):
        return pickled_module(state, p)
    raise SourceError(f"checkpoint {p} holds weights only (a state dict), not a whole model: "
                      "say which architecture they fit with --arch (or --factory)")


class FactorySource(ConstructorSource):
    """``--factory package.module:callable`` (``finetune --source``): the user's code builds
    the model. Rebuilding a member imports and calls the code its manifest names, so only
    with ``trust_code``."""

    kind = "factory"
    kwargs_key = "factory_kwargs"
    summary = "an importable package.module:callable returning the nn.Module"

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        return load_factory(reference, checkpoint, factory_kwargs=kwargs, channels=channels,
                            trust_pickle=trust_pickle, seed=seed)

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        if not trust_code:
            # Python code named by a zoo file: rebuilding it imports a module and calls it with
            # keyword arguments from the manifest. Only on explicit request.
            raise SourceError(
                f"{member.where()} names Python code to rebuild the model "
                f"({member.source.reference!r}, called with the manifest's options); "
                "gradnca-onnx never runs code named by a zoo file unless you pass --trust-code "
                "(trust_code=True): do so only for a zoo you trust")
        return super().rebuild(member, checkpoint=checkpoint, trust_pickle=trust_pickle,
                               trust_code=trust_code)


class TorchScriptSource(ModelSource):
    """``--torchscript FILE``: a ``torch.jit.save`` file, weights inside. Its head cannot be
    replaced for training, so it is never fine-tuned."""

    kind = "torchscript"
    summary = "a TorchScript file (torch.jit.save), its weights inside"
    reads_path = True
    not_rebuildable = f"cannot be rebuilt for training; {TRAIN_ORIGINAL}"
    #: Why a TorchScript file cannot be fine-tuned.
    not_trainable = ("its head cannot be replaced for training. Give the state-dict checkpoint "
                     "with --arch ARCH")

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        if checkpoint is not None or kwargs:
            raise SourceError("a TorchScript file holds its own weights: drop "
                              "--checkpoint/--arch-kwarg")
        return load_torchscript(reference)


class ModuleSource(ModelSource):
    """An ``nn.Module`` object given to the Python API (or unpickled from a trusted
    checkpoint): nothing in a manifest can build it again."""

    kind = "module"
    summary = "a torch.nn.Module object given to the Python API"
    not_rebuildable = f"cannot be rebuilt for training; {TRAIN_ORIGINAL}"

    def wrap(self, module: nn.Module, *, name: str | None = None) -> LoadedModel:
        """:func:`from_module`."""
        return from_module(module, name=name)


SOURCES = (FactorySource(), TorchScriptSource(), ModuleSource())
