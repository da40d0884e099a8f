"""Scale-out executors: Ray gives the local results, retries killed workers, resumes grids."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradnca_onnx.cli import main
from gradnca_onnx.data.load import load_target
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import RuntimeConfig, rank_zoo
from gradnca_onnx.executors import LocalExecutor, RayExecutor, make_executor, rank_targets

ray = pytest.importorskip("ray")

ZOO, TARGET = demo_paths()
# Both executors run onnxruntime and torch on one thread, so their float results can be
# compared bit for bit.
RUNTIME = RuntimeConfig(device="cpu", threads=1)

# Models for the worker-kill tests, importable by the Ray workers (PYTHONPATH is set before
# Ray starts). The first forward pass in any process creates the marker and kills that process,
# as the OOM killer or a lost node would; later passes train normally. The process that built
# the model (the test itself) is spared.
KILLER_SOURCE = '''
import os
from torch import nn


class DieOnce(nn.Module):
    def __init__(self, marker, num_classes=10):
        super().__init__()
        self.marker = marker
        self.spare = os.getpid()  # never kill the test process itself
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x):
        if os.getpid() == self.spare:
            return self.body(x)
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self.body(x)
        os._exit(1)


def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def to_int(text):
    return int(text)


def die_once(marker, value):
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return value * 10
    os._exit(1)
'''


@pytest.fixture(scope="module")
def helpers(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("executor_helpers")
    (d / "executor_helpers.py").write_text(KILLER_SOURCE)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


@pytest.fixture(scope="module")
def ray_cluster(helpers):
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(helpers), old]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _rows(ranking) -> list[dict]:
    rows = []
    for m in ranking.models:
        d = m.to_dict()
        d.pop("seconds")
        rows.append(d)
    return rows


# --------------------------------------------------------------------------- ranking


def test_ray_ranking_equals_local_and_rank_zoo(ray_cluster):
    targets = [load_target(TARGET, "train"), load_target(TARGET, "val", name="breast-val")]
    kw = dict(runtime=RUNTIME, metrics=["logme", "leep"])
    local = rank_targets(ZOO, targets, executor=LocalExecutor(), **kw)
    remote = rank_targets(ZOO, targets, executor=RayExecutor(), **kw)
    assert [r.target for r in remote] == ["breastmnist", "breast-val"]
    for lo, re in zip(local, remote):
        assert _rows(lo) == _rows(re)  # every number compared exactly
        assert len(lo.models) == 7 and all(m.ok and m.rank for m in lo.models)
    # The split of rank_zoo into score_entry + combine_zoo changed nothing.
    assert _rows(rank_zoo(ZOO, targets[1], **kw)) == _rows(remote[1])


def test_a_model_that_fails_is_reported_and_the_rest_are_ranked(ray_cluster, tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name in ("retina", "pneumonia"):
        os.symlink(ZOO / name, zoo / name)
    broken = zoo / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    rankings = rank_targets(zoo, [load_target(TARGET, "val")], executor=RayExecutor(),
                            runtime=RUNTIME)
    models = {m.name: m for m in rankings[0].models}
    assert models["broken"].error and models["broken"].rank is None
    assert models["retina"].rank and models["pneumonia"].rank


def test_cli_multi_target_csv_and_json_with_ray(ray_cluster, tmp_path):
    tdir = tmp_path / "targets"
    tdir.mkdir()
    for name in ("a", "b"):
        (tdir / f"{name}.npz").write_bytes(Path(TARGET).read_bytes())
    base = ["rank", "--zoo", str(ZOO), "--models", "retina,pneumonia", "--split", "val",
            "--no-cache", "--quiet", "--threads", "1", "--device", "cpu"]
    local = CliRunner().invoke(main, [*base, "--target", str(tdir), "--format", "csv"])
    assert local.exit_code == 0, local.output
    out = tmp_path / "all.csv"
    res = CliRunner().invoke(main, [*base, "--target", str(tdir / "a.npz"), "--target",
                                    str(tdir / "b.npz"), "--format", "csv", "--executor", "ray",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == local.stdout
    lines = local.stdout.splitlines()
    assert lines[0].startswith("target,rank,model,score") and len(lines) == 5
    assert [ln.split(",")[0] for ln in lines[1:]] == ["a", "a", "b", "b"]
    res = CliRunner().invoke(main, [*base, "--target", str(tdir), "--format", "json"])
    doc = json.loads(res.stdout)
    assert [r["target"]["name"] for r in doc["rankings"]] == ["a", "b"]
    res = CliRunner().invoke(main, [*base, "--target", str(tdir)])
    assert res.stdout.count("Target a (val") == 1 and res.stdout.count("Target b (val") == 1


# --------------------------------------------------------------------------- failures


def test_a_killed_worker_task_is_retried_and_bounded(ray_cluster, tmp_path, helpers):
    from executor_helpers import die_once

    ex = RayExecutor(max_retries=1)
    calls = [((str(tmp_path / "m1"), 1), {}), ((str(tmp_path / "ok"), 2), {})]
    (tmp_path / "ok").touch()  # the second task never dies
    outs = sorted(ex.map(die_once, calls), key=lambda o: o.index)
    assert [(o.ok, o.value) for o in outs] == [(True, 10), (True, 20)]
    assert (tmp_path / "m1").exists()  # the first attempt did die
    # Without retries the killed task is reported as failed and the other still finishes.
    ex0 = RayExecutor(max_retries=0)
    outs = sorted(ex0.map(die_once, [((str(tmp_path / "m2"), 3), {}), calls[1]]),
                  key=lambda o: o.index)
    assert not outs[0].ok and "worker died" in outs[0].error and "0 retries" in outs[0].error
    assert outs[1].ok and outs[1].value == 20


def test_a_task_exception_is_reported_not_retried(ray_cluster, helpers):
    from executor_helpers import to_int

    outs = list(RayExecutor(max_retries=3).map(to_int, [(("x",), {}), (("7",), {})]))
    by = {o.index: o for o in outs}
    assert by[0].error.startswith("ValueError: invalid literal") and by[1].value == 7
    local = list(LocalExecutor().map(to_int, [(("x",), {}), (("7",), {})]))
    assert [o.error for o in local] == [by[0].error, None]


def test_tasks_ask_for_a_gpu_only_when_useful_and_present():
    from gradnca_onnx.executors import task_gpus

    class Cluster:
        in_process = False

        def __init__(self, gpus):
            self.n = gpus

        def gpus(self):
            return self.n

    assert [task_gpus(Cluster(2), d) for d in ("cuda", "cuda:1", "auto", "cpu")] == [1, 1, 1, 0]
    assert [task_gpus(Cluster(0), d) for d in ("auto", "cpu")] == [0, 0]
    with pytest.raises(ValueError, match="needs a GPU but the Ray cluster has none"):
        task_gpus(Cluster(0), "cuda")
    assert task_gpus(LocalExecutor(), "cuda") == 0


def test_bad_executor_input_is_one_line_and_exit_2(monkeypatch):
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(ValueError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        make_executor("ray", address="127.0.0.1:1")
    for args, text in ((["--executor", "dask"], "unknown executor"),
                       (["--ray-address", "auto"], "--ray-address needs --executor ray"),
                       (["--executor", "ray", "--ray-address", "nowhere"], "must be 'auto'")):
        res = CliRunner().invoke(main, ["rank", "--demo", "--quiet", *args])
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and text in res.stderr, \
            res.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    res = CliRunner().invoke(main, ["rank", "--demo", "--quiet", "--executor", "ray"])
    assert res.exit_code == 2 and "pip install 'gradnca-onnx[ray]'" in res.stderr


# --------------------------------------------------------------------------- fine-tuning

torch = pytest.importorskip("torch")


def _grid(lrs):
    from gradnca_onnx.training.grid import grid_from_mapping

    return grid_from_mapping({"base": "quick", "lr": list(lrs), "weight_decay": [0.0],
                              "momentum": [0.9], "max_epochs": 2, "patience": 2}, name="t")


@pytest.fixture(scope="module")
def splits():
    from gradnca_onnx import training

    return training.load_target_splits(TARGET)


def _store_dump(path) -> list[tuple]:
    from gradnca_onnx import training

    keep = ("run_key", "status", "source", "target", "lr", "epochs_run", "best_epoch",
            "stop_reason", "val_auc", "val_loss", "val_acc", "test_auc", "test_loss", "test_acc")
    with training.RunStore(path) as st:
        out = []
        for row in sorted(st.runs(), key=lambda r: r["run_key"]):
            epochs = [{k: v for k, v in e.items() if k != "seconds"}
                      for e in st.epochs(row["run_key"])]
            y, p = st.predictions(row["run_key"], "test")
            out.append((tuple(row[k] for k in keep), epochs, y.tolist(), p.tobytes()))
        return out


def test_ray_grid_equals_local_grid_and_resumes(ray_cluster, helpers, splits, tmp_path):
    from gradnca_onnx import training
    from gradnca_onnx.executors import run_grid_on

    src = training.load_source("executor_helpers:tiny", name="tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = training.run_grid(src, splits, _grid([0.1, 0.01]), tmp_path / "local.sqlite")
    finally:
        torch.set_num_threads(threads)
    assert (local.finished, local.failed) == (2, 0)
    store = tmp_path / "ray.sqlite"
    first = run_grid_on(RayExecutor(), src, splits, _grid([0.1]), store, threads=1)
    assert (first.finished, first.skipped, first.failed) == (1, 0, 0)
    # Resuming with a larger grid runs only the new point.
    again = run_grid_on(RayExecutor(), src, splits, _grid([0.1, 0.01]), store, threads=1)
    assert (again.finished, again.skipped, again.failed) == (1, 1, 0)
    assert again.keys == local.keys
    assert _store_dump(store) == _store_dump(tmp_path / "local.sqlite")
    with training.RunStore(store) as st:
        assert [r["attempts"] for r in st.runs()] == [1, 1]


def test_grid_run_on_a_killed_worker_fails_then_resumes(ray_cluster, helpers, splits, tmp_path):
    from executor_helpers import DieOnce

    from gradnca_onnx import training
    from gradnca_onnx.executors import run_grid_on

    src = training.load_source(DieOnce(str(tmp_path / "died")), name="dies")
    store = tmp_path / "runs.sqlite"
    out = run_grid_on(RayExecutor(max_retries=0), src, splits, _grid([0.1, 0.01]), store,
                      threads=1)
    # One run's worker was killed: with no retry it is failed, the other run finished.
    assert (out.finished, out.failed) == (1, 1) and "worker died" in out.errors[0]
    with training.RunStore(store) as st:
        assert sorted(r["status"] for r in st.runs()) == ["failed", "finished"]
    out = run_grid_on(RayExecutor(max_retries=0), src, splits, _grid([0.1, 0.01]), store,
                      threads=1)
    assert (out.finished, out.skipped, out.failed) == (1, 1, 0)
    # With a retry, a run whose worker is killed finishes in the same call.
    (tmp_path / "died").unlink()
    fresh = tmp_path / "retry.sqlite"
    out = run_grid_on(RayExecutor(max_retries=1), src, splits, _grid([0.1]), fresh, threads=1)
    assert (out.finished, out.failed) == (1, 0) and (tmp_path / "died").exists()
    assert _store_dump(fresh)[0][0][1] == "finished"


def test_ctrl_c_leaves_the_store_consistent_and_resumable(ray_cluster, helpers, splits,
                                                         tmp_path):
    from gradnca_onnx import training
    from gradnca_onnx.executors import run_grid_on

    class StopAfterFirst:
        def grid_start(self, total, done):
            pass

        def run_end(self, config, result, skipped):
            raise KeyboardInterrupt  # Ctrl-C right after the first result was committed

    src = training.load_source("executor_helpers:tiny", name="tiny")
    store = tmp_path / "runs.sqlite"
    grid = _grid([0.1, 0.01])
    with pytest.raises(KeyboardInterrupt):
        run_grid_on(RayExecutor(), src, splits, grid, store, threads=1,
                    progress=StopAfterFirst())
    with training.RunStore(store) as st:
        assert [r["status"] for r in st.runs()] == ["finished"]
    out = run_grid_on(RayExecutor(), src, splits, grid, store, threads=1)
    assert (out.finished, out.skipped, out.failed) == (1, 1, 0)


def test_finetune_cli_with_ray_and_bad_executor_input(ray_cluster, helpers, tmp_path):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": "quick", "lr": [0.1], "weight_decay": [0],
                                "max_epochs": 2, "patience": 2}))
    store = tmp_path / "cli.sqlite"
    args = ["finetune", "--source", "executor_helpers:tiny", "--target", str(TARGET), "--store",
            str(store), "--preset", str(grid), "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--executor", "ray"])
    assert res.exit_code == 0, res.output
    assert "1 runs: 1 done now, 0 already" in res.stdout
    res = CliRunner().invoke(main, [*args, "--executor", "ray"])
    assert "0 done now, 1 already" in res.stdout
    for extra, text in ((["--executor", "dask"], "unknown executor"),
                        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
                        (["--executor", "ray", "--ray-address", "127.0.0.1:1"],
                         "cannot reach the Ray cluster")):
        res = CliRunner().invoke(main, [*args, *extra])
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and text in res.stderr, \
            res.output
