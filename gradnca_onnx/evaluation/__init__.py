"""Judging transferability metrics against ground truth, and the paper's MedMNIST benchmark.

NumPy/SciPy only (no torch); matplotlib is imported by :mod:`.plots` when a plot is drawn.

>>> from gradnca_onnx import evaluation as ev
>>> truth, scores = ev.paper_benchmark("dataset")
>>> result = ev.evaluate(truth, scores, scenario="dataset")
>>> print(result.format_table())  # doctest: +SKIP
"""

from .benchmark import (
    GRADNCA,
    INVERTED_IN_MODEL_SCENARIO,
    PAPER_METHODS,
    combine_table,
    derive_ground_truth,
    load_released,
    load_truth,
    paper_benchmark,
    paper_scores,
)
from .bootstrap import bootstrap_ci
from .correlation import (
    MissingValueWarning,
    correlation,
    paired_values,
    per_target,
    top1_regret,
    weighted_tau,
)
from .ground_truth import ground_truth_from_runs, read_runs
from .rank_output import drop_unrankable, scores_from_rank
from .ranking import average_ranks, rank_methods
from .replicates import ReplicateAgreement, replicate_agreement
from .report import Evaluation, evaluate
from .stats import (
    FriedmanResult,
    critical_difference,
    friedman_test,
    nemenyi_pvalues,
    nemenyi_q,
)
from .table import SourceTargetTable, align, parse_table, read_table

__all__ = [
    "Evaluation",
    "FriedmanResult",
    "GRADNCA",
    "INVERTED_IN_MODEL_SCENARIO",
    "MissingValueWarning",
    "ReplicateAgreement",
    "PAPER_METHODS",
    "SourceTargetTable",
    "align",
    "average_ranks",
    "bootstrap_ci",
    "combine_table",
    "correlation",
    "critical_difference",
    "derive_ground_truth",
    "drop_unrankable",
    "evaluate",
    "friedman_test",
    "ground_truth_from_runs",
    "load_released",
    "load_truth",
    "nemenyi_pvalues",
    "nemenyi_q",
    "paired_values",
    "paper_benchmark",
    "paper_scores",
    "parse_table",
    "per_target",
    "rank_methods",
    "read_runs",
    "read_table",
    "replicate_agreement",
    "scores_from_rank",
    "top1_regret",
    "weighted_tau",
]
