"""Why an ONNX classifier's gradient graph cannot be built (so S_FU is not available for it).

The classes live in :mod:`gradnca_onnx.errors`; they are re-exported here.
"""

from __future__ import annotations

from ..errors import FALLBACK_FLAG, GradientGraphError, UnsupportedOperatorError

__all__ = ["FALLBACK_FLAG", "GradientGraphError", "UnsupportedOperatorError"]
