"""On-disk cache of what the ONNX passes produce for one (model, target, preprocessing).

Ranking again after adding one model to a zoo recomputes only that model. Entries are keyed by
the model's file hashes, the target data's hash and every preprocessing setting, so a changed
model, data set or input pipeline can never be served a stale entry. Each entry is one ``.npz``
written atomically (temporary file + rename), so an interrupted run leaves either a complete
entry or none.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.typing import NDArray

from ..zoo._atomic import atomic_write_bytes

#: Bump when the meaning of cached arrays changes.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$GRADNCA_CACHE``, else ``$XDG_CACHE_HOME/gradnca-onnx``, else ``~/.cache/gradnca-onnx``."""
    env = os.environ.get("GRADNCA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradnca-onnx"


def cache_key(parts: Mapping[str, Any]) -> str:
    """Stable hex key of a JSON-serialisable mapping (sorted keys)."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class FeatureCache:
    """A directory of cache entries; ``None`` as root disables caching."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = None if root is None else Path(root)

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, NDArray] | None:
        """The arrays stored under ``key``, or ``None`` (missing or unreadable entry)."""
        if self.root is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is recomputed, then overwritten

    def save(self, key: str, arrays: Mapping[str, NDArray]) -> None:
        """Store ``arrays`` under ``key`` atomically."""
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(path, buf.getvalue())
