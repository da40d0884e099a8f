"""Reading checkpoints safely (``weights_only``) and unwrapping the usual state-dict layouts."""

from __future__ import annotations

import collections
import os
import pickle
import posixpath
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import SourceError, first_line, optional_import

#: Keys under which training scripts commonly nest the state dict, tried in this order.
NESTED_KEYS = ("state_dict", "net", "model", "model_state_dict", "module")


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a file written by ``torch.jit.save`` (a zip with a ``code/`` folder)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.startswith("code/") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


#: The file a ``torch.export.save`` archive holds at ``ROOT/archive_format``, and its content.
_FORMAT_FILE, _FORMAT = "archive_format", b"pt2"
#: The program a torch 2.7 archive held (the older layout ``torch.export.load`` still reads).
_LEGACY_PROGRAM = "serialized_exported_program.json"


def is_exported_program_archive(path: str | os.PathLike) -> bool:
    """True for a file written by ``torch.export.save``, by its content (any suffix): a zip
    whose root folder holds ``archive_format`` = ``pt2`` and a program under ``models/``, or
    (torch 2.7's layout) ``serialized_exported_program.json``."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _holds_program(zf)
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def _holds_program(zf: zipfile.ZipFile) -> bool:
    names = zf.namelist()
    if not names:
        return False
    if _LEGACY_PROGRAM in names:
        return True
    root = names[0].split("/", 1)[0]
    fmt = posixpath.join(root, _FORMAT_FILE)
    models = posixpath.join(root, "models") + "/"
    return (fmt in names and zf.read(fmt).strip() == _FORMAT
            and any(n.startswith(models) and n.endswith(".json") for n in names))


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _names_fit(own: set[str], keys: Iterable[str]) -> bool:
    """Whether ``keys`` are the model's own names (older checkpoints lack the
    ``num_batches_tracked`` buffers, which :func:`fit_state_dict` tolerates too)."""
    keys = set(keys)
    return keys <= own and all(k.endswith("num_batches_tracked") for k in own - keys)


def _prefixes(keys: list[str], least: int) -> list[str]:
    """Leading module paths (``model.``, ``module.``, ``model.module.``) carried by at least
    ``least`` keys, the most common first."""
    counts: collections.Counter[str] = collections.Counter()
    for k in keys:
        parts = k.split(".")[:-1]
        for depth in range(1, min(len(parts), 3) + 1):
            counts[".".join(parts[:depth]) + "."] += 1
    return [p for p, n in counts.most_common() if n >= least]


def _closest(own: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` under the prefix that names the most of the model's keys, for
    :func:`fit_state_dict`'s message about what does not fit (it is refused there), or
    unchanged when no prefix names more than the raw keys do."""
    best, best_hits = "", len(own & set(state))
    for prefix in _prefixes(list(state), 1):
        hits = len(own & {k[len(prefix):] for k in state if k.startswith(prefix)})
        if hits > best_hits:
            best, best_hits = prefix, hits
    return {k[len(best):]: v for k, v in state.items() if k.startswith(best)} if best else state


def match_prefix(model: nn.Module, state: dict[str, torch.Tensor],
                 notes: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` with a wrapper's key prefix removed when (and only when) the stripped keys are
    the model's names and the raw keys are not: Lightning's ``model.``, DDP's ``module.``,
    ``torch.compile``'s ``_orig_mod.``, or nestings of them.

    Keys outside the prefix (a Lightning module's loss weights) are left out. Both are stated in
    ``notes`` (``checkpoint_prefix_stripped``, ``checkpoint_keys_left_out``), which the source
    records in the manifest. A state that fits as it is is returned unchanged; one that no
    prefix makes fit comes back under the prefix naming most of the model's keys, for
    :func:`fit_state_dict` to refuse with the model's own names.

    Raises
    ------
    SourceError
        Two prefixes each hold a whole copy of the model (a teacher and a student, EMA
        weights): which one is meant is not for this function to guess.
    """
    own = set(model.state_dict())
    if _names_fit(own, state):
        return state
    least = len([k for k in own if not k.endswith("num_batches_tracked")])
    fits = []
    for prefix in _prefixes(list(state), least):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if _names_fit(own, sub):
            fits.append((prefix, sub))
    if len(fits) > 1:
        raise SourceError(f"the checkpoint holds {len(fits)} copies of the model's weights, "
                          f"under {' and '.join(repr(p) for p, _ in fits)} (a teacher and a "
                          "student, or EMA weights?); save the one state dict you mean "
                          "(torch.save(module.state_dict(), PATH)) and give that")
    if not fits:
        return _closest(own, state)
    prefix, sub = fits[0]
    notes["checkpoint_prefix_stripped"] = prefix
    left = sorted(k for k in state if not k.startswith(prefix))
    if left:
        more = [f"... and {len(left) - 8} more"] if len(left) > 8 else []
        notes["checkpoint_keys_left_out"] = left[:8] + more
    return sub


def unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The parameter/buffer dictionary inside a loaded checkpoint object.

    Accepts a plain state dict, or one nested under ``state_dict``/``net``/``model``/
    ``model_state_dict``/``module`` (other entries such as an epoch counter are ignored). Its
    keys are kept as saved: a wrapper's prefix (``module.``, Lightning's ``model.``) is
    removed by :func:`match_prefix` once the model says whether it needs that.
    """
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
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
        return _finite(read_safetensors(p), p)
    if kind == "unknown":
        raise SourceError(f"checkpoint {p} is not a PyTorch checkpoint (neither torch.save's zip "
                         "or pickle format nor safetensors); name a file written by torch.save "
                         "or safetensors")
    if is_torchscript_archive(p):
        raise SourceError(f"checkpoint {p} is a TorchScript file: load it with --torchscript {p}")
    if is_exported_program_archive(p):
        raise SourceError(f"checkpoint {p} is a torch.export program: load it with "
                          f"--torchscript {p} (or --checkpoint alone)")
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
