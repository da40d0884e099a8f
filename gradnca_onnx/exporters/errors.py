"""Why a model's gradient graph cannot be built (so S_FU is not available for it)."""

from __future__ import annotations

#: The ``export``/``import`` flag that turns such a failure into a features-only member.
FALLBACK_FLAG = "--features-only-fallback"


class GradientGraphError(ValueError):
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
