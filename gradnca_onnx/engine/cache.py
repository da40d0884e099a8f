"""On-disk cache of what the ONNX passes produce for one (model, target, preprocessing).

Ranking again after adding one model to a zoo recomputes only that model. Entries are keyed by
the model's file hashes, the target data's hash and every preprocessing setting, so a changed
model, data set or input pipeline can never be served a stale entry. Each entry is one ``.npz``
written atomically (temporary file + rename), so an interrupted run leaves either a complete
entry or none.

Every key also holds the package version, the onnxruntime version and the execution providers
(:func:`environment`), so an upgrade that changes a score is never served an entry computed
before it. A damaged entry (truncated, flipped bytes, arrays of the wrong shape, dtype or
values: see ``entry_problem`` in :mod:`gradnca_onnx.engine.scoring`) is treated as missing: it
is recomputed and overwritten, with a note on the model, never a crash. Something other than a
regular file at an entry's path (a directory, FIFO, link) is never read nor replaced: the
model is computed without the cache, with a note.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError, NotRegularFileError
from ..io.atomic import atomic_write_bytes, directory_problem, not_regular

#: Bump when the meaning of cached arrays changes.
#: 2: keys hold the package, onnxruntime and execution-provider versions; entries a ``meta``.
CACHE_FORMAT = 2
#: File name of an entry: the sha256 key.
_ENTRY_RE = re.compile(r"^[0-9a-f]{64}\.npz$")


def environment(providers: Sequence[str] = ()) -> dict[str, Any]:
    """What besides the inputs decides a cached value: package, onnxruntime, providers."""
    import onnxruntime as ort

    from .. import __version__

    return {"package": __version__, "onnxruntime": ort.__version__,
            "providers": list(providers)}


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


@dataclass(frozen=True)
class CacheEntry:
    """One cache entry as ``gradnca-onnx cache ls`` shows it."""

    key: str
    path: Path
    bytes: int
    modified: float
    meta: dict[str, Any]


class FeatureCache:
    """A directory of cache entries; ``None`` as root disables caching."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = None if root is None else Path(root)

    def check_writable(self, what: str = "--cache") -> None:
        """Refuse, before any work, a cache root that is a file or cannot be written.

        Raises
        ------
        ValueError
            Naming the directory and how to choose another (``--cache``, ``GRADNCA_CACHE``,
            ``--no-cache``).
        """
        if self.root is None:
            return
        hint = (f"choose another directory with {what} (or $GRADNCA_CACHE), or pass "
                "--no-cache")
        problem = directory_problem(self.root)
        if problem:
            raise InputError(f"feature cache {self.root}: {problem}; {hint}")

    def entries(self) -> Iterator[CacheEntry]:
        """Every entry of the cache (sorted by key); damaged metadata shows as ``{}``."""
        if self.root is None or not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for f in sorted(sub.iterdir()):
                if _ENTRY_RE.match(f.name) and f.is_file() and not f.is_symlink():
                    st = f.stat()
                    yield CacheEntry(key=f.name[:-4], path=f, bytes=st.st_size,
                                     modified=st.st_mtime, meta=_read_meta(f))

    def clear(self) -> tuple[int, int]:
        """Delete every entry (and leftover temporary files); returns (files, bytes) removed.

        Only files the cache writes are touched (``<2 hex>/<64 hex>.npz`` and its temporary
        files), so a mistyped ``--cache`` never deletes anything else.
        """
        if self.root is None or not self.root.is_dir():
            return 0, 0
        n = size = 0
        for sub in self.root.iterdir():
            if not (sub.is_dir() and not sub.is_symlink()
                    and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for f in sub.iterdir():
                if f.is_file() and (_ENTRY_RE.match(f.name) or (
                        f.name.startswith(".") and f.name.endswith(".tmp"))):
                    size += f.stat().st_size
                    f.unlink()
                    n += 1
            try:
                sub.rmdir()
            except OSError:
                pass  # something else lives there: leave it
        return n, size

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, NDArray] | None:
        """The arrays stored under ``key``, or ``None`` (missing or unusable entry)."""
        return self.lookup(key)[0]

    def lookup(self, key: str) -> tuple[dict[str, NDArray] | None, str | None]:
        """``(arrays, problem)`` of ``key``'s entry.

        ``arrays`` is ``None`` when there is no usable entry; ``problem`` then says why an
        entry that is there cannot be used (``None``: there is none). Only a regular file is
        read: a directory, FIFO, device or link at the entry's path is a problem, never
        opened (a FIFO would block, a device never end).
        """
        if self.root is None:
            return None, None
        path = self._path(key)
        kind = not_regular(path)
        if kind is not None:
            return None, f"{kind} stands at its path {path}"
        if not path.is_file():
            return None, None
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files if k != "meta"}, None
        except Exception as exc:  # noqa: BLE001 - zipfile, zlib, numpy, OS: any damage
            return None, f"unreadable ({type(exc).__name__})"  # recomputed, then overwritten

    def meta(self, key: str) -> dict[str, Any]:
        """The JSON ``meta`` stored with ``key``'s entry (``{}`` when missing or unreadable)."""
        if self.root is None or not self._path(key).is_file():
            return {}
        return _read_meta(self._path(key))

    def save(self, key: str, arrays: Mapping[str, NDArray],
             meta: Mapping[str, Any] | None = None) -> str | None:
        """Store ``arrays`` (and a JSON ``meta`` for ``cache ls``) under ``key`` atomically.

        Returns ``None`` when stored, else why not: something other than a regular file
        (a directory, FIFO, link) stands at the entry's path or its shard directory's, and is
        left as it is rather than replaced.
        """
        if self.root is None:
            return None
        path = self._path(key)
        for where in (path.parent, path):
            kind = not_regular(where)
            if kind is not None and not (where == path.parent and kind == "a directory"):
                return (f"the result is not cached: {kind} stands at {where}, where the cache "
                        "keeps this entry (left as it is; remove it to cache this model)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"feature cache {self.root} cannot be written "
                             f"({exc.strerror or exc}); choose another with --cache or pass "
                             "--no-cache") from None
        buf = io.BytesIO()
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload["meta"] = np.asarray(json.dumps({"created": time.time(), **(meta or {})}))
        np.savez(buf, **payload)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except NotRegularFileError:  # one appeared at the path while the data was written
            return f"the result is not cached: something other than a file appeared at {path}"
        return None


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                return {}
            meta = json.loads(str(f["meta"][()]))
        return meta if isinstance(meta, dict) else {}
    except Exception:  # noqa: BLE001 - a damaged entry lists without metadata
        return {}
