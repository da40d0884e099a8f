"""The sha256 of a file: the one digest of zoo files, checkpoints and duplicate images."""

from __future__ import annotations

import hashlib
import os

#: Bytes read at a time: model files can be hundreds of MB, so they are never read whole.
CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Parameters
    ----------
    path : path
        A readable file.

    Returns
    -------
    str
        64 lower-case hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
