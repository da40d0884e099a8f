"""Why an ONNX classifier's gradient graph cannot be built (so S_FU is not available for it)."""

from __future__ import annotations

#: The ``gradnca-onnx import`` flag that turns such a failure into a features-only member.
FALLBACK_FLAG = "--features-only-fallback"


class GradientGraphError(ValueError):
    """The features graph may be fine, but the gradient graph of S_FU cannot be built.

    ``reason`` is a short phrase for the manifest and the one-line report (e.g. ``operator
    LRN (node 'n3') cannot be differentiated by the importer``); ``str(exc)`` is the full
    one-line error, which also says how to import the model features-only.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(
            f"{reason}, so the gradient graph (S_FU) cannot be built; pass {FALLBACK_FLAG} to "
            "import the model features-only (S_LP and the baseline metrics)"
            + (f" ({detail})" if detail else ""))


class UnsupportedOperatorError(GradientGraphError):
    """An operator on the path to the features that the importer cannot differentiate."""

    def __init__(self, op_type: str, node: str, note: str = "", detail: str = "") -> None:
        self.op_type = op_type
        self.node = node
        super().__init__(f"operator {op_type}{note} (node {node!r}) is not supported by the ONNX "
                         "importer", detail)
