"""gradnca-onnx: which pre-trained model will transfer best to a medical imaging target.

The scoring API is NumPy in, NumPy out, and never imports torch. A pipeline needs one call::

    import gradnca_onnx as g
    ranking = g.rank("zoo", (images, labels), threads=1)
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    GradncaError,
    GradncaWarning,
    InputError,
    MissingExtraError,
    RankingError,
    SourceError,
    ZooError,
)

if TYPE_CHECKING:  # the names below are imported on first use; these give their types
    from .api import rank
    from .data.dataset import TargetData, from_arrays
    from .data.load import load_target
    from .engine import RuntimeConfig
    from .results import ModelResult, Ranking, Rankings
    from .scores import (
        ConstantTermWarning,
        feature_update_score,
        fu_batch_slices,
        label_prediction_score,
        triplet_loss_grad,
    )

    # From its module, not ``.scores``: there mypy resolves ``combine`` to the submodule of
    # that name (``gradnca_onnx.scores.combine``) while the import cycle through this package
    # is analysed, and ``g.combine`` was typed as a module.
    from .scores.combine import combine
    from .zoo import Zoo

#: Public names imported on first use (PEP 562), so that ``import gradnca_onnx`` and the CLI's
#: ``--help`` do not pay for the compiled core, scipy or onnxruntime: name -> module.
_LAZY = {
    "rank": "api",
    "load_target": "data.load",
    "from_arrays": "data.dataset",
    "TargetData": "data.dataset",
    "Zoo": "zoo",
    "Ranking": "results",
    "Rankings": "results",
    "ModelResult": "results",
    "RuntimeConfig": "engine",
    **{name: "scores" for name in ("ConstantTermWarning", "combine", "feature_update_score",
                                   "fu_batch_slices", "label_prediction_score",
                                   "triplet_loss_grad")},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gradnca_onnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ConstantTermWarning", "GradncaError", "GradncaWarning", "InputError", "MissingExtraError",
    "ModelResult", "Ranking", "RankingError", "Rankings", "RuntimeConfig", "SourceError",
    "TargetData", "Zoo", "ZooError", "__version__", "combine", "feature_update_score",
    "from_arrays", "fu_batch_slices", "label_prediction_score", "load_target", "rank",
    "triplet_loss_grad",
]
