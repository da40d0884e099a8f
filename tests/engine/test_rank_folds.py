"""rank --folds: the zoo scored on each of the paper's five folds, with their spread (issue 17)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gradnca_onnx.cli import main
from gradnca_onnx.data.load import load_target
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import FeatureCache, rank_zoo
from gradnca_onnx.engine.folds import rank_folds
from gradnca_onnx.evaluation.folds import kendall_between_folds, spread

MODELS = ["retina", "pneumonia"]


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    zoo, target = demo_paths()
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    ranking = rank_folds(zoo, target, cache=cache, models=MODELS, metrics="params")
    return zoo, target, cache, ranking


def test_spread_and_kendall_helpers() -> None:
    s = spread([1.0, None, 3.0])
    assert s == {"values": [1.0, None, 3.0], "mean": 2.0, "sd": pytest.approx(np.sqrt(2)),
                 "min": 1.0, "max": 3.0}
    assert spread([None, 2.0])["sd"] is None and spread([None])["mean"] is None


def test_each_fold_is_scored_and_summarised(folds) -> None:
    zoo, target, cache, ranking = folds
    fs = ranking.folds
    assert ranking.schema == "gradnca-onnx/rank/2" and ranking.split == "fold1-train"
    assert fs["n_folds"] == 5 and fs["n_samples"] == [200] * 5
    fold3 = rank_zoo(zoo, load_target(target, "fold3"), cache=cache, models=MODELS)
    by_name = {m.name: m for m in fold3.models}
    for m in ranking.models:
        b = m.folds
        for term in ("score", "lp", "fu", "rank"):
            vals = b[term]["values"]
            assert len(vals) == 5 and vals[0] == getattr(m, term)  # fold 1 is the table's
            assert vals[2] == getattr(by_name[m.name], term)
            assert b[term]["min"] <= b[term]["mean"] <= b[term]["max"]
            assert b[term]["sd"] == pytest.approx(np.std(vals, ddof=1))
        assert b["metrics"]["params"]["sd"] == 0.0  # a static baseline does not move
    for term in ("score", "lp", "fu"):
        kt = fs["kendall_tau"][term]
        assert len(kt["pairs"]) == 10 and kt["pairs"][0]["folds"] == [1, 2]
        assert all(p["tau"] is None or -1 <= p["tau"] <= 1 for p in kt["pairs"])
    assert len(fs["top"]) == 5
    assert json.dumps(ranking.to_dict(), allow_nan=False)
    assert kendall_between_folds([fold3, fold3], "lp")["pairs"][0]["tau"] == pytest.approx(1.0)


def test_cli_folds_on_the_demo_target(folds, tmp_path) -> None:
    _, _, cache, ranking = folds
    args = ["rank", "--demo", "--folds", "--models", ",".join(MODELS), "--metrics",
            "params", "--cache", str(cache.root), "--quiet"]
    res = CliRunner().invoke(main, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["schema"] == "gradnca-onnx/rank/2" and data["folds"]["n_folds"] == 5
    assert data["folds"]["kendall_tau"] == ranking.folds["kendall_tau"]
    csv = CliRunner().invoke(main, [*args, "--format", "csv"]).output.splitlines()
    assert csv[0].endswith("rank_fold_max,ranks_by_fold") and "score_fold_sd" in csv[0]
    assert csv[1].split(",")[-1].count(";") == 4
    table = CliRunner().invoke(main, args).output
    assert "Fold-to-fold spread: 5 paper folds" in table and "Kendall tau between" in table


@pytest.mark.parametrize("extra, match", [
    (["--split", "val"], "drop --split"), (["--executor", "ray"], "--executor local")])
def test_cli_bad_folds_options(tmp_path, extra, match) -> None:
    res = CliRunner().invoke(main, ["rank", "--demo", "--folds", "--quiet", "--cache",
                                    str(tmp_path / "c"), *extra])
    assert res.exit_code == 2 and match in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_folds_of_a_folder_target_is_one_line(tmp_path) -> None:
    for c in ("a", "b"):
        (tmp_path / "t" / c).mkdir(parents=True)
    res = CliRunner().invoke(main, ["rank", "--demo", "--folds", "--quiet", "--target",
                                    str(tmp_path / "t"), "--cache", str(tmp_path / "c")])
    assert res.exit_code == 2 and "npz" in res.stderr
