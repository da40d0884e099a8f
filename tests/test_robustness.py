"""Bad, damaged or hostile inputs and concurrent use: labels, graphs that contradict their
manifest, damaged cache entries, output paths, modes under the umask, code named by a zoo, files
outside a model directory, BLAS threads and forced publishing. Each test failed before its fix.

Small inputs only: two demo-zoo members and 30-image targets, CLI called in-process.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _support import (DEMO_ZOO, copy_zoo, edit_manifest, rehash, small_arrays,
                      small_target, snapshot)
from gradnca_onnx.cli import main
from gradnca_onnx.data import load_target
from gradnca_onnx.engine import FeatureCache, rank_zoo
from gradnca_onnx.engine.cache import cache_key


def _error_line(res) -> str:
    """The single ``Error:`` line of a failed command (asserting there is exactly one)."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


def _rank(*args: str):
    return CliRunner().invoke(main, ["rank", "--quiet", *args])


@pytest.fixture
def zoo(tmp_path) -> Path:
    return copy_zoo(tmp_path / "zoo")


@pytest.fixture
def target(tmp_path) -> Path:
    return small_target(tmp_path / "small.npz")


# --------------------------------------------------------------------------- labels


def test_huge_label_is_refused_without_allocating(tmp_path) -> None:
    arrays = small_arrays()
    labels = arrays["train_labels"].astype(np.float64)
    labels[3] = 1e12
    p = small_target(tmp_path / "huge.npz", train_labels=labels)
    with pytest.raises(ValueError, match="too large"):
        load_target(p)


def test_string_labels_are_one_line(tmp_path) -> None:
    labels = np.array([["a"], ["b"]] * 15)
    p = small_target(tmp_path / "str.npz", train_labels=labels)
    with pytest.raises(ValueError, match="labels must be integers"):
        load_target(p)


def test_nan_label_and_alpha_channel_messages(tmp_path) -> None:
    labels = small_arrays()["train_labels"].astype(np.float64)
    labels[0] = np.nan
    with pytest.raises(ValueError, match="labels must be integers"):
        load_target(small_target(tmp_path / "nan.npz", train_labels=labels))
    rgba = np.zeros((30, 28, 28, 4), np.uint8)
    with pytest.raises(ValueError, match="alpha channel") as info:
        load_target(small_target(tmp_path / "rgba.npz", train_images=rgba))
    assert "3-D volumes" not in str(info.value)


# --------------------------------------------------------------------------- graphs


def test_manifest_contradicting_its_graph_fails_that_member_only(zoo, target) -> None:
    edit_manifest(zoo / "adrenal", lambda d: d["input"].update(height=32, width=32))
    ranking = rank_zoo(zoo, load_target(target), cache=FeatureCache(None))
    by = {m.name: m for m in ranking.models}
    assert by["retina"].ok and by["retina"].rank == 1
    assert "shape" in by["adrenal"].error and "re-export" in by["adrenal"].error
    line = _error_line(_rank("--zoo", str(zoo), "--target", str(target), "--no-cache",
                             "--models", "adrenal"))
    assert "adrenal" in line


def test_onnxruntime_run_errors_become_value_errors() -> None:
    from gradnca_onnx.io.sessions import run_session
    import onnxruntime as ort

    sess = ort.InferenceSession(str(DEMO_ZOO / "adrenal" / "features.onnx"),
                                providers=["CPUExecutionProvider"])
    bad = np.zeros((2, 1, 28, 28), np.float32)  # 1 channel for a 3-channel graph
    with pytest.raises(ValueError, match="onnxruntime cannot run"):
        run_session(sess, ["features"], {"images": bad}, where="features.onnx")


def test_swapped_graph_is_reported_in_one_line(zoo, target) -> None:
    shutil.copy(zoo / "adrenal" / "grads.onnx", zoo / "adrenal" / "features.onnx")
    rehash(zoo / "adrenal", "features.onnx")
    ranking = rank_zoo(zoo, load_target(target), cache=FeatureCache(None))
    err = {m.name: m for m in ranking.models}["adrenal"].error
    assert "graph inputs are" in err and "cotangent" in err and "\n" not in err


def test_feature_dim_contradicting_the_graph_is_refused(zoo, target) -> None:
    edit_manifest(zoo / "adrenal", lambda d: d.update(feature_dim=999))
    ranking = rank_zoo(zoo, load_target(target), cache=FeatureCache(None))
    err = {m.name: m for m in ranking.models}["adrenal"].error
    assert "feature" in err and "999" in err


# --------------------------------------------------------------------------- cache


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.npz"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_cache_entry_is_recomputed(zoo, target, tmp_path, damage) -> None:
    cache = FeatureCache(tmp_path / "cache")
    data = load_target(target)
    first = rank_zoo(zoo, data, cache=cache, models=["retina"])
    (entry,) = _entries(tmp_path / "cache")
    blob = bytearray(entry.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        for i in range(100, len(blob), 97):
            blob[i] ^= 0xFF
    entry.write_bytes(bytes(blob))
    again = rank_zoo(zoo, data, cache=cache, models=["retina"])
    assert again.models[0].ok and not again.models[0].cached
    assert again.models[0].lp == first.models[0].lp
    third = rank_zoo(zoo, data, cache=cache, models=["retina"])
    assert third.models[0].cached  # the damaged entry was overwritten


def test_cache_key_holds_package_onnxruntime_and_providers(zoo, target, tmp_path,
                                                              monkeypatch) -> None:
    import gradnca_onnx

    cache = FeatureCache(tmp_path / "cache")
    data = load_target(target)
    rank_zoo(zoo, data, cache=cache, models=["retina"])
    assert rank_zoo(zoo, data, cache=cache, models=["retina"]).models[0].cached
    monkeypatch.setattr(gradnca_onnx, "__version__", "99.0")
    assert not rank_zoo(zoo, data, cache=cache, models=["retina"]).models[0].cached
    (meta,) = [e.meta for e in cache.entries() if e.meta.get("package") == "99.0"]
    assert meta["onnxruntime"] and meta["providers"] == ["CPUExecutionProvider"]
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_cache_ls_and_clear(zoo, target, tmp_path) -> None:
    root = tmp_path / "cache"
    rank_zoo(zoo, load_target(target), cache=FeatureCache(root))
    (root / "keep.txt").write_text("not the cache's")
    res = CliRunner().invoke(main, ["cache", "ls", "--cache", str(root)])
    assert res.exit_code == 0 and "retina" in res.output and "adrenal" in res.output
    assert "onnxruntime" in res.output
    res = CliRunner().invoke(main, ["cache", "clear", "--cache", str(root)])
    assert res.exit_code == 0 and "removed 2 entries" in res.output
    assert _entries(root) == [] and (root / "keep.txt").exists()


# --------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("where", ["under_file", "missing_dir", "read_only", "is_dir"])
def test_bad_out_fails_before_the_work(zoo, target, tmp_path, where) -> None:
    (tmp_path / "afile").write_text("x")
    out = {"under_file": tmp_path / "afile" / "r.csv", "missing_dir": tmp_path / "no" / "r.csv",
           "read_only": Path("/sys/gradnca-r.csv"), "is_dir": tmp_path}[where]
    if where == "read_only" and not Path("/sys").is_dir():
        pytest.skip("no read-only /sys here")
    res = _rank("--zoo", str(zoo), "--target", str(target), "--out", str(out),
                "--cache", str(tmp_path / "cache"))
    line = _error_line(res)
    assert "--out" in line and ".tmp" not in line
    assert not (tmp_path / "cache").exists()  # nothing was computed


def test_cache_pointing_at_a_file(zoo, target, tmp_path, monkeypatch) -> None:
    f = tmp_path / "cachefile"
    f.write_text("x")
    line = _error_line(_rank("--zoo", str(zoo), "--target", str(target), "--cache", str(f)))
    assert "--cache" in line and "is a file" in line  # click's own check of the option
    monkeypatch.setenv("GRADNCA_CACHE", str(f))
    line = _error_line(_rank("--zoo", str(zoo), "--target", str(target)))
    assert "GRADNCA_CACHE" in line and f.read_text() == "x"


# --------------------------------------------------------------------------- messages that name the way out


def test_fold_message_names_the_way_out() -> None:
    from gradnca_onnx.data import make_paper_folds

    with pytest.raises(ValueError, match="--fold 0") as info:
        make_paper_folds(np.arange(60) % 2, np.arange(20) % 2)
    assert "train_per_class" not in str(info.value).split(";")[-1]


@pytest.mark.parametrize("device", ["banana", "cuda:7"])
def test_finetune_bad_device_is_one_line_before_any_run(tmp_path, target, device) -> None:
    pytest.importorskip("torch")
    store = tmp_path / "runs.sqlite"
    res = CliRunner().invoke(main, ["finetune", "--source", "resnet18", "--target", str(target),
                                    "--store", str(store), "--device", device, "--no-progress"])
    assert "--device" in _error_line(res)
    assert not store.exists()


def test_evaluate_alpha_out_of_range_with_one_method(tmp_path) -> None:
    truth = tmp_path / "t.csv"
    truth.write_text("source,a,b\ns1,0.1,0.2\ns2,0.3,0.1\ns3,0.5,0.9\n")
    res = CliRunner().invoke(main, ["evaluate", "--truth", str(truth), "--scores",
                                    f"m={truth}", "--alpha", "7"])
    assert "alpha" in _error_line(res)


# --------------------------------------------------------------------------- file modes


def test_written_files_and_model_dirs_respect_the_umask(tmp_path) -> None:
    from gradnca_onnx.io.atomic import atomic_write_text
    from gradnca_onnx.zoo.publish import publish, staging_dir

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        staging = staging_dir(tmp_path / "zoo", "m", force=False)
        (staging / "f").write_text("y")
        final = publish(staging, tmp_path / "zoo", "m", force=False)
        cache = FeatureCache(tmp_path / "cache")
        cache.save("ab" * 32, {"x": np.zeros(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert final.stat().st_mode & 0o777 == 0o755
    (entry,) = _entries(tmp_path / "cache")
    assert entry.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- no code run from a zoo


def test_factory_manifest_is_not_run_without_trust_code(tmp_path) -> None:
    pytest.importorskip("torch")
    from gradnca_onnx.training.source import load_source

    model = copy_zoo(tmp_path / "zoo", ["adrenal"]) / "adrenal"
    marker = tmp_path / "PWNED"

    def edit(d):
        d["source"] = {"kind": "factory", "reference": "subprocess:getoutput", "checkpoint": None,
                       "checkpoint_sha256": None,
                       "options": {"factory_kwargs": {"cmd": f"touch {marker}"}, "seed": 0}}

    edit_manifest(model, edit)
    with pytest.raises(ValueError, match="--trust-code"):
        load_source(model)
    res = CliRunner().invoke(main, ["finetune", "--source", str(model), "--target",
                                    str(small_target(tmp_path / "t.npz")), "--store",
                                    str(tmp_path / "s.sqlite"), "--no-progress"])
    assert "--trust-code" in _error_line(res)
    assert not marker.exists()


# --------------------------------------------------------------------------- confinement to the model directory


@pytest.mark.parametrize("checkpoint", ["/etc/passwd", "../../../etc/passwd", "sub/x.pt"])
def test_manifest_checkpoint_must_be_a_plain_name(tmp_path, checkpoint) -> None:
    pytest.importorskip("torch")
    from gradnca_onnx.training.source import load_source

    model = copy_zoo(tmp_path / "zoo", ["adrenal"]) / "adrenal"

    def edit(d):
        d["source"] = {"kind": "torchvision", "reference": "resnet18", "checkpoint": checkpoint,
                       "checkpoint_sha256": None, "options": {"seed": 0}}

    edit_manifest(model, edit)
    with pytest.raises(ValueError, match="plain file name"):
        load_source(model)


def test_graph_symlink_out_of_the_model_dir_is_refused(zoo, target, tmp_path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(zoo / "adrenal" / "features.onnx", outside)
    (zoo / "adrenal" / "features.onnx").unlink()
    (zoo / "adrenal" / "features.onnx").symlink_to(outside)
    ranking = rank_zoo(zoo, load_target(target), cache=FeatureCache(None))
    err = {m.name: m for m in ranking.models}["adrenal"].error
    assert "outside the model directory" in err


def test_unlisted_external_data_is_refused(zoo, target) -> None:
    import onnx

    model_dir = zoo / "adrenal"
    m = onnx.load(str(model_dir / "features.onnx"))
    onnx.save_model(m, str(model_dir / "features.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    rehash(model_dir, "features.onnx")
    ranking = rank_zoo(zoo, load_target(target), cache=FeatureCache(None))
    err = {m.name: m for m in ranking.models}["adrenal"].error
    assert "weights.bin" in err and "not listed" in err
    rehash(model_dir, "weights.bin")  # listed and hashed: accepted
    ranking = rank_zoo(zoo, load_target(target), cache=FeatureCache(None))
    assert {m.name: m for m in ranking.models}["adrenal"].ok


# --------------------------------------------------------------------------- threads


def test_blas_pin_holds_until_the_last_thread_leaves(monkeypatch) -> None:
    """Two threads in pinned blocks: when the first leaves, the second must stay pinned.

    The process-wide BLAS setting is modelled by a fake library controller (reading
    OpenBLAS's count from a worker thread is not reliable), so the test is deterministic.
    """
    from gradnca_onnx.core import _parallel

    blas = {"threads": 2}

    class FakeLibrary:
        @property
        def num_threads(self):
            return blas["threads"]

    class FakeController:
        lib_controllers = [FakeLibrary()]

        def select(self, **_):
            return self

    def fake_set(controller, n):
        blas["threads"] = n

    monkeypatch.setattr(_parallel, "ThreadpoolController", FakeController)
    monkeypatch.setattr(_parallel, "_set_blas_threads", fake_set)
    inside_b: list[int] = []
    a_in, a_out, b_entered = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with _parallel.single_threaded_blas():
            a_in.set()
            b_entered.wait(10)
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with _parallel.single_threaded_blas():
            b_entered.set()
            a_out.wait(10)
            inside_b.append(blas["threads"])  # A has left: B must still be pinned

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start(), tb.start()
    ta.join(20), tb.join(20)
    assert inside_b == [1]
    assert blas["threads"] == 2  # restored after the last one left


def test_concurrent_label_prediction_scores_are_bit_identical() -> None:
    from gradnca_onnx import label_prediction_score

    rng = np.random.default_rng(0)
    jobs = [(rng.normal(size=(160, 60)), rng.integers(0, 3, 160)) for _ in range(4)]
    alone = [label_prediction_score(x, y) for x, y in jobs]
    together: dict[int, float] = {}

    def run(i: int) -> None:
        together[i] = label_prediction_score(*jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(jobs))] == alone


# --------------------------------------------------------------------------- publishing


def test_forced_publish_swaps_atomically_and_cleans_leftovers(tmp_path, monkeypatch) -> None:
    import gradnca_onnx.zoo.publish as md

    zoo = tmp_path / "zoo"
    s1 = md.staging_dir(zoo, "m", force=False)
    (s1 / "v").write_text("1")
    md.publish(s1, zoo, "m", force=False)
    dead = zoo / ".m.999999.abcd1234.incoming"  # a killed export (no such process)
    dead.mkdir()
    s2 = md.staging_dir(zoo, "m", force=True)
    assert not dead.exists()
    (s2 / "v").write_text("2")
    real_replace = os.replace

    def no_final_rename(src, dst, *a, **k):  # the two-rename path would leave a gap here
        if Path(dst).name == "m" or Path(src).name == "m":
            raise AssertionError("publish renamed the live model aside")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(md.os, "replace", no_final_rename)
    md.publish(s2, zoo, "m", force=True)
    assert (zoo / "m" / "v").read_text() == "2"
    assert sorted(p.name for p in zoo.iterdir()) == ["m"]


def test_nothing_changes_on_bad_rank_input(zoo, tmp_path) -> None:
    """A failing command leaves the zoo and cache byte-identical."""
    cache = tmp_path / "cache"
    before = snapshot(zoo, cache)
    bad = small_target(tmp_path / "b.npz", train_labels=np.zeros((30, 1), np.uint8))
    _error_line(_rank("--zoo", str(zoo), "--target", str(bad), "--cache", str(cache)))
    assert snapshot(zoo, cache) == before


def test_fuzz_finding_mangled_npy_header_is_one_line(tmp_path) -> None:
    """Found by scripts/fuzz_long.py: a damaged .npy header inside the npz raised
    tokenize.TokenError from NumPy's header fallback instead of a ValueError."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **small_arrays(n_train=12))
    blob = bytearray(buf.getvalue())
    i = blob.index(b"'|u1', ")
    blob[i + 5] = ord("{")
    p = tmp_path / "mangled.npz"
    p.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="cannot be read"):
        load_target(p)
