"""The machine a benchmark figure was measured on, recorded with every figure.

CPU model, the vector instruction sets that decide onnxruntime's and the BLAS's kernels
(AVX2, AVX-512, AMX), logical cores, memory, and the library versions; the thread count is the
benchmark's own and is recorded beside each figure.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

#: The flags of /proc/cpuinfo worth naming: they select the kernels that run.
_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def machine() -> dict[str, Any]:
    """The machine as a JSON-able dict (``cpu``, ``isa``, ``cores``, ``memory_gib``, ...)."""
    cpu, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import numpy as np
    import onnxruntime as ort

    return {"cpu": cpu, "isa": [f for f in _FLAGS if f in flags], "cores": os.cpu_count(),
            "memory_gib": memory, "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": ort.__version__,
            "date": datetime.date.today().isoformat()}


def machine_line(threads: int | None = None) -> str:
    """One line for a table's caption: CPU, instruction sets, cores (and threads used)."""
    m = machine()
    used = f", {threads} thread(s) used" if threads else ""
    return (f"{m['cpu']} ({'/'.join(m['isa']) or 'no AVX2'}), {m['cores']} logical cores"
            f"{used}, {m['memory_gib']} GiB; onnxruntime {m['onnxruntime']}, {m['date']}")
