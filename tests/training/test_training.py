"""Ground-truth fine-tuning: protocol, run store, resumable grids, CLI (tiny CNN, real 28 px data)."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402
from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

from gradnca_onnx import data, training  # noqa: E402
from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.evaluation import read_table  # noqa: E402
from gradnca_onnx.training.grid import grid_from_mapping  # noqa: E402
from gradnca_onnx.training.loop import finetune, prepare_target  # noqa: E402

from _support import BREAST, MEDICAL, MRI_FEW, ROOT  # noqa: E402

RETINA = MEDICAL / "retinamnist" / "retinamnist.npz"

TINY_SOURCE = '''
import torch
from torch import nn


def tiny(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def tiny_no_bn(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tinymodels")
    (d / "tiny_models.py").write_text(TINY_SOURCE)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


# Tiny tensors on a shared 2-core machine: one thread is fastest and keeps runs deterministic.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> "training.Source":
    return training.load_source("tiny_models:tiny", name="tiny")


@pytest.fixture(scope="module")
def breast() -> "training.TargetSplits":
    return training.load_target_splits(BREAST)


def small_grid(**kw) -> training.GridSpec:
    base = {"base": "quick", "lr": [0.1, 0.01], "weight_decay": [0.0], "momentum": [0.9],
            "max_epochs": 3, "patience": 3}
    base.update(kw)
    return grid_from_mapping(base, name="test")


# --------------------------------------------------------------------------- metrics


def test_auc_equals_sklearn_with_ties_and_edge_cases():
    rng = np.random.default_rng(0)
    y2 = rng.integers(0, 2, 300)
    s = np.round(rng.random((300, 2)), 1)  # many ties
    assert training.auc_score(y2, s, "binary") == pytest.approx(roc_auc_score(y2, s[:, 1]), abs=1e-12)
    y5 = rng.integers(0, 5, 400)
    p5 = rng.dirichlet(np.ones(5), 400)
    assert training.auc_score(y5, p5, "multi-class") == pytest.approx(
        roc_auc_score(y5, p5, multi_class="ovr", average="macro"), abs=1e-12)
    yl = rng.integers(0, 2, (200, 3))
    pl = rng.random((200, 3))
    assert training.auc_score(yl, pl, "multi-label") == pytest.approx(
        roc_auc_score(yl, pl, average="macro"), abs=1e-12)
    assert math.isnan(training.auc_score(np.zeros(5, int), np.ones((5, 2)) / 2, "binary"))
    assert math.isnan(training.auc_score(y2, np.full((300, 2), np.nan), "binary"))
    assert training.accuracy(y5, p5, "multi-class") == accuracy_score(y5, p5.argmax(1))


# --------------------------------------------------------------------------- grids


def test_presets_and_grid_files(tmp_path):
    paper = training.load_grid("paper").expand("breastmnist")
    assert len(paper) == 6 * 5 * 2 * 2
    assert {c.batch_size for c in paper} == {32, 64} and {c.max_epochs for c in paper} == {400}
    assert {c.patience for c in paper} == {50} and {c.image_size for c in paper} == {224}
    assert all(c.nesterov == (c.momentum > 0) and c.seed == 42 and c.dropout == 0.5 for c in paper)
    quick = training.load_grid("quick").expand("retinamnist")
    assert len(quick) == 6 and {c.batch_size for c in quick} == {64}
    yml = tmp_path / "g.yaml"
    yml.write_text("base: quick\nlr: [0.5, 0.05]\nweight_decay: 0\nbatch_size: [8, 16]\n"
                   "max_epochs: 5\n")
    g = training.load_grid(str(yml))
    assert [(c.lr, c.batch_size) for c in g.expand("anything")] == [
        (0.5, 8), (0.05, 8), (0.5, 16), (0.05, 16)]
    js = tmp_path / "g.json"
    js.write_text(json.dumps({"lr": 0.1, "momentum": [0.0], "patience": 7}))
    assert training.load_grid(str(js)).expand("breastmnist")[0].patience == 7
    bad = [("lr: [0.1]\nlearning_rate: 3\n", "unknown key"), ("lr: [-1]\n", "lr must be"),
           ("batch_size: [1.5]\n", "integers"), ("lr: [0.1\n", "invalid YAML")]
    for text, match in bad:
        yml.write_text(text)
        with pytest.raises(ValueError, match=match):
            training.load_grid(str(yml))
    with pytest.raises(ValueError, match="no paper batch sizes"):
        training.load_grid("quick").expand("my-mri")
    assert training.load_grid("quick").with_batch_sizes((16,)).expand("my-mri")[0].batch_size == 16
    with pytest.raises(ValueError, match="neither a preset"):
        training.load_grid("fast")


# --------------------------------------------------------------------------- protocol


def test_grid_finishes_and_store_matches_sklearn(tiny, breast, tmp_path):
    store = tmp_path / "runs.sqlite"
    grid = small_grid()
    out = training.run_grid(tiny, breast, grid, store)
    assert (out.total, out.finished, out.skipped, out.failed) == (2, 2, 0, 0)
    with training.RunStore(store) as st:
        rows = st.runs()
        assert [r["status"] for r in rows] == ["finished", "finished"]
        for row, cfg in zip(rows, grid.expand("breastmnist")):
            for k, v in cfg.to_dict().items():
                assert row[k] == (int(v) if isinstance(v, bool) else v), k
            assert (row["source"], row["target"], row["task"]) == ("tiny", "breastmnist", "binary")
            assert (row["n_train"], row["n_val"], row["n_test"]) == (200, 50, 156)
            assert row["torch_version"] == torch.__version__ and row["seed"] == 42
            assert row["target_sha256"] == breast.sha256 and row["wall_time_s"] > 0
            epochs = st.epochs(row["run_key"])
            assert [e["epoch"] for e in epochs] == list(range(1, row["epochs_run"] + 1))
            # The best-validation-AUC weights are the ones kept and scored.
            aucs = [e["val_auc"] for e in epochs]
            assert row["best_epoch"] == int(np.argmax(aucs)) + 1
            assert row["val_auc"] == pytest.approx(max(aucs), abs=1e-12)
            assert [e["lr"] for e in epochs][0] == cfg.lr
            assert epochs[1]["lr"] == pytest.approx(cfg.lr * (1 + math.cos(math.pi / 3)) / 2)
            for split in ("val", "test"):
                y, p = st.predictions(row["run_key"], split)
                assert p.shape == (len(y), 2)
                assert row[f"{split}_auc"] == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)
                assert row[f"{split}_acc"] == pytest.approx(accuracy_score(y, p.argmax(1)))
            np.testing.assert_array_equal(st.predictions(row["run_key"], "test")[0],
                                          breast.test.labels)
    # Run again: everything is skipped.
    again = training.run_grid(tiny, breast, grid, store)
    assert (again.skipped, again.finished) == (2, 0) and again.keys == out.keys


def test_multiclass_and_multilabel_auc_match_sklearn(tiny, tmp_path):
    retina = training.load_target_splits(RETINA)
    assert (len(retina.train), len(retina.val), len(retina.test)) == (500, 120, 400)
    cfg = small_grid(lr=[0.05], max_epochs=2).expand("retinamnist")[0]
    st = training.RunStore(tmp_path / "r.sqlite")
    key, res = training.run_one(tiny, retina, cfg, st)
    y, p = st.predictions(key, "test")
    assert st.run(key)["test_auc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    # A multi-label target built from the real grades: "any DR" and "grade >= 3".
    def ml(d):
        lab = np.stack([d.labels >= 1, d.labels >= 3], axis=1).astype(int)
        return data.from_arrays(d.images, lab, name="retina-ml")
    mlt = training.TargetSplits(ml(retina.train), ml(retina.val), ml(retina.test), "retina-ml")
    key, res = training.run_one(tiny, mlt, cfg, st)
    y, p = st.predictions(key, "test")
    assert y.shape == p.shape == (400, 2)
    assert res.test_auc == pytest.approx(roc_auc_score(y, p, average="macro"), abs=1e-12)
    st.close()


def test_early_stopping_triggers(tiny_dir, breast):
    # With a learning rate far below float32 resolution the weights never change, so the
    # validation AUC never improves after epoch 1: stop after exactly `patience` more epochs.
    src = training.load_source("tiny_models:tiny_no_bn")
    cfg = training.RunConfig(lr=1e-20, weight_decay=0.0, momentum=0.0, batch_size=64,
                             max_epochs=50, patience=4, image_size=28, augment=False)
    data_ = prepare_target(breast.train, breast.val, breast.test, image_size=28,
                           mean=src.mean, std=src.std)
    import copy
    res = finetune(copy.deepcopy(src.module), data_, cfg)
    assert (res.stop_reason, res.epochs_run, res.best_epoch) == ("early_stopping", 5, 1)
    assert len({h.val_auc for h in res.history}) == 1
    # ...while a budget shorter than the patience ends at max_epochs.
    short = training.RunConfig(**{**cfg.__dict__, "max_epochs": 3})
    assert finetune(copy.deepcopy(src.module), data_, short).stop_reason == "max_epochs"


def test_diverged_run_is_recorded_and_left_out_of_the_ground_truth(tiny, breast, tmp_path):
    store = training.RunStore(tmp_path / "d.sqlite")
    cfg = training.RunConfig(lr=1e30, weight_decay=0.0, momentum=0.9, batch_size=32,
                             max_epochs=5, patience=5, image_size=28)
    key, res = training.run_one(tiny, breast, cfg, store)
    assert (res.stop_reason, res.epochs_run, res.best_epoch) == ("diverged", 1, None)
    row = store.run(key)
    assert row["status"] == "finished" and row["val_loss"] is None and row["test_auc"] is None
    assert math.isnan(store.epochs(key)[0]["train_loss"] or math.nan)
    with pytest.raises(ValueError, match="none of the 1 runs has a val_loss"):
        training.ground_truth(store)
    ok = training.RunConfig(**{**cfg.__dict__, "lr": 0.05, "max_epochs": 2})
    key2, res2 = training.run_one(tiny, breast, ok, store)
    assert training.ground_truth(store).values[0, 0] == res2.test_auc
    store.close()


def test_same_seed_same_auc(tiny, breast, tmp_path):
    cfg = small_grid(lr=[0.05]).expand("breastmnist")[0]
    prepared = prepare_target(breast.train, breast.val, breast.test, image_size=28,
                              mean=tiny.mean, std=tiny.std)
    import copy
    a = finetune(copy.deepcopy(tiny.module), prepared, cfg)
    b = finetune(copy.deepcopy(tiny.module), prepared, cfg)
    assert a.test_auc == b.test_auc and a.val_loss == b.val_loss
    np.testing.assert_array_equal(a.predictions["test"][1], b.predictions["test"][1])
    c = finetune(copy.deepcopy(tiny.module), prepared,
                 training.RunConfig(**{**cfg.__dict__, "seed": 43}))
    assert not np.array_equal(a.predictions["test"][1], c.predictions["test"][1])


def test_eval_inputs_are_the_scoring_pipeline(tiny, breast):
    prepared = prepare_target(breast.train, breast.val, breast.test, image_size=56,
                              mean=tiny.mean, std=tiny.std)
    ref = data.preprocess(breast.test.images, mean=tiny.mean, std=tiny.std, size=56)
    np.testing.assert_array_equal(prepared.test_inputs.numpy(), ref)
    assert prepared.train_images.dtype == torch.uint8 and prepared.train_images.shape[1:] == (3, 56, 56)


def test_lowest_validation_loss_selection(tmp_path):
    st = training.RunStore(tmp_path / "sel.sqlite")
    base = dict(source_sha256="w", target_sha256="d", weight_decay=0.0, momentum=0.9,
                nesterov=1, batch_size=32, max_epochs=3, patience=3, image_size=28, dropout=0.5,
                augment=1, resize_filter="bilinear", seed=42, config_json="{}")
    runs = [  # (source, target, val_loss, test_auc)
        ("a", "t1", 0.40, 0.71), ("a", "t1", 0.30, 0.62), ("a", "t1", None, 0.99),
        ("b", "t1", 0.50, 0.80), ("a", "t2", 0.20, 0.55), ("a", "t2", 0.20, 0.66),
    ]
    for i, (s, t, loss, auc) in enumerate(runs):
        key = f"k{i}"
        st.start_run(key, dict(base, source=s, target=t, lr=0.1 / (i + 1),
                               source_sha256=f"w{s}", target_sha256=f"d{t}"))
        st.finish_run(key, {"val_loss": loss, "test_auc": auc}, {})
    st.start_run("k9", dict(base, source="b", target="t2", lr=1.0, source_sha256="wb",
                            target_sha256="dt2"))  # in flight: not counted
    truth = training.ground_truth(st)
    assert truth.sources == ("a", "b") and truth.targets == ("t1", "t2")
    # lowest loss wins (0.30 -> 0.62), a run without a loss is skipped, ties: first started
    np.testing.assert_array_equal(truth.values, [[0.62, 0.55], [0.80, np.nan]])
    st.close()
    # The CLI writes the same table as a CSV that `evaluate` reads.
    out = tmp_path / "truth.csv"
    res = CliRunner().invoke(main, ["finetune", "summarize", "--store", str(tmp_path / "sel.sqlite"),
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    back = read_table(out)
    assert back.sources == truth.sources and back.targets == truth.targets
    np.testing.assert_array_equal(back.values, truth.values)


def test_a_name_for_two_models_is_refused(tmp_path):
    st = training.RunStore(tmp_path / "two.sqlite")
    base = dict(target="t", target_sha256="d", lr=0.1, weight_decay=0.0, momentum=0.9,
                nesterov=1, batch_size=32, max_epochs=3, patience=3, image_size=28, dropout=0.5,
                augment=1, resize_filter="bilinear", seed=42, config_json="{}")
    for key, sha in (("x", "w1"), ("y", "w2")):
        st.start_run(key, dict(base, source="same", source_sha256=sha))
        st.finish_run(key, {"val_loss": 0.1, "test_auc": 0.5}, {})
    with pytest.raises(ValueError, match="two different models"):
        training.ground_truth(st)
    st.close()


# --------------------------------------------------------------------------- sources


def test_sources_heads_and_checkpoints(tiny_dir, tmp_path):
    r18 = training.load_source("resnet18")
    assert r18.name == "resnet18" and r18.mean == (0.5, 0.5, 0.5)
    assert r18.identity["weights_sha256"] == training.load_source("resnet18").identity["weights_sha256"]
    x = torch.zeros(1, 3, 28, 28)
    import copy
    assert training.find_head(r18.module, x) == "fc"
    mob = training.load_source("mobilenet_v3_small", normalisation="imagenet")
    assert mob.mean == data.IMAGENET_MEAN
    m = copy.deepcopy(mob.module)
    assert training.replace_head(m, 3, torch.zeros(1, 3, 64, 64)) == "classifier.3"
    assert isinstance(m.classifier[3][0], nn.Dropout) and m.classifier[3][1].out_features == 3
    block = copy.deepcopy(mob.module)  # --head classifier: the whole block, features of 576
    training.replace_head(block, 4, torch.zeros(1, 3, 64, 64), head="classifier")
    assert [type(c) for c in block.classifier] == [nn.Dropout, nn.Linear]
    assert block.classifier[1].in_features == 576
    with pytest.raises(ValueError, match="not a module path"):
        training.replace_head(copy.deepcopy(mob.module), 4, torch.zeros(1, 3, 64, 64), head="fc")
    # A state-dict checkpoint with --arch: same weights, its file hash recorded.
    src = training.load_source("tiny_models:tiny")
    torch.manual_seed(5)
    trained = src.module.__class__(*src.module.children())
    for p in trained.parameters():
        p.data.normal_()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"net": trained.state_dict()}, ckpt)
    loaded = training.load_source(str(ckpt), arch="tiny_models:tiny")
    assert loaded.identity["weights_sha256"] == training.weights_sha256(trained)
    assert loaded.identity["checkpoint_sha256"] is not None
    assert loaded.key() != src.key()


def test_exported_model_directory_is_rebuilt_from_its_manifest(tiny_dir, tmp_path):
    exporters = pytest.importorskip("gradnca_onnx.exporters")
    src = training.load_source("tiny_models:tiny")
    ckpt = tmp_path / "tiny_ckpt.pt"
    torch.manual_seed(3)
    for p in src.module.parameters():
        p.data.normal_()
    torch.save(src.module.state_dict(), ckpt)
    from gradnca_onnx.sources import load_factory

    loaded = load_factory("tiny_models:tiny", ckpt)
    model_dir = Path(exporters.export_model(loaded, tmp_path / "zoo", name="tiny-x",
                                            input_size=28, pretrained_on="test"))
    # A factory source is code named by the zoo file: refused without trust_code (issue 15).
    with pytest.raises(ValueError, match="--trust-code"):
        training.load_source(model_dir)
    # The checkpoint is found beside the zoo (its sha256 checked against the manifest)...
    rebuilt = training.load_source(model_dir, trust_code=True)
    assert rebuilt.name == "tiny-x" and rebuilt.mean == (0.5, 0.5, 0.5)
    assert rebuilt.identity["weights_sha256"] == training.weights_sha256(loaded.module)
    # ...or given explicitly; without it the directory is refused with a clear message.
    moved = tmp_path / "elsewhere" / ckpt.name
    moved.parent.mkdir()
    ckpt.rename(moved)
    with pytest.raises(ValueError, match="cannot be fine-tuned.*--checkpoint"):
        training.load_source(model_dir, trust_code=True)
    again = training.load_source(model_dir, checkpoint=moved, trust_code=True)
    assert again.key() == rebuilt.key()
    other = tmp_path / "other.pt"
    torch.save(training.load_source("tiny_models:tiny").module.state_dict(), other)
    with pytest.raises(ValueError, match="does not match the sha256"):
        training.load_source(model_dir, checkpoint=other, trust_code=True)


# --------------------------------------------------------------------------- CLI


def _cli(*args: str):
    return CliRunner().invoke(main, ["finetune", *args])


def test_cli_grid_and_summarize(tiny_dir, tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": "quick", "lr": [0.1], "weight_decay": [0],
                                "max_epochs": 2, "patience": 2}))
    store = tmp_path / "cli.sqlite"
    args = ["--source", "tiny_models:tiny", "--target", str(BREAST), "--store", str(store),
            "--preset", str(grid), "--source-name", "tiny", "--threads", "1"]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert "1 runs: 1 done now, 0 already" in res.stdout
    # standard error is not a terminal here (a batch job's log): one line per run as it ends
    run_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("gradnca-onnx finetune: [")]
    assert len(run_lines) == 1 and "[1/1] " in run_lines[0] and "test AUC 0." in run_lines[0]
    assert " in " in run_lines[0] and run_lines[0].endswith(" s")
    quiet = _cli(*args[:-4], "--source-name", "tiny3", "--threads", "1", "--no-progress")
    assert "gradnca-onnx finetune:" not in quiet.stderr
    res = _cli(*args[:-4], "--source-name", "tiny2", "--threads", "1")
    assert "0 done now, 1 already" in res.stdout
    res = _cli("summarize", "--store", str(store))
    assert res.exit_code == 0
    lines = res.stdout.strip().splitlines()
    assert lines[0] == ",source,breastmnist" and lines[1].startswith("0,tiny2,0.")


def _bad_one_class(tmp_path: Path) -> Path:
    with np.load(BREAST) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test_labels"] = np.zeros_like(arrays["test_labels"])
    path = tmp_path / "oneclass.npz"
    np.savez(path, **arrays)
    return path


def test_cli_bad_input_is_one_line_and_exit_2(tiny_dir, tmp_path):
    notdb = tmp_path / "notes.sqlite"
    notdb.write_text("not a database, just text\n" * 20)
    junk_ckpt = tmp_path / "junk.pt"  # a truncated checkpoint
    torch.save(training.load_source("tiny_models:tiny").module.state_dict(), junk_ckpt)
    junk_ckpt.write_bytes(junk_ckpt.read_bytes()[:1000])
    good = ["--target", str(BREAST), "--store", str(tmp_path / "ok.sqlite")]
    cases = [
        (["--source", "tiny_models:tiny", "--target", str(_bad_one_class(tmp_path)),
          "--store", str(tmp_path / "s.sqlite")], "only 1 class"),
        (["--source", "resnet1800", *good], "not a file, a directory or a torchvision"),
        (["--source", str(junk_ckpt), "--arch", "resnet18", *good], "could not be read"),
        (["--source", str(junk_ckpt), *good], "needs --arch"),
        (["--source", "tiny_models:nothing", *good], "not a callable"),
        (["--source", "tiny_models:tiny", "--target", str(BREAST), "--store", str(notdb)],
         "not a SQLite database"),
        (["--source", "tiny_models:tiny", *good, "--preset", "fast"], "neither a preset"),
        (["--source", "tiny_models:tiny", "--target", str(tmp_path / "none.npz"),
          "--store", str(tmp_path / "s.sqlite")], "does not exist"),
        (["--source", "tiny_models:tiny"], "needs --target, --store"),
    ]
    for args, match in cases:
        res = _cli(*args)
        assert res.exit_code == 2, (args, res.output)
        err = res.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("Error:") and match in err, err
    res = _cli("summarize", "--store", str(notdb))
    assert res.exit_code == 2 and "not a SQLite database" in res.stderr
    assert not (tmp_path / "ok.sqlite").exists()  # nothing created for a failed start


def test_killed_grid_resumes_and_loses_at_most_the_run_in_flight(tiny_dir, tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": "quick", "lr": [0.1, 0.05, 0.02, 0.01],
                                "weight_decay": [0], "max_epochs": 8, "patience": 8}))
    store = tmp_path / "kill.sqlite"
    args = ["--source", "tiny_models:tiny", "--target", str(BREAST), "--store", str(store),
            "--preset", str(grid), "--source-name", "tiny", "--threads", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tiny_dir), str(ROOT)]))
    proc = subprocess.Popen([sys.executable, "-m", "gradnca_onnx", "finetune", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def state():
        if not store.exists():
            return {}, 0
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
        try:
            rows = dict(db.execute("SELECT run_key, status FROM runs").fetchall())
            running = db.execute("SELECT COUNT(*) FROM epochs e JOIN runs r USING (run_key) "
                                 "WHERE r.status = 'running'").fetchone()[0]
        except sqlite3.OperationalError:  # schema not written yet
            return {}, 0
        finally:
            db.close()
        return rows, running

    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            rows, running_epochs = state()
            if list(rows.values()).count("finished") >= 1 and running_epochs >= 1:
                break
            assert proc.poll() is None, "the grid ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the grid made no progress in 120 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with training.RunStore(store) as st:
        assert st._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = {r["run_key"]: r for r in st.runs()}
    finished = {k: r for k, r in before.items() if r["status"] == "finished"}
    in_flight = [k for k, r in before.items() if r["status"] == "running"]
    assert len(finished) >= 1 and len(in_flight) == 1 and len(before) == len(finished) + 1
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert f"{4 - len(finished)} done now, {len(finished)} already" in res.stdout
    with training.RunStore(store) as st:
        after = {r["run_key"]: r for r in st.runs()}
        assert len(after) == 4 and all(r["status"] == "finished" for r in after.values())
        for k, r in finished.items():  # finished runs were not redone
            assert after[k]["finished_at"] == r["finished_at"] and after[k]["attempts"] == 1
            assert after[k]["test_auc"] == r["test_auc"]
        assert after[in_flight[0]]["attempts"] == 2  # the run in flight was redone
        assert len(st.epochs(in_flight[0])) == after[in_flight[0]]["epochs_run"]


def test_folder_target_is_split_deduplicated_and_resized(tiny, tmp_path):
    import shutil

    mri = MRI_FEW
    root = tmp_path / "mri"
    for cls in ("glioma", "meningioma", "pituitary"):
        (root / cls).mkdir(parents=True)
        for f in sorted((mri / cls).iterdir())[:10]:
            shutil.copy(f, root / cls / f.name)
    shutil.copy(root / "glioma" / sorted(p.name for p in (root / "glioma").iterdir())[0],
                root / "glioma" / "zz_duplicate.jpg")
    splits = training.load_target_splits(root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)  # 30 unique
    assert "stratified 60/20/20" in splits.description and splits.name == "mri"
    cfg = training.RunConfig(lr=0.05, weight_decay=0.0, momentum=0.9, batch_size=8,
                             max_epochs=2, patience=2, image_size=32)
    with training.RunStore(tmp_path / "f.sqlite") as st:
        key, res = training.run_one(tiny, splits, cfg, st)
        y, p = st.predictions(key, "test")
        assert p.shape == (6, 3)
        assert res.test_auc == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)


def test_store_and_summary_work_without_torch(tmp_path, run_without_torch):
    st = training.RunStore(tmp_path / "nt.sqlite")
    st.start_run("k", dict(source="s", source_sha256="w", target="t", target_sha256="d", lr=0.1,
                           weight_decay=0.0, momentum=0.9, nesterov=1, batch_size=32,
                           max_epochs=3, patience=3, image_size=28, dropout=0.5, augment=1,
                           resize_filter="bilinear", seed=42, config_json="{}"))
    st.finish_run("k", {"val_loss": 0.3, "test_auc": 0.75}, {})
    st.close()
    res = run_without_torch("from gradnca_onnx import training\n"
                            f"print(training.ground_truth({str(tmp_path / 'nt.sqlite')!r}).values[0, 0])\n"
                            "from gradnca_onnx.cli import main\n"
                            f"main(['finetune', 'summarize', '--store', {str(tmp_path / 'nt.sqlite')!r}])\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["0.75", ",source,t", "0,s,0.75"]


@pytest.mark.slow
def test_resnet18_quick_preset_on_breastmnist(tmp_path):
    """The full quick preset with a real architecture (minutes on a 2-core CPU)."""
    out = training.run_grid("resnet18", BREAST, "quick", tmp_path / "q.sqlite")
    assert out.finished == 6
    truth = training.ground_truth(tmp_path / "q.sqlite")
    assert 0.5 < truth.values[0, 0] <= 1.0


def test_best_weights_restore_for_versioned_modules(breast):
    """MNASNet refuses a state dict without torch's module versions; restoring the
    best-validation weights at the end of a run must keep them (it once did not)."""
    import torchvision

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(num_classes=5)
    cfg = training.RunConfig(lr=0.01, weight_decay=0.0, momentum=0.9, batch_size=64,
                             max_epochs=2, patience=2, image_size=28, augment=False)
    prepared = prepare_target(breast.train, breast.val, breast.test, image_size=28,
                              mean=(0.5,) * 3, std=(0.5,) * 3)
    res = finetune(model, prepared, cfg)
    assert res.best_epoch in (1, 2) and np.isfinite(res.test_auc)
    # The model holds the best epoch's weights: evaluating it again gives the stored AUC.
    _, auc, _, _ = training.evaluate(model, prepared.test_inputs, prepared.test_labels,
                                     prepared.task)
    assert auc == pytest.approx(res.test_auc, abs=1e-12)
