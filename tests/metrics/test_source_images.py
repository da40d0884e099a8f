"""The static baseline ``source_images`` (issue 17 item 6): manifest schema 5's optional
``source_images``, ``export``/``import --source-images N``, and the metric, which is skipped
with a note (a null in the rank output) where a manifest does not record it."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import gradnca_onnx.metrics as gm
from gradnca_onnx.cli import main
from gradnca_onnx.engine.member import read_member_facts
from gradnca_onnx.zoo import SCHEMA_VERSION, Manifest, load_manifest, read_manifest, write_manifest
from gradnca_onnx.zoo.manifest import check_source_images

from _support import (DEMO_ZOO, assert_one_line_error, make_features_only_dir, make_model_dir,
                      small_target)

IMAGENET_1K = 1_281_167  # the ILSVRC-2012 training set


def _run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _with_count(model_dir: Path, count: int | None) -> Manifest:
    """Rewrite a member's manifest (current schema) with ``source_images = count``."""
    write_manifest(model_dir, replace(load_manifest(model_dir), source_images=count))
    return load_manifest(model_dir)


# --------------------------------------------------------------------------- manifest


def test_schema_5_round_trip_with_and_without_the_field(tmp_path) -> None:
    # Schema 6 adds only input.intensity and 7 only input.depth: a member without either is
    # still written as schema 5.
    assert SCHEMA_VERSION == 7
    d = make_model_dir(tmp_path)
    m = load_manifest(d)
    data = json.loads((d / "manifest.json").read_text())
    # Writers write schema 5 and spell the field out: null, not recorded.
    assert data["schema_version"] == 5 and data["source_images"] is None and m.source_images is None
    assert Manifest.from_dict(data) == m
    data.pop("source_images")  # absent means not recorded too
    assert Manifest.from_dict(data) == m
    m = _with_count(d, IMAGENET_1K)
    text = (d / "manifest.json").read_text()
    assert json.loads(text)["source_images"] == IMAGENET_1K and m.source_images == IMAGENET_1K
    assert m.to_json() == text and Manifest.from_dict(json.loads(text)) == m
    # A features-only member records it the same way.
    fo = make_features_only_dir(tmp_path)
    assert _with_count(fo, 50).source_images == 50 and not load_manifest(fo).has_grads


def test_schema_4_manifest_reads_and_reserialises_unchanged(tmp_path) -> None:
    d = make_model_dir(tmp_path)
    data = json.loads((d / "manifest.json").read_text())
    data.pop("source_images")
    data["schema_version"] = 4
    text = json.dumps({"schema_version": 4, **{k: v for k, v in data.items()
                                                if k != "schema_version"}}, indent=2) + "\n"
    (d / "manifest.json").write_text(text)
    m = load_manifest(d)
    assert m.schema_version == 4 and m.source_images is None
    assert m.to_json() == text  # byte for byte: no source_images appears
    # Rewriting upgrades it to schema 5, with the field null; nothing else changes.
    write_manifest(d, m)
    again = load_manifest(d)
    assert again == replace(m, schema_version=5)
    assert json.loads((d / "manifest.json").read_text())["source_images"] is None


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [1000, None])
def test_older_schema_refuses_the_field_in_one_line(tmp_path, version, value) -> None:
    d = make_model_dir(tmp_path)
    data = json.loads((d / "manifest.json").read_text())
    data.update(schema_version=version, source_images=value)
    data.pop("graphs")
    if version < 4:
        data.pop("split")
    if version < 3:
        data["layers"].pop("rule")
    if version < 2:
        data.pop("features_only")
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as exc:
        read_manifest(d)
    text = str(exc.value)
    assert "\n" not in text and str(d / "manifest.json") in text
    assert f"field 'source_images' needs schema_version 5 (the manifest says {version})" in text
    # The same object, as written by this package, is refused before it reaches a file.
    data.pop("source_images")
    m = Manifest.from_dict(data)
    with pytest.raises(ValueError, match="'source_images' needs schema_version 5"):
        replace(m, source_images=1000).validate()


@pytest.mark.parametrize("value", [-5, 1.5, 1e6, "1000", True])
def test_schema_5_refuses_a_bad_count(tmp_path, value) -> None:
    d = make_model_dir(tmp_path)
    data = json.loads((d / "manifest.json").read_text())
    data["source_images"] = value
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as exc:
        read_manifest(d)
    assert "field 'source_images' must be an integer >= 0" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_check_source_images() -> None:
    assert check_source_images(None) is None
    assert check_source_images(7) == 7 and check_source_images(np.int64(7)) == 7
    assert check_source_images(0) == 0 and check_source_images("0") == 0  # random init
    assert check_source_images(" 1281167 ") == IMAGENET_1K
    for bad in (-1, "-1", "1.5", "1e6", "1,000", "", "many", 2.0, True):
        with pytest.raises(ValueError, match="--source-images .* must be a whole number >= 0"):
            check_source_images(bad)


def test_feature_cache_key_does_not_read_the_field(tmp_path) -> None:
    """The cache keys an entry by the member's file hashes; manifest.json is not one of them,
    so recording (or correcting) the count never invalidates cached features."""
    d = make_model_dir(tmp_path)
    before = load_manifest(d).files
    assert "manifest.json" not in before and _with_count(d, 10).files == before


# --------------------------------------------------------------------------- the metric


def test_metric_reads_the_recorded_count_or_skips(tmp_path) -> None:
    assert gm.resolve_names("all")[-2:] == ["params", "source_images"]
    meta = gm.METRICS["source_images"]
    assert meta.needs_model and meta.higher_is_better and not meta.needs_logits
    recorded, unrecorded = make_model_dir(tmp_path, "a"), make_model_dir(tmp_path, "b")
    _with_count(recorded, IMAGENET_1K)
    assert gm.source_images(read_member_facts(recorded)) == float(IMAGENET_1K)
    assert gm.source_images(read_member_facts(unrecorded)) is None
    X = np.random.default_rng(0).normal(size=(20, 4))
    y = np.repeat([0, 1], 10)
    ok = gm.compute_metrics("source_images", X, y, member=read_member_facts(recorded))["source_images"]
    assert (ok.status, ok.value, ok.note) == ("ok", float(IMAGENET_1K), "")
    skip = gm.compute_metrics("source_images", X, y, member=read_member_facts(unrecorded))["source_images"]
    assert skip.skipped and math.isnan(skip.value)
    assert "does not record source_images" in skip.note and "--source-images N" in skip.note
    nodir = gm.compute_metrics("source_images", X, y)["source_images"]
    assert nodir.skipped and nodir.note.startswith(gm.NO_MODEL_NOTE)
    # The manifest goes through the loader: a broken one is an error, never a number.
    (unrecorded / "manifest.json").write_text('{"schema_version": 5}')
    bad = gm.compute_metrics("source_images", X, y, member=read_member_facts(unrecorded),
                             errors="record")["source_images"]
    assert bad.status == "error" and "manifest.json" in bad.note
    with pytest.raises(ValueError, match="is missing"):
        gm.source_images(read_member_facts(unrecorded))
    np.testing.assert_array_equal(gm.zoo_scores("source_images", [ok, skip]),
                                  [IMAGENET_1K, np.nan])


# --------------------------------------------------------------------------- export and rank


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_torch_thread) -> Path:
    """A zoo of a random-init torchvision resnet18 exported with --source-images (features
    only, 32 px: the fast export) and a demo member that records no count (schema 1)."""
    zoo = tmp_path_factory.mktemp("source-images") / "zoo"
    res = _run("export", "--arch", "resnet18", "--input-size", 32, "--features-only",
               "--pretrained-on", "ImageNet-1k", "--source-images", IMAGENET_1K,
               "--name", "r18", "--out", zoo)
    assert res.exit_code == 0, res.output
    shutil.copytree(DEMO_ZOO / "retina", zoo / "retina")
    return zoo


def test_export_records_the_count(exported) -> None:
    m = load_manifest(exported / "r18")
    assert m.source_images == IMAGENET_1K and m.schema_version == 5
    assert json.loads((exported / "r18" / "manifest.json").read_text())["source_images"] \
        == IMAGENET_1K
    assert load_manifest(exported / "retina").source_images is None


def test_rank_reports_the_count_and_null_with_a_note(exported, tmp_path) -> None:
    target = small_target(tmp_path / "t.npz")
    res = _run("rank", "--zoo", exported, "--target", target, "--metrics",
               "source_images,params", "--format", "json", "--quiet", "--cache",
               tmp_path / "cache")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["metrics"]["source_images"]["higher_is_better"] is True
    by = {m["model"]: m for m in data["models"]}
    assert by["r18"]["metrics"]["source_images"] == IMAGENET_1K
    assert not any(n.startswith("source_images") for n in by["r18"]["notes"])
    assert by["retina"]["metrics"]["source_images"] is None
    assert by["retina"]["metrics"]["params"] > 0  # the other static baseline is unaffected
    [note] = [n for n in by["retina"]["notes"] if n.startswith("source_images")]
    assert "does not record source_images" in note


# --------------------------------------------------------------------------- import


def _tiny_classifier(path: Path) -> Path:
    """An 8x8 two-conv ONNX classifier (Conv, Relu, Conv, pool, Gemm head)."""
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32),
                                       name)

    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], "conv_a", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], "relu_a"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv_b", pads=[1] * 4),
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"], "pool"),
             helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
             helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"], "dense", transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [init("w1", (4, 3, 3, 3)), init("b1", (4,)), init("w2", (4, 4, 3, 3)),
         init("wg", (2, 4)), init("bg", (2,))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_import_records_the_count(tmp_path, one_torch_thread) -> None:
    src = _tiny_classifier(tmp_path / "tiny.onnx")
    zoo = tmp_path / "zoo"
    res = _run("import", src, "--name", "full", "--grads-batch", 2, "--source-images", 5000,
               "--out", zoo)
    assert res.exit_code == 0, res.output
    m = load_manifest(zoo / "full")
    assert m.has_grads and m.source_images == 5000
    res = _run("import", src, "--name", "cut", "--features-only", "--source-images", 60000,
               "--out", zoo)
    assert res.exit_code == 0, res.output
    m = load_manifest(zoo / "cut")
    assert not m.has_grads and m.source_images == 60000
    res = _run("import", src, "--name", "none", "--features-only", "--out", zoo)
    assert res.exit_code == 0, res.output
    assert load_manifest(zoo / "none").source_images is None


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("value", ["-3", "abc", "1.5", "1e6"])
@pytest.mark.parametrize("command", ["export", "import"])
def test_bad_count_is_one_line_and_exit_2(tmp_path, command, value) -> None:
    if command == "export":
        args = ["export", "--arch", "resnet18", "--source-images", value, "--out", tmp_path / "z"]
    else:
        args = ["import", _tiny_classifier(tmp_path / "tiny.onnx"), "--name", "x",
                "--source-images", value, "--out", tmp_path / "z"]
    assert_one_line_error(_run(*args), "--source-images", "must be a whole number >= 0", value)
    assert not (tmp_path / "z").exists()  # refused before any work
