"""The embedded MedMNIST transfer benchmark: the paper's released scores and ground truth.

The files ship in ``gradnca_onnx/resources/medmnist_transfer_benchmark`` (MIT licence, see the
``LICENSE`` and ``SOURCES.md`` there). Two scenarios:

- ``"dataset"``: ResNet18 pre-trained on 15 source datasets, fine-tuned on MedMNIST targets;
  ground truth = test AUC in 0-1; a target's own source row is excluded from its ranking.
- ``"model"``: 9 ImageNet-pretrained architectures; ground truth = test AUC x 100.
"""

from __future__ import annotations

import csv
import gzip
import io
from importlib import resources
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np

from ..errors import InputError
from ..scores.combine import check_scenario, combine
from .ground_truth import ground_truth_from_runs
from .table import SourceTargetTable, parse_table

if TYPE_CHECKING:
    from importlib.abc import Traversable

#: ``"cross-domain"`` is accepted as the synonym of ``"model"`` (:data:`~gradnca_onnx.scores.
#: combine.SCENARIOS`, the package's one scenario check).
Scenario = Literal["dataset", "model", "cross-domain"]

#: Released metrics, by the column name of the paper's tables, and their file stem.
METRIC_FILES: dict[str, str] = {
    "LogME": "logme", "PARC": "parc", "SFDA": "sfda", "NCTI": "ncti", "LEEP": "leep",
    "NLEEP": "nleep",
}
#: The paper's own score (its tables call it "Ours"): the combination of S_LP and S_FU.
GRADNCA = "GradNCA"
#: The seven methods of the paper's Tables 2 and 3, in column order.
PAPER_METHODS: tuple[str, ...] = (*METRIC_FILES, GRADNCA)
#: Metrics whose score the paper reports as ``1 - score`` in the model scenario (REFERENCE 5).
INVERTED_IN_MODEL_SCENARIO: frozenset[str] = frozenset({"PARC", "NCTI", "LEEP", "NLEEP"})
#: Released files of the two score terms.
TERM_FILES: dict[str, str] = {"lp": "lp", "fu": "fu"}


def _files_scenario(scenario: str) -> str:
    """The scenario as the released files name it: ``dataset`` or ``model``."""
    return "dataset" if check_scenario(scenario) == "dataset" else "model"


def resource_dir() -> Traversable:
    """The folder of the shipped benchmark files."""
    return resources.files("gradnca_onnx") / "resources" / "medmnist_transfer_benchmark"


def _read_results(stem: str, name: str) -> SourceTargetTable:
    res = resource_dir() / "results" / f"{stem}.csv"
    if not res.is_file():
        raise InputError(f"the shipped benchmark has no results/{stem}.csv; reinstall gradnca-onnx")
    text = res.read_text(encoding="utf-8")
    return parse_table(csv.reader(io.StringIO(text)), name=name)


def load_truth(scenario: Scenario) -> SourceTargetTable:
    """The released ground truth ``AUCs_<scenario>.csv`` (dataset: AUC in 0-1; model: x 100)."""
    scenario = _files_scenario(scenario)
    return _read_results(f"AUCs_{scenario}", f"AUCs_{scenario}.csv")


def load_released(metric: str, scenario: Scenario) -> SourceTargetTable:
    """A released score file as is, e.g. ``load_released("parc", "model")``.

    Parameters
    ----------
    metric : str
        File stem: ``logme``, ``leep``, ``nleep``, ``parc``, ``sfda``, ``ncti``, ``lp``, ``fu``.
    scenario : {"dataset", "model"}
    """
    scenario = _files_scenario(scenario)
    stems = (*METRIC_FILES.values(), *TERM_FILES.values())
    if metric not in stems:
        raise InputError(f"no released scores for {metric!r}; choose one of {list(stems)}")
    return _read_results(f"{metric}_{scenario}", f"{metric}_{scenario}.csv")


def combine_table(lp: SourceTargetTable, fu: SourceTargetTable, scenario: Scenario,
                  name: str = GRADNCA) -> SourceTargetTable:
    """The paper's score for every (source, target) from the tables of its two terms.

    Per target, over the sources other than the target itself, ``combine(lp, fu)`` from
    :mod:`gradnca_onnx.scores.combine` (REFERENCE section 5): min-max product in the dataset
    scenario, the inverted normalisation of the paper's Eq. 8 (``"cross-domain"``) in the model
    scenario. The target's own row is NaN.
    """
    check_scenario(scenario)
    if lp.sources != fu.sources or lp.targets != fu.targets:
        fu = fu.select(lp.sources, lp.targets)
    out = np.full(lp.values.shape, np.nan)
    for j, target in enumerate(lp.targets):
        keep = np.array([s != target for s in lp.sources])
        try:
            out[keep, j] = combine(lp.values[keep, j], fu.values[keep, j], scenario=scenario)
        except ValueError as exc:
            raise InputError(f"{name}, target {target!r}: {exc}") from None
    return SourceTargetTable(lp.sources, lp.targets, out, name)


def paper_scores(scenario: Scenario) -> dict[str, SourceTargetTable]:
    """The seven methods of the paper's Table 2 (``"dataset"``) or Table 3 (``"model"``).

    In the model scenario PARC, NCTI, LEEP and NLEEP are ``1 - score`` as the paper reports
    them, and the paper's own score uses the inverted normalisation (``combine(...,
    scenario="cross-domain")``).

    Returns
    -------
    dict
        Method name -> scores table, in :data:`PAPER_METHODS` order.
    """
    scenario = _files_scenario(scenario)
    out: dict[str, SourceTargetTable] = {}
    for method, stem in METRIC_FILES.items():
        table = load_released(stem, scenario)
        if scenario == "model" and method in INVERTED_IN_MODEL_SCENARIO:
            table = table.map_values(lambda v: 1.0 - v, name=f"1 - {table.name}")
        out[method] = table
    out[GRADNCA] = combine_table(load_released("lp", scenario), load_released("fu", scenario), scenario)
    return out


def _run_logs(imagenet_models: bool) -> list[dict[str, str]]:
    folder = resource_dir() / "finetuned_AUCs"
    rows: list[dict[str, str]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".csv.gz"):
            continue
        if entry.name.endswith("_imnet.csv.gz") != imagenet_models:
            continue
        text = gzip.decompress(entry.read_bytes()).decode("utf-8")
        rows.extend(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise InputError("the shipped benchmark has no finetuned_AUCs/*.csv.gz; reinstall gradnca-onnx")
    return rows


def derive_ground_truth(scenario: Scenario) -> SourceTargetTable:
    """Rebuild ``AUCs_<scenario>.csv`` from the shipped fine-tuning run logs.

    Dataset scenario: every ``fined_<target>.csv``; model scenario: every
    ``fined_<target>_imnet.csv`` for eight architectures plus the ImageNet-source runs of the
    dataset-scenario logs, which are the ResNet18 row (named ``resnet``), all x 100. Each pair
    takes the test AUC of its lowest-validation-loss run (:func:`.ground_truth_from_runs`).
    Rows and columns are sorted by name.
    """
    if _files_scenario(scenario) == "dataset":
        return ground_truth_from_runs(_run_logs(False), name="ground truth (dataset)")
    arch_runs = _run_logs(True)
    targets = sorted({r["target_flag"] for r in arch_runs})
    resnet_runs = [dict(r, source_flag="resnet") for r in _run_logs(False)
                   if r["source_flag"] == "imagenet"]
    return ground_truth_from_runs([*arch_runs, *resnet_runs], targets=targets, scale=100.0,
                                  name="ground truth (model)")


def paper_benchmark(scenario: Scenario) -> tuple[SourceTargetTable, Mapping[str, SourceTargetTable]]:
    """``(truth, scores)`` of the paper's Table 2 (``"dataset"``) or Table 3 (``"model"``)."""
    return load_truth(scenario), paper_scores(scenario)
