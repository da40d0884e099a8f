"""The I/O base every layer writes and reads through.

* :mod:`.atomic` - the one atomic file writer (new files get 0666 less the umask, as
  ``open()`` gives them), npz files through it, and the output-path policy (a link, device,
  FIFO, socket or directory is never written through or replaced);
* :mod:`.hashing` - the one sha256 of a file;
* :mod:`.loaders` - JSON and YAML text read with bounded nesting;
* :mod:`.onnx_files` - an ONNX file's graph and the external-data files it names (imports
  onnx; not loaded by this package's ``__init__``);
* :mod:`.sessions` - onnxruntime sessions, their options and onnxruntime's error types
  (onnxruntime is imported when a session is made).

It imports nothing of the package but :mod:`gradnca_onnx.errors`.
"""

from .atomic import atomic_savez, atomic_write_bytes, atomic_write_text
from .hashing import sha256_file
from .loaders import load_json, load_yaml

__all__ = ["atomic_savez", "atomic_write_bytes", "atomic_write_text", "load_json", "load_yaml",
           "sha256_file"]
