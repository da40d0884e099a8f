"""One scenario check: ranking, combining, evaluating and the benchmark accept the same names.

They used to disagree: the engine accepted "model" but said it wanted 'dataset' or
'cross-domain', and ``evaluate``/the benchmark refused "cross-domain", the name ``rank`` gives
the same scenario. Now "cross-domain" and "model" are synonyms everywhere, and any other name
is refused with the same line.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradnca_onnx.data.dataset import from_arrays
from gradnca_onnx.engine.ranking import combine_zoo
from gradnca_onnx.errors import InputError
from gradnca_onnx.evaluation import SourceTargetTable, evaluate, paper_benchmark
from gradnca_onnx.evaluation.benchmark import combine_table, load_truth
from gradnca_onnx.results import ModelResult
from gradnca_onnx.scores import combine
from gradnca_onnx.scores.combine import SCENARIOS, check_scenario

REFUSAL = "scenario must be 'dataset', or 'cross-domain'"


def _table(values, name="t") -> SourceTargetTable:
    return SourceTargetTable(("a", "b", "c", "d"), ("x", "y"), np.asarray(values, float), name)


def _entry_points():
    """Every function that checks a scenario, called with it."""
    truth = _table([[0.9, 0.1], [0.5, 0.4], [0.2, 0.8], [0.7, 0.3]])
    score = _table([[3.0, 1.0], [2.0, 2.5], [1.0, 4.0], [2.5, 0.5]])
    target = from_arrays(np.zeros((8, 4, 4, 3), np.uint8), np.repeat([0, 1], 4), name="t")
    results = [ModelResult(name=n, path=n, lp=lp, fu=fu)  # type: ignore[arg-type]
               for n, lp, fu in (("m1", 0.6, 2.0), ("m2", 0.7, 1.0))]
    return {
        "combine": lambda s: combine([0.6, 0.7], [2.0, 1.0], scenario=s),
        "combine_zoo": lambda s: combine_zoo(target, [ModelResult(**vars(r)) for r in results],
                                             {}, scenario=s),
        "evaluate": lambda s: evaluate(truth, {"m": score}, scenario=s),
        "load_truth": lambda s: load_truth(s),
        "combine_table": lambda s: combine_table(score, truth, s),
    }


@pytest.mark.parametrize("name", list(_entry_points()))
def test_every_entry_point_accepts_the_same_names(name: str) -> None:
    call = _entry_points()[name]
    for scenario in SCENARIOS:
        call(scenario)  # accepted
    for bad in ("Dataset", "models", "", None, 3):
        with pytest.raises(InputError, match=REFUSAL):
            call(bad)


def test_cross_domain_and_model_are_synonyms() -> None:
    assert SCENARIOS == ("dataset", "cross-domain", "model")
    assert check_scenario("model") == "model" and check_scenario("cross-domain") == "cross-domain"
    np.testing.assert_array_equal(combine([0.6, 0.7, 0.5], [2.0, 1.0, 3.0], "model"),
                                  combine([0.6, 0.7, 0.5], [2.0, 1.0, 3.0], "cross-domain"))
    truth_m, scores_m = paper_benchmark("model")
    truth_c, scores_c = paper_benchmark("cross-domain")
    np.testing.assert_array_equal(truth_c.values, truth_m.values)
    assert list(scores_c) == list(scores_m)
    for method in scores_m:
        np.testing.assert_array_equal(scores_c[method].values, scores_m[method].values)
    a = evaluate(truth_m, scores_m, scenario="model")
    b = evaluate(truth_c, scores_c, scenario="cross-domain")
    np.testing.assert_array_equal(a.tau, b.tau)
    assert b.scenario == "cross-domain"  # recorded as given
