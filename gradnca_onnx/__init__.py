"""gradnca-onnx: which pre-trained model will transfer best to a medical imaging target.

The scoring API is NumPy in, NumPy out, and never imports torch.
"""

from ._version import __version__
from .scores import (
    ConstantTermWarning,
    combine,
    feature_update_score,
    fu_batch_slices,
    label_prediction_score,
    triplet_loss_grad,
)

__all__ = [
    "ConstantTermWarning",
    "__version__",
    "combine",
    "feature_update_score",
    "fu_batch_slices",
    "label_prediction_score",
    "triplet_loss_grad",
]
