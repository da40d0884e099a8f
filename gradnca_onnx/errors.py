"""The package's exceptions and warnings: one hierarchy, in one module.

Every error the package raises on purpose derives from :class:`GradncaError`. The command line
turns these (and OS errors that name a file, broken archives, ``MemoryError`` and onnxruntime's
load errors) into one ``Error:`` line and exit code 2; any other exception is a bug and keeps its
traceback. The input errors also derive from ``ValueError`` and :class:`MissingExtraError` from
``ImportError``, as scikit-learn's ``NotFittedError`` does, so code that caught the built-in types
keeps working.

::

    GradncaError
    ├── InputError (ValueError)          bad input: a file, an option, a field, an array
    │   ├── ZooError                     a zoo directory or manifest
    │   └── SourceError                  a model source that cannot be built, loaded or rebuilt
    │       └── GradientGraphError       the gradient graph of S_FU cannot be built
    │           └── UnsupportedOperatorError
    ├── MissingExtraError (ImportError)  an optional dependency is not installed
    └── NotRegularFileError (FileExistsError)  an output path that is not a regular file

    GradncaWarning (UserWarning)
    ├── DegenerateScoreWarning, ConstantTermWarning, MissingValueWarning
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "EXTRAS", "ConstantTermWarning", "DegenerateScoreWarning", "FALLBACK_FLAG",
    "GradientGraphError", "GradncaError", "GradncaWarning", "InputError", "MissingExtraError",
    "MissingValueWarning", "NotRegularFileError", "RankingError", "SourceError", "UnsupportedOperatorError",
    "ZooError", "first_line", "one_line", "optional_import",
]


class GradncaError(Exception):
    """Base of every error the package raises on purpose (its message is one line that says
    what, where and what to do)."""


class InputError(GradncaError, ValueError):
    """Bad input: a file, an option, a manifest field or an array the package cannot use."""


class ZooError(InputError):
    """A zoo directory, member or manifest that is missing, damaged or not of this package."""


class SourceError(InputError):
    """A model source (an architecture, a checkpoint, a factory, a library's model) that
    cannot be built, loaded or rebuilt."""


#: The ``export``/``import`` flag that turns a gradient-graph failure into a features-only member.
FALLBACK_FLAG = "--features-only-fallback"


class GradientGraphError(SourceError):
    """The features graph may be fine, but the gradient graph of S_FU cannot be built.

    ``reason`` is a short phrase for the manifest and the one-line report (e.g. ``operator
    LRN (node 'n3') cannot be differentiated by the importer``); ``str(exc)`` is the full
    one-line error, which also says how to get the model in features-only (``verb``: ``export``
    or ``import``).
    """

    def __init__(self, reason: str, detail: str = "", *, verb: str = "import") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(
            f"{reason}, so the gradient graph (S_FU) cannot be built; pass {FALLBACK_FLAG} to "
            f"{verb} the model features-only (S_LP and the baseline metrics)"
            + (f" ({detail})" if detail else ""))


class UnsupportedOperatorError(GradientGraphError):
    """An operator on the path to the features that the ONNX importer cannot differentiate."""

    def __init__(self, op_type: str, node: str, note: str = "", detail: str = "") -> None:
        self.op_type = op_type
        self.node = node
        super().__init__(f"operator {op_type}{note} (node {node!r}) is not supported by the ONNX "
                         "importer", detail)


class RankingError(GradncaError):
    """``rank(..., errors="raise")``: some members could not be scored. ``ranking`` holds the
    partial result (each failed member with its ``error``)."""

    def __init__(self, message: str, ranking: object = None) -> None:
        super().__init__(message)
        self.ranking = ranking


class MissingExtraError(GradncaError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class NotRegularFileError(GradncaError, FileExistsError):
    """An output path holds something that is not a regular file (a symbolic link, a device, a
    FIFO, a socket, a directory), which the package never replaces."""


class GradncaWarning(UserWarning):
    """Base of the package's warnings."""


class DegenerateScoreWarning(GradncaWarning):
    """A metric's value is degenerate (constant features, one class, a failed solver)."""


class ConstantTermWarning(GradncaWarning):
    """A term of the combined score is the same for every model, so it cannot rank them."""


class MissingValueWarning(GradncaWarning):
    """A correlation was computed over the pairs left after dropping missing values."""


#: The pip line of each optional extra.
EXTRAS = {
    "torch": "pip install 'gradnca-onnx[torch]'",
    "zoo": "pip install 'gradnca-onnx[zoo]'",
    "plot": "pip install 'gradnca-onnx[plot]'",
    "ray": "pip install 'gradnca-onnx[ray]'",
    "frame": "pip install 'gradnca-onnx[frame]'",
    "medical": "pip install 'gradnca-onnx[medical]'",
}


def optional_import(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``.

    Parameters
    ----------
    module : str
        What to import, e.g. ``"torch"`` or ``"matplotlib.pyplot"``.
    extra : str
        A key of :data:`EXTRAS`, or a pip line of its own (``"pip install pyyaml"``).
    purpose : str
        What needs it, for the message (e.g. ``"export"``, ``"plots"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        root = module.split(".")[0]
        if getattr(exc, "name", None) not in (None, root, module) and not str(
                getattr(exc, "name", "")).startswith(root + "."):
            raise  # the module is there but one of its own imports failed: not a missing extra
        line = EXTRAS.get(extra, extra)
        raise MissingExtraError(f"{purpose} needs the {root} package, which is not installed; "
                                f"install it with: {line}") from None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of ``str(exc)``, at most ``limit`` characters, or the exception's
    type name when it has no message: how an error from another library is quoted in one line."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for a report (a member's error, a task's failure): the message of an
    error of ours (:class:`GradncaError`, which is written for the user), else the exception's
    type and message, every run of whitespace collapsed."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, GradncaError) and text else f"{type(exc).__name__}: {text}"
