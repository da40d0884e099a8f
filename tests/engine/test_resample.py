"""rank --resamples: class-stratified subsamples, intervals, P(rank 1), the top rule (issue 17)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gradnca_onnx.cli import main
from gradnca_onnx.engine import rank_zoo
from gradnca_onnx.engine.resample import resample_member, resample_zoo
from gradnca_onnx.evaluation.resampling import (batch_draws, rank_statistics,
                                                stratified_subsamples, zoo_resample_scores)

from _support import DEMO_CNNS


def _strip(d: dict) -> dict:
    """A rank JSON without the run-dependent fields (seconds, cached)."""
    for m in d["models"]:
        m.pop("seconds"), m.pop("cached")
    return d


# ------------------------------------------------------------------ subsamples
def test_stratified_subsamples_keep_class_shares_without_duplicates() -> None:
    y = np.array([0] * 40 + [1] * 11 + [2] * 3)
    subs = stratified_subsamples(y, 5, fraction=0.5, seed=3)
    for s in subs:
        assert np.all(np.diff(s) > 0)  # sorted, no image twice
        assert np.bincount(y[s]).tolist() == [20, 6, 2]  # floor(f n_c + 1/2), at least 2
    again = stratified_subsamples(y, 5, fraction=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(subs, again))
    other = stratified_subsamples(y, 5, fraction=0.5, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(subs, other))
    assert all(np.array_equal(s, np.arange(y.size))
               for s in stratified_subsamples(y, 2, fraction=1.0, seed=0))
    draws = batch_draws(60, 4, seed=1)
    assert draws.shape == (4, 6) and draws.min() >= 0 and draws.max() < 6
    with pytest.raises(ValueError, match="fraction"):
        stratified_subsamples(y, 2, fraction=0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_resamples": 1}, "--resamples"), ({"fraction": 1.5}, "--fraction"),
    ({"level": 1.0}, "--level"), ({"fu": "exact"}, "--fu-resample"), ({"seed": -1}, "--seed")])
def test_bad_settings_name_the_option(demo, kwargs, match) -> None:
    zoo, target, cache = demo
    args = {"n_resamples": 3, **kwargs}
    n = args.pop("n_resamples")
    with pytest.raises(ValueError, match=match):
        resample_zoo(zoo, target, n, cache=cache, **args)


# ------------------------------------------------------------------ identity resample
def test_identity_resample_reproduces_the_plain_scores_exactly(demo) -> None:
    zoo, target, cache = demo
    plain = rank_zoo(zoo, target, cache=cache, models=DEMO_CNNS, metrics="ncti,params")
    every = [np.arange(len(target))]
    for fu in ("rebatch", "batches"):
        res = resample_zoo(zoo, target, 1, cache=cache, models=DEMO_CNNS, fu=fu, subsamples=every,
                           metrics="ncti,params")
        assert res.schema == "gradnca-onnx/rank/2"
        for m, p in zip(res.models, plain.models):
            b = m.resampling
            assert m.name == p.name and b["n_scored"] == 1
            for key, value in (("score", p.score), ("lp", p.lp), ("fu", p.fu)):
                assert b[key]["lo"] == b[key]["hi"] == value, (fu, m.name, key)
            for name, value in p.metrics.items():
                assert b["metrics"][name]["lo"] == value, (fu, m.name, name)
            assert b["p_rank1"] == (1.0 if p.rank == 1 else 0.0)
            assert b["rank_interval"] == [p.rank, p.rank]


# ------------------------------------------------------------------ synthetic, known answer
def _gaussian_model(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, 6))
    x[:, 0] += separation * y
    return x, y


def test_intervals_shrink_as_n_grows_with_a_known_answer() -> None:
    """Model A separates the classes better than B (its population S_LP is higher): with more
    images the S_LP intervals shrink and A's lead over B is found more often."""
    widths, wins = {}, {}
    for n in (60, 480):
        lp = {}
        for name, sep in (("A", 2.0), ("B", 1.2)):
            x, y = _gaussian_model(n, sep, seed=n)
            subs = stratified_subsamples(y, 16, fraction=0.5, seed=0)
            lp[name] = resample_member(x, y, subs, lp_settings={
                "n_components": 6, "n_neighbors": 5, "random_state": 42}).lp
        widths[n] = {k: np.quantile(v, 0.975) - np.quantile(v, 0.025) for k, v in lp.items()}
        wins[n] = float(np.mean(lp["A"] > lp["B"]))
    for name in ("A", "B"):
        assert widths[480][name] < 0.7 * widths[60][name], widths
    assert wins[480] == 1.0 and wins[480] >= wins[60]


def test_rank_statistics_and_the_top_rule() -> None:
    rng = np.random.default_rng(0)
    lp = np.column_stack([0.9 + 0.01 * rng.normal(size=200), 0.89 + 0.01 * rng.normal(size=200),
                          0.5 + 0.01 * rng.normal(size=200)])
    fu = np.column_stack([np.full(200, 2.0), np.full(200, 2.0), np.full(200, 1.0)])
    fu[:, 1] += 0.001
    s = zoo_resample_scores(lp, fu, "dataset")
    assert s.shape == (200, 3) and np.isfinite(s).all()
    stats = rank_statistics(s, top=0, level=0.95)
    assert sum(st["p_rank1"] for st in stats) == pytest.approx(1.0)
    assert stats[0]["is_top"] and not stats[0]["distinguishable_from_top"]
    assert not stats[1]["distinguishable_from_top"] and 0.05 < stats[1]["p_at_least_top"] < 1
    assert stats[2]["distinguishable_from_top"] and stats[2]["rank_interval"] == [3, 3]
    # a resample in which one term is undefined is left out of S and the ranks
    fu[0, 2] = np.nan
    assert rank_statistics(zoo_resample_scores(lp, fu, "dataset"), 0, 0.95)[0]["n"] == 199


# ------------------------------------------------------------------ determinism, CLI
def test_same_seed_same_output_other_seed_other_output(demo) -> None:
    zoo, target, cache = demo
    run = lambda seed: _strip(resample_zoo(  # noqa: E731
        zoo, target, 3, seed=seed, fu="batches", cache=cache, models=DEMO_CNNS[:2],
        metrics="logme").to_dict())
    first = run(7)
    assert first == run(7)
    assert first["resampling"]["seed"] == 7 and first["schema"] == "gradnca-onnx/rank/2"
    assert first["models"] != run(8)["models"]
    text = json.dumps(first, allow_nan=False)  # no NaN anywhere
    assert "NaN" not in text


def test_cli_resamples_on_the_demo_zoo(demo, tmp_path) -> None:
    _, _, cache = demo
    args = ["rank", "--demo", "--resamples", "3", "--seed", "1", "--fu-resample", "batches",
            "--cache", str(cache.root)]
    res = CliRunner().invoke(main, [*args, "--format", "json", "--quiet"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["schema"] == "gradnca-onnx/rank/2"
    assert data["resampling"]["n_resamples"] == 3 and data["resampling"]["fraction"] == 0.5
    assert len(data["models"]) == 7 and any(m["model"] == "vit-blood-cells"
                                            for m in data["models"])
    assert sum(m["resampling"]["p_rank1"] for m in data["models"]) == pytest.approx(1.0)
    top = data["models"][0]["resampling"]
    assert top["is_top"] and top["score"]["lo"] <= top["score"]["hi"]
    csv1 = CliRunner().invoke(main, [*args, "--format", "csv", "--quiet"])
    csv2 = CliRunner().invoke(main, [*args, "--format", "csv", "--quiet"])
    assert csv1.exit_code == 0 and csv1.output == csv2.output
    header = csv1.output.splitlines()[0].split(",")
    assert header[-5:] == ["p_rank1", "rank_lo", "rank_hi", "p_at_least_top",
                           "distinguishable_from_top"] and "score_lo" in header
    table = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "plots")])
    assert table.exit_code == 0, table.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "forest.pdf", "forest.png", "rank_probabilities.pdf", "rank_probabilities.png"]
    assert "How sure: 3 class-stratified subsamples" in table.stdout
    assert "P(rank 1)" in table.stdout and "rule: distinguishable" in table.stdout
    assert "Resampling: 3 subsamples x 7 model(s)" in table.stderr


@pytest.mark.parametrize("extra, match", [
    (["--resamples", "1"], "--resamples"), (["--resamples", "3", "--folds"], "not both"),
    (["--resamples", "3", "--fraction", "0"], "--fraction"),
    (["--resamples", "3", "--executor", "ray"], "--executor local"),
    (["--plot", "plots"], "add --resamples"),
    (["--resamples", "3", "--plot", "/dev/null/plots"], "--plot")])
def test_cli_bad_resampling_options_are_one_line_exit_2(tmp_path, extra, match) -> None:
    res = CliRunner().invoke(main, ["rank", "--demo", "--quiet", "--cache",
                                                    str(tmp_path / "c"), *extra])
    assert res.exit_code == 2 and match in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_features_only_member_gets_lp_and_metric_intervals_but_no_s(demo, tmp_path) -> None:
    import shutil

    from _support import import_lrn

    zoo, target, cache = demo
    mixed = tmp_path / "zoo"
    for name in DEMO_CNNS[:2]:
        shutil.copytree(zoo / name, mixed / name)
    import_lrn(tmp_path, mixed)
    res = resample_zoo(mixed, target, 3, fu="batches", cache=cache, metrics="logme")
    by = {m.name: m for m in res.models}
    lrn = by["lrn"].resampling
    assert lrn["score"] is None and lrn["fu"] is None and lrn["p_rank1"] is None
    assert lrn["rank_interval"] is None and lrn["distinguishable_from_top"] is None
    assert lrn["lp"]["n"] == 3 and lrn["metrics"]["logme"]["n"] == 3
    assert sum(by[n].resampling["p_rank1"] for n in DEMO_CNNS[:2]) == pytest.approx(1.0)
    assert "NaN" not in json.dumps(res.to_dict(), allow_nan=False)


def test_plots_are_byte_identical_across_runs(demo, tmp_path) -> None:
    from gradnca_onnx.results.plots import plot_ranking

    zoo, target, cache = demo
    ranking = resample_zoo(zoo, target, 4, fu="batches", cache=cache, models=DEMO_CNNS)
    p = ranking.models[0].resampling["rank_probabilities"]
    assert len(p) == 3 and sum(p) == pytest.approx(1.0)
    first = plot_ranking(ranking, tmp_path / "a")
    again = plot_ranking(resample_zoo(zoo, target, 4, fu="batches", cache=cache, models=DEMO_CNNS),
                         tmp_path / "b", prefix="")
    assert [f.name for f in first] == ["forest.png", "forest.pdf", "rank_probabilities.png",
                                       "rank_probabilities.pdf"]
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 1000, a.name
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        plot_ranking(ranking, tmp_path / "file")
