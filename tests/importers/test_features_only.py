"""Features-only zoo members: a classifier whose gradient graph cannot be built still joins the
zoo for S_LP and the baseline metrics (manifest schema 2, no ``grads.onnx``).

The ONNX models are built here with the ``onnx`` helper API; every number a features-only
member gets is checked against onnxruntime on the ORIGINAL file or against the package's core
functions applied to those features.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _support import LRN_D, LRN_K, import_lrn, lrn_classifier
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from gradnca_onnx.cli import main
from gradnca_onnx.data.dataset import from_arrays
from gradnca_onnx.data.load import load_target
from gradnca_onnx.data.preprocess import preprocess
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import FeatureCache, RuntimeConfig, rank_zoo
from gradnca_onnx.engine.batching import open_session
from gradnca_onnx.engine.ranking import combine_zoo
from gradnca_onnx.engine.scoring import LP_SETTINGS
from gradnca_onnx.results import ModelResult
from gradnca_onnx.scores import combine, label_prediction_score
from gradnca_onnx.zoo import load_manifest

pytest.importorskip("torch")  # the importer converts graphs with torch

K, D = LRN_K, LRN_D


def _original(model: onnx.ModelProto, x: np.ndarray, names) -> list[np.ndarray]:
    """Intermediate tensors of the ORIGINAL graph, run by onnxruntime."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(list(names), {"image": x})


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- importing


def test_unsupported_operator_joins_the_zoo_features_only(tmp_path):
    path = tmp_path / "alexnetish.onnx"
    model = lrn_classifier()
    onnx.save(model, path)
    zoo = tmp_path / "zoo"

    # Without the flag: the clear error stays, names the operator and node, and says the flag.
    res = _cli("import", path, "--name", "m", "--out", zoo)
    _one_error_line(res, "LRN", "norm1", "--features-only-fallback")
    assert not (zoo / "m").exists()

    res = CliRunner().invoke(main, ["import", str(path), "--name", "m", "--out", str(zoo),
                                    "--features-only-fallback"])
    assert res.exit_code == 0, res.output
    assert "features-only" in res.stdout and len(res.stdout.splitlines()) == 1
    warning = res.stderr.strip()
    assert "\n" not in warning and "S_FU not available" in warning
    assert "LRN" in warning and "norm1" in warning

    d = zoo / "m"
    assert sorted(p.name for p in d.iterdir()) == ["features.onnx", "manifest.json"]
    m = load_manifest(d)
    assert m.schema_version == 5 and not m.has_grads and "operator LRN" in m.features_only
    assert (m.source.kind, m.source.reference, m.source.checkpoint) == ("onnx", path.name,
                                                                       path.name)
    assert m.source.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m.layers.conv1 is None and m.batch_policy.grads_batch is None
    assert (m.feature_dim, m.num_classes) == (D, K)
    assert (m.input.channels, m.input.height, m.input.width) == (3, 28, 28)
    assert set(m.files) == {"features.onnx"}
    data = json.loads((d / "manifest.json").read_text())
    assert "grads" not in data["graphs"] and data["features_only"] == m.features_only

    x = np.random.default_rng(1).standard_normal((5, 3, 28, 28)).astype(np.float32)
    got_f, got_l = open_session(d, "features").run(["features", "logits"], {"images": x})
    want_f, want_l = _original(model, x, ["f", "logits"])
    np.testing.assert_allclose(got_f, want_f, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-6, atol=1e-7)
    # Nothing asks a features-only member for gradients without being told why not.
    with pytest.raises(ValueError, match="features-only"):
        open_session(d, "grads")
    with pytest.raises(ValueError, match="features-only"):
        RuntimeConfig(device="cpu").open(d, m, "grads")
    listing = _cli("zoo", "ls", zoo)
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.stdout.splitlines() if line.startswith("m "))
    assert "features-only (no S_FU)" in row and "None" not in row


def test_forced_features_only_nhwc_keeps_the_original_graph(tmp_path):
    model = lrn_classifier(3, nhwc=True)
    path = tmp_path / "keras.onnx"
    onnx.save(model, path)
    zoo = tmp_path / "zoo"
    _one_error_line(_cli("import", path, "--name", "k", "--out", zoo, "--features-only",
                         "--layers", "conv_a,conv_b"), "--layers")
    res = _cli("import", path, "--name", "k", "--out", zoo, "--features-only",
               "--features-node", "pool")
    assert res.exit_code == 0, res.output
    m = load_manifest(zoo / "k")
    assert m.features_only and "--features-only" in m.features_only
    assert m.source.options["input_layout"] == "NHWC"
    assert (m.input.channels, m.input.height, m.input.width, m.feature_dim) == (3, 28, 28, D)
    x = np.random.default_rng(2).standard_normal((4, 3, 28, 28)).astype(np.float32)
    got_f, got_l = open_session(zoo / "k", "features").run(None, {"images": x})
    want_p, want_l = _original(model, x.transpose(0, 2, 3, 1).copy(), ["p", "logits"])
    np.testing.assert_allclose(got_f, want_p.reshape(4, D), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-6, atol=1e-7)


def test_features_only_refusals_are_one_line(tmp_path):
    zoo = tmp_path / "zoo"
    path = tmp_path / "m.onnx"
    onnx.save(lrn_classifier(), path)
    _one_error_line(_cli("import", path, "--name", "m", "--out", zoo, "--features-only",
                         "--features-node", "nowhere"), "nowhere")
    _one_error_line(_cli("import", path, "--name", "m", "--out", zoo, "--features-only",
                         "--input-size", "32"), "fixed at 28x28")
    import_lrn(tmp_path, zoo, "m")
    _one_error_line(_cli("import", path, "--name", "m", "--out", zoo,
                         "--features-only-fallback"), "already exists")
    # A batch-1 reshape: the cut graph cannot run on two images, which the import checks.
    bad = lrn_classifier()
    bad.graph.initializer.append(numpy_helper.from_array(np.array([1, D], np.int64), "one"))
    for n in bad.graph.node:
        if n.name == "flatten":
            n.op_type, n.input[:] = "Reshape", ["p", "one"]
            del n.attribute[:]
    onnx.save(bad, tmp_path / "batch1.onnx")
    _one_error_line(_cli("import", tmp_path / "batch1.onnx", "--name", "b", "--out", zoo,
                         "--features-only"), "batch", "dynamic")
    assert not (zoo / "b").exists()


# --------------------------------------------------------------------------- ranking


def _engine_features(model_dir: Path, target) -> np.ndarray:
    """Features exactly as the engine computes them: its preprocessing, its session options,
    its batches."""
    m = load_manifest(model_dir)
    x = preprocess(target.images, mean=m.input.mean, std=m.input.std, channels=m.input.channels)
    runtime = RuntimeConfig(device="cpu")
    sess = runtime.open(model_dir, m, "features")
    b = runtime.features_batch
    return np.concatenate([sess.run(["features"], {"images": x[i:i + b]})[0]
                           for i in range(0, len(x), b)])


def test_rank_mixed_zoo_all_metrics(tmp_path):
    demo_zoo, target_path = demo_paths()
    zoo = tmp_path / "zoo"
    shutil.copytree(demo_zoo, zoo)
    d = import_lrn(tmp_path, zoo)
    full_names = sorted(p.name for p in demo_zoo.iterdir() if p.is_dir())
    cache = tmp_path / "cache"
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target_path),
                                    "--metrics", "all", "--format", "json", "--quiet",
                                    "--device", "cpu", "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    models = data["models"]
    by = {m["model"]: m for m in models}
    assert [m["model"] for m in models][-1] == "lrn"  # after every ranked member
    lrn = by["lrn"]
    assert (lrn["rank"], lrn["score"], lrn["fu"]) == (None, None, None)
    assert lrn["error"] is None and "LRN" in lrn["features_only"]
    assert any("features-only member" in n for n in lrn["notes"])
    # S_LP: exactly the core's label_prediction_score on the member's own features.
    target = load_target(target_path, None)
    feats = _engine_features(d, target)
    settings = dict(LP_SETTINGS, n_components=min(LP_SETTINGS["n_components"], D))
    assert lrn["lp"] == label_prediction_score(feats, target.labels, **settings)
    # Every baseline is there and finite for it, as for the others; source_images is null
    # with a note for every member: none of these manifests records the source dataset's size.
    assert set(lrn["metrics"]) == set(data["metrics"]) and len(data["metrics"]) >= 10
    assert all(v is not None and np.isfinite(v) for k, v in lrn["metrics"].items()
               if k != "source_images")
    assert all(m["metrics"]["source_images"] is None and any(
        n.startswith("source_images: skipped") for n in m["notes"]) for m in models)
    # The full members are ranked 1.. by S, which is S over them alone (the paper's min-max
    # over the members that have both terms), as if the features-only member were absent.
    full = [m for m in models if m["model"] != "lrn"]
    assert sorted(m["model"] for m in full) == full_names
    assert all(m["rank"] and m["fu"] is not None for m in full)
    want = combine([m["lp"] for m in full], [m["fu"] for m in full])
    assert [m["score"] for m in full] == [float(s) for s in want]
    alone = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target_path),
                                      "--models", ",".join(full_names), "--format", "json",
                                      "--quiet", "--device", "cpu", "--cache", str(cache)])
    assert alone.exit_code == 0, alone.output
    assert [(m["model"], m["rank"], m["score"]) for m in json.loads(alone.stdout)["models"]] \
        == [(m["model"], m["rank"], m["score"]) for m in full]

    # The table and the CSV say it plainly: no number where there is none, and why.
    table = _cli("rank", "--zoo", zoo, "--target", target_path, "--quiet", "--device", "cpu",
                 "--cache", cache)
    assert table.exit_code == 0, table.output
    row = next(ln for ln in table.stdout.splitlines() if ln.split()[1:2] == ["lrn"])
    assert row.split()[:5] == ["-", "lrn", "n/a", f"{lrn['lp']:.4f}", "n/a"]
    assert "note (lrn): features-only member: S_FU not available" in table.stdout
    assert not re.search(r"\bnan\b", table.stdout, re.IGNORECASE)
    out = _cli("rank", "--zoo", zoo, "--target", target_path, "--quiet", "--device", "cpu",
               "--cache", cache, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    r = next(r for r in rows if r["model"] == "lrn")
    assert (r["rank"], r["score"], r["fu"], r["status"]) == ("", "", "", "features-only")
    assert float(r["lp"]) == lrn["lp"]
    assert {x["status"] for x in rows if x["model"] != "lrn"} == {"ranked"}


def _small_target(n: int = 60, seed: int = 0, name: str = "t"):
    """``n`` real BreastMNIST images (the bundled demo target), a different draw per seed."""
    full = load_target(demo_paths()[1], None)
    pick = np.sort(np.random.default_rng(seed).choice(len(full), n, replace=False))
    return from_arrays(full.images[pick], full.labels[pick], name=name)


def test_features_only_zoo_cache_and_executors(tmp_path):
    from gradnca_onnx.executors import LocalExecutor, rank_targets

    demo_zoo, _ = demo_paths()
    zoo = tmp_path / "zoo"
    shutil.copytree(demo_zoo / "retina", zoo / "retina")
    for seed in range(2):
        import_lrn(tmp_path, zoo, f"lrn{seed}", seed)
    target = _small_target()
    cache = FeatureCache(tmp_path / "cache")
    first = rank_zoo(zoo, target, cache=cache, runtime=RuntimeConfig(device="cpu"),
                     metrics=["logme", "ncti"])
    names = [m.name for m in first.models]
    assert names[0] == "retina" and first.models[0].rank == 1
    partial = first.models[1:]
    assert [m.status for m in partial] == ["features-only"] * 2
    assert partial[0].lp >= partial[1].lp  # listed by S_LP, best first (dataset scenario)
    assert all(m.score is None and m.rank is None and m.fu is None for m in partial)
    # The cache serves a member without gradients: it stored no gradient arrays for it.
    second = rank_zoo(zoo, target, cache=cache, runtime=RuntimeConfig(device="cpu"),
                      metrics=["logme", "ncti"])
    assert all(m.cached for m in second.models)
    assert [m.to_dict() | {"cached": 0, "seconds": 0} for m in second.models] == \
        [m.to_dict() | {"cached": 0, "seconds": 0} for m in first.models]
    entries = list((tmp_path / "cache").rglob("*.npz"))
    keys = sorted(sorted(np.load(p).files) for p in entries)
    assert keys.count(["features", "logits", "lp", "meta"]) == 2  # "meta": the cache key
    # The executors' path (one task per model x target) gives the same rankings.
    other = _small_target(seed=1, name="u")
    got = rank_targets(zoo, [target, other], executor=LocalExecutor(), cache=cache,
                       runtime=RuntimeConfig(device="cpu"), metrics=["logme", "ncti"])
    assert [m.name for m in got[0].models] == names
    assert [(m.score, m.lp, m.metrics) for m in got[0].models] == \
        [(m.score, m.lp, m.metrics) for m in first.models]
    assert [m.status for m in got[1].models] == ["ranked", "features-only", "features-only"]
    # Cross-domain: both terms inverted, so the lower S_LP comes first among features-only.
    assert partial[0].lp > partial[1].lp
    cross = rank_zoo(zoo, target, cache=cache, runtime=RuntimeConfig(device="cpu"),
                     scenario="cross-domain")
    assert [m.name for m in cross.models[1:]] == [m.name for m in partial][::-1]


def test_a_zoo_of_features_only_members_ranks_nothing_by_s():
    results = [ModelResult(name=n, path=Path(n), lp=lp, features_only="why")
               for n, lp in (("a", 0.6), ("b", 0.9), ("c", 0.7))]
    ranking = combine_zoo(_small_target(), results, {})
    assert [m.name for m in ranking.models] == ["b", "c", "a"]
    assert all(m.rank is None and m.score is None for m in ranking.models)
    assert all(any("S_FU not available (why)" in n for n in m.notes) for m in ranking.models)


def test_mixed_combination_never_makes_nan():
    full = [ModelResult(name=n, path=Path(n), lp=lp, fu=fu)
            for n, lp, fu in (("x", 0.8, 2.0), ("y", 0.9, 3.0), ("z", 0.7, 1.0))]
    fo = ModelResult(name="f", path=Path("f"), lp=0.95, features_only="operator LRN")
    broken = ModelResult(name="e", path=Path("e"), error="sha256 mismatch")
    ranking = combine_zoo(_small_target(), [full[0], fo, broken, full[1], full[2]], {})
    assert [m.name for m in ranking.models] == ["y", "x", "z", "f", "e"]
    scores = combine([0.8, 0.9, 0.7], [2.0, 3.0, 1.0])
    assert [m.score for m in ranking.models[:3]] == [float(scores[1]), float(scores[0]),
                                                     float(scores[2])]
    assert [m.status for m in ranking.models] == ["ranked"] * 3 + ["features-only", "failed"]
    text = json.dumps(ranking.to_dict(), allow_nan=False)  # raises on any NaN
    assert '"features_only": "operator LRN"' in text
