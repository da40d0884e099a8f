"""The static baseline ``params`` in ``--metrics all``, in ``evaluate`` (from rank output) and in the real-data study's secondary tables."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import gradnca_onnx.metrics as gm
from gradnca_onnx.cli import main
from gradnca_onnx.evaluation import SourceTargetTable, drop_unrankable, scores_from_rank

from _support import ROOT


def _doc(target: str, models: list[tuple[str, float | None, float]]) -> dict:
    return {"schema": "gradnca-onnx/rank/1", "target": {"name": target},
            "models": [{"model": name, "score": s, "lp": 0.5 + i, "fu": None,
                        "metrics": {"params": p, "logme": float(i)}, "error": None}
                       for i, (name, s, p) in enumerate(models)]}


def test_params_is_part_of_all() -> None:
    assert "params" in gm.resolve_names("all")
    assert gm.resolve_names("all")[-2:] == ["params", "source_images"]  # the static baselines
    assert gm.METRICS["params"].higher_is_better


def test_scores_from_rank_reads_every_score_and_keeps_missing_ones_nan(tmp_path) -> None:
    a = _doc("t1", [("x", 0.9, 100.0), ("y", 0.1, 300.0), ("z", None, 200.0)])
    b = _doc("t2", [("y", 0.4, 300.0), ("x", 0.6, 100.0)])
    b["models"].append({"model": "z", "error": "boom", "score": None, "lp": None, "fu": None,
                        "metrics": {}})
    (tmp_path / "a.json").write_text(json.dumps(a))
    tables = scores_from_rank([tmp_path / "a.json", b])
    assert set(tables) == {"GradNCA", "S_LP", "S_FU", "params", "logme"}
    p = tables["params"]
    assert p.sources == ("x", "y", "z") and p.targets == ("t1", "t2")
    np.testing.assert_array_equal(p.values, [[100, 100], [300, 300], [200, np.nan]])
    np.testing.assert_array_equal(tables["GradNCA"].values[:, 0], [0.9, 0.1, np.nan])
    assert np.isnan(tables["S_FU"].values).all()
    with pytest.raises(ValueError, match="scored twice"):
        scores_from_rank([a, a])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        scores_from_rank([tmp_path / "bad.json"])
    with pytest.raises(ValueError, match="not a rank JSON"):
        scores_from_rank([{"schema": "other"}])


def test_evaluate_rank_includes_params_and_drops_a_constant_one(tmp_path) -> None:
    truth = SourceTargetTable(("x", "y", "z", "w"), ("t1",), [[0.6], [0.9], [0.7], [0.8]], "truth")
    truth.to_csv(tmp_path / "truth.csv")
    doc = _doc("t1", [("x", 0.1, 10.0), ("y", 0.5, 40.0), ("z", 0.2, 30.0), ("w", 0.3, 20.0)])
    (tmp_path / "r.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["evaluate", "--truth", str(tmp_path / "truth.csv"), "--rank",
                                    str(tmp_path / "r.json"), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    want = stats.weightedtau([10.0, 40.0, 30.0, 20.0], [0.6, 0.9, 0.7, 0.8]).statistic
    assert out["tau"]["params"]["t1"] == pytest.approx(want, abs=1e-12)
    assert "S_FU" not in out["methods"] and "Warning: S_FU (from --rank) left out" in res.stderr
    # One architecture: every params value equal, so it ranks nothing and is left out.
    for m in doc["models"]:
        m["metrics"]["params"] = 5.0
    keep, dropped = drop_unrankable(truth, scores_from_rank([doc]))
    assert "params" in dropped and "params" not in keep and "GradNCA" in keep
    (tmp_path / "x.txt").write_text("not json")
    res = CliRunner().invoke(main, ["evaluate", "--truth", str(tmp_path / "truth.csv"), "--rank",
                                    str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1


def _report_module():
    spec = importlib.util.spec_from_file_location(
        "medical_small_report", ROOT / "benchmarks" / "medical_small" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_study_secondary_tables_carry_params() -> None:
    report = _report_module()
    src, tgt = ("a", "b", "c"), ("t1", "t2")
    rng = np.random.default_rng(0)
    names = [*report.PAPER_METHODS, "GBC", "H-score", "NCE", "TransRate", "S_LP", "S_FU"]
    tables = {m: SourceTargetTable(src, tgt, rng.normal(size=(3, 2)), m) for m in names}
    assert "params" not in report._extended(tables, "dataset")  # rank JSON from before params
    tables["params"] = SourceTargetTable(src, tgt, [[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]], "p")
    ext = report._extended(tables, "model")
    assert ext["params"] is tables["params"]
    truth = SourceTargetTable(src, tgt, rng.uniform(size=(3, 2)), "truth")
    keep, dropped = report.rankable(truth, ext)
    assert "params" in keep
    one_arch = {**ext, "params": SourceTargetTable(src, tgt, np.full((3, 2), 7.0), "p")}
    keep, dropped = report.rankable(truth, one_arch)
    assert dropped["params"] == report.STATIC_REASONS["params"] and "GBC" in keep


def _fake_resample_study(tmp_path, docs: dict) -> object:
    """A study-like object whose rank/<scenario>-resamples/<target>.json are ``docs``."""
    from types import SimpleNamespace

    folder = tmp_path / "rank" / "dataset-resamples"
    folder.mkdir(parents=True)
    for t, models in docs.items():
        doc = {"resampling": {"n_resamples": 10},
               "models": [{"model": name, "rank": rank,
                           "resampling": {"p_rank1": p, "distinguishable_from_top": d}}
                          for name, rank, p, d in models]}
        (folder / f"{t}.json").write_text(json.dumps(doc))
    return SimpleNamespace(work=tmp_path, cfg=SimpleNamespace(targets=tuple(docs)))


def test_study_sureness_against_the_ground_truth(tmp_path) -> None:
    """Issue 17 item 7's per-case figures: the top set, whether the truth's best is in it,
    P(rank 1) and its Brier score, from rank --resamples output and a ground truth."""
    report = _report_module()
    study = _fake_resample_study(tmp_path, {
        # t1: the tool's top (a) is right, c is distinguishable from it.
        "t1": [("a", 1, 0.7, False), ("b", 2, 0.3, False), ("c", 3, 0.0, True)],
        # t2: the top (b) is wrong; the truth's best (c) is distinguishable from it.
        "t2": [("b", 1, 0.9, False), ("a", 2, 0.1, False), ("c", 3, 0.0, True)],
    })
    truth = SourceTargetTable(("a", "b", "c"), ("t1", "t2"),
                              [[0.9, 0.6], [0.8, 0.7], [0.5, 0.8]], "truth")
    rows = report.sureness(study, "dataset", truth)
    r1, r2 = rows
    assert (r1["truth_best"], r1["plain_top"], r1["top_right"]) == ("a", "a", True)
    assert r1["top_set"] == ["a", "b"] and r1["best_in_top_set"]
    assert r1["brier"] == pytest.approx(0.3 ** 2 + 0.3 ** 2 + 0.0)
    assert r1["brier_uniform"] == pytest.approx((2 / 3) ** 2 + 2 * (1 / 3) ** 2)
    assert (r2["truth_best"], r2["plain_top"], r2["top_right"]) == ("c", "b", False)
    assert r2["top_set"] == ["a", "b"] and not r2["best_in_top_set"]
    assert r2["p_rank1_truth_best"] == 0.0 and r2["p_rank1_plain_top"] == 0.9
    text = "\n".join(report._sureness_lines({"dataset": rows}))
    assert "in 1 of 2 cases" in text and "top set held 2.0 of 3.0" in text
