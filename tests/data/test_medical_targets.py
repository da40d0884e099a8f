"""2-D targets of medical files: class folders of NIfTI or DICOM files and of 16-bit PNGs keep
their physical values (checked against nibabel's, pydicom's and Pillow's own), render them to
8 bits with one map for the whole target, and rank with a member whose intensity convention
reads them; files a 2-D target cannot take are one line and exit 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gradnca_onnx.cli import main
from gradnca_onnx.data import load_target
from gradnca_onnx.errors import InputError

from _support import assert_one_line_error, copy_zoo, edit_manifest, snapshot, write_ct_dicom

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")


def _nifti_folder(root, n: int = 10, side: int = 20):
    """Two classes of 2-D NIfTI images stored as int16 with a scale (scl_slope 0.5, inter 10):
    a bright or a dark square."""
    rng = np.random.default_rng(0)
    for cls, level in (("dark", 100), ("bright", 900)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            data = rng.integers(0, 200, (side, side + 4, 1)).astype(np.int16)
            data[5:12, 6:14] += level
            img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0]))
            img.header.set_slope_inter(0.5, 10.0)
            img.to_filename(root / cls / f"{i:02d}.nii.gz")
    return root


def _in_order(t):
    from gradnca_onnx.data.dataset import class_interleaved_order
    from gradnca_onnx.data.folders import list_image_folder

    files, labels, _ = list_image_folder(t.source)
    return [files[i] for i in class_interleaved_order(labels)]


def test_a_folder_of_2d_nifti_keeps_nibabels_scaled_values(tmp_path):
    t = load_target(_nifti_folder(tmp_path / "nii"))
    assert t.modality == "NIfTI" and t.physical.shape == (20, 24, 20, 1)  # (H, W) = (y, x)
    for k, f in enumerate(_in_order(t)):
        want = np.asarray(nib.load(f).get_fdata(), dtype=np.float32)[..., 0].T
        np.testing.assert_array_equal(t.physical[k, ..., 0], want)
    lo, hi = np.nanmin(t.physical), np.nanmax(t.physical)
    ref = np.clip(np.rint((t.physical - lo) * (255 / (hi - lo))), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(t.images, ref)  # one linear map for the whole target
    assert any("value range" in n for n in t.notes)


def test_a_16bit_png_folder_ranks_with_a_percentile_member(tmp_path):
    rng = np.random.default_rng(1)
    for cls, level in (("a", 500), ("b", 700)):  # close: the classes overlap
        (tmp_path / "png" / cls).mkdir(parents=True)
        for i in range(10):
            v = rng.integers(0, 3000, (28, 28)) + np.pad(np.full((8, 8), level), 10)
            Image.fromarray(v.astype(np.uint16)).save(tmp_path / "png" / cls / f"{i}.png")
    t = load_target(tmp_path / "png")
    for k, f in enumerate(_in_order(t)):
        np.testing.assert_array_equal(t.physical[k, ..., 0], np.asarray(Image.open(f)))
    zoo = copy_zoo(tmp_path / "zoo", models=("adrenal",))

    def edit(d):
        d["schema_version"] = 6
        d["input"]["intensity"] = {"kind": "percentile", "low": 1.0, "high": 99.0}

    edit_manifest(zoo / "adrenal", edit)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target",
                                    str(tmp_path / "png"), "--no-cache", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "intensity percentile:1,99 applied" in res.stdout


def _one_ct(path, frames: int = 1, pixels: bool = True):
    hu = np.zeros((frames, 8, 8) if frames > 1 else (8, 8), np.int16)
    write_ct_dicom(path, hu, pixels=pixels)


@pytest.mark.parametrize("case,fragment", [
    ("no-pixels", "pixel data"), ("volume", "volume, not one 2-D image"),
    ("mixed", "mixes medical files"), ("nan", "NaN")])
def test_files_a_2d_target_cannot_take_are_one_line(tmp_path, case, fragment):
    root = tmp_path / case
    for cls in ("a", "b"):
        for i in range(3):
            _one_ct(root / cls / f"{i}.dcm")
    bad = root / "b" / "bad"
    if case == "no-pixels":
        _one_ct(bad.with_suffix(".dcm"), pixels=False)
    elif case == "volume":
        _one_ct(bad.with_suffix(".dcm"), frames=3)
    elif case == "mixed":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad.with_suffix(".png"))
    else:
        data = np.zeros((8, 8, 1), np.float32)
        data[0, 0] = np.nan
        nib.Nifti1Image(data, np.eye(4)).to_filename(root / "b" / "bad.nii")
    with pytest.raises(InputError, match=fragment):
        load_target(root)
    zoo = copy_zoo(tmp_path / "zoo", models=("adrenal",))
    before = snapshot(tmp_path)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(root),
                                    "--out", str(tmp_path / "out.csv"), "--format", "csv"])
    assert_one_line_error(res, fragment)
    assert snapshot(tmp_path) == before
