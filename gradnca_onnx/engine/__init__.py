"""The scoring engine: onnxruntime over a zoo's graphs, the core for the math, no torch.

Data flow per model: target images -> preprocessing from the model's manifest -> features (and
logits) -> per S_FU batch the triplet cotangent from the core -> the gradient graph -> conv
weight gradient norms -> S_LP, S_FU (and the baseline metrics) -> zoo-level combination.
"""

from .cache import FeatureCache, default_cache_dir
from .folds import rank_folds
from .options import RankOptions, Resampling
from .ranking import rank_zoo
from .resample import resample_zoo
from .runtime import RuntimeConfig
from .scoring import score_model
from .targets import expand_targets

__all__ = [
    "FeatureCache",
    "RankOptions",
    "Resampling",
    "RuntimeConfig",
    "default_cache_dir",
    "expand_targets",
    "rank_folds",
    "rank_zoo",
    "resample_zoo",
    "score_model",
]
