"""Why a model's gradient graph cannot be built (so S_FU is not available for it)."""

from __future__ import annotations

import os
import re

from ..errors import (  # noqa: F401 - re-exported
    FALLBACK_FLAG,
    GradientGraphError,
    InputError,
)

#: What torch's CPU allocator (and others) say when an allocation fails.
_OOM_TEXT = ("can't allocate memory", "not enough memory", "DefaultCPUAllocator",
             "out of memory")
#: What helps an export or import that runs out of memory (CLI terms).
OOM_ADVICE = ("give a smaller --input-size or --grads-batch (the gradient graph is traced on a "
              "batch of that many images), or use a machine with more memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation (``MemoryError``, torch's allocator error)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OOM_TEXT))


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def gib(n: float) -> str:
    """``n`` bytes as a short GiB figure."""
    return f"{n / 2**30:,.1f} GiB"


def out_of_memory(exc: BaseException, what: str) -> ValueError:
    """The one line for an allocation that failed while ``what``: the memory asked for (when
    the allocator said it) and :data:`OOM_ADVICE`."""
    asked = re.search(r"allocate (\d+) bytes", str(exc))
    size = f" (an allocation of {gib(int(asked.group(1)))} failed)" if asked else ""
    total = physical_memory()
    have = f"; this machine has {gib(total)}" if total else ""
    return InputError(f"out of memory while {what}{size}{have}: {OOM_ADVICE}")


#: Input channels a target can give a model: grey (1) or RGB (3) images
#: (:func:`gradnca_onnx.data.preprocess.preprocess`).
TARGET_CHANNELS = (1, 3)


def check_channels(channels: int, source: str) -> None:
    """Refuse a member whose images no target can give (it could never be ranked).

    ``source`` says where ``channels`` came from, e.g. ``--channels 5`` or ``the graph's input
    'x' takes 5 channels``.
    """
    if channels not in TARGET_CHANNELS:
        raise InputError(f"{source}, but targets are grey (1 channel) or RGB (3 channels) images, "
                         "so the member could never be ranked: give a model (or --channels) "
                         "with 1 or 3 input channels")


#: Terminal colour codes torch.onnx puts in its messages.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def export_cause(exc: BaseException, limit: int = 300) -> str:
    """What made torch.onnx fail, in one line: the innermost exception of ``exc``'s chain.

    torch.onnx wraps the cause (an operator without an ONNX translation, a view it cannot
    decompose) in errors whose first line is only "Failed to ... Next steps:"; quoting that
    told the user nothing (issue 27: Hugging Face Swin).
    """
    inner, seen = exc, set()
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    text = " ".join(_ANSI.sub("", str(inner)).split())
    return f"{type(inner).__name__}: {text}"[:limit] if text else type(inner).__name__
