"""Seed replicates of the ground truth, and the tau between them.

The store and evaluation parts run on synthetic run rows and tables (no torch, fast); one test
fine-tunes a tiny CNN on the real BreastMNIST fold for a couple of epochs.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from gradnca_onnx import training
from gradnca_onnx.cli import main
from gradnca_onnx.evaluation import (SourceTargetTable, evaluate, read_table,
                                     replicate_agreement)

from _support import BREAST

SOURCES = ("a", "b", "c", "d", "e", "t1")  # "t1" is target t1's own source: left out there
TARGETS = ("t1", "t2")


def _table(values: np.ndarray, name: str) -> SourceTargetTable:
    return SourceTargetTable(SOURCES, TARGETS, values, name=name)


def _reference_tau(x: np.ndarray, y: np.ndarray, target: str, measure: str) -> float:
    keep = np.array([s != target for s in SOURCES])
    j = TARGETS.index(target)
    fn = stats.weightedtau if measure == "weighted_tau" else stats.kendalltau
    return float(fn(x[keep, j], y[keep, j]).statistic)


@pytest.fixture()
def replicates() -> dict[str, SourceTargetTable]:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(len(SOURCES), len(TARGETS)))
    return {f"seed{s}": _table(base + 0.7 * rng.normal(size=base.shape), f"seed{s}")
            for s in (42, 43, 44)}


def test_replicate_tau_matches_scipy_pair_by_pair(replicates) -> None:
    rng = np.random.default_rng(8)
    scores = {"m1": _table(rng.normal(size=(6, 2)), "m1"),
              "copy": _table(replicates["seed42"].values, "copy")}
    agr = replicate_agreement(replicates, scores)
    names = list(replicates)
    assert agr.pairs == ((0, 1), (0, 2), (1, 2)) and agr.names == tuple(names)
    for measure in ("weighted_tau", "kendall_tau"):
        for i, t in enumerate(TARGETS):
            want = [_reference_tau(replicates[names[a]].values, replicates[names[b]].values,
                                   t, measure) for a, b in itertools.combinations(range(3), 2)]
            np.testing.assert_allclose(agr.between[measure][i], want, rtol=0, atol=1e-12)
            assert agr.ceiling(measure)[i] == pytest.approx(np.mean(want), abs=1e-12)
            for j, m in enumerate(scores):
                got = agr.against[measure][i, j]
                want_m = [_reference_tau(scores[m].values, replicates[n].values, t, measure)
                          for n in names]
                np.testing.assert_allclose(got, want_m, rtol=0, atol=1e-12)
        # A metric that is replicate 1 agrees with it perfectly.
        assert agr.against[measure][:, 1, 0] == pytest.approx([1.0, 1.0])
    # Identical replicates: the ground truth reproduces itself exactly.
    same = {"r1": replicates["seed42"], "r2": replicates["seed42"]}
    assert replicate_agreement(same).ceiling() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="at least two replicate"):
        replicate_agreement({"r1": replicates["seed42"]})


def test_missing_replicate_cell_is_left_out_of_the_mean(replicates) -> None:
    vals = replicates["seed44"].values.copy()
    vals[0, 1] = np.nan  # source a has no seed-44 replicate on t2
    reps = {**replicates, "seed44": _table(vals, "seed44")}
    agr = replicate_agreement(reps)
    names = list(reps)
    pair01 = _reference_tau(reps[names[0]].values, reps[names[1]].values, "t2", "weighted_tau")
    assert np.isnan(agr.between["weighted_tau"][1, 1:]).all()
    assert agr.ceiling()[1] == pytest.approx(pair01, abs=1e-12)
    assert agr.to_dict()["targets"]["t2"]["weighted_tau"]["n_pairs"] == 1


def test_evaluate_reports_replicates_in_json_and_table(replicates) -> None:
    rng = np.random.default_rng(9)
    truth = replicates["seed42"]
    scores = {"m1": _table(rng.normal(size=(6, 2)), "m1"),
              "m2": _table(rng.normal(size=(6, 2)), "m2")}
    res = evaluate(truth, scores, replicates=replicates)
    doc = json.loads(res.to_json())
    rep = doc["replicates"]
    assert rep["n_replicates"] == 3 and len(rep["pairs"]) == 3
    ceiling = res.replicates.ceiling()
    assert rep["targets"]["t1"]["weighted_tau"]["mean"] == pytest.approx(ceiling[0])
    m1 = rep["methods"]["m1"]["t2"]["kendall_tau"]
    want = [_reference_tau(scores["m1"].values, r.values, "t2", "kendall_tau")
            for r in replicates.values()]
    assert m1["per_replicate"] == pytest.approx(want) and m1["mean"] == pytest.approx(np.mean(want))
    text = res.format_table()
    assert "Ground-truth replicates (3: seed42, seed43, seed44)" in text
    row = next(line for line in text.splitlines()[text.splitlines().index("weighted tau:"):]
               if line.startswith("t1"))
    assert f"{ceiling[0]:.2f}" in row and f"{res.tau[0, 0]:.2f}" in row
    lines = text.splitlines()
    mean_row = lines[lines.index(row) + 1]
    want_mean = res.replicates.metric_mean()[0]
    assert mean_row.strip().startswith("mean over the 3 replicates")
    assert mean_row.split()[-2:] == [f"{v:.2f}" for v in want_mean]
    # Without replicates the output is unchanged.
    plain = evaluate(truth, scores)
    assert "replicates" not in plain.to_dict() and "replicates" not in plain.format_table()
    bad = {"r1": truth, "r2": SourceTargetTable(SOURCES[:-1], TARGETS, truth.values[:-1], "r2")}
    with pytest.raises(ValueError, match="lacks source"):
        evaluate(truth, scores, replicates=bad)


# --------------------------------------------------------------------------- run store


_BASE = dict(weight_decay=0.0, momentum=0.9, nesterov=1, batch_size=32, max_epochs=3,
             patience=3, image_size=28, dropout=0.5, augment=1, resize_filter="bilinear")


def _add_run(st, key, source, target, lr, seed, val_loss, test_auc) -> None:
    cfg = dict(_BASE, lr=lr, seed=seed)
    st.start_run(key, dict(cfg, source=source, target=target, source_sha256=f"w{source}",
                           target_sha256=f"d{target}",
                           config_json=json.dumps({"config": cfg})))
    st.finish_run(key, {"val_loss": val_loss, "test_auc": test_auc}, {})


def test_replicates_are_kept_out_of_the_ground_truth_and_give_one_table_per_seed(tmp_path):
    path = tmp_path / "reps.sqlite"
    st = training.RunStore(path)
    # Grid runs (seed 42): a's selected run is a1 (loss 0.3), b's is b0.
    _add_run(st, "a0", "a", "t", 0.1, 42, 0.5, 0.70)
    _add_run(st, "a1", "a", "t", 0.01, 42, 0.3, 0.62)
    _add_run(st, "b0", "b", "t", 0.1, 42, 0.4, 0.80)
    _add_run(st, "c0", "c", "t", 0.1, 42, 0.2, 0.55)  # no replicates: NaN in the seed tables
    st.close()
    truth_before = training.ground_truth(path)
    before = path.read_bytes()
    with training.RunStore(path) as st:
        assert st.replicates() == []
        assert st._db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert path.read_bytes() == before  # reading never writes
    with training.RunStore(path) as st:
        st.record_replicates("a1", [42, 43, 44], ["a1", "a1s43", "a1s44"], source="a", target="t")
        st.record_replicates("b0", [42, 43, 44], ["b0", "b0s43", "b0s44"], source="b", target="t")
        # Replicates with a lower validation loss than the selected run must not displace it.
        _add_run(st, "a1s43", "a", "t", 0.01, 43, 0.1, 0.90)
        _add_run(st, "a1s44", "a", "t", 0.01, 44, 0.2, 0.60)
        _add_run(st, "b0s43", "b", "t", 0.1, 43, 0.01, 0.75)
        st.start_run("b0s44", dict(_BASE, lr=0.1, seed=44, source="b", target="t",
                                   source_sha256="wb", target_sha256="dt", config_json="{}"))
        assert st._db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert [r["seeds"] for r in st.replicates()] == [[42, 43, 44]] * 6
    truth = training.ground_truth(path)
    np.testing.assert_array_equal(truth.values, truth_before.values)
    np.testing.assert_array_equal(truth.values[:, 0], [0.62, 0.80, 0.55])
    sel = training.selected_runs(path)
    assert {k: r["run_key"] for k, r in sel.items()} == {("a", "t"): "a1", ("b", "t"): "b0",
                                                         ("c", "t"): "c0"}
    reps = training.replicate_ground_truths(path)
    assert list(reps) == [42, 43, 44]
    np.testing.assert_array_equal(reps[42].values[:, 0], [0.62, 0.80, np.nan])
    np.testing.assert_array_equal(reps[43].values[:, 0], [0.90, 0.75, np.nan])
    np.testing.assert_array_equal(reps[44].values[:, 0], [0.60, np.nan, np.nan])  # b in flight
    # A store that is newer than this package is refused, as before.
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 3")
    db.close()
    with pytest.raises(ValueError, match="upgrade the package"):
        training.RunStore(path)


def test_summarize_writes_one_truth_per_seed_and_refuses_a_store_without(tmp_path):
    path = tmp_path / "s.sqlite"
    with training.RunStore(path) as st:
        _add_run(st, "a0", "a", "t", 0.1, 42, 0.3, 0.6)
        _add_run(st, "b0", "b", "t", 0.1, 42, 0.3, 0.7)
    out = tmp_path / "reps"
    res = CliRunner().invoke(main, ["finetune", "summarize", "--store", str(path),
                                    "--replicates", str(out)])
    assert res.exit_code == 2 and "no seed replicates" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
    with training.RunStore(path) as st:
        st.record_replicates("a0", [42, 7], ["a0", "a0s7"], source="a", target="t")
        st.record_replicates("b0", [42, 7], ["b0", "b0s7"], source="b", target="t")
        _add_run(st, "a0s7", "a", "t", 0.1, 7, 0.3, 0.65)
        _add_run(st, "b0s7", "b", "t", 0.1, 7, 0.3, 0.55)
    res = CliRunner().invoke(main, ["finetune", "summarize", "--store", str(path),
                                    "--replicates", str(out), "--out", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["truth_seed42.csv", "truth_seed7.csv"]
    np.testing.assert_array_equal(read_table(out / "truth_seed7.csv").values[:, 0], [0.65, 0.55])
    np.testing.assert_array_equal(read_table(out / "truth_seed42.csv").values,
                                  read_table(tmp_path / "t.csv").values)


def test_evaluate_cli_replicates_and_bad_input(tmp_path, replicates) -> None:
    paths = []
    for name, table in replicates.items():
        paths.append(tmp_path / f"truth_{name}.csv")
        table.to_csv(paths[-1])
    rng = np.random.default_rng(3)
    _table(rng.normal(size=(6, 2)), "m").to_csv(tmp_path / "m.csv")
    args = ["evaluate", "--truth", str(paths[0]), "--scores", f"m={tmp_path / 'm.csv'}"]
    res = CliRunner().invoke(main, [*args, *(a for p in paths for a in ("--replicate", str(p))),
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["replicates"]["names"] == ["seed42", "seed43", "seed44"]
    want = replicate_agreement(replicates).ceiling("kendall_tau")
    assert doc["replicates"]["targets"]["t2"]["kendall_tau"]["mean"] == pytest.approx(want[1])
    res = CliRunner().invoke(main, [*args, "--replicate", str(paths[0])])
    assert res.exit_code == 2 and "at least two" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- fine-tuning

TINY = '''
from torch import nn


def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture()
def tiny_module(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "tiny_rep.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield "tiny_rep:tiny"
    torch.set_num_threads(threads)
    sys.modules.pop("tiny_rep", None)


def test_run_seeds_repeats_the_selected_configuration_and_resumes(tiny_module, tmp_path):
    from gradnca_onnx.training.grid import grid_from_mapping
    from gradnca_onnx.training.runner import config_of

    grid = grid_from_mapping({"base": "quick", "lr": [0.1, 0.01], "weight_decay": [0.0],
                              "max_epochs": 2, "patience": 2}, name="t")
    src = training.load_source(tiny_module, name="tiny")
    tgt = training.load_target_splits(BREAST)
    store = tmp_path / "r.sqlite"
    out = training.run_seeds(src, tgt, grid, store, [42, 43])
    assert (out.grid.finished, out.skipped, out.finished, out.failed) == (2, 1, 1, 0)
    with training.RunStore(store) as st:
        rows = {r["run_key"]: r for r in st.runs()}
        grid_rows = [rows[k] for k in out.grid.keys]
        best = min(grid_rows, key=lambda r: r["val_loss"])
        assert out.selected_key == best["run_key"] == out.keys[0]  # seed 42 = the grid run
        rep = rows[out.keys[1]]
        assert rep["seed"] == 43 and rep["grid"] == "t seed replicate"
        assert config_of(rep) == config_of(best).__class__(**{**config_of(best).__dict__,
                                                              "seed": 43})
        assert [r["seeds"] for r in st.replicates()] == [[42, 43], [42, 43]]
    truth = training.ground_truth(store)
    reps = training.replicate_ground_truths(store)
    assert reps[42].values[0, 0] == truth.values[0, 0] == best["test_auc"]
    assert reps[43].values[0, 0] == rep["test_auc"]
    # Again: nothing is recomputed.
    again = training.run_seeds(src, tgt, grid, store, [42, 43])
    assert (again.grid.finished, again.finished, again.skipped) == (0, 0, 2)
    with pytest.raises(ValueError, match="two distinct seeds"):
        training.run_seeds(src, tgt, grid, store, [42, 42])


def test_finetune_cli_seeds_and_bad_seed_options(tiny_module, tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": "quick", "lr": [0.1], "weight_decay": [0],
                                "max_epochs": 1, "patience": 1}))
    store = tmp_path / "cli.sqlite"
    base = ["finetune", "--source", tiny_module, "--target", str(BREAST), "--store", str(store),
            "--preset", str(grid), "--source-name", "tiny", "--threads", "1", "--no-progress"]
    res = CliRunner().invoke(main, [*base, "--seed-list", "42,5"])
    assert res.exit_code == 0, res.output
    assert "2 seed replicates of the selected run" in res.stdout and "seeds 42,5" in res.stdout
    assert "1 done now, 1 already" in res.stdout
    res = CliRunner().invoke(main, [*base, "--seed-list", "42,5"])
    assert "0 done now, 2 already" in res.stdout
    cases = [(["--seeds", "1"], "--seeds must be an integer >= 2"),
             (["--seeds", "2", "--seed-list", "1,2"], "not both"),
             (["--seed-list", "1,x"], "must be integers"),
             (["--seed-list", "3,3"], "two distinct seeds"),
             (["--seeds", "2", "--executor", "ray"], "--executor local")]
    before = store.read_bytes()
    for extra, match in cases:
        res = CliRunner().invoke(main, [*base, *extra])
        err = res.stderr.strip()
        assert res.exit_code == 2 and len(err.splitlines()) == 1 and match in err, (extra, err)
    assert store.read_bytes() == before
