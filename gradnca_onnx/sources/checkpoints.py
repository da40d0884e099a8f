"""Reading checkpoints safely (``weights_only``) and unwrapping the usual state-dict layouts."""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SourceError, first_line, optional_import

#: Keys under which training scripts commonly nest the state dict, tried in this order.
NESTED_KEYS = ("state_dict", "net", "model", "model_state_dict", "module")
#: Key prefixes added by wrappers: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a file written by ``torch.jit.save`` (a zip with a ``code/`` folder)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.startswith("code/") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.``/``_orig_mod.`` when every key carries it (possibly nested)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The parameter/buffer dictionary inside a loaded checkpoint object.

    Accepts a plain state dict, or one nested under ``state_dict``/``net``/``model``/
    ``model_state_dict``/``module`` (other entries such as an epoch counter are ignored), with
    ``module.`` or ``_orig_mod.`` prefixes.
    """
    if _is_state_dict(obj):
        return strip_wrapper_prefixes(dict(obj))
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if _is_state_dict(obj.get(key)):
                return strip_wrapper_prefixes(dict(obj[key]))
        keys = sorted(map(str, obj))[:8]
        raise SourceError(
            f"{where}: no state dict found (top-level keys {keys}); expected tensors by name, "
            f"possibly nested under one of {list(NESTED_KEYS)}"
        )
    raise SourceError(f"{where}: holds a {type(obj).__name__}, not a state dict")


def read_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False
                    ) -> dict[str, torch.Tensor] | nn.Module:
    """Load a checkpoint file: a state dict, or with ``trust_pickle`` a whole pickled module.

    The file is read with ``torch.load(weights_only=True)``, which cannot run code from the
    file. A checkpoint that pickles Python objects (typically a whole ``nn.Module``) needs
    ``trust_pickle=True`` (CLI ``--trust-pickle``), because unpickling runs code.

    Raises
    ------
    ValueError
        Missing file, a TorchScript file (use the TorchScript loader), an unreadable file, a
        pickled object without ``trust_pickle``, or no state dict inside.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"checkpoint {p} not found")
    kind = checkpoint_format(p)
    if kind == "empty":
        raise SourceError(f"checkpoint {p} is empty (0 bytes); name the file that holds the "
                         "weights")
    if kind == "safetensors":
        return _finite(strip_wrapper_prefixes(read_safetensors(p)), p)
    if kind == "unknown":
        raise SourceError(f"checkpoint {p} is not a PyTorch checkpoint (neither torch.save's zip "
                         "or pickle format nor safetensors); name a file written by torch.save "
                         "or safetensors")
    if is_torchscript_archive(p):
        raise SourceError(f"checkpoint {p} is a TorchScript file: load it with --torchscript {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            first = first_line(exc)
            raise SourceError(
                f"checkpoint {p} pickles Python objects, not just weights (e.g. a whole model; "
                f"torch says: {first[:160]}); unpickling runs code from the file, so pass "
                "--trust-pickle (trust_pickle=True) only if you trust its source"
            ) from None
        obj = _load_trusted(p)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = first_line(exc, 200)
        raise SourceError(f"checkpoint {p} could not be read by torch.load (truncated or "
                         f"corrupt?): {first}") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return _finite(unwrap_state_dict(obj, f"checkpoint {p}"), p)


#: The first bytes of the formats a checkpoint may be in.
_ZIP_MAGIC = b"PK\x03\x04"


def checkpoint_format(path: Path) -> str:
    """``torch`` (torch.save's zip, or a legacy pickle), ``safetensors``, ``empty`` or
    ``unknown``, from the file's first bytes (nothing is unpickled)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80":  # pickle protocol 2+ starts so
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        # safetensors: an 8-byte little-endian header length, then the JSON header.
        size = int.from_bytes(head[:8], "little")
        if 0 < size <= path.stat().st_size - 8:
            return "safetensors"
    return "unknown"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (a format that cannot hold code)."""
    st = optional_import("safetensors.torch", "zoo", f"checkpoint {path} (safetensors format)")
    try:
        state = st.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt files
        first = first_line(exc, 200)
        raise SourceError(f"checkpoint {path} is not a readable safetensors file "
                         f"({type(exc).__name__}: {first})") from None
    if not state:
        raise SourceError(f"checkpoint {path} holds no tensors")
    return dict(state)


def _finite(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse a state dict with NaN or infinite values (a diverged training run)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SourceError(f"checkpoint {path} holds NaN or infinite values in {len(bad)} tensor(s) "
                         f"({', '.join(bad[:3])}{more}); it cannot be scored: use a checkpoint "
                         "from before training diverged")
    return state


def _load_trusted(p: Path) -> Any:
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling can fail in arbitrary ways (missing classes, ...)
        raise SourceError(f"checkpoint {p} could not be unpickled: {type(exc).__name__}: "
                         f"{first_line(exc, 200)}") from None


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str,
                   hint: str) -> None:
    """Load ``state`` into ``model`` strictly, or explain exactly what does not fit.

    Missing ``num_batches_tracked`` buffers (absent from older checkpoints; unused in eval
    mode) are tolerated.

    Raises
    ------
    ValueError
        Naming the missing keys, the unexpected keys and the shape mismatches (first few of
        each, with counts), plus ``hint``.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches (checkpoint vs model)", shapes)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise SourceError(f"{where} does not fit: {'; '.join(parts)}. {hint}")
    if getattr(state, "_metadata", None) is None:
        # A plain dict (re-packed or converted checkpoints) carries no per-module versions, and
        # a few modules refuse to load without one (torchvision's MNASNet raises "version should
        # be set to 1 or 2"); the keys and shapes fit this code, so take its versions.
        state = collections.OrderedDict(state)
        state._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=False)
