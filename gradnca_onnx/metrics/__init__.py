"""Baseline transferability metrics computed from the same feature pass as the paper's score.

One module per metric, each a small function taking NumPy features and labels (LEEP and NCE take
the source model's logits instead), computing in float64 and validating its inputs. Every quirk
of the paper's released code sits behind a named option whose default is the corrected
behaviour; ``faithful=True`` in :func:`compute_metrics` (or :func:`faithful_options`) selects the
released behaviour, as REFERENCE section 6 states it. The metrics never import torch.
"""

from ._common import DegenerateScoreWarning
from .base import (
    METRICS,
    NO_LOGITS_NOTE,
    NO_MODEL_NOTE,
    QUIRKS,
    Metric,
    MetricResult,
    compute_metrics,
    faithful_options,
    resolve_names,
    zoo_scores,
)
from .gbc import gbc
from .hscore import hscore
from .leep import leep
from .logme import logme, logme_evidences
from .nce import nce
from .ncti import NCTITerms, ncti_terms, ncti_zoo
from .nleep import nleep
from .parc import parc
from .sfda import sfda, sfda_probabilities
from .static import MemberFacts, params, source_images
from .transrate import transrate

__all__ = [
    "METRICS",
    "NO_LOGITS_NOTE",
    "NO_MODEL_NOTE",
    "QUIRKS",
    "DegenerateScoreWarning",
    "MemberFacts",
    "Metric",
    "MetricResult",
    "NCTITerms",
    "compute_metrics",
    "faithful_options",
    "gbc",
    "hscore",
    "leep",
    "logme",
    "logme_evidences",
    "nce",
    "ncti_terms",
    "ncti_zoo",
    "nleep",
    "params",
    "parc",
    "resolve_names",
    "sfda",
    "sfda_probabilities",
    "source_images",
    "transrate",
    "zoo_scores",
]
