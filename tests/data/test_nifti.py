"""NIfTI files read as physical values (``gradnca_onnx.data.nifti``).

Every sample file under ``DATA/medical/nifti-samples`` (skipped with the reason where the real
data directory is absent) against nibabel directly: big-endian data, scl_slope/scl_inter,
NIfTI-2, 4-D kept whole; then files written here with nibabel: NaN and inf refused, a single
slice, no sform/qform, more than 4 axes, not NIfTI.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from _support import MEDICAL, needs_data
from gradnca_onnx.data import read_nifti
from gradnca_onnx.errors import InputError, MissingExtraError

nib = pytest.importorskip("nibabel", reason="nibabel is in the medical extra")

SAMPLES = MEDICAL / "nifti-samples"


def sample(name: str) -> Path:
    """A file of the NIfTI samples (the test is skipped where the data directory is absent)."""
    return needs_data(SAMPLES / name)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def scaled(path: Path) -> np.ndarray:
    """The raw stored values times scl_slope plus scl_inter of the header as stored (nibabel's
    loaded header has them moved into its data proxy), in float64: written here, not nibabel's
    scaling."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        header = nib.Nifti1Header.from_fileobj(f)
    raw = np.asarray(nib.load(path).dataobj.get_unscaled(), dtype=np.float64)
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if not np.isfinite(slope) or slope == 0:  # NIfTI: 0 or NaN means "no scaling"
        return raw
    return raw * slope + inter


# --------------------------------------------------------------------------- the sample files
def test_big_endian_anatomical_equals_nibabel():
    path = sample("anatomical.nii")
    ref = nib.load(path)
    assert ref.header.endianness == ">" and ref.get_data_dtype() == np.dtype(">i2")
    img = read_nifti(path)
    assert img.values.dtype == np.float32 and img.values.dtype.byteorder in "=|"
    assert img.shape == (25, 41, 33)  # (z, y, x) from the file's (33, 41, 25)
    np.testing.assert_array_equal(img.values, ref.get_fdata().T.astype(np.float32))
    assert (img.values.min(), img.values.max()) == (-610.0, 30393.0)
    assert img.spacing == (2.0, 2.0, 2.0) and img.modality == "NIfTI" and img.space == "RAS"
    np.testing.assert_array_equal(img.affine, ref.affine)
    assert any("big-endian" in n for n in img.notes)


def test_label_is_binary_and_shares_the_anatomical_affine():
    label = read_nifti(sample("anatomical_label.nii.gz"))
    image = read_nifti(sample("anatomical.nii"))
    assert set(np.unique(label.values)) == {0.0, 1.0} and int(label.values.sum()) == 330
    assert label.shape == image.shape
    np.testing.assert_array_equal(label.affine, image.affine)


def test_functional_scaling_is_applied_and_4d_kept_whole():
    path = sample("functional.nii")
    img = read_nifti(path)
    assert img.shape == (20, 3, 21, 17)  # (t, z, y, x) from (17, 21, 3, 20)
    expected = scaled(path)
    assert not np.array_equal(expected, nib.load(path).dataobj.get_unscaled())  # really scaled
    np.testing.assert_allclose(img.values, expected.T, rtol=1e-6)
    assert img.values.min() == pytest.approx(629.8, abs=0.05)
    assert img.values.max() == pytest.approx(5571.6, abs=0.05)
    assert img.spacing == (8.0, 4.0, 4.0) and img.spatial_shape == (3, 21, 17)
    assert any("scl_slope 0.075407, scl_inter 3100.76" in n for n in img.notes)
    assert any("4-D kept whole" in n and "20 volumes" in n for n in img.notes)


def test_example4d_volumes_are_the_last_axis_of_the_file():
    path = sample("example4d.nii.gz")
    ref = nib.load(path).get_fdata()
    img = read_nifti(path)
    assert img.shape == (2, 24, 96, 128)
    for t in range(2):
        np.testing.assert_array_equal(img.values[t], ref[..., t].T.astype(np.float32))
    assert img.spacing == pytest.approx((2.2, 2.0, 2.0), rel=1e-5)


def test_nifti2_equals_the_crop_of_example4d():
    n2 = read_nifti(sample("example_nifti2.nii.gz"))
    e4 = read_nifti(sample("example4d.nii.gz"))
    assert isinstance(nib.load(sample("example_nifti2.nii.gz")), nib.Nifti2Image)
    # example4d[48:80, 38:58, 6:18] in the file's (x, y, z) is [:, 6:18, 38:58, 48:80] here.
    np.testing.assert_array_equal(n2.values, e4.values[:, 6:18, 38:58, 48:80])
    np.testing.assert_allclose(n2.affine, e4.affine)
    assert n2.notes[0].startswith("NIfTI-2")


def test_uint8_template_scaling():
    path = sample("someones_anatomy.nii.gz")
    img = read_nifti(path)
    np.testing.assert_allclose(img.values, scaled(path).T, rtol=1e-6)
    assert img.values.min() == pytest.approx(6.678, abs=1e-3)
    assert img.values.max() == pytest.approx(96.555, abs=1e-3)
    assert img.spacing == (2.75, 2.75, 2.75)


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "someones_anatomy.nii.gz"])
def test_world_is_the_file_affine_on_the_reversed_index(name):
    path = sample(name)
    ref = nib.load(path)
    img = read_nifti(path)
    k, j, i = (n - 2 for n in img.spatial_shape)
    np.testing.assert_allclose(img.world((k, j, i)), (ref.affine @ [i, j, k, 1])[:3])


# --------------------------------------------------------------------------- written files
def test_nan_and_inf_are_refused_with_their_count(tmp_path):
    data = np.ones((4, 5, 6), np.float32)
    data[0, 0, :2] = np.nan
    data[1, 2, 3] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    with pytest.raises(InputError) as exc:
        read_nifti(path)
    msg = one_line(exc)
    assert str(path) in msg and "3 of 120 voxels are NaN or inf" in msg


def test_a_single_slice_is_one_2d_image(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4, 1)  # (x, y, z=1)
    affine = np.diag([0.5, 0.25, 3.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    path = tmp_path / "slice.nii"
    nib.Nifti1Image(data, affine).to_filename(path)
    img = read_nifti(path)
    assert img.shape == (4, 3)  # (H, W) = (y, x)
    np.testing.assert_array_equal(img.values, data[:, :, 0].T.astype(np.float32))
    assert img.spacing == (0.25, 0.5)
    np.testing.assert_allclose(img.world((2, 1)), [10.5, 20.5, 30.0])  # row 2, column 1


def test_no_sform_or_qform_gives_no_affine(tmp_path):
    path = tmp_path / "bare.nii"
    nib.Nifti1Image(np.zeros((2, 3, 4), np.uint8), None).to_filename(path)
    img = read_nifti(path)
    assert img.affine is None and img.space == "" and img.spacing == (1.0, 1.0, 1.0)
    assert any("no sform or qform" in n for n in img.notes)


def test_more_than_four_axes_are_refused(tmp_path):
    path = tmp_path / "5d.nii"
    nib.Nifti1Image(np.zeros((2, 2, 2, 2, 3), np.uint8), np.eye(4)).to_filename(path)
    with pytest.raises(InputError) as exc:
        read_nifti(path)
    assert "(2, 2, 2, 2, 3)" in one_line(exc)


def test_not_nifti_is_refused(tmp_path):
    path = tmp_path / "x.nii"
    path.write_bytes(b"not a nifti header" * 30)
    with pytest.raises(InputError) as exc:
        read_nifti(path)
    assert "cannot be read as NIfTI" in one_line(exc)


def test_missing_nibabel_names_the_medical_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(MissingExtraError, match=r"gradnca-onnx\[medical\]"):
        read_nifti(tmp_path / "x.nii")
