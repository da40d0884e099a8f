"""Programs written by ``torch.export.save`` (``.pt2``): an FX graph of aten calls, weights
inside.

Loading one runs code from the file, so it needs ``trust_pickle``: ``torch.export.load``
unpickles a tensor subclass's weights and constants and opaque constants with
``pickle.loads`` or ``torch.load(weights_only=False)``, falls back to
``torch.load(weights_only=False)`` for the sample inputs when the safe load fails, and reads
the symbolic shape expressions with ``sympy.sympify``, which evaluates its text as Python.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import SourceError, first_line
from .base import TRAIN_ORIGINAL, LoadedModel, ModelSource
from .checkpoints import is_exported_program_archive

#: What a program's forward takes: one image tensor.
ONE_INPUT = "the exporter feeds it one image tensor [B, C, H, W]"


def _read(p: Path, trust_pickle: bool) -> torch.export.ExportedProgram:
    """The program in ``p``, read from one copy of its bytes (the file cannot change between
    the check and the load)."""
    if not p.is_file():
        raise SourceError(f"torch.export program {p} not found")
    data = p.read_bytes()
    if not is_exported_program_archive(io.BytesIO(data)):
        raise SourceError(f"{p} is not a torch.export program (torch.export.save) nor a "
                          "TorchScript file (torch.jit.save)")
    if not trust_pickle:
        raise SourceError(f"{p} is a torch.export program, and torch.export.load runs code from "
                          "the file (it unpickles parts of it and evaluates its shape "
                          "expressions); pass --trust-pickle (trust_pickle=True) only if you "
                          "trust its source")
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as exc:  # the deserialiser raises many internal types
        raise SourceError(f"torch.export program {p} could not be loaded: "
                          f"{type(exc).__name__}: {first_line(exc, 200)}") from None


def _architecture(program: torch.export.ExportedProgram, fallback: str) -> str:
    """The exported module's class name, read from a node's module stack (its root entry)."""
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            path, cls = next(iter(stack.values()))
            if path == "":
                return str(cls).rsplit(".", 1)[-1]
    return fallback


def load_exported_program(path: str | os.PathLike, *, trust_pickle: bool = False
                          ) -> LoadedModel:
    """A ``torch.export.save`` file: its program as an FX ``GraphModule`` (``.module()``:
    weights under their module paths, e.g. ``conv1.weight``).

    Raises
    ------
    SourceError
        Not found, not a torch.export archive, no ``trust_pickle`` (loading runs code from the
        file), unreadable, or a program that does not take exactly one tensor.
    """
    p = Path(path)
    program = _read(p, trust_pickle)
    inputs = program.graph_signature.user_inputs
    if len(inputs) != 1:
        raise SourceError(f"torch.export program {p} takes {len(inputs)} inputs "
                          f"({', '.join(map(str, inputs)) or 'none'}); {ONE_INPUT}")
    module = program.module()
    return LoadedModel(module=module, kind="torch_export", reference=p.name,
                       architecture=_architecture(program, p.stem), checkpoint=p, options={})


class ExportedProgramSource(ModelSource):
    """``--torchscript FILE.pt2`` (or ``--checkpoint FILE.pt2`` alone): a ``torch.export.save``
    program, weights inside. Like TorchScript, its head cannot be replaced for training."""

    kind = "torch_export"
    summary = "a torch.export program (torch.export.save, .pt2), its weights inside"
    reads_path = True
    since_schema = 5
    not_rebuildable = (f"cannot be rebuilt for training (a torch.export program is a fixed "
                       f"graph); {TRAIN_ORIGINAL}")

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        if checkpoint is not None or kwargs:
            raise SourceError("a torch.export program holds its own weights: drop "
                              "--checkpoint/--arch-kwarg")
        return load_exported_program(reference, trust_pickle=trust_pickle)


SOURCES = (ExportedProgramSource(),)
