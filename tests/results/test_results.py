"""The results layer: the Python API renders every output ``rank`` prints, byte for byte; the
one aligned-table writer; the rank-JSON reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradnca_onnx.cli import main
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import FeatureCache
from gradnca_onnx.errors import InputError
from gradnca_onnx.executors import rank
from gradnca_onnx.results import Rankings, aligned, rank_scores

MODELS = "adrenal,retina"


def _small_npz(path: Path, n: int) -> Path:
    """The first ``n`` train images of the bundled BreastMNIST (val/test: 12 each)."""
    _, target = demo_paths()
    with np.load(target) as f:
        arrays = {k: f[k][:n] if k.startswith("train") else f[k][:12] for k in f.files}
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The demo zoo, a directory of two small targets, and a cache warmed by one CLI run (so
    that the CLI and the API below both read every member from it: same ``cached`` flags)."""
    base = tmp_path_factory.mktemp("results")
    zoo, _ = demo_paths()
    targets = base / "targets"
    targets.mkdir()
    _small_npz(targets / "a.npz", 60), _small_npz(targets / "b.npz", 48)
    cache = base / "cache"
    for target in ("a.npz", "b.npz"):
        res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target",
                                        str(targets / target), "--models", MODELS,
                                        "--cache", str(cache), "--quiet"])
        assert res.exit_code == 0, res.output
    return zoo, targets, cache


def _cli(zoo: Path, target: Path, cache: Path, fmt: str) -> str:
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target),
                                    "--models", MODELS, "--metrics", "params", "--cache",
                                    str(cache), "--quiet", "--format", fmt])
    assert res.exit_code == 0, res.output
    return res.stdout


def _without_seconds(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if '"seconds":' not in line)


@pytest.mark.parametrize("one", [True, False], ids=["one-target", "directory-of-targets"])
def test_the_api_renders_what_the_cli_prints(setup, one: bool) -> None:
    zoo, targets, cache = setup
    target = targets / "a.npz" if one else targets
    result = rank(zoo, [target], models=MODELS.split(","), metrics=["params"],
                  cache=FeatureCache(cache))
    assert isinstance(result, Rankings) and result.several_targets is not one
    assert len(result) == (1 if one else 2)
    assert all(m.cached for r in result for m in r.models)
    assert result.to_table() == _cli(zoo, target, cache, "table")
    assert result.to_csv() == _cli(zoo, target, cache, "csv")
    assert _without_seconds(result.to_json()) == _without_seconds(_cli(zoo, target, cache,
                                                                       "json"))
    schema = json.loads(result.to_json())["schema"]
    assert schema == ("gradnca-onnx/rank/1" if one else "gradnca-onnx/rank-targets/1")
    if one:  # a single target renders as its ZooRanking does
        assert result.to_csv() == result[0].to_csv() and result.to_json() == result[0].to_json()


def test_one_target_renders_exactly_one_ranking(setup) -> None:
    zoo, targets, cache = setup
    result = rank(zoo, [targets], models=MODELS.split(","), cache=FeatureCache(cache))
    with pytest.raises(InputError, match="one target renders exactly one ranking"):
        Rankings(result.rankings, several_targets=False)  # would drop b without a word
    with pytest.raises(InputError):
        Rankings([])


def test_the_rank_json_reader_reads_what_the_ranking_writes(setup) -> None:
    zoo, targets, cache = setup
    result = rank(zoo, [targets], models=MODELS.split(","), metrics=["params"],
                  cache=FeatureCache(cache))
    read = rank_scores([json.loads(result.to_json())])
    assert read.targets == ("a", "b") and read.sources == ("adrenal", "retina")
    assert read.methods == ("GradNCA", "S_LP", "S_FU", "params")
    for ranking in result:
        for m in ranking.models:
            cells = read.values[ranking.target][m.name]
            assert (cells["GradNCA"], cells["S_LP"], cells["S_FU"]) == (m.score, m.lp, m.fu)
            assert cells["params"] == m.metrics["params"]
    newer = {**json.loads(result[0].to_json()), "schema": "gradnca-onnx/rank/9"}
    with pytest.raises(InputError, match="not one this gradnca-onnx reads"):
        rank_scores([newer])


def test_plot_through_the_api(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from gradnca_onnx.data.load import load_target
    from gradnca_onnx.engine import resample_zoo

    zoo, target = demo_paths()
    ranking = resample_zoo(zoo, load_target(target).subset(np.arange(90)), 3, fu="batches",
                           models=MODELS.split(","), cache=FeatureCache(tmp_path / "c"))
    paths = ranking.plot(tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["forest.pdf", "forest.png",
                                             "rank_probabilities.pdf",
                                             "rank_probabilities.png"]
    several = Rankings([ranking]).plot(tmp_path / "named")  # file names after the target
    assert {p.name.split("_")[0] for p in several} == {ranking.target}


# ------------------------------------------------------------------------- aligned tables
ROWS = [("rank", "model", "S", ""), ("1", "retina", "0.5000", "cached"), ("2", "a", "1", "")]


def test_aligned_columns_with_a_rule_per_column() -> None:
    # The rank table's layout: left-justified, two spaces apart, a rule as wide as each
    # column (also under an empty last column), trailing spaces of the rows removed.
    assert aligned(ROWS) == [
        "rank  model   S",
        "----  ------  ------  ------",
        "1     retina  0.5000  cached",
        "2     a       1",
    ]


def test_aligned_numbers_right_with_full_rules() -> None:
    # The evaluation tables' layout: the first column left, the others right, one rule.
    rows = [("Target", "A", "GradNCA"), ("blood", "0.12 (1)", "-0.50 (2)"), ("Avg.", "1.00", "2.00")]
    assert aligned(rows, right=True, rules=(0, 1), full_rule=True) == [
        "Target         A    GradNCA",
        "---------------------------",
        "blood   0.12 (1)  -0.50 (2)",
        "---------------------------",
        "Avg.        1.00       2.00",
    ]
    assert aligned(rows, rules=()) == ["Target  A         GradNCA", "blood   0.12 (1)  -0.50 (2)",
                                       "Avg.    1.00      2.00"]
