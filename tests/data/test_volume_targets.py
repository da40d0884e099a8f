"""Volume targets (issue 29): MedMNIST 3-D npz files, NIfTI volumes named by a label table,
and arrays; physical values as nibabel reads them, resampling as torch's trilinear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _support import ADRENAL3D, write_nifti_volumes

from gradnca_onnx import data
from gradnca_onnx.errors import InputError

nib = pytest.importorskip("nibabel")


def test_medmnist3d_npz_is_a_volume_target():
    t = data.load_target(ADRENAL3D, "val")
    with np.load(ADRENAL3D) as f:
        ref, labels = f["val_images"], f["val_labels"][:, 0]
    assert t.volumetric and t.images.shape == (*ref.shape, 1)
    np.testing.assert_array_equal(t.images[..., 0], ref)
    np.testing.assert_array_equal(t.labels, labels)
    assert t.spatial_size == (28, 28, 28) and t.image_size == (28, 28)
    assert "98 volumes 28x28x28 grey" in t.describe()
    sub = t.subset([3, 1, 2])
    assert sub.volumetric and sub.images.shape == (3, 28, 28, 28, 1)
    assert data.load_target(ADRENAL3D, "test").sha256 != t.sha256


def test_volumes_from_arrays():
    g = np.random.default_rng(0)
    vols = g.integers(0, 256, (8, 5, 6, 7), dtype=np.uint8)
    t = data.from_arrays(vols, ["a", "b"] * 4)
    assert t.volumetric and t.images.shape == (8, 5, 6, 7, 1)
    assert t.class_names == ("a", "b")
    with pytest.raises(InputError, match="values outside 0..255"):
        data.from_arrays(vols.astype(np.int32) * 2, [0, 1] * 4)


def test_nifti_volume_table_keeps_nibabels_values(tmp_path):
    table, expected = write_nifti_volumes(tmp_path)
    t = data.load_target(table)
    assert t.volumetric and len(t) == 12 and t.modality == "NIfTI"
    np.testing.assert_allclose(t.physical[..., 0], np.stack(expected), rtol=0, atol=1e-4)
    assert sorted(t.class_names) == ["adrenal", "normal"]
    assert "12 volumes 28x28x28 grey, NIfTI physical values -40..470" in t.describe()


def test_nifti_volumes_resampled_as_torch_trilinear(tmp_path):
    table, expected = write_nifti_volumes(tmp_path, 3)
    t = data.load_target(table, size=(20, 24, 16))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(np.stack(expected))[:, None], size=(20, 24, 16), mode="trilinear",
        align_corners=False)[:, 0].numpy()
    # float32 resampling against torch's float64 of the same values (|values| <= 470).
    np.testing.assert_allclose(t.physical[..., 0], ref, rtol=0, atol=1e-3)
    assert any("resampled to 20x24x16" in n for n in t.notes)


def test_volume_tables_refuse_what_they_cannot_read(tmp_path):
    table, _ = write_nifti_volumes(tmp_path, 2, sizes=[28, 20])
    with pytest.raises(InputError, match="volumes differ in size.*--size DxHxW"):
        data.load_target(table)
    with pytest.raises(InputError, match="give --size DxHxW"):
        data.load_target(table, size=(16, 16))
    four = tmp_path / "four"
    four.mkdir()
    for name in "abc":
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), four / f"{name}.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), four / "t.nii.gz")
    (four / "labels.csv").write_text("path,label\na.nii,0\nb.nii,0\nc.nii,1\nt.nii.gz,1\n")
    with pytest.raises(InputError, match="not one 3-D volume"):
        data.load_target(four / "labels.csv")


def test_a_volume_size_for_2d_images_is_refused():
    assert data.parse_size("8x16x24") == (8, 16, 24)
    assert data.parse_size("32") == (32, 32)
    with pytest.raises(InputError, match="DxHxW"):
        data.parse_size("1x2x3x4")


def test_dicom_series_table_is_a_volume_target(tmp_path):
    """A label table whose rows name DICOM series folders: one volume per folder, slices
    sorted by ImagePositionPatient along the normal (the files are named in another order),
    values in HU as pydicom's modality LUT gives them."""
    pytest.importorskip("pydicom")
    from pydicom.uid import generate_uid

    from _support import write_ct_dicom

    with np.load(ADRENAL3D) as f:
        x, y = f["train_images"], f["train_labels"][:, 0]
    idx = [*np.flatnonzero(y == 1)[:3], *np.flatnonzero(y == 0)[:3]]
    rows, expected = ["path,label"], {}
    for k, i in enumerate(idx):
        series, uid = tmp_path / f"s{k}", generate_uid()
        hu = x[i][8:14].astype(np.int32) * 4 - 600            # six slices, (z, y, x)
        for z in range(6):
            write_ct_dicom(series / f"im{(5 - z) * 7 % 6}.dcm", hu[z],
                           SeriesInstanceUID=uid, ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                           ImagePositionPatient=[0.0, 0.0, 2.5 * z], PixelSpacing=[0.8, 0.8])
        rows.append(f"s{k},{'adrenal' if y[i] else 'normal'}")
        expected[k] = hu.astype(np.float32)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    t = data.load_target(tmp_path / "labels.csv")
    assert t.volumetric and t.spatial_size == (6, 28, 28) and t.unit == "HU"
    assert t.modality == "CT"
    codes = [0 if r.endswith("adrenal") else 1 for r in rows[1:]]
    order = data.class_interleaved_order(codes)
    np.testing.assert_array_equal(t.physical[..., 0], np.stack([expected[k] for k in order]))


def test_real_nifti_volumes_and_a_dicom_series_in_one_table(tmp_path):
    """Files other libraries wrote (nibabel's and pydicom's sample data in ../shared): NIfTI
    volumes of three sizes and a CT series folder, resampled to one size while loading, the
    NIfTI values as nibabel reads them resampled as torch does."""
    from _support import MEDICAL, needs_data

    nifti = needs_data(MEDICAL / "nifti-samples")
    series = needs_data(MEDICAL / "dicom-samples" / "pydicom" / "ct-series-CT5N")
    pytest.importorskip("pydicom")
    files = [nifti / "anatomical.nii", nifti / "someones_anatomy.nii.gz",
             nifti / "anatomical_label.nii.gz", series]
    rows = [f"{files[0]},a", f"{files[2]},b", f"{files[1]},a", f"{series},b"]
    (tmp_path / "t.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    t = data.load_target(tmp_path / "t.csv", size=12)
    assert t.volumetric and t.spatial_size == (12, 12, 12) and t.modality == "mixed"
    # Rows are read in the class-interleaved order; row i names files[[0, 2, 1, 3][i]].
    for k, row in enumerate(data.class_interleaved_order([0, 1, 0, 1])):
        path = files[[0, 2, 1, 3][row]]
        if path == series:
            ct = t.physical[k, ..., 0]
            assert np.isfinite(ct).any() and np.nanmin(ct) >= -1100 and np.nanmax(ct) < 3000
            continue
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(np.asarray(nib.load(path).get_fdata(), np.float64).T[None, None]),
            size=(12, 12, 12), mode="trilinear", align_corners=False)[0, 0].numpy()
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(t.physical[k, ..., 0], ref, rtol=0, atol=1e-5 * scale)
