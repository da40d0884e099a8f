"""Degenerate and extreme inputs of rank, evaluate and finetune: poisoned cache entries, batch
size 1, evaluate's degenerate inputs, deep nesting, thread counts, options without effect,
unreadable manifests and internal messages.

Every test here failed before its fix (see each docstring). Small inputs only: the demo zoo's
members on 30 BreastMNIST images, tiny torch models.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _support import copy_zoo, edit_manifest, small_target, snapshot
from gradnca_onnx.cli import main
from gradnca_onnx.data.load import load_target
from gradnca_onnx.engine import FeatureCache, RuntimeConfig, rank_zoo


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def error_lines(res) -> list[str]:
    return [ln for ln in res.output.splitlines() if ln.startswith("Error:")]


def one_error(res, *needles: str) -> str:
    """Exit 2, exactly one ``Error:`` line holding every needle, no traceback."""
    lines = error_lines(res)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exc_info)
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    """A one-model zoo (retina), a 30-image target and a cache holding its clean entry."""
    base = tmp_path_factory.mktemp("degenerate-inputs")
    zoo = copy_zoo(base / "zoo", ("retina",))
    target = small_target(base / "t.npz")
    cache = base / "cache"
    clean = rank_zoo(zoo, load_target(target), cache=FeatureCache(cache)).models[0]
    assert clean.ok and not clean.cached
    return {"zoo": zoo, "target": target, "cache": cache, "lp": clean.lp, "fu": clean.fu}


# --------------------------------------------------------------------------- poisoned cache entries


def _poison(entry: Path, **arrays) -> None:
    with np.load(entry) as f:
        data = {k: f[k] for k in f.files}
    data.update(arrays)
    with open(entry, "wb") as fh:
        np.savez(fh, **data)


def _features(entry: Path) -> np.ndarray:
    with np.load(entry) as f:
        return f["features"]


POISONS = {
    "lp-5": lambda e: _poison(e, lp=np.float64(5.0)),
    "lp-string": lambda e: _poison(e, lp=np.asarray("0.9")),
    "features-nan": lambda e: _poison(e, features=np.full_like(_features(e), np.nan)),
    "norms-inf": lambda e: _poison(e, grad_norms_w1=np.full(6, np.inf)),
    "norms-negative": lambda e: _poison(e, grad_norms_w2=-np.ones(6)),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_poisoned_cache_entry_is_recomputed_with_a_note(small, tmp_path, poison) -> None:
    """Before: S_LP 5.0 or the string '0.9' were scored as cached; NaN stopped the run."""
    cache = tmp_path / "cache"
    shutil.copytree(small["cache"], cache)
    (entry,) = cache.glob("*/*.npz")
    POISONS[poison](entry)
    data = load_target(small["target"])
    again = rank_zoo(small["zoo"], data, cache=FeatureCache(cache)).models[0]
    assert again.ok and not again.cached, again
    assert again.lp == small["lp"] and again.fu == pytest.approx(small["fu"], rel=1e-6)
    assert any("feature cache entry" in n and "was bad" in n and "recomputed" in n
               for n in again.notes), again.notes
    third = rank_zoo(small["zoo"], data, cache=FeatureCache(cache)).models[0]
    assert third.cached and third.lp == small["lp"]  # overwritten with the good entry
    assert not any("feature cache" in n for n in third.notes)


def test_directory_at_the_entry_path_is_a_note_not_an_error(small, tmp_path) -> None:
    """Before: the write onto the directory failed the member with a raw OS error."""
    cache = tmp_path / "cache"
    shutil.copytree(small["cache"], cache)
    (entry,) = cache.glob("*/*.npz")
    entry.unlink()
    (entry / "inside").mkdir(parents=True)
    result = rank_zoo(small["zoo"], load_target(small["target"]),
                      cache=FeatureCache(cache)).models[0]
    assert result.ok and not result.cached and result.lp == small["lp"], result
    assert any("not cached" in n and "a directory" in n for n in result.notes), result.notes
    assert (entry / "inside").is_dir()  # left as it is


# --------------------------------------------------------------------------- unreadable manifests and deep nesting


def _unreadable_link(path: Path) -> bool:
    """Make ``path`` a link to a regular /proc file whose read() fails with EINVAL, the
    "Error: a file: Invalid argument" of the issue; False where there is none."""
    for candidate in ("/proc/self/clear_refs", "/proc/self/attr/current"):
        try:
            with open(candidate, "rb") as f:
                f.read(16)
        except OSError as exc:
            if exc.errno == errno.EINVAL and Path(candidate).is_file():
                path.unlink()
                path.symlink_to(candidate)
                return True
    return False


def test_broken_manifests_are_listed_members_and_the_rest_ranked(small, tmp_path) -> None:
    """Before: a deeply nested manifest was a RecursionError (traceback), one that read()
    refuses was 'Error: a file: Invalid argument' (no file named), and a FIFO manifest made
    the member vanish from the listing without a word."""
    zoo = copy_zoo(tmp_path / "zoo", ("retina", "adrenal", "brain-mri", "pneumonia"))
    (zoo / "adrenal" / "manifest.json").write_text("[" * 100_000)
    (zoo / "pneumonia" / "manifest.json").unlink()
    os.mkfifo(zoo / "pneumonia" / "manifest.json")
    einval = _unreadable_link(zoo / "brain-mri" / "manifest.json")
    if not einval:
        (zoo / "brain-mri" / "manifest.json").write_bytes(b"\xff\xfe{")
    res = run("rank", "--quiet", "--no-cache", "--zoo", str(zoo), "--target",
              str(small["target"]), "--format", "json")
    assert res.exit_code == 0, res.output
    models = {m["model"]: m for m in json.loads(res.stdout)["models"]}
    assert models["retina"]["rank"] == 1 and models["retina"]["error"] is None
    errors = {name: models[name]["error"] for name in ("adrenal", "brain-mri", "pneumonia")}
    for name, error in errors.items():
        assert f"{name}/manifest.json" in error, (name, error)
    assert "nested more than 64 levels" in errors["adrenal"]
    assert "not a regular file" in errors["pneumonia"]
    assert ("Invalid argument" if einval else "not valid JSON") in errors["brain-mri"]
    ls = run("zoo", "ls", str(zoo))
    assert "Traceback" not in ls.output and "retina" in ls.output
    assert sum("BROKEN" in ln for ln in ls.output.splitlines()) == 3, ls.output


def test_nested_rank_json_is_one_line(tmp_path) -> None:
    """Before: RecursionError with thousands of lines of traceback."""
    (tmp_path / "truth.csv").write_text("source,a\ns1,0.1\ns2,0.3\ns3,0.5\n")
    (tmp_path / "r.json").write_text("[" * 100_000 + "]" * 100_000)
    res = run("evaluate", "--truth", str(tmp_path / "truth.csv"), "--rank",
              str(tmp_path / "r.json"))
    one_error(res, "r.json", "nested")


@pytest.mark.parametrize("name, text", [
    ("grid.yaml", "lr: " + "[" * 100_000),
    ("grid.yml", "".join("  " * i + f"k{i}:\n" for i in range(2000))),
    ("grid.json", '{"lr": ' + "[" * 100_000 + "0" + "]" * 100_000 + "}"),
], ids=["yaml-flow", "yaml-block", "json"])
def test_nested_grid_file_is_one_line_and_no_store(tmp_path, name, text) -> None:
    """Before: RecursionError from the YAML/JSON parser (3,000 lines of traceback)."""
    pytest.importorskip("torch")
    grid = tmp_path / name
    grid.write_text(text)
    target = small_target(tmp_path / "t.npz")
    store = tmp_path / "runs.sqlite"
    res = run("finetune", "--source", "resnet18", "--target", str(target), "--store",
              str(store), "--preset", str(grid))
    one_error(res, name, "nested more than 64")
    assert not store.exists()


def test_loader_counts_brackets_outside_strings_only() -> None:
    from gradnca_onnx.io.loaders import MAX_NESTING, json_depth, load_json, load_yaml

    assert json_depth('{"a": "[[[[{{{{", "b": [1, {"c": "]"}]}') == 3
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    ok = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert load_json(ok, "f") and load_yaml(ok, "f")
    for loader in (load_json, load_yaml):
        with pytest.raises(ValueError, match="f: nested more than 64"):
            loader(deep, "f")


# --------------------------------------------------------------------------- thread counts


def test_runtime_config_caps_threads_at_the_cores() -> None:
    """Before: RuntimeConfig(threads=1000) ran 1000 onnxruntime threads on 2 cores."""
    from gradnca_onnx.engine.runtime import available_cores

    with pytest.warns(UserWarning, match="threads 1000 is more than"):
        capped = RuntimeConfig(threads=1000)
    assert capped.threads == available_cores()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RuntimeConfig(threads=1).threads == 1 and RuntimeConfig().threads is None
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        RuntimeConfig(threads=0)


def test_rank_threads_1000_runs_sessions_with_the_cores(small, monkeypatch) -> None:
    """Before: every onnxruntime session got intra_op_num_threads = 1000."""
    from gradnca_onnx.engine import runtime

    seen = []
    real = runtime.session_options

    def spy(level, *, threads=None):
        seen.append(threads)
        return real(level, threads=threads)

    monkeypatch.setattr(runtime, "session_options", spy)
    res = run("rank", "--quiet", "--no-cache", "--zoo", str(small["zoo"]), "--target",
              str(small["target"]), "--threads", "1000")
    assert res.exit_code == 0, res.output
    cores = runtime.available_cores()
    assert seen and set(seen) == {cores}, seen
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith("Warning:")]
    assert len(warning) == 1 and "--threads 1000" in warning[0] and f"using {cores}" in warning[0]


def test_finetune_threads_are_capped(tmp_path, monkeypatch) -> None:
    """Before: torch.set_num_threads(1000)."""
    torch = pytest.importorskip("torch")
    from gradnca_onnx.engine.runtime import available_cores

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    res = run("finetune", "--source", str(tmp_path / "missing"), "--target",
              str(small_target(tmp_path / "t.npz")), "--store", str(tmp_path / "s.sqlite"),
              "--threads", "1000")
    one_error(res, "missing")
    assert seen == [available_cores()]
    assert "Warning: --threads 1000 is more than" in res.stderr


# --------------------------------------------------------------------------- options without effect or out of range


@pytest.mark.parametrize("args, needles", [
    (["--level", "7"], ["--level", "(0, 1)"]),
    (["--fraction", "-3"], ["--fraction", "(0, 1]"]),
    (["--level", "0.9"], ["--level", "only with --resamples"]),
    (["--seed", "3", "--fu-resample", "batches"], ["--seed", "--fu-resample", "--resamples"]),
])
def test_resample_options_without_resamples_are_refused(small, args, needles) -> None:
    """Before: ignored, exit 0 (the user believed they took effect)."""
    before = snapshot(small["zoo"])
    res = run("rank", "--quiet", "--no-cache", "--zoo", str(small["zoo"]), "--target",
              str(small["target"]), *args)
    one_error(res, *needles)
    assert snapshot(small["zoo"]) == before


def _rank_doc(schema: str) -> dict:
    return {"schema": schema, "target": {"name": "a"},
            "models": [{"model": f"s{i}", "score": float(i), "lp": 0.5, "fu": 1.0,
                        "metrics": {}, "error": None} for i in (1, 2, 3)]}


def test_unknown_rank_schema_is_refused(tmp_path) -> None:
    """Before: rank/99 was read as if it were rank/1."""
    (tmp_path / "truth.csv").write_text("source,a\ns1,0.1\ns2,0.3\ns3,0.5\n")
    (tmp_path / "r.json").write_text(json.dumps(_rank_doc("gradnca-onnx/rank/99")))
    res = run("evaluate", "--truth", str(tmp_path / "truth.csv"), "--rank",
              str(tmp_path / "r.json"))
    one_error(res, "r.json", "rank/99", "gradnca-onnx/rank/1", "gradnca-onnx/rank/2")
    (tmp_path / "r.json").write_text(json.dumps(_rank_doc("gradnca-onnx/rank/2")))
    ok = run("evaluate", "--truth", str(tmp_path / "truth.csv"), "--rank",
             str(tmp_path / "r.json"))
    assert ok.exit_code == 0, ok.output


TRUTH3 = "source,a,b,c\ns1,0.1,0.2,0.3\ns2,0.3,0.1,0.1\ns3,0.5,0.9,0.9\ns4,0.2,0.4,0.4\n"


def test_scores_missing_a_truth_target(tmp_path) -> None:
    """Before: a method missing a target the others score was refused naming the *other*
    file ('has extra target(s)'); a target no method scores was dropped without a word."""
    (tmp_path / "truth.csv").write_text(TRUTH3)
    (tmp_path / "ab.csv").write_text("source,a,b\ns1,1,2\ns2,3,1\ns3,5,9\ns4,2,4\n")
    (tmp_path / "a.csv").write_text("source,a\ns1,1\ns2,3\ns3,5\ns4,2\n")
    res = run("evaluate", "--truth", str(tmp_path / "truth.csv"), "--scores",
              f"m={tmp_path / 'ab.csv'}", "--scores", f"n={tmp_path / 'a.csv'}")
    one_error(res, "a.csv", "has no score for target(s) ['b']", "--truth")
    res = run("evaluate", "--truth", str(tmp_path / "truth.csv"), "--scores",
              f"m={tmp_path / 'ab.csv'}")
    assert res.exit_code == 0, res.output
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith("Warning:")]
    assert len(warning) == 1 and "['c']" in warning[0] and "truth.csv" in warning[0]


def test_alpha_too_small_and_seed_negative_say_which_option(tmp_path) -> None:
    """Before: 'Out of range float values are not JSON compliant: inf' and 'expected
    non-negative integer', naming no option."""
    (tmp_path / "truth.csv").write_text(TRUTH3)
    (tmp_path / "s.csv").write_text("source,a,b,c\ns1,1,2,3\ns2,3,1,1\ns3,5,9,9\ns4,2,4,4\n")
    res = run("evaluate", "--truth", str(tmp_path / "truth.csv"), "--scores",
              f"m={tmp_path / 's.csv'}", "--scores", f"n={tmp_path / 's.csv'}",
              "--alpha", "1e-300", "--format", "json")
    one_error(res, "--alpha", "too small")
    one_error(run("benchmark", "paper", "--seed", "-1", "--bootstrap", "10"), "--seed", ">=0")


def test_json_has_no_non_finite_numbers() -> None:
    from gradnca_onnx.evaluation import SourceTargetTable, evaluate

    truth = SourceTargetTable(("s1", "s2", "s3"), ("a", "b"), [[0.1, 0.2], [0.3, 0.1], [0.5, 0.9]])
    ev = evaluate(truth, {"m": truth, "n": truth.map_values(lambda v: -v)})
    broken = type(ev)(**{**ev.__dict__, "cd": float("inf"), "q": float("inf")})
    d = json.loads(broken.to_json())
    assert d["cd"] is None and d["q"] is None


def test_tiny_std_in_a_manifest_says_too_small(small, tmp_path) -> None:
    """Before: 'std must be positive; got (1e-300, ...)' for a positive std."""
    from gradnca_onnx.zoo import parse_normalisation

    zoo = copy_zoo(tmp_path / "zoo", ("retina", "adrenal"))
    edit_manifest(zoo / "adrenal", lambda d: d["input"].update(std=[1e-300] * 3))
    res = run("rank", "--quiet", "--no-cache", "--zoo", str(zoo), "--target",
              str(small["target"]), "--format", "json")
    assert res.exit_code == 0, res.output
    error = {m["model"]: m["error"] for m in json.loads(res.stdout)["models"]}["adrenal"]
    assert "'input.std'" in error and "too small" in error and "1e-06" in error, error
    with pytest.raises(ValueError, match="too small"):
        parse_normalisation("0.5,1e-300", 3)


# --------------------------------------------------------------------------- evaluate


def _evaluate_table(tmp_path: Path, truth: str, methods: dict[str, str], *extra: str):
    (tmp_path / "truth.csv").write_text(truth)
    args = ["evaluate", "--truth", str(tmp_path / "truth.csv")]
    for name, text in methods.items():
        (tmp_path / f"{name}.csv").write_text(text)
        args += ["--scores", f"{name}={tmp_path / f'{name}.csv'}"]
    res = run(*args, *extra)
    assert res.exit_code == 0, res.output
    return res


M1 = "source,a,b,c\ns1,1,2,3\ns2,3,1,1\ns3,5,3,9\ns4,2,4,4\n"
M2 = "source,a,b,c\ns1,4,2,1\ns2,3,1,2\ns3,2,3,3\ns4,1,4,4\n"
M3 = "source,a,b,c\ns1,2,1,3\ns2,1,2,1\ns3,4,3,9\ns4,3,4,4\n"
FLAT_B = "source,a,b,c\ns1,0.1,0.5,0.3\ns2,0.3,0.5,0.1\ns3,0.5,0.5,0.9\ns4,0.2,0.5,0.4\n"


def test_constant_truth_target_is_left_out_of_ranks_and_tests(tmp_path) -> None:
    """Before: target b (every source 0.5) added a block of three-way ties to the average
    ranks and the Friedman test."""
    res = _evaluate_table(tmp_path, FLAT_B, {"m1": M1, "m2": M2, "m3": M3}, "--format", "json")
    d = json.loads(res.stdout)
    assert all(d["rank"][m]["b"] is None for m in ("m1", "m2", "m3"))
    ranks = {m: [d["rank"][m]["a"], d["rank"][m]["c"]] for m in ("m1", "m2", "m3")}
    assert d["avg_rank"] == {m: pytest.approx(np.mean(r)) for m, r in ranks.items()}
    assert len(d["notes"]) == 1 and "'b'" in d["notes"][0] and "left out" in d["notes"][0]
    table = _evaluate_table(tmp_path, FLAT_B, {"m1": M1, "m2": M2, "m3": M3}).stdout
    assert "Note: target 'b'" in table and "nan" not in table


def test_tied_methods_say_the_test_is_undefined(tmp_path) -> None:
    """Before: 'Friedman test: chi2 = nan, p = nan'."""
    table = _evaluate_table(tmp_path, TRUTH3, {"m1": M1, "m2": M1, "m3": M1}).stdout
    assert "nan" not in table.lower()
    assert "Friedman test: undefined: every method has the same rank on every target" in table


def test_one_target_prints_no_critical_difference(tmp_path) -> None:
    """Before: 'CD = 18.245' and a Friedman line blaming methods, with one target."""
    one = {k: "\n".join(ln.split(",", 2)[0] + "," + ln.split(",")[1]
                        for ln in v.strip().splitlines()) + "\n"
           for k, v in {"m1": M1, "m2": M2, "m3": M3}.items()}
    truth = "\n".join(",".join(ln.split(",")[:2]) for ln in TRUTH3.strip().splitlines()) + "\n"
    table = _evaluate_table(tmp_path, truth, one).stdout
    assert "CD =" not in table
    assert "Friedman test: not computed: it needs at least two targets (got 1)" in table
    assert "Nemenyi critical difference: not computed: it needs at least two targets" in table


# --------------------------------------------------------------------------- batch size 1


TINY = """
import torch
from torch import nn


def tiny_bn(num_classes=2):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def tiny_plain(num_classes=2):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


class Blowup(nn.Module):
    def forward(self, x):
        return x * float("inf")


def tiny_inf(num_classes=2):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Blowup(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    import sys

    from gradnca_onnx import training

    d = tmp_path_factory.mktemp("tiny24")
    (d / "tiny24_models.py").write_text(TINY)
    sys.path.insert(0, str(d))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target = training.load_target_splits(small_target(d / "t.npz"), fold=None)
    yield training, target, d
    torch.set_num_threads(threads)
    sys.path.remove(str(d))


def _config(training, **kw):
    base = dict(lr=0.05, weight_decay=0.0, momentum=0.9, batch_size=1, max_epochs=1,
                patience=1, image_size=28, augment=False)
    return training.RunConfig(**{**base, **kw})


def test_batch_size_1_with_batchnorm_is_refused_before_any_run(tiny) -> None:
    """Before: every batch was skipped and the untrained model's AUC stored as finished."""
    training, target, d = tiny
    src = training.load_source("tiny24_models:tiny_bn", name="bn")
    grid = training.GridSpec(name="g", lr=(0.05,), weight_decay=(0.0,), momentum=(0.9,),
                             batch_size=(1,), max_epochs=1, patience=1, image_size=28,
                             augment=False)
    with training.RunStore(d / "bn.sqlite") as store:
        with pytest.raises(ValueError, match="batch size 1 cannot fine-tune bn: it has BatchNorm"):
            training.run_grid(src, target, grid, store)
        assert store.count("finished") == 0 and store.count("failed") == 0


def test_cli_batch_size_1_with_batchnorm_is_one_line_and_no_store(tiny, tmp_path) -> None:
    training, target, d = tiny
    store = tmp_path / "s.sqlite"
    res = run("finetune", "--source", "tiny24_models:tiny_bn", "--target",
              str(d / "t.npz"), "--fold", "0", "--store", str(store), "--batch-size", "1")
    one_error(res, "batch size 1", "BatchNorm", "--batch-size 2")
    assert not store.exists()


def test_batch_size_1_without_batchnorm_trains_on_every_image(tiny) -> None:
    """Before: no step was taken (train loss NaN), the run stored as finished anyway."""
    training, target, d = tiny
    src = training.load_source("tiny24_models:tiny_plain", name="plain")
    with training.RunStore(d / "plain.sqlite") as store:
        key, result = training.run_one(src, target, _config(training), store)
        assert store.run(key)["status"] == "finished"
        assert np.isfinite(result.history[0].train_loss)


def test_a_run_without_any_optimisation_step_fails(tiny) -> None:
    """Before: a model whose very first loss is not finite was stored as a finished
    'diverged' run with the untrained model's scores."""
    training, target, d = tiny
    src = training.load_source("tiny24_models:tiny_inf", name="inf")
    with training.RunStore(d / "inf.sqlite") as store:
        with pytest.raises(ValueError, match="no optimisation step"):
            training.run_one(src, target, _config(training, batch_size=8), store)
        assert store.count("finished") == 0 and store.count("failed") == 1
