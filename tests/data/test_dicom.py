"""DICOM files and series read as physical values (``gradnca_onnx.data.dicom``).

Every sample file under ``DATA/medical/dicom-samples`` (skipped with the reason where the real
data directory is absent) against values computed here with pydicom directly; then files
written here with pydicom: a series whose InstanceNumbers disagree with the positions, an
Enhanced multi-frame file with per-frame rescales, MONOCHROME1, padding ranges, and the
refusals (two series, mismatched shapes, no pixel data, not DICOM, no decoder, colour).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _support import MEDICAL, ROOT, needs_data
from gradnca_onnx.data import MedicalImage, read_dicom, read_dicom_path, read_dicom_series
from gradnca_onnx.errors import InputError, MissingExtraError

pydicom = pytest.importorskip("pydicom", reason="pydicom is in the medical extra")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

SAMPLES = MEDICAL / "dicom-samples"


def sample(rel: str) -> Path:
    """A file of the DICOM samples (the test is skipped where the data directory is absent)."""
    return needs_data(SAMPLES / rel)


def physical(ds) -> np.ndarray:
    """``stored * slope + intercept`` from the top-level rescale, in float64, as float32."""
    slope = float(ds.get("RescaleSlope", 1))
    intercept = float(ds.get("RescaleIntercept", 0))
    return (ds.pixel_array.astype(np.float64) * slope + intercept).astype(np.float32)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- the sample files
def test_ct_small_is_hounsfield_with_padding_declared():
    path = sample("pydicom/CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    assert isinstance(img, MedicalImage) and img.values.dtype == np.float32
    assert img.shape == (128, 128) and img.modality == "CT" and img.unit == "HU"
    np.testing.assert_array_equal(img.values, physical(ds))
    assert (img.values.min(), img.values.max()) == (-896.0, 1167.0)
    # PixelPaddingValue -2000 is declared but no stored pixel holds it.
    assert ds.PixelPaddingValue == -2000
    np.testing.assert_array_equal(img.padding, ds.pixel_array == -2000)
    assert not img.padding.any()
    assert img.spacing == (0.661468, 0.661468) and img.space == "LPS"
    np.testing.assert_allclose(img.world((0, 0)), [float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(img.world((0, 1)) - img.world((0, 0)), [0.661468, 0, 0])


@pytest.mark.parametrize("name", ["ct_1.dcm", "ct_2.dcm"])
def test_phantom_ct_masks_its_padding_on_stored_values(name):
    path = sample(f"rt-utils-phantom-ct/{name}")
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    np.testing.assert_array_equal(img.values, physical(ds))
    np.testing.assert_array_equal(img.padding, ds.pixel_array == -2000)
    assert 0.21 < img.padding.mean() < 0.22  # about 21% of the pixels, as SOURCES.md says
    assert (img.values[img.padding] == -3024).all()  # padding keeps its rescaled value
    lo, hi = img.masked_range()
    assert lo >= -1008 and hi == 125 and img.unit == "HU" and img.window == (0.0, 40.0)


def test_phantom_series_of_two_slices():
    img = read_dicom_series(sample("rt-utils-phantom-ct"))
    assert img.shape == (2, 512, 512) and img.spacing == (5.0, 0.488281, 0.488281)
    assert img.padding.shape == img.shape
    assert [img.world((k, 0, 0))[2] for k in range(2)] == [60.0, 65.0]


def test_ct5n_series_sorted_by_position_not_instance_number():
    folder = sample("pydicom/ct-series-CT5N")
    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    by_z = sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert [int(ds.InstanceNumber) for ds in by_z] == [10, 9, 8, 7, 6]  # the trap
    img = read_dicom_path(folder)
    assert img.shape == (5, 16, 16) and img.unit == "HU" and img.window == (40.0, 400.0)
    np.testing.assert_array_equal(img.values, np.stack([physical(ds) for ds in by_z]))
    assert img.spacing[0] == pytest.approx(2.5)
    zs = [img.world((k, 0, 0))[2] for k in range(5)]
    np.testing.assert_allclose(zs, [-1.2375, 1.2625, 3.7625, 6.2625, 8.7625], atol=1e-6)
    assert (img.values.min(), img.values.max()) == (-888.0, 85.0)
    assert any("sorted by ImagePositionPatient" in n for n in img.notes)


def test_enhanced_ct_rescale_from_the_shared_functional_groups():
    path = sample("pydicom-data/eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    assert "RescaleIntercept" not in ds  # the trap: only the functional groups hold it
    item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    expected = ds.pixel_array.astype(np.float64) * float(item.RescaleSlope) \
        + float(item.RescaleIntercept)
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2])
         for f in ds.PerFrameFunctionalGroupsSequence]
    # ImageOrientationPatient (-1,0,0 / 0,1,0): the normal is -z, so the frames run down in z.
    order = np.argsort([-v for v in z])
    img = read_dicom(path)
    np.testing.assert_array_equal(img.values, expected[order].astype(np.float32))
    assert (img.values.min(), img.values.max()) == (-1024.0, 172.0)  # not 0..1196
    assert img.unit == ""  # RescaleType US: a perfusion map, not HU
    assert img.spacing == (10.0, 0.388672, 0.388672)
    assert img.window == (49.0, 102.0)
    assert img.world((0, 0, 0))[2] == -149.0 and img.world((1, 0, 0))[2] == -159.0


def test_mr2_slope_is_applied_and_its_jpeg2000_copy_matches():
    ds = pydicom.dcmread(sample("pydicom-data/MR2_UNCR.dcm"))
    assert float(ds.RescaleSlope) == pytest.approx(3.774114)
    img = read_dicom(sample("pydicom-data/MR2_UNCR.dcm"))
    np.testing.assert_array_equal(img.values, physical(ds))
    assert img.values.max() == pytest.approx(595 * 3.774114 + 0.000061, rel=1e-6)
    assert img.unit == "" and img.modality == "MR" and img.window == (1000.0, 2000.0)
    j2k = read_dicom(sample("pydicom-data/MR2_J2KR.dcm"))
    np.testing.assert_array_equal(j2k.values, img.values)


@pytest.mark.parametrize("compressed, plain", [
    ("pydicom/MR_small_RLE.dcm", "pydicom/MR_small.dcm"),
    ("pydicom/MR_small_jp2klossless.dcm", "pydicom/MR_small.dcm"),
    ("pydicom/MR_small_jpeg_ls_lossless.dcm", "pydicom/MR_small.dcm"),
    ("pydicom-data/emri_small_RLE.dcm", "pydicom-data/emri_small.dcm"),
])
def test_compressed_copies_read_equal_to_their_uncompressed_twin(compressed, plain):
    ds = pydicom.dcmread(sample(plain))
    a, b = read_dicom(sample(compressed)), read_dicom(sample(plain))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(b.values, ds.pixel_array.astype(np.float32))
    assert a.spacing == b.spacing or np.isnan(a.spacing[-1])


def test_mr_small_keeps_stored_values_and_records_the_window():
    img = read_dicom(sample("pydicom/MR_small.dcm"))
    assert img.shape == (64, 64) and (img.values.min(), img.values.max()) == (127.0, 2145.0)
    assert img.window == (600.0, 1600.0) and img.padding is None and img.unit == ""


def test_enhanced_mr_without_geometry_keeps_file_order():
    img = read_dicom(sample("pydicom-data/emri_small.dcm"))
    assert img.shape == (10, 64, 64) and img.affine is None and img.space == ""
    assert img.spacing[0] == 1.2 and np.isnan(img.spacing[1:]).all()
    assert any("file order" in n for n in img.notes)
    assert (img.values.min(), img.values.max()) == (0.0, 467.0)


# --------------------------------------------------------------------------- written files
def _dataset(pixels: np.ndarray, *, sop=CTImageStorage, **attrs) -> Dataset:
    """A minimal CT image dataset holding ``pixels`` (int16, or uint16 with
    PixelRepresentation=0 given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = attrs.pop("series", "1.2.3.4")
    signed = attrs.get("PixelRepresentation", 1) == 1
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _slice(k: int, position, orientation, instance: int, **attrs) -> Dataset:
    pixels = (np.arange(12, dtype=np.int16).reshape(3, 4) + 100 * k)
    return _dataset(pixels, ImagePositionPatient=list(position),
                    ImageOrientationPatient=list(orientation), PixelSpacing=[0.5, 0.7],
                    InstanceNumber=instance, RescaleSlope=1 + k % 2, RescaleIntercept=-1000,
                    **attrs)


@pytest.mark.parametrize("orientation, axis, sign", [
    ((1, 0, 0, 0, 1, 0), 2, 1.0),     # axial: normal +z
    ((0, 1, 0, 0, 0, -1), 0, -1.0),   # sagittal: normal = y x -z = -x
])
def test_shuffled_series_is_sorted_along_the_slice_normal(tmp_path, orientation, axis, sign):
    rng = np.random.default_rng(0)
    n, step = 6, 3.0
    # Slice k lies k steps along the normal; files and InstanceNumbers are shuffled.
    files = rng.permutation(n)
    instances = rng.permutation(n) + 1
    for name, k in enumerate(files):
        pos = [10.0, 20.0, 30.0]
        pos[axis] += sign * step * k
        _write(_slice(int(k), pos, orientation, int(instances[name])), tmp_path / f"f{name:02d}")
    img = read_dicom_series(tmp_path)
    expected = np.stack([(np.arange(12).reshape(3, 4) + 100 * k) * (1 + k % 2) - 1000.0
                         for k in range(n)]).astype(np.float32)
    np.testing.assert_array_equal(img.values, expected)
    assert img.spacing == pytest.approx((3.0, 0.5, 0.7))
    # The affine: column index along the row direction (0.7 mm), row index along the column
    # direction (0.5 mm), slice index along the normal (3 mm).
    np.testing.assert_allclose(img.world((1, 0, 0)) - img.world((0, 0, 0)),
                               sign * step * np.eye(3)[axis], atol=1e-9)
    np.testing.assert_allclose(img.world((0, 0, 1)) - img.world((0, 0, 0)),
                               0.7 * np.array(orientation[:3], float))
    np.testing.assert_allclose(img.world((0, 1, 0)) - img.world((0, 0, 0)),
                               0.5 * np.array(orientation[3:], float))
    assert np.linalg.det(img.affine[:3, :3]) > 0  # right-handed: slices along the normal
    assert "2 different rescales (slope, intercept) across slices from the top level" in img.notes


def test_uneven_slice_gaps_are_noted(tmp_path):
    for k, z in enumerate([0.0, 2.0, 5.0]):
        _write(_slice(k, (0, 0, z), (1, 0, 0, 0, 1, 0), k + 1), tmp_path / f"s{k}")
    img = read_dicom_series(tmp_path)
    assert img.spacing[0] == 2.5 and any("uneven gaps" in n for n in img.notes)


def test_series_without_positions_falls_back_to_instance_numbers(tmp_path):
    for k, inst in enumerate([3, 1, 2]):
        ds = _dataset(np.full((2, 2), inst, np.int16), InstanceNumber=inst, SliceThickness=4)
        _write(ds, tmp_path / f"s{k}")
    img = read_dicom_series(tmp_path)
    assert img.values[:, 0, 0].tolist() == [1.0, 2.0, 3.0] and img.affine is None
    assert img.spacing[0] == 4.0 and any("InstanceNumber" in n for n in img.notes)


def test_series_skips_files_that_are_not_dicom_images(tmp_path):
    for k in range(2):
        _write(_slice(k, (0, 0, k), (1, 0, 0, 0, 1, 0), k + 1), tmp_path / f"s{k}.dcm")
    (tmp_path / "README.txt").write_text("notes")
    img = read_dicom_series(tmp_path)
    assert img.shape == (2, 3, 4) and any("skipped 1 file" in n for n in img.notes)


def test_two_series_in_one_folder_are_refused_naming_both(tmp_path):
    for k in range(3):
        _write(_slice(k, (0, 0, k), (1, 0, 0, 0, 1, 0), k + 1, series="1.2.3.1"),
               tmp_path / f"a{k}")
    _write(_slice(0, (0, 0, 9), (1, 0, 0, 0, 1, 0), 1, series="1.2.3.2"), tmp_path / "b0")
    with pytest.raises(InputError) as exc:
        read_dicom_series(tmp_path)
    msg = one_line(exc)
    assert "2 series" in msg and "1.2.3.1 (3 files)" in msg and "1.2.3.2 (1 file)" in msg


def test_slices_of_different_shapes_are_refused(tmp_path):
    _write(_dataset(np.zeros((4, 4), np.int16), ImagePositionPatient=[0, 0, 0]), tmp_path / "a")
    _write(_dataset(np.zeros((4, 5), np.int16), ImagePositionPatient=[0, 0, 1]), tmp_path / "b")
    with pytest.raises(InputError) as exc:
        read_dicom_series(tmp_path)
    assert "4x4 (a) and 4x5 (b)" in one_line(exc)


def test_two_slices_at_one_position_are_refused(tmp_path):
    for name in "ab":
        _write(_slice(0, (0, 0, 0), (1, 0, 0, 0, 1, 0), 1), tmp_path / name)
    with pytest.raises(InputError) as exc:
        read_dicom_series(tmp_path)
    assert "same position (a, b)" in one_line(exc)


def test_slices_of_different_orientations_are_refused(tmp_path):
    _write(_slice(0, (0, 0, 0), (1, 0, 0, 0, 1, 0), 1), tmp_path / "a")
    _write(_slice(1, (0, 0, 1), (0, 1, 0, 0, 0, -1), 2), tmp_path / "b")
    with pytest.raises(InputError) as exc:
        read_dicom_series(tmp_path)
    assert "different ImageOrientationPatient (a, b)" in one_line(exc)


def test_monochrome1_is_inverted_over_the_rescaled_stored_range(tmp_path):
    stored = np.array([[0, 100], [2000, 4095]], np.uint16)
    ds = _dataset(stored, PixelRepresentation=0, RescaleSlope=2, RescaleIntercept=-100,
                  WindowCenter=1000, WindowWidth=500)
    ds.BitsStored, ds.HighBit, ds.PhotometricInterpretation = 12, 11, "MONOCHROME1"
    img = read_dicom(_write(ds, tmp_path / "m1.dcm"))
    lo, hi = -100.0, 4095 * 2 - 100.0  # the 12-bit stored range after the rescale
    np.testing.assert_array_equal(img.values, (lo + hi - (stored * 2.0 - 100)).astype(np.float32))
    assert img.values[0, 0] == hi and img.values[1, 1] == lo  # stored 0 (white) is brightest
    assert img.window == (lo + hi - 1000, 500.0)
    assert any("MONOCHROME1 inverted" in n for n in img.notes)


def test_padding_range_limit_is_compared_on_stored_values(tmp_path):
    stored = np.array([[-2000, -1990], [-1989, 50]], np.int16)
    ds = _dataset(stored, RescaleSlope=1, RescaleIntercept=-1024, PixelPaddingValue=-2000,
                  PixelPaddingRangeLimit=-1990)
    img = read_dicom(_write(ds, tmp_path / "p.dcm"))
    assert img.padding.tolist() == [[True, True], [False, False]]
    assert img.masked_range() == (-3013.0, -974.0)


def test_enhanced_multiframe_per_frame_rescale_and_position(tmp_path):
    stored = np.stack([np.full((2, 3), v, np.int16) for v in (10, 20, 30)])
    ds = _dataset(stored, sop=EnhancedCTImageStorage)
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.9], 2
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z, slope in zip((4.0, 0.0, 2.0), (1.0, 2.0, 3.0)):  # frames not in spatial order
        item, pos, pvt = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [0, 0, z]
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, -5, "HU"
        item.PlanePositionSequence = Sequence([pos])
        item.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    img = read_dicom(_write(ds, tmp_path / "e.dcm"))
    # frame order by z: frame 1 (z 0, 20*2-5), frame 2 (z 2, 30*3-5), frame 0 (z 4, 10*1-5)
    assert img.values[:, 0, 0].tolist() == [35.0, 85.0, 5.0]
    assert img.spacing == (2.0, 0.8, 0.9) and img.unit == "HU"
    assert any("3 different rescales" in n and "per-frame" in n for n in img.notes)


def test_no_pixel_data_is_refused(tmp_path):
    ds = _dataset(np.zeros((2, 2), np.int16))
    del ds.PixelData
    ds.Modality = "SR"
    with pytest.raises(InputError) as exc:
        read_dicom(_write(ds, tmp_path / "sr.dcm"))
    assert "no pixel data" in one_line(exc)


def test_not_dicom_is_refused(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"hello, not a dicom file" * 10)
    with pytest.raises(InputError) as exc:
        read_dicom_path(path)
    assert "not a DICOM file" in one_line(exc)
    with pytest.raises(InputError) as exc:
        read_dicom_path(tmp_path / "missing")
    assert "no such file or folder" in one_line(exc)


def test_colour_is_refused(tmp_path):
    ds = _dataset(np.zeros((2, 2), np.int16))
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(InputError) as exc:
        read_dicom(_write(ds, tmp_path / "rgb.dcm"))
    assert "colour DICOM image (RGB)" in one_line(exc)


def test_missing_decoder_names_the_transfer_syntax_and_the_package(tmp_path, monkeypatch):
    ds = _dataset(np.arange(16, dtype=np.int16).reshape(4, 4))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    path = _write(ds, tmp_path / "rle.dcm")
    np.testing.assert_array_equal(read_dicom(path).values, np.arange(16.0).reshape(4, 4))
    monkeypatch.setattr(get_decoder(RLELossless), "_available", {})  # no plugin installed
    with pytest.raises(InputError) as exc:
        read_dicom(path)
    msg = one_line(exc)
    assert "RLE Lossless (1.2.840.10008.1.2.5)" in msg and "pip install pylibjpeg pylibjpeg-rle" \
        in msg


def test_missing_jpeg2000_decoder_on_a_sample(monkeypatch):
    path = sample("pydicom/MR_small_jp2klossless.dcm")
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    with pytest.raises(InputError) as exc:
        read_dicom(path)
    msg = one_line(exc)
    assert "JPEG 2000" in msg and "pip install pylibjpeg pylibjpeg-openjpeg" in msg


def test_missing_pydicom_names_the_medical_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(MissingExtraError, match=r"gradnca-onnx\[medical\]"):
        read_dicom(tmp_path / "x.dcm")


def test_importing_the_package_imports_neither_pydicom_nor_nibabel():
    code = ("import sys, gradnca_onnx, gradnca_onnx.data, gradnca_onnx.data.dicom, "
            "gradnca_onnx.data.nifti; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydicom', 'nibabel', "
            "'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, check=True)
    assert out.stdout.strip() == "[]"


def test_a_transfer_syntax_pydicom_cannot_decode_is_one_line(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    from _support import write_ct_dicom

    ds = pydicom.dcmread(write_ct_dicom(tmp_path / "x.dcm", np.zeros((4, 4), np.int16)))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG-2 video
    ds.PixelData = encapsulate([b"\x00" * 32])
    ds.save_as(tmp_path / "mpeg2.dcm", enforce_file_format=True)
    with pytest.raises(InputError) as exc:
        read_dicom(tmp_path / "mpeg2.dcm")
    assert "cannot decode the transfer syntax MPEG2" in one_line(exc)
