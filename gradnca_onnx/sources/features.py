"""``--features``: which tensor of a model is its embedding, chosen explicitly.

Each source defines its library's embedding as the default (timm's pre-logits, a Hugging Face
encoder's class token or pooled output, open_clip's image embedding, the classifier's input
of a torchvision or MONAI classifier). ``--features`` names another one: a choice the source
knows (``cls``, ``mean``, ``pooler``, ``pre-logits``, ``pooled``...) or, for any
``nn.Module``, ``module:PATH``, the output of the module at ``PATH``. The choice is recorded
in the manifest (``source.options.features``) and applied again when the member is rebuilt.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import torch
from torch import nn

from ..errors import InputError, SourceError

#: The prefix of the generic choice: the output of a named module.
MODULE_PREFIX = "module:"


class ModuleOutput(nn.Module):
    """``forward(images) -> the output of the module at path`` (one vector per image).

    A forward hook records the output; the rest of the forward pass runs too but nothing
    depends on it, so it drops out of the exported graphs (as for :class:`FeatureModel`).
    """

    def __init__(self, model: nn.Module, path: str, shown: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.path = path
        self.shown = shown or path  # as the user named it (inside the library's model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        seen: list[Any] = []
        hook = self.model.get_submodule(self.path).register_forward_hook(
            lambda _m, _a, out: seen.append(out))
        try:
            self.model(images)
        finally:
            hook.remove()
        where = f"--features {MODULE_PREFIX}{self.shown}"
        if not seen:
            raise InputError(f"{where}: the forward pass never calls that module; name one it "
                             "uses")
        if len(seen) > 1:
            raise InputError(f"{where}: the module is called {len(seen)} times in one forward "
                             "pass (a shared module), so its output is not one embedding; name "
                             "a module called once")
        out = seen[0]
        if isinstance(out, torch.Tensor) and out.ndim > 2 and all(n == 1 for n in out.shape[2:]):
            out = out.flatten(1)  # a global pool's (batch, C, 1, 1): one vector per image
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            what = (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                    else f"a {type(out).__name__}")
            raise InputError(f"{where}: its output is {what}, not one vector per image "
                             "(batch, D); name a module after the pooling (or choose cls or "
                             "mean for token outputs), or --head for the input of a layer")
        return out


def _library_model(module: nn.Module) -> tuple[nn.Module, str]:
    """The model the user's library built, and its path inside ``module`` (the sources wrap
    it as ``.model`` to return an embedding or logits)."""
    inner = getattr(module, "model", None)
    return (inner, "model.") if isinstance(inner, nn.Module) else (module, "")


def module_output(loaded: Any, path: str) -> Any:
    """``loaded`` (a :class:`~.base.LoadedModel`, which imports this module) with the output
    of its module ``path`` as the features (no logits).

    ``path`` is a module path of the library's own model (as ``print(model)`` names it).

    Raises
    ------
    SourceError
        No such module (close names are suggested), or a model that is not an
        ``nn.Module`` (TorchScript: name the feature layer with ``--head``).
    """
    module = loaded.module
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise SourceError(f"--features {MODULE_PREFIX}{path} needs a torch.nn.Module, and a "
                          f"{loaded.kind} model is not one; name its feature layer with --head")
    inner, prefix = _library_model(module)
    names = [n for n, _ in inner.named_modules() if n]
    if path not in names:
        close = difflib.get_close_matches(path, names, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise SourceError(f"--features {MODULE_PREFIX}{path}: the model has no module "
                          f"{path!r}{hint}")
    wrapped = ModuleOutput(module, prefix + path, path).eval()
    return dataclasses.replace(loaded, module=wrapped, head="", spec=None)


def check_choice(choice: str, known: dict[str, str], where: str) -> None:
    """Refuse a ``--features`` choice that is neither one of ``known`` nor ``module:PATH``."""
    if choice in known or (choice.startswith(MODULE_PREFIX) and choice[len(MODULE_PREFIX):]):
        return
    listed = ", ".join([*known, f"{MODULE_PREFIX}PATH"])
    raise SourceError(f"--features {choice!r} is not a choice for {where}; use one of {listed}")
