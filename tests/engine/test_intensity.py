"""Intensity conventions as part of a member's contract: parsed and validated in one line,
recorded in the manifest (schema 6, only when set), applied by the engine to the target's
physical values before the mean/std step, and part of the feature cache key; an 8-bit member
and an 8-bit target give exactly what they gave before. A CT target of DICOM files written in
the test ranks end to end, and a member whose convention the target cannot serve is a note,
not a silent ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import gradnca_onnx as g
from gradnca_onnx.cli import main
from gradnca_onnx.data import load_target
from gradnca_onnx.data.conventions import Intensity, parse_intensity
from gradnca_onnx.data.preprocess import preprocess, preprocess_values
from gradnca_onnx.engine import scoring
from gradnca_onnx.errors import InputError
from gradnca_onnx.zoo import load_manifest

from _support import copy_zoo, edit_manifest, small_target, write_ct_dicom

pydicom = pytest.importorskip("pydicom")

WINDOW = {"kind": "window", "low": -1000.0, "high": 1000.0, "unit": "HU"}


# --------------------------------------------------------------------------- the conventions


@pytest.mark.parametrize("text,kind,low,high,unit", [
    ("window:-1000,1000:HU", "window", -1000.0, 1000.0, "HU"),
    ("window:-1024,2048", "window", -1024.0, 2048.0, ""),
    ("percentile:0.5,99.5", "percentile", 0.5, 99.5, ""),
    ("zscore", "zscore", None, None, ""), ("8bit", "8bit", None, None, "")])
def test_forms_round_trip(text, kind, low, high, unit):
    c = parse_intensity(text)
    assert (c.kind, c.low, c.high, c.unit) == (kind, low, high, unit)
    assert parse_intensity(c.text()) == c


@pytest.mark.parametrize("text,fragment", [
    ("window:1000,-1000", "LOW must be below HIGH"), ("window:5,5", "LOW must be below HIGH"),
    ("window:-1000", "two bounds"), ("window:a,b", "must be numbers"),
    ("percentile:-1,50", "0..100"), ("percentile:1,99:HU", "only a window"),
    ("zscore:1,2", "takes no bounds"), ("gamma", "not a convention"),
    ("window:nan,1", "finite")])
def test_bad_forms_are_one_line(text, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        parse_intensity(text)
    assert "\n" not in str(info.value) and "--intensity" in str(info.value)


def test_window_percentile_and_zscore_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 600, (3, 8, 8, 1)).astype(np.float32)
    x[0, 0, :3, 0] = np.nan  # padding: outside the field of view
    w = Intensity("window", -1000.0, 1000.0).apply(x)
    want = np.clip((x + 1000) / 2000, 0, 1)
    assert np.allclose(w[np.isfinite(x)], want[np.isfinite(x)], atol=1e-7)
    assert (w[0, 0, :3] == 0).all()
    p = Intensity("percentile", 1.0, 99.0).apply(x)
    for i in range(3):
        v = x[i][np.isfinite(x[i])]
        lo, hi = np.percentile(v, [1, 99])
        ref = np.clip((x[i] - lo) / (hi - lo), 0, 1)
        assert np.allclose(p[i][np.isfinite(x[i])], ref[np.isfinite(x[i])], atol=1e-6)
    z = Intensity("zscore").apply(x)
    for i in range(3):
        v = x[i][np.isfinite(x[i])].astype(np.float64)
        ref = (x[i] - v.mean()) / v.std()
        assert np.allclose(z[i][np.isfinite(x[i])], ref[np.isfinite(x[i])], atol=1e-5)
    with pytest.raises(InputError, match="8-bit images"):
        Intensity().apply(x)


def test_float_pipeline_equals_the_8bit_one_on_8bit_values():
    x = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 1)).astype(np.uint8)
    kw = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], channels=3)
    np.testing.assert_array_equal(preprocess(x, **kw),
                                  preprocess_values(x.astype(np.float32) / 255, **kw))


# --------------------------------------------------------------------------- the manifest


def _window_member(tmp_path, intensity=WINDOW, name="adrenal"):
    zoo = copy_zoo(tmp_path / "zoo", models=(name,))

    def edit(d):
        d["schema_version"] = 6
        d["input"]["intensity"] = intensity

    edit_manifest(zoo / name, edit)
    return zoo


def test_manifest_records_the_convention_only_when_set(tmp_path):
    zoo = _window_member(tmp_path)
    m = load_manifest(zoo / "adrenal", verify=False)
    assert m.input.intensity == WINDOW and m.input.convention.text() == "window:-1000,1000:HU"
    assert json.loads(m.to_json())["input"]["intensity"] == WINDOW
    plain = load_manifest(copy_zoo(tmp_path / "plain", models=("retina",)) / "retina")
    assert "intensity" not in json.loads(plain.to_json())["input"]
    assert plain.input.convention.is_default

    def older(d):
        d["schema_version"] = 5

    edit_manifest(zoo / "adrenal", older)
    with pytest.raises(ValueError, match="needs schema_version 6"):
        load_manifest(zoo / "adrenal", verify=False)

    def bad(d):
        d["schema_version"] = 6
        d["input"]["intensity"] = {"kind": "window", "low": 5, "high": 1}

    edit_manifest(zoo / "adrenal", bad)
    with pytest.raises(ValueError, match="LOW must be below HIGH"):
        load_manifest(zoo / "adrenal", verify=False)


def test_an_8bit_member_keeps_its_cache_key_and_a_convention_changes_it(tmp_path):
    target = load_target(small_target(tmp_path / "t.npz"))
    plain = load_manifest(copy_zoo(tmp_path / "a", models=("adrenal",)) / "adrenal")
    settings, notes = scoring._input_settings(target, plain, resize=True)
    assert "intensity" not in settings and not any("intensity" in n for n in notes)
    # The 8-bit member on an 8-bit target: the paper's pipeline, bit for bit.
    np.testing.assert_array_equal(scoring._prepare(target, plain), preprocess(
        target.images, mean=plain.input.mean, std=plain.input.std, channels=3))
    window = load_manifest(_window_member(tmp_path / "b") / "adrenal", verify=False)
    physical = g.data.TargetData(target.images, target.labels, "t", target.n_classes,
                                 physical=target.images.astype(np.float32) * 8 - 1000,
                                 unit="HU", modality="CT")
    settings, notes = scoring._input_settings(physical, window, resize=True)
    assert settings["intensity"] == WINDOW
    assert notes == ["intensity window:-1000,1000:HU applied to the target's CT values in HU"]
    x = scoring._prepare(physical, window)
    want = preprocess_values(np.clip((physical.physical + 1000) / 2000, 0, 1),
                             mean=window.input.mean, std=window.input.std, channels=3)
    np.testing.assert_allclose(x, want, atol=1e-6)


# --------------------------------------------------------------------------- end to end


def _ct_folder(root, n: int = 12, side: int = 28):
    """Two classes of CT slices: air with a soft-tissue disc, or with a bone disc."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    for cls, hu_disc in (("soft", 60), ("bone", 900)):
        for i in range(n):
            r = rng.uniform(4, 9)
            disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < r * r
            hu = np.where(disc, hu_disc, -1000) + rng.normal(0, 20, (side, side))
            hu = np.maximum(hu, -1024)  # stored as HU + 1024 in unsigned 16 bits
            write_ct_dicom(root / cls / f"{i:02d}.dcm", hu.astype(np.int16), window=(40, 400))
    return root


def test_a_dicom_ct_target_ranks_with_a_window_member(tmp_path):
    target_dir = _ct_folder(tmp_path / "ct")
    zoo = _window_member(tmp_path, name="adrenal")
    copy_zoo(zoo, models=("retina",))  # an 8-bit member beside it
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target_dir),
                                    "--format", "json", "--no-cache"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    models = {m["model"]: m for m in doc["models"]}
    assert all(m["error"] is None for m in models.values())
    assert any("window:-1000,1000:HU applied" in n for n in models["adrenal"]["notes"])
    assert any("8-bit rendering" in n for n in models["retina"]["notes"])
    assert any("DICOM window (centre 40, width 400)" in n for n in doc["target"]["notes"])
    assert "Read: ct (all)" in res.stderr and "CT physical values" in res.stderr
    # The window member's input is the window of the HU values, computed here from pydicom.
    t = load_target(target_dir)
    hu = np.stack([pydicom.dcmread(target_dir / c / f).pixel_array.astype(np.float32) - 1024
                   for c, f in _files_in_order(t)])
    np.testing.assert_allclose(t.physical[..., 0], hu)
    m = load_manifest(zoo / "adrenal", verify=False)
    want = preprocess_values(np.clip((hu[..., None] + 1000) / 2000, 0, 1), mean=m.input.mean,
                             std=m.input.std, channels=3)
    np.testing.assert_allclose(scoring._prepare(t, m), want, atol=1e-6)


def _files_in_order(t):
    """(class, file) of the target's images, in its order (recomputed from the folder)."""
    from gradnca_onnx.data.dataset import class_interleaved_order
    from gradnca_onnx.data.folders import list_image_folder

    files, labels, _ = list_image_folder(t.source)
    return [(files[i].parent.name, files[i].name) for i in class_interleaved_order(labels)]


def test_a_window_member_on_an_8bit_target_is_a_note_not_a_ranking(tmp_path):
    zoo = _window_member(tmp_path, name="adrenal")
    copy_zoo(zoo, models=("retina",))
    ranking = g.rank(zoo, small_target(tmp_path / "t.npz"), cache=False, threads=1)
    bad = next(m for m in ranking.models if m.name == "adrenal")
    assert not bad.ok and "expects physical intensities (window:-1000,1000:HU)" in bad.error
    assert next(m for m in ranking.models if m.name == "retina").ok


def test_unit_mismatch_is_refused(tmp_path):
    zoo = _window_member(tmp_path, name="adrenal")
    t = load_target(small_target(tmp_path / "t.npz"))
    mr = g.data.TargetData(t.images, t.labels, "mr", t.n_classes,
                           physical=t.images.astype(np.float32), unit="a.u.", modality="MR")
    ranking = g.rank(zoo, mr, cache=False, threads=1)
    assert "expects values in HU" in ranking.models[0].error


# --------------------------------------------------------------------------- export and import


def test_import_records_the_convention_and_export_refuses_a_bad_one_first(tmp_path):
    from _support import import_lrn

    member = import_lrn(tmp_path, tmp_path / "zoo", "lrn", 0, "--intensity", "zscore")
    m = load_manifest(member)
    assert m.schema_version == 6 and m.input.intensity == {"kind": "zscore"}
    assert m.input.mean == (0.0, 0.0, 0.0) and m.input.std == (1.0, 1.0, 1.0)
    assert m.source.options.get("normalisation_from", "zscore").startswith(("zscore", "--norm"))
    plain = load_manifest(import_lrn(tmp_path, tmp_path / "zoo", "plain", 0))
    assert plain.schema_version == 5 and plain.input.intensity is None
    res = CliRunner().invoke(main, ["export", "--arch", "resnet18", "--intensity",
                                    "window:1000,-1000", "--out", str(tmp_path / "z2")])
    assert res.exit_code == 2 and "LOW must be below HIGH" in res.output
    assert not (tmp_path / "z2").exists()


def test_the_python_api_ranks_2d_nifti_with_a_zscore_member(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(4)
    for cls, level in (("a", 100.0), ("b", 130.0)):
        (tmp_path / "nii" / cls).mkdir(parents=True)
        for i in range(10):
            data = rng.normal(level, 60.0, (28, 28, 1)).astype(np.float32)
            nib.Nifti1Image(data, np.eye(4)).to_filename(tmp_path / "nii" / cls / f"{i}.nii")
    zoo = _window_member(tmp_path, intensity={"kind": "zscore"})
    ranking = g.rank(zoo, tmp_path / "nii", cache=False, threads=1)
    assert ranking.ok, ranking.models[0].error
    assert any("intensity zscore applied to the target's NIfTI values" in n
               for n in ranking.models[0].notes)
    assert "NIfTI physical values" in ranking.target_summary


def test_physical_arrays_from_python_rank_with_a_window_member(tmp_path):
    rng = np.random.default_rng(5)
    y = np.tile([0, 1], 12)  # interleaved: S_FU batches of consecutive images hold both
    hu = rng.normal(-200, 400, (24, 28, 28)) + 150 * y[:, None, None]
    hu[:, 0, :4] = np.nan  # outside the field of view
    t = g.data.from_physical(hu, y, unit="HU", modality="CT", name="hu",
                             window=(40, 400))
    assert t.physical.dtype == np.float32 and np.isnan(t.physical[:, 0, :4]).all()
    assert t.notes == ("8-bit rendering (for members without an intensity convention): the "
                       "images' DICOM window (centre 40, width 400)",)
    assert (t.images[:, 0, :4] == 0).all()
    ranking = g.rank(_window_member(tmp_path), t, cache=False, threads=1)
    assert ranking.ok, ranking.models[0].error
    with pytest.raises(InputError, match="inf"):
        g.data.from_physical(np.full((4, 8, 8), np.inf), [0, 1, 0, 1])


def test_a_hu_window_on_values_without_a_unit_is_refused(tmp_path):
    zoo = _window_member(tmp_path, name="adrenal")
    t = load_target(small_target(tmp_path / "t.npz"))
    raw = g.data.TargetData(t.images, t.labels, "png16", t.n_classes,
                            physical=t.images.astype(np.float32) * 16)
    ranking = g.rank(zoo, raw, cache=False, threads=1)
    assert "expects values in HU" in ranking.models[0].error
    assert "without a unit" in ranking.models[0].error


def test_an_npz_of_hu_floats_is_physical_for_convention_members_only(tmp_path):
    arrays = small_target(tmp_path / "t8.npz")
    d = dict(np.load(arrays))
    for split in ("train", "val", "test"):  # HU-like floats: no 8-bit scale
        d[f"{split}_images"] = d[f"{split}_images"].astype(np.float32) * 8 - 1000
    np.savez(tmp_path / "hu.npz", **d)
    t = load_target(tmp_path / "hu.npz")
    assert not t.eight_bit and t.physical is not None and t.unit == ""
    np.testing.assert_array_equal(t.physical[..., 0], d["train_images"])
    assert "have no 8-bit scale" in t.notes[0]
    zoo = _window_member(tmp_path, intensity={"kind": "window", "low": -1000.0,
                                              "high": 1000.0})
    copy_zoo(zoo, models=("retina",))
    ranking = g.rank(zoo, tmp_path / "hu.npz", cache=False, threads=1)
    by_name = {m.name: m for m in ranking.models}
    assert by_name["adrenal"].ok, by_name["adrenal"].error
    assert "takes 8-bit images" in by_name["retina"].error and "uint8" in by_name["retina"].error


def test_one_window_per_channel(tmp_path):
    c = parse_intensity("windows:-1000,1000;40,400;300,1500:HU")
    assert c.windows == ((-1000.0, 1000.0), (40.0, 400.0), (300.0, 1500.0)) and c.unit == "HU"
    assert parse_intensity(c.text()) == c and c.channels == 3
    x = np.random.default_rng(0).normal(0, 800, (2, 6, 6, 1)).astype(np.float32)
    y = c.apply(x)
    assert y.shape == (2, 6, 6, 3)
    for k, (lo, hi) in enumerate(c.windows):
        np.testing.assert_allclose(y[..., k], np.clip((x[..., 0] - lo) / (hi - lo), 0, 1),
                                   atol=1e-6)
    with pytest.raises(InputError, match="LOW must be below HIGH"):
        parse_intensity("windows:1,0;2,3")
    zoo = _window_member(tmp_path, intensity=c.to_dict())
    m = load_manifest(zoo / "adrenal", verify=False)
    t = load_target(small_target(tmp_path / "t.npz"))
    ct = g.data.TargetData(t.images, t.labels, "ct", t.n_classes,
                           physical=t.images.astype(np.float32) * 8 - 1000, unit="HU")
    want = preprocess_values(c.apply(ct.physical), mean=m.input.mean, std=m.input.std)
    np.testing.assert_allclose(scoring._prepare(ct, m), want, atol=1e-6)

    def two(d):
        d["input"]["intensity"] = {"kind": "windows", "windows": [[0, 1], [2, 3]]}

    edit_manifest(zoo / "adrenal", two)
    with pytest.raises(ValueError, match="2 windows for 3 channels"):
        load_manifest(zoo / "adrenal", verify=False)
