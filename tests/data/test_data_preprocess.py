"""Preprocessing against Pillow and torchvision, and image folders (real MRI / blood-cell files;
the first MRI files of each class are bundled, the full folder and the blood cells are not)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from gradnca_onnx import data

from _support import BREAST, MEDICAL, MRI_FEW

RETINA = MEDICAL / "retinamnist" / "retinamnist.npz"
MRI = MEDICAL / "brain-tumor-mri-nickparvar-224" / "Testing"
BLOOD = MEDICAL / "blood-cell-wbc-bccd-augmented" / "TEST"


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    return data.load_target(BREAST, "test").images[:12]  # (12, 28, 28, 1)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return data.load_target(RETINA, "test").images[:12]  # (12, 28, 28, 3)


def test_grey_to_rgb_is_pil_convert(grey, rgb):
    out = data.to_rgb(grey)
    assert out.shape == (12, 28, 28, 3)
    for img, res in zip(grey, out):
        np.testing.assert_array_equal(res, np.asarray(Image.fromarray(img[..., 0]).convert("RGB")))
    assert data.to_rgb(rgb) is rgb
    # and the other way, for one-channel models: Pillow's luma, bit for bit
    lum = data.to_grey(rgb)
    for img, res in zip(rgb, lum):
        np.testing.assert_array_equal(res[..., 0], np.asarray(Image.fromarray(img).convert("L")))


@pytest.mark.parametrize("name", sorted(data.RESIZE_FILTERS))
def test_resize_equals_pillow(grey, rgb, name):
    for images, size in ((grey, 64), (rgb, (40, 20)), (rgb, 14)):
        out = data.resize(images, size, filter=name)
        h, w = (size, size) if isinstance(size, int) else size
        assert out.shape == (len(images), h, w, images.shape[-1]) and out.dtype == np.uint8
        for img, res in zip(images, out):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            ref = np.asarray(pil.resize((w, h), data.RESIZE_FILTERS[name]))
            np.testing.assert_array_equal(res.reshape(ref.shape), ref)


def test_resize_default_is_bilinear_and_same_size_is_a_no_op(rgb):
    assert data.DEFAULT_FILTER == "bilinear"
    bil = data.resize(rgb, 64)
    np.testing.assert_array_equal(bil, data.resize(rgb, 64, filter="bilinear"))
    assert not np.array_equal(bil, data.resize(rgb, 64, filter="nearest"))  # the filter matters
    assert data.resize(rgb, 28) is rgb
    with pytest.raises(ValueError, match="unknown resize filter"):
        data.resize(rgb, 64, filter="cubic")


def test_normalize_equals_torchvision(grey, rgb):
    torch = pytest.importorskip("torch")
    from torchvision.transforms import functional as F

    for images, (mean, std) in ((rgb, data.normalization("imagenet")),
                                (data.to_rgb(grey), data.normalization("half"))):
        out = data.normalize(images, mean, std)
        assert out.dtype == np.float32 and out.shape == (12, 3, 28, 28)
        ref = torch.stack([F.normalize(F.to_tensor(Image.fromarray(img)), mean, std)
                           for img in images]).numpy()
        np.testing.assert_array_equal(out, ref)  # bit-identical


def test_preprocess_pipeline(grey):
    mean, std = data.IMAGENET_MEAN, data.IMAGENET_STD
    out = data.preprocess(grey, mean=mean, std=std, size=56, filter="bicubic")
    manual = data.normalize(data.resize(data.to_rgb(grey), 56, filter="bicubic"), mean, std)
    np.testing.assert_array_equal(out, manual)
    assert out.shape == (12, 3, 56, 56)
    one = data.preprocess(grey, mean=(0.5,), std=(0.5,), channels=1)
    assert one.shape == (12, 1, 28, 28)
    np.testing.assert_allclose(one[:, 0], grey[..., 0] / 255.0 * 2 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="3 value"):
        data.preprocess(grey, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        data.preprocess(grey, mean=mean, std=std, channels=2)


def test_mri_duplicates_match_sources_md():
    files, labels, classes = data.list_image_folder(MRI)
    assert classes == ("glioma", "meningioma", "notumor", "pituitary")
    assert np.bincount(labels).tolist() == [300, 306, 405, 300]
    groups = data.find_duplicates(files)
    assert len(groups) == 21 and sum(len(g) for g in groups) == 51  # SOURCES.md
    assert all(len({f.parent.name for f in g}) == 1 for g in groups)


def _mini_folder(tmp_path, with_dupe=True):
    """Three MRI classes, four files each (grey and RGB JPEGs mixed), plus a duplicate."""
    root = tmp_path / "mri"
    for cls in ("glioma", "meningioma", "notumor"):
        (root / cls).mkdir(parents=True)
        for f in sorted((MRI_FEW / cls).iterdir())[:4]:
            shutil.copy(f, root / cls / f.name)
    if with_dupe:
        first = sorted((root / "notumor").iterdir())[0]
        shutil.copy(first, root / "notumor" / "zz_copy.jpg")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "notumor" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_round_trip(tmp_path):
    root = _mini_folder(tmp_path)
    t = data.load_target(root)
    assert (t.name, t.split, t.class_names) == ("mri", "all", ("glioma", "meningioma", "notumor"))
    assert len(t) == 13 and t.images.shape[1:] == (224, 224, 3)
    files = [f for c in t.class_names for f in sorted((root / c).glob("*.jpg"))]
    # Folders load in the seeded class-interleaved order (issue 24), not class by class.
    listed = [i for i, c in enumerate(t.class_names) for _ in (root / c).glob("*.jpg")]
    files = [files[i] for i in data.class_interleaved_order(listed)]
    assert t.order == data.FOLDER_ORDER
    for img, f in zip(t.images, files):
        with Image.open(f) as im:
            np.testing.assert_array_equal(img, np.asarray(im.convert("RGB")))
    d = data.load_target(root, dedupe=True)
    assert len(d) == 12 and d.sha256 != t.sha256
    small = data.load_target(root, size=28, dedupe=True)
    np.testing.assert_array_equal(small.images, data.resize(d.images, 28))
    # The same folder gives the same hash.
    assert data.load_target(root, dedupe=True).sha256 == d.sha256


def test_image_folder_splits_and_grey(tmp_path):
    for split in ("Training", "Testing"):
        for cls in ("EOSINOPHIL", "LYMPHOCYTE"):
            (tmp_path / "blood" / split / cls).mkdir(parents=True)
            for f in sorted((BLOOD / cls).iterdir())[:3]:
                with Image.open(f) as im:  # grey copies: the folder loads as (N, H, W, 1)
                    im.convert("L").save(tmp_path / "blood" / split / cls / (f.stem + ".png"))
    t = data.load_target(tmp_path / "blood", "test")
    assert t.images.shape == (6, 240, 320, 1) and t.split == "test"
    assert t.name == "blood"
    assert data.load_target(tmp_path / "blood" / "Testing").name == "blood-Testing"
    assert sorted(data.split_subfolders(tmp_path / "blood")) == ["test", "train"]
    with pytest.raises(ValueError, match="no 'val' sub-folder"):
        data.load_target(tmp_path / "blood", "val")


def test_bad_image_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(empty, "no class sub-folders")]
    hollow = tmp_path / "hollow"
    (hollow / "a").mkdir(parents=True)
    (hollow / "b").mkdir()
    shutil.copy(sorted((MRI_FEW / "glioma").iterdir())[0], hollow / "a" / "x.jpg")
    cases.append((hollow, "holds no images"))
    single = tmp_path / "single"
    (single / "a").mkdir(parents=True)
    shutil.copy(sorted((MRI_FEW / "glioma").iterdir())[0], single / "a" / "x.jpg")
    cases.append((single, "only one class"))
    broken = _mini_folder(tmp_path / "b", with_dupe=False)
    (broken / "glioma" / "bad.png").write_bytes(b"\x89PNG not really")
    cases.append((broken, "cannot read the image"))
    conflict = _mini_folder(tmp_path / "c", with_dupe=False)
    shutil.copy(sorted((conflict / "glioma").iterdir())[0], conflict / "notumor" / "same.jpg")
    mixed = tmp_path / "mixed"
    for cls, src in (("a", MRI_FEW / "glioma"), ("b", BLOOD / "EOSINOPHIL")):
        (mixed / cls).mkdir(parents=True)
        shutil.copy(sorted(src.iterdir())[0], mixed / cls)
    cases.append((mixed, "differ in size"))
    for path, match in cases:
        with pytest.raises(ValueError, match=match) as exc:
            data.load_target(path)
        assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="different classes"):
        data.load_target(conflict, dedupe=True)
    assert data.load_target(mixed, size=32).images.shape == (2, 32, 32, 3)


def test_split_target_is_stratified_and_seeded():
    r = data.load_target(RETINA, "all")
    tr, va, te = data.split_target(r, seed=42)
    assert len(tr) + len(va) + len(te) == len(r)
    for part, frac in ((va, 0.2), (te, 0.2)):
        np.testing.assert_allclose(part.class_counts(), r.class_counts() * frac, atol=1)
    again = data.split_target(r, seed=42)
    assert [p.sha256 for p in again] == [tr.sha256, va.sha256, te.sha256]
