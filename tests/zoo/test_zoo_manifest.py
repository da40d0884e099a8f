"""The zoo format without torch: manifest schema, integrity checks, listing, normalisation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gradnca_onnx.io.atomic import atomic_write_text
from gradnca_onnx.zoo import (
    Manifest,
    list_zoo,
    load_manifest,
    load_zoo,
    parse_normalisation,
    read_manifest,
    write_manifest,
)

from _support import make_features_only_dir, make_model_dir


def test_manifest_round_trip(tmp_path):
    d = make_model_dir(tmp_path)
    m = load_manifest(d)
    assert m.name == "m1" and m.feature_dim == 512 and m.num_classes == 10
    assert m.input.mean == (0.485, 0.456, 0.406)
    assert m.layers.conv2_weight_shape == (64, 64, 3, 3)
    data = json.loads((d / "manifest.json").read_text())
    assert data["schema_version"] == 5 and data["features_only"] is None
    assert data["graphs"]["features"]["outputs"] == ["features", "logits"]
    assert data["graphs"]["grads"] == {"file": "grads.onnx", "inputs": ["images", "cotangent"],
                                       "outputs": ["features", "grad_w1", "grad_w2"], "batch": 8}
    assert Manifest.from_dict(data) == m


def test_manifest_without_head_has_no_logits(tmp_path):
    m = load_manifest(make_model_dir(tmp_path, num_classes=None))
    assert m.features_outputs == ("features",)


def _edit(d: Path, fn) -> None:
    data = json.loads((d / "manifest.json").read_text())
    fn(data)
    (d / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("feature_dim"), "'feature_dim' is missing"),
    (lambda d: d.update(feature_dim="512"), "'feature_dim' must be an integer"),
    (lambda d: d.update(schema_version=8), "schema_version 8 is newer"),
    (lambda d: d.update(split={"residuals": 3, "residual_bytes": 10}),
     "'files.forward.onnx' is missing"),
    (lambda d: d.update(schema_version=3, split=None), "'split' needs schema_version 4"),
    (lambda d: d.update(colour="red"), "unknown field(s) ['colour']"),
    (lambda d: d["input"].update(std=[0.2, 0.2]), "one value per channel"),
    (lambda d: d["input"].update(std=[0.2, 0.0, 0.2]), "'input.std' must be > 0"),
    (lambda d: d["files"]["grads.onnx"].update(sha256="xyz"), "64 lowercase hex"),
    (lambda d: d["files"].pop("grads.onnx"), "'files.grads.onnx' is missing"),
    (lambda d: d.update(ort_optimization="max"), "'ort_optimization' must be one of"),
    (lambda d: d["batch_policy"].update(grads_batch=0), "'batch_policy.grads_batch' must be"),
    (lambda d: d["graphs"]["grads"].update(batch=4), "'graphs' disagrees"),
    (lambda d: d.update(name="../evil"), "'name'"),
])
def test_manifest_validation_names_the_field(tmp_path, edit, message):
    d = make_model_dir(tmp_path)
    _edit(d, edit)
    with pytest.raises(ValueError) as exc:
        read_manifest(d)
    assert message in str(exc.value)
    assert str(d / "manifest.json") in str(exc.value)


def test_malformed_json_and_missing_manifest(tmp_path):
    d = make_model_dir(tmp_path)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(d)
    with pytest.raises(ValueError, match="not an exported model directory"):
        read_manifest(tmp_path / "nowhere")


def test_integrity_detects_changed_truncated_and_missing_files(tmp_path):
    d = make_model_dir(tmp_path)
    (d / "grads.onnx").write_bytes(b"grads-m2")  # same size, other content
    load_manifest(d, verify=False)  # sizes still match
    with pytest.raises(ValueError, match="does not match its sha256"):
        load_manifest(d)
    (d / "grads.onnx").write_bytes(b"g")
    with pytest.raises(ValueError, match="has 1 bytes but the manifest records 8"):
        load_manifest(d, verify=False)
    (d / "grads.onnx").unlink()
    with pytest.raises(ValueError, match="listed in the manifest but missing"):
        load_manifest(d, verify=False)


def test_list_zoo_reports_broken_models_and_skips_staging(tmp_path):
    make_model_dir(tmp_path, "b-model")
    make_model_dir(tmp_path, "a-model")
    broken = make_model_dir(tmp_path, "c-model")
    (broken / "features.onnx").write_bytes(b"x")
    (tmp_path / ".d.incoming").mkdir()           # an export in progress
    (tmp_path / "notes").mkdir()                  # no manifest: not a model
    renamed = make_model_dir(tmp_path, "e-model")
    renamed.rename(tmp_path / "f-model")
    entries = list_zoo(tmp_path)
    assert [e.path.name for e in entries] == ["a-model", "b-model", "c-model", "f-model"]
    assert [e.ok for e in entries] == [True, True, False, False]
    assert "bytes but the manifest records" in entries[2].error
    assert "its directory is 'f-model'" in entries[3].error
    with pytest.raises(ValueError, match="c-model"):
        load_zoo(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        list_zoo(tmp_path / "missing")


def test_load_zoo_empty_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no exported model"):
        load_zoo(tmp_path)


def test_manifest_validate_rejects_bad_objects():
    m = Manifest.from_dict(json.loads(json.dumps(_valid_dict())))
    with pytest.raises(ValueError, match="'feature_dim' must be an integer >= 1"):
        replace(m, feature_dim=0).validate()


def _valid_dict() -> dict:
    return {
        "schema_version": 1, "name": "x", "architecture": "a", "pretrained_on": "unknown",
        "source": {"kind": "module", "reference": "a", "checkpoint": None,
                   "checkpoint_sha256": None, "options": {}},
        "input": {"channels": 1, "height": 8, "width": 8, "mean": [0.5], "std": [0.5]},
        "layers": {"features": "", "conv1": "c1", "conv2": "c2", "conv1_weight_shape": [2, 1, 3, 3],
                   "conv2_weight_shape": [2, 2, 3, 3]},
        "feature_dim": 4, "num_classes": None, "opset": 18,
        "batch_policy": {"grads_batch": 2, "features_batch": "dynamic",
                         "smaller": "pad-zero-images-and-cotangent",
                         "larger": "chunk-and-sum-weight-gradients"},
        "ort_optimization": "all",
        "files": {"features.onnx": {"sha256": "a" * 64, "bytes": 1},
                  "grads.onnx": {"sha256": "b" * 64, "bytes": 1}},
        "package_version": "0.1.0", "producer": {}, "created": "now",
    }


@pytest.mark.parametrize("spec, channels, mean, std", [
    ("imagenet", 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("ImageNet", 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("half", 1, (0.5,), (0.5,)),
    ("half", 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ("0.1,0.2", 2, (0.1, 0.1), (0.2, 0.2)),
    ("0.1:0.2:0.3,1:2:3", 3, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0)),
])
def test_parse_normalisation(spec, channels, mean, std):
    assert parse_normalisation(spec, channels) == (mean, std)


@pytest.mark.parametrize("spec, channels, message", [
    ("imagenet", 1, "has 3 channels but the model takes 1"),
    ("gray", 3, "is not 'imagenet', 'half' or MEAN,STD"),
    ("0.5,x", 3, "std 'x' is not a number"),
    ("0.5,0", 3, "std must be > 0"),
    ("0.1:0.2,0.5", 3, "gives 2 means and 3 stds"),
])
def test_parse_normalisation_errors(spec, channels, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_normalisation(spec, channels)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_text(p, "old")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_zoo_package_never_imports_torch(tmp_path):
    d = make_model_dir(tmp_path)
    code = (
        "import sys\n"
        "import gradnca_onnx, gradnca_onnx.zoo as z\n"
        f"z.load_manifest({str(d)!r}); z.list_zoo({str(tmp_path)!r})\n"
        "from gradnca_onnx.cli import main\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- schema 2


def _demo_zoo() -> Path:
    from gradnca_onnx.demo import demo_paths

    return demo_paths()[0]


def test_committed_schema_1_manifests_load_unchanged(tmp_path):
    demo = _demo_zoo()
    dirs = sorted(p for p in demo.iterdir() if p.is_dir() and p.name != "vit-blood-cells")
    assert len(dirs) == 6
    # The transformer member was added later, by this version's exporter (schema 3).
    vit = load_manifest(demo / "vit-blood-cells")
    assert vit.schema_version == 3 and vit.layers.rule == "first-two-weight-layers"
    assert vit.to_json() == (demo / "vit-blood-cells" / "manifest.json").read_text()
    for d in dirs:
        text = (d / "manifest.json").read_text()
        assert json.loads(text)["schema_version"] == 1
        m = load_manifest(d)  # sha256 of both graphs checked
        assert m.schema_version == 1 and m.has_grads and m.features_only is None
        # Re-serialising a schema-1 manifest gives back the committed file, byte for byte.
        assert m.to_json() == text
    # Writers write the current schema; the upgrade loses nothing.
    copy = tmp_path / dirs[0].name
    shutil.copytree(dirs[0], copy)
    write_manifest(copy, load_manifest(copy))
    again = load_manifest(copy)
    assert again.schema_version == 5 and again == replace(load_manifest(dirs[0]),
                                                          schema_version=5)
    assert again.layers.rule is None  # schema 1 did not record it: null, not invented


def test_features_only_manifest_validates_and_round_trips(tmp_path):
    d = make_features_only_dir(tmp_path)
    m = load_manifest(d)
    assert not m.has_grads and m.features_only.startswith("operator LRN")
    assert m.source.kind == "onnx" and m.layers.conv1 is None
    assert m.batch_policy.grads_batch is None
    data = json.loads((d / "manifest.json").read_text())
    assert data["schema_version"] == 5 and list(data["graphs"]) == ["features"]
    assert data["layers"]["conv1"] is None and data["batch_policy"]["grads_batch"] is None
    assert Manifest.from_dict(data) == m
    # A features-only member may also leave the gradient fields out altogether.
    for key in ("conv1", "conv2", "conv1_weight_shape", "conv2_weight_shape", "rule"):
        data["layers"].pop(key)
    data["batch_policy"].pop("grads_batch")
    data.pop("graphs")
    assert Manifest.from_dict(data) == m
    assert [e.ok for e in list_zoo(tmp_path, verify=True)] == [True]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["layers"].update(conv1="c1"), "'layers.conv1' must be null for a features-only"),
    (lambda d: d["batch_policy"].update(grads_batch=8),
     "'batch_policy.grads_batch' must be null"),
    (lambda d: d["files"].update({"grads.onnx": {"sha256": "b" * 64, "bytes": 1}}),
     "'files.grads.onnx' is listed but 'features_only'"),
    (lambda d: d.update(features_only=""), "'features_only' must be a non-empty string"),
    (lambda d: d.update(features_only=None), "'layers.conv1' must be a non-empty string"),
    (lambda d: d.update(schema_version=1), "'features_only' needs schema_version 2"),
    (lambda d: d["layers"].update(rule="first-two-convs"), "'layers.rule' must be null"),
])
def test_features_only_manifest_errors_are_one_line(tmp_path, edit, message):
    d = make_features_only_dir(tmp_path)
    _edit(d, edit)
    with pytest.raises(ValueError) as exc:
        read_manifest(d)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_source_kind_is_checked_for_its_form_only():
    # Which kinds exist (and from which schema on) is the source registry's knowledge, checked
    # when a member is rebuilt (tests/test_finetune_sources.py); the format checks the form.
    data = _valid_dict()
    data["source"]["kind"] = "mylib"
    assert Manifest.from_dict(data).source.kind == "mylib"
    for bad in ("Torchvision", "my lib", "1x", "a" * 33):
        data["source"]["kind"] = bad
        with pytest.raises(ValueError, match="'source.kind' must be 1-32 lower-case"):
            Manifest.from_dict(data)


def test_claimed_grads_file_missing_is_one_clear_line(tmp_path):
    d = make_model_dir(tmp_path, "full")
    (d / "grads.onnx").unlink()
    with pytest.raises(ValueError) as exc:
        load_manifest(d)
    text = str(exc.value)
    assert "grads.onnx is listed in the manifest but missing" in text and "\n" not in text
    [entry] = list_zoo(tmp_path)
    assert not entry.ok and "grads.onnx" in entry.error


def test_unlisted_graph_file_is_refused(tmp_path):
    d = make_features_only_dir(tmp_path)
    (d / "grads.onnx").write_bytes(b"stray")  # nothing vouches for it
    with pytest.raises(ValueError, match="present but not listed in the manifest"):
        load_manifest(d, verify=False)


def test_cli_rank_on_broken_schema_2_zoo_is_one_line(tmp_path):
    from click.testing import CliRunner

    from gradnca_onnx.cli import main

    d = make_features_only_dir(tmp_path / "zoo")
    _edit(d, lambda m: m["layers"].update(conv2_weight_shape=[1, 1, 1, 1]))
    target = Path(str(_demo_zoo().parent / "breastmnist.npz"))
    res = CliRunner().invoke(main, ["rank", "--zoo", str(tmp_path / "zoo"), "--target",
                                    str(target), "--no-cache", "--quiet"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert "'layers.conv2_weight_shape' must be null" in lines[0]


def test_a_schema_1_object_cannot_claim_features_only(tmp_path):
    m = load_manifest(make_features_only_dir(tmp_path))
    with pytest.raises(ValueError, match="'features_only' needs schema_version 2"):
        replace(m, schema_version=1).validate()


def test_layer_rule_is_validated_and_needs_schema_3(tmp_path):
    d = make_model_dir(tmp_path)
    data = json.loads((d / "manifest.json").read_text())
    for rule in ("paper-table", "user", "first-two-convs", "first-two-weight-layers", None):
        data["layers"]["rule"] = rule
        assert Manifest.from_dict(data).layers.rule == rule
    data["layers"]["rule"] = "my-own"
    with pytest.raises(ValueError, match="'layers.rule' must be one of"):
        Manifest.from_dict(data)
    data["layers"]["rule"], data["schema_version"] = "user", 2
    with pytest.raises(ValueError, match="'layers.rule' needs schema_version 3"):
        Manifest.from_dict(data)


def test_schema_7_depth_round_trips_and_needs_its_schema(tmp_path):
    """``input.depth`` (a 3-D member) is schema 7's only addition: read back as written, and
    refused in an older schema; a 2-D member does not carry the field."""
    d = make_model_dir(tmp_path)
    data = json.loads((d / "manifest.json").read_text())
    assert "depth" not in data["input"] and data["schema_version"] == 5
    data["input"]["depth"] = 8
    with pytest.raises(ValueError, match="'input.depth' needs schema_version 7"):
        Manifest.from_dict(data)
    data["schema_version"] = 7
    m = Manifest.from_dict(data)
    assert m.input.depth == 8 and m.input.spatial == (8, m.input.height, m.input.width)
    assert json.loads(m.to_json()) == data
    data["input"]["depth"] = 0
    with pytest.raises(ValueError, match="'input.depth' must be an integer >= 1"):
        Manifest.from_dict(data)
