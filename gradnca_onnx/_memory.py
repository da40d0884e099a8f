"""How much memory this process can still allocate: read by the metrics' pre-check and the
engine's input check. Standard library only, so that importing it costs nothing (a ``rank``
without baseline metrics must not import them)."""

from __future__ import annotations

import os
from pathlib import Path


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit (a container's) still allows, or None without one."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping or the OOM killer, or None
    when the system does not say (then nothing is refused)."""
    known = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(known) if known else None
