"""Why an ONNX classifier's gradient graph cannot be built (so S_FU is not available for it)."""

from __future__ import annotations

from ..exporters.errors import FALLBACK_FLAG, GradientGraphError

__all__ = ["FALLBACK_FLAG", "GradientGraphError", "UnsupportedOperatorError"]


class UnsupportedOperatorError(GradientGraphError):
    """An operator on the path to the features that the importer cannot differentiate."""

    def __init__(self, op_type: str, node: str, note: str = "", detail: str = "") -> None:
        self.op_type = op_type
        self.node = node
        super().__init__(f"operator {op_type}{note} (node {node!r}) is not supported by the ONNX "
                         "importer", detail)
