"""Table-driven bad-input test of the whole command line (issue 15).

Every row is one bad input a new user could give. For each: exit code 2, exactly one line
starting ``Error:``, no traceback, and the existing zoo, feature cache and run store
byte-identical afterwards. Commands run in-process (click's CliRunner) on small inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from _support import TRUTH, Ctx, edit_manifest, rehash, small_arrays, snapshot, write_npz
from gradnca_onnx.cli import main


def _png(value: int = 0, size: int = 28) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _labels(n: int, k: int = 2) -> np.ndarray:
    return (np.arange(n) % k).astype(np.uint8)


T = small_arrays()


def _swap_graph(m: Path) -> None:
    (m / "features.onnx").write_bytes((m / "grads.onnx").read_bytes())
    rehash(m, "features.onnx")


def _factory(m: Path) -> None:
    edit_manifest(m, lambda d: d.update(source={
        "kind": "factory", "reference": "subprocess:getoutput", "checkpoint": None,
        "checkpoint_sha256": None, "options": {"factory_kwargs": {"cmd": "true"}}}))


def _bad_checkpoint(m: Path) -> None:
    edit_manifest(m, lambda d: d.update(source={
        "kind": "torchvision", "reference": "resnet18", "checkpoint": "../../../etc/passwd",
        "checkpoint_sha256": None, "options": {"seed": 0}}))


#: (id, argv builder, substring the Error line must contain)
CASES: list[tuple[str, Callable[[Ctx], list[str]], str]] = [
    # ---- rank: arguments and zoo
    ("rank-no-args", lambda c: ["rank", "--quiet"], "--zoo"),
    ("rank-zoo-missing", lambda c: ["rank", "--quiet", "--zoo", str(c.tmp / "nozoo"),
                                    "--target", str(c.target), "--no-cache"], "nozoo"),
    ("rank-zoo-empty", lambda c: ["rank", "--quiet", "--zoo", str((c.tmp / "e").mkdir() or
                                                              c.tmp / "e"),
                                  "--target", str(c.target), "--no-cache"], "holds no model"),
    ("rank-zoo-is-file", lambda c: ["rank", "--zoo", c.file("z"), "--target", str(c.target)],
     "--zoo"),
    ("rank-unknown-model", lambda c: c.rank("--target", str(c.target), "--models", "nope"),
     "no model named"),
    ("rank-all-broken-json", lambda c: ["rank", "--quiet", "--zoo", c.broken_zoo(
        lambda m: (m / "manifest.json").write_text("{not json")), "--target", str(c.target),
        "--no-cache"], "not valid JSON"),
    ("rank-manifest-height", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                        str(c.target), "--zoo", c.broken_zoo(
        lambda m: edit_manifest(m, lambda d: d["input"].update(height=32)))], "shape"),
    ("rank-manifest-channels", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                          str(c.target), "--zoo", c.broken_zoo(
        lambda m: edit_manifest(m, lambda d: d["input"].update(channels=1, mean=[0.5],
                                                               std=[0.5])))], "shape"),
    ("rank-feature-dim-999", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                        str(c.target), "--zoo", c.broken_zoo(
        lambda m: edit_manifest(m, lambda d: d.update(feature_dim=999)))], "999"),
    ("rank-swapped-graph", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                      str(c.target), "--zoo", c.broken_zoo(_swap_graph)],
     "graph inputs"),
    ("rank-hash-mismatch", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                      str(c.target), "--zoo", c.broken_zoo(
        lambda m: (m / "grads.onnx").write_bytes(b"\0" * (m / "grads.onnx").stat().st_size))],
     "sha256"),
    ("rank-graph-symlink-out", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                          str(c.target), "--zoo", c.broken_zoo(
        lambda m: (Path(c.file("out.onnx", (m / "features.onnx").read_bytes())),
                   (m / "features.onnx").unlink(),
                   (m / "features.onnx").symlink_to(c.tmp / "out.onnx")))],
     "outside the model directory"),
    ("rank-manifest-newer-schema", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                              str(c.target), "--zoo", c.broken_zoo(
        lambda m: edit_manifest(m, lambda d: d.update(schema_version=99)))], "upgrade"),
    ("rank-manifest-bad-std", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                         str(c.target), "--zoo", c.broken_zoo(
        lambda m: edit_manifest(m, lambda d: d["input"].update(std=[0, 0, 0])))], "std"),
    ("rank-manifest-file-path", lambda c: ["rank", "--quiet", "--no-cache", "--target",
                                           str(c.target), "--zoo", c.broken_zoo(
        lambda m: edit_manifest(m, lambda d: d["files"].update(
            {"../x": {"sha256": "0" * 64, "bytes": 1}})))], "plain file name"),
    # ---- rank: the target
    ("target-missing", lambda c: c.rank("--target", str(c.tmp / "none.npz")), "does not exist"),
    ("target-text-file", lambda c: c.rank("--target", c.file("t.npz", b"hello")), "npz"),
    ("target-npy", lambda c: c.rank("--target", c.file("t.npz", b"\x93NUMPY" + b"\0" * 64)),
     ".npy"),
    ("target-truncated", lambda c: c.rank("--target", c.file(
        "t.npz", Path(c.target).read_bytes()[:3000])), "t.npz"),
    ("target-random-bytes", lambda c: c.rank("--target", c.file(
        "t.npz", b"PK" + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))),
     "corrupt, truncated"),  # not "pickled": NumPy's unpickling fallback (issue 24)
    ("target-unknown-keys", lambda c: c.rank("--target", str(write_npz(
        c.tmp / "k.npz", foo=np.zeros(3)))), "neither a MedMNIST"),
    ("target-one-class", lambda c: c.rank("--target", c.labels(np.zeros(30))), "class"),
    ("target-single-image-class", lambda c: c.rank("--target", c.labels(
        np.r_[np.zeros(29), 1])), "single image"),
    ("target-float-labels", lambda c: c.rank("--target", c.labels(np.linspace(0, 1, 30))),
     "integers"),
    ("target-nan-label", lambda c: c.rank("--target", c.labels(np.r_[np.nan, _labels(29)])),
     "integers"),
    ("target-huge-label", lambda c: c.rank("--target", c.labels(np.r_[1e12, _labels(29)])),
     "too large"),
    ("target-string-labels", lambda c: c.rank("--target", c.npz(
        train_labels=np.array([["a"], ["b"]] * 15))), "integers"),
    ("target-negative-label", lambda c: c.rank("--target", c.labels(np.r_[-1, _labels(29).astype(int)])),
     "0..C-1"),
    ("target-label-count", lambda c: c.rank("--target", c.npz(
        train_labels=_labels(12).reshape(-1, 1))), "shape"),
    ("target-multilabel", lambda c: c.rank("--target", c.npz(
        train_labels=np.eye(3, dtype=np.uint8)[_labels(30, 3)])), "multi-label"),
    ("target-rgba", lambda c: c.rank("--target", c.npz(
        train_images=np.zeros((30, 28, 28, 4), np.uint8))), "alpha"),
    ("target-2-channels", lambda c: c.rank("--target", c.npz(
        train_images=np.zeros((30, 28, 28, 2), np.uint8))), "alpha"),
    ("target-volume", lambda c: c.rank("--target", c.npz(
        train_images=np.zeros((30, 28, 28, 28), np.uint8))), "3-D"),
    ("target-float-images", lambda c: c.rank("--target", c.npz(
        train_images=T["train_images"].astype(np.float32))), "uint8"),
    ("target-too-few-images", lambda c: c.rank("--target", c.npz(
        train_images=T["train_images"][:5], train_labels=np.array([[0], [0], [1], [1], [1]]))),
     "at least 6"),
    ("target-bad-split", lambda c: c.rank("--target", str(c.target), "--split", "nope"),
     "unknown split"),
    ("target-fold-too-big", lambda c: c.rank("--target", str(c.target), "--split", "fold9"),
     "fold"),
    ("target-fold-too-few", lambda c: c.rank("--target", str(c.target), "--split", "fold1"),
     "--fold 0"),
    ("target-folder-one-class", lambda c: c.rank("--target", c.folder({"a": [_png()] * 3})),
     "one class"),
    ("target-folder-corrupt-image", lambda c: c.rank("--target", c.folder(
        {"a": [_png(1), b"not a png"], "b": [_png(2), _png(3)]})), "cannot read the image"),
    ("target-folder-empty-class", lambda c: c.rank("--target", c.folder(
        {"a": [_png(1), _png(2)], "b": []})), "holds no images"),
    ("target-folder-sizes-differ", lambda c: c.rank("--target", c.folder(
        {"a": [_png(1), _png(2, 30)], "b": [_png(3), _png(4)]})), "differ in size"),
    ("target-no-resize", lambda c: c.rank("--target", c.npz(
        train_images=np.repeat(np.repeat(T["train_images"], 2, 1), 2, 2)), "--no-resize"),
     "takes 28x28"),
    # ---- rank: options and output paths
    ("rank-metrics-unknown", lambda c: c.rank("--target", str(c.target), "--metrics", "bogus"),
     "bogus"),
    ("rank-metrics-all-plus", lambda c: c.rank("--target", str(c.target), "--metrics",
                                               "all,logme"), "--metrics all"),
    ("rank-executor-unknown", lambda c: c.rank("--target", str(c.target), "--executor", "x"),
     "executor"),
    ("rank-threads-zero", lambda c: c.rank("--target", str(c.target), "--threads", "0"),
     "--threads"),
    ("rank-scenario-bad", lambda c: c.rank("--target", str(c.target), "--scenario", "x"),
     "--scenario"),
    ("rank-out-under-file", lambda c: c.rank("--target", str(c.target), "--out",
                                             c.file("f") + "/r.csv"), "--out"),
    ("rank-out-missing-dir", lambda c: c.rank("--target", str(c.target), "--out",
                                              str(c.tmp / "no" / "r.csv")), "does not exist"),
    ("rank-out-is-dir", lambda c: c.rank("--target", str(c.target), "--out", str(c.tmp)),
     "--out"),
    ("rank-out-read-only", lambda c: c.rank("--target", str(c.target), "--out",
                                            "/sys/gradnca-r.csv"), "not writable"),
    ("rank-cache-is-file", lambda c: ["rank", "--quiet", "--zoo", str(c.zoo), "--target",
                                      str(c.target), "--cache", c.file("cf")], "--cache"),
    ("rank-cache-under-file", lambda c: ["rank", "--quiet", "--zoo", str(c.zoo), "--target",
                                         str(c.target), "--cache", c.file("cf") + "/sub"],
     "not a directory"),
    # ---- finetune
    ("finetune-missing-store", lambda c: ["finetune", "--source", "resnet18", "--target",
                                          str(c.target)], "--store"),
    ("finetune-device-banana", lambda c: ["finetune", "--source", "resnet18", "--target",
                                          str(c.target), "--store", str(c.tmp / "s.sqlite"),
                                          "--device", "banana"], "--device"),
    ("finetune-device-cuda-9", lambda c: ["finetune", "--source", "resnet18", "--target",
                                          str(c.target), "--store", str(c.tmp / "s.sqlite"),
                                          "--device", "cuda:9"], "--device"),
    ("finetune-factory-manifest", lambda c: ["finetune", "--source", str(Path(c.broken_zoo(
        _factory)) / "adrenal"), "--target", str(c.target), "--store",
        str(c.tmp / "s.sqlite")], "--trust-code"),
    ("finetune-checkpoint-escape", lambda c: ["finetune", "--source", str(Path(c.broken_zoo(
        _bad_checkpoint)) / "adrenal"), "--target", str(c.target), "--store",
        str(c.tmp / "s.sqlite")], "plain file name"),
    ("finetune-batch-size", lambda c: ["finetune", "--source", "resnet18", "--target",
                                       str(c.target), "--store", str(c.tmp / "s.sqlite"),
                                       "--batch-size", "abc"], "--batch-size"),
    ("finetune-preset", lambda c: ["finetune", "--source", "resnet18", "--target",
                                   str(c.target), "--store", str(c.tmp / "s.sqlite"),
                                   "--preset", "nope"], "nope"),
    ("finetune-executor", lambda c: ["finetune", "--source", "resnet18", "--target",
                                     str(c.target), "--store", str(c.tmp / "s.sqlite"),
                                     "--executor", "x"], "executor"),
    ("finetune-ray-address-local", lambda c: ["finetune", "--source", "resnet18", "--target",
                                              str(c.target), "--store", str(c.tmp / "s.sqlite"),
                                              "--ray-address", "auto"], "--ray-address"),
    ("finetune-store-under-file", lambda c: ["finetune", "--source", "resnet18", "--target",
                                             str(c.target), "--store", c.file("f") + "/s.sqlite"],
     "--store"),
    ("finetune-store-not-sqlite", lambda c: ["finetune", "--source", "resnet18", "--target",
                                             str(c.target), "--store", c.file("s.sqlite",
                                                                              b"garbage" * 100)],
     "s.sqlite"),
    ("finetune-target-missing", lambda c: ["finetune", "--source", "resnet18", "--target",
                                           str(c.tmp / "none.npz"), "--store",
                                           str(c.tmp / "s.sqlite")], "does not exist"),
    ("finetune-fold-too-few", lambda c: ["finetune", "--source", "resnet18", "--target",
                                         str(c.target), "--store", str(c.tmp / "s.sqlite")],
     "--fold 0"),
    ("finetune-source-missing", lambda c: ["finetune", "--source", str(c.tmp / "no" / "dir"),
                                           "--target", str(c.target), "--store",
                                           str(c.tmp / "s.sqlite")], "does not exist"),
    ("summarize-store-missing", lambda c: ["finetune", "summarize", "--store",
                                           str(c.tmp / "none.sqlite")], "does not exist"),
    ("summarize-out-under-file", lambda c: ["finetune", "summarize", "--store", str(c.store),
                                            "--out", c.file("f") + "/t.csv"], "--out"),
    # ---- evaluate and benchmark
    ("evaluate-no-truth", lambda c: ["evaluate"], "--truth"),
    ("evaluate-truth-and-benchmark", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                                "--benchmark", "paper-dataset"], "exactly one"),
    ("evaluate-truth-missing", lambda c: ["evaluate", "--truth", str(c.tmp / "no.csv"),
                                          "--scores", f"m={c.tmp / 'no.csv'}"], "no.csv"),
    ("evaluate-no-scores", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode())],
     "--scores"),
    ("evaluate-bad-spec", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                     "--scores", "=x.csv"], "NAME=SCORES.csv"),
    ("evaluate-duplicate-name", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                           "--scores", f"m={c.tmp / 't.csv'}",
                                           "--scores", f"m={c.tmp / 't.csv'}"], "twice"),
    ("evaluate-non-numeric", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                        "--scores", "m=" + c.file("s.csv", TRUTH.replace(
                                            "0.5", "abc").encode())], "abc"),
    ("evaluate-sources-differ", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                           "--scores", "m=" + c.file("s.csv", TRUTH.replace(
                                               "s3", "s9").encode())], "s9"),
    ("evaluate-binary-garbage", lambda c: ["evaluate", "--truth", c.file(
        "t.csv", bytes(range(256)) * 8), "--scores", f"m={c.tmp / 't.csv'}"], "t.csv"),
    ("evaluate-empty-truth", lambda c: ["evaluate", "--truth", c.file("t.csv", b""),
                                        "--scores", f"m={c.tmp / 't.csv'}"], "t.csv"),
    ("evaluate-alpha-7", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                    "--scores", f"m={c.tmp / 't.csv'}", "--alpha", "7"],
     "alpha"),
    ("evaluate-alpha-nan", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                      "--scores", f"m={c.tmp / 't.csv'}", "--alpha", "nan"],
     "alpha"),
    ("evaluate-bootstrap-5", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                        "--scores", f"m={c.tmp / 't.csv'}", "--bootstrap", "5"],
     "--bootstrap"),
    ("evaluate-plot-is-file", lambda c: ["evaluate", "--truth", c.file("t.csv", TRUTH.encode()),
                                         "--scores", f"m={c.tmp / 't.csv'}", "--plot",
                                         c.file("p")], "--plot"),
    ("evaluate-benchmark-clash", lambda c: ["evaluate", "--benchmark", "paper-dataset",
                                            "--scores", "LogME=" + c.file("s.csv",
                                                                          TRUTH.encode())],
     "taken"),
    ("benchmark-alpha-zero", lambda c: ["benchmark", "paper", "--alpha", "0"], "alpha"),
    ("benchmark-plot-under-file", lambda c: ["benchmark", "paper", "--plot",
                                             c.file("p") + "/d"], "--plot"),
    # ---- cache
    ("cache-ls-file", lambda c: ["cache", "ls", "--cache", c.file("cf")], "is a file"),
    ("cache-clear-file", lambda c: ["cache", "clear", "--cache", c.file("cf")], "is a file"),
    # ---- import and export (findings 4, 5, 9 belong to their owners; these already hold)
    ("import-missing-file", lambda c: ["import", str(c.tmp / "no.onnx"), "--name", "m",
                                       "--out", str(c.zoo)], "no.onnx"),
    ("import-random-bytes", lambda c: ["import", c.file("m.onnx", bytes(
        np.random.default_rng(1).integers(0, 256, 3000, np.uint8))), "--name", "m", "--out",
        str(c.zoo)], "m.onnx"),
    ("import-bad-name", lambda c: ["import", str(c.zoo / "adrenal" / "features.onnx"),
                                   "--name", "../evil", "--out", str(c.tmp / "z")], "name"),
    ("import-existing-name", lambda c: ["import", str(c.zoo / "adrenal" / "features.onnx"),
                                        "--name", "adrenal", "--out", str(c.zoo)], "--force"),
    ("export-no-source", lambda c: ["export", "--out", str(c.tmp / "z")], "--arch"),
    ("export-existing-name", lambda c: ["export", "--arch", "resnet18", "--name", "adrenal",
                                        "--out", str(c.zoo)], "--force"),
    ("export-zoo-is-file", lambda c: ["export", "--arch", "resnet18", "--name", "m",
                                      "--out", c.file("zf")], "not a directory"),
]


@pytest.mark.parametrize("case, build, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(state, tmp_path, monkeypatch, case, build,
                                          needle) -> None:
    if case == "rank-out-read-only" and not Path("/sys").is_dir():
        pytest.skip("no read-only /sys here")
    if case.startswith(("finetune", "export", "import")):
        pytest.importorskip("torch")
    monkeypatch.setenv("GRADNCA_CACHE", str(state["cache"]))
    ctx = Ctx(tmp=tmp_path, **state)
    argv = build(ctx)
    before = snapshot(state["zoo"], state["cache"], state["store"])
    res = CliRunner().invoke(main, argv)
    out = res.output
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 2, f"{case}: exit {res.exit_code}\n{out}\n{res.exc_info}"
    assert len(errors) == 1, f"{case}: {out}"
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert needle.lower() in errors[0].lower(), f"{case}: {errors[0]!r} lacks {needle!r}"
    assert snapshot(state["zoo"], state["cache"], state["store"]) == before, case


def test_env_cache_pointing_at_a_file(state, tmp_path, monkeypatch) -> None:
    f = tmp_path / "cachefile"
    f.write_text("x")
    monkeypatch.setenv("GRADNCA_CACHE", str(f))
    before = snapshot(state["zoo"], state["cache"])
    res = CliRunner().invoke(main, ["rank", "--quiet", "--zoo", str(state["zoo"]), "--target",
                                    str(state["target"])])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "GRADNCA_CACHE" in errors[0]
    assert f.read_text() == "x" and snapshot(state["zoo"], state["cache"]) == before


@pytest.mark.parametrize("args, fragment", [
    (["rank", "--demo", "--lp-jitters", "x"], "'--lp-jitters': 'x' is not a valid integer"),
    (["rank", "--demo", "--resamples", "x"], "'--resamples'"),
    (["rank", "--demo", "--scenario", "foo"], "'--scenario'"),
    (["rank", "--bogus"], "No such option '--bogus'"),
    (["finetune", "summarize", "--bogus"], "finetune summarize --help"),
    (["export", "--grads-batch", "0"], "'--grads-batch'"),
])
def test_click_usage_errors_are_one_line_exit_2(args, fragment) -> None:
    """An option click itself refuses (not an integer, unknown) gets the package's one-line
    error, with where to look, not click's usage block."""
    from click.testing import CliRunner

    from gradnca_onnx.cli import main

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], lines
    assert "--help')" in lines[0]
