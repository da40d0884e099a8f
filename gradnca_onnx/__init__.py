"""gradnca-onnx: which pre-trained model will transfer best to a medical imaging target.

The scoring API is NumPy in, NumPy out, and never imports torch.
"""

from ._version import __version__

#: The scoring API, imported on first use (PEP 562), so that ``import gradnca_onnx`` and the
#: CLI's ``--help`` do not pay for the compiled core and scipy.
_SCORES_API = ("ConstantTermWarning", "combine", "feature_update_score", "fu_batch_slices",
               "label_prediction_score", "triplet_loss_grad")


def __getattr__(name: str):
    if name in _SCORES_API:
        from . import scores

        return getattr(scores, name)
    raise AttributeError(f"module 'gradnca_onnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SCORES_API])

__all__ = [
    "ConstantTermWarning",
    "__version__",
    "combine",
    "feature_update_score",
    "fu_batch_slices",
    "label_prediction_score",
    "triplet_loss_grad",
]
