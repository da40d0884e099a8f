"""The paper's transferability score: S_LP (label prediction), S_FU (feature update), combine."""

from .combine import ConstantTermWarning, combine, min_max
from .feature_update import (
    feature_update_score,
    fu_batch_slices,
    fu_cotangents,
    triplet_loss_grad,
)
from .label_prediction import label_prediction_probabilities, label_prediction_score

__all__ = [
    "ConstantTermWarning",
    "combine",
    "feature_update_score",
    "fu_batch_slices",
    "fu_cotangents",
    "label_prediction_probabilities",
    "label_prediction_score",
    "min_max",
    "triplet_loss_grad",
]
