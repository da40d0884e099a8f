"""The data module: MedMNIST npz, the paper's folds, arrays, and bad input (real files in ../shared)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradnca_onnx import data

from _support import ADRENAL3D, BREAST, MEDICAL

BREAST64 = MEDICAL / "breastmnist" / "breastmnist_64.npz"
RETINA = MEDICAL / "retinamnist" / "retinamnist.npz"


def reference_folds(n_train: int, n_val: int, c: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """REFERENCE section 1, written out plainly: the oracle for make_paper_folds."""
    np.random.seed(24)
    out = []
    for _ in range(5):
        tr = np.random.choice(n_train, c * 100, replace=False)
        if n_val > c * 25:
            va = np.random.choice(n_val, c * 25, replace=False)
        else:
            va = np.arange(n_val)
        out.append((tr, va))
    return out


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("path, n_classes, val_drawn", [(BREAST, 2, True), (RETINA, 5, False)])
def test_paper_folds_equal_the_reference_rule(path, n_classes, val_drawn):
    raw = _npz(path)
    ref = reference_folds(len(raw["train_labels"]), len(raw["val_labels"]), n_classes)
    np.random.seed(7)
    expected_next = np.random.rand()
    np.random.seed(7)
    folds = data.make_paper_folds(raw["train_labels"], raw["val_labels"])
    # The caller's global RNG stream is untouched.
    assert np.random.rand() == expected_next
    assert len(folds) == 5
    for fold, (tr, va) in zip(folds, ref):
        np.testing.assert_array_equal(fold.train, tr)
        np.testing.assert_array_equal(fold.val, va)
        assert len(np.unique(fold.train)) == n_classes * 100
    assert (len(folds[0].val) == n_classes * 25) == val_drawn
    # load_target draws the same subsets on the fly, images and labels alike.
    for i in (1, 3):
        tr, va = ref[i - 1]
        t = data.load_target(path, f"fold{i}")
        v = data.load_target(path, "val", fold=i)
        assert t.split == f"fold{i}-train" and v.split == f"fold{i}-val"
        np.testing.assert_array_equal(t.images, data.as_nhwc(raw["train_images"][tr]))
        np.testing.assert_array_equal(t.labels, raw["train_labels"][tr, 0])
        np.testing.assert_array_equal(v.labels, raw["val_labels"][va, 0])
    # The split names that fold subsets carry load them back.
    assert data.load_target(path, "fold3-val").sha256 == data.load_target(path, "val", fold=3).sha256
    # The test split of a fold is the full official test set.
    test = data.load_target(path, "test", fold=1)
    np.testing.assert_array_equal(test.labels, raw["test_labels"][:, 0])


def test_fold_file_round_trip(tmp_path):
    out = data.write_paper_folds(BREAST64, tmp_path / "breastmnist_64_folds.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breastmnist_64_folds.npz"]  # no temp left
    keys = data.npz_keys(out)
    assert sorted(keys) == sorted(f"{s}_{k}_fold{i}" for s in ("train", "val")
                                  for k in ("imgs", "labels") for i in range(1, 6))
    raw = _npz(out)
    # Same layout and dtypes as the MedMNIST file (grey (N,H,W) uint8, labels (N,1) uint8).
    assert raw["train_imgs_fold1"].shape == (200, 64, 64) and raw["train_imgs_fold1"].dtype == np.uint8
    assert raw["train_labels_fold1"].shape == (200, 1)
    for i in (1, 5):
        for split in ("train", "val"):
            from_file = data.load_target(out, split, fold=i)
            on_the_fly = data.load_target(BREAST64, split, fold=i)
            np.testing.assert_array_equal(from_file.images, on_the_fly.images)
            np.testing.assert_array_equal(from_file.labels, on_the_fly.labels)
            assert from_file.sha256 == on_the_fly.sha256
            assert from_file.name == "breastmnist_64_folds"
    # A fold file defaults to fold 1, the paper's.
    assert data.load_target(out).sha256 == data.load_target(BREAST64, "fold1").sha256
    with pytest.raises(ValueError, match="test set is the official"):
        data.load_target(out, "test")
    with pytest.raises(ValueError, match="no fold 6"):
        data.load_target(out, "train", fold=6)


def test_stratified_folds_are_a_separate_deterministic_option():
    raw = _npz(RETINA)
    y = raw["train_labels"][:, 0]
    a = data.make_paper_folds(raw["train_labels"], raw["val_labels"], stratified=True)
    b = data.make_paper_folds(raw["train_labels"], raw["val_labels"], stratified=True)
    paper = data.make_paper_folds(raw["train_labels"], raw["val_labels"])
    expected = np.bincount(y, minlength=5) * 500 / len(y)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.train, fb.train)
        assert len(np.unique(fa.train)) == 500
        counts = np.bincount(y[fa.train], minlength=5)
        assert np.all(np.abs(counts - expected) < 1)
    assert not np.array_equal(a[0].train, paper[0].train)
    with pytest.raises(ValueError, match="cannot draw"):
        data.make_paper_folds(y[:300], raw["val_labels"])


def test_medmnist_splits_and_names():
    raw = _npz(BREAST64)
    t = data.load_target(BREAST64)  # default: train
    assert (t.name, t.split, t.n_classes, t.task) == ("breastmnist", "train", 2, "binary")
    assert t.images.shape == (546, 64, 64, 1) and t.labels.dtype == np.int64
    np.testing.assert_array_equal(t.images[..., 0], raw["train_images"])
    assert list(t.class_counts()) == [147, 399]  # SOURCES.md
    r = data.load_target(RETINA, "all")
    assert len(r) == 1080 + 120 + 400 and r.images.shape[-1] == 3 and r.task == "multi-class"
    assert data.medmnist_flag("x/pathmnist_224.npz") == "pathmnist"
    assert data.medmnist_flag("x/breastmnist.npz") == "breastmnist"


def test_target_data_hash_and_immutability():
    raw = _npz(BREAST)
    t = data.from_arrays(raw["test_images"], raw["test_labels"], name="b")
    same = data.from_arrays(raw["test_images"].copy(), raw["test_labels"].astype(np.int32), name="c")
    assert t.sha256 == same.sha256 and len(t.sha256) == 64
    img = raw["test_images"].copy()
    img[3, 5, 7] ^= 1
    assert data.from_arrays(img, raw["test_labels"]).sha256 != t.sha256
    lab = raw["test_labels"].copy()
    lab[0] = 1 - lab[0]
    assert data.from_arrays(raw["test_images"], lab).sha256 != t.sha256
    with pytest.raises(ValueError):
        t.images[0, 0, 0] = 1  # read-only
    mine = raw["test_images"].copy()
    kept = data.from_arrays(mine, raw["test_labels"])
    mine[:] = 0  # the caller's array is not shared
    assert kept.sha256 == t.sha256
    # the sha covers the shape, not just the bytes
    flat = data.from_arrays(raw["test_images"].reshape(156, 14, 56), raw["test_labels"])
    assert flat.sha256 != t.sha256


def test_from_arrays_label_coding():
    x = np.zeros((6, 4, 4, 3), np.uint8)
    t = data.from_arrays(x, np.array(["cat", "dog", "cat", "eel", "dog", "eel"]))
    assert t.class_names == ("cat", "dog", "eel")
    np.testing.assert_array_equal(t.labels, [0, 1, 0, 2, 1, 2])
    f = data.from_arrays(x, np.array([[3.0], [7.0], [3.0], [7.0], [3.0], [7.0]]))
    assert f.class_names == ("3.0", "7.0") and f.labels.tolist() == [0, 1, 0, 1, 0, 1]
    ml = data.from_arrays(x, np.array([[0, 1, 1]] * 3 + [[1, 0, 0]] * 3))
    assert ml.task == "multi-label" and ml.n_classes == 3
    sub = t.subset([5, 0])
    assert sub.labels.tolist() == [2, 0] and sub.class_names == t.class_names


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("labels, match", [
    (np.zeros(6), "only 1 class"),
    (np.array([0, 1, 0.5, 1, 0, 1]), "must be integers"),
])
def test_from_arrays_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match) as exc:
        data.from_arrays(np.zeros((6, 4, 4), np.uint8), labels)
    _one_line(exc)


def test_from_arrays_bad_images():
    with pytest.raises(ValueError, match="uint8") as exc:
        data.from_arrays(np.zeros((6, 4, 4), np.float32), np.arange(6) % 2)
    _one_line(exc)
    with pytest.raises(ValueError, match="channels last"):
        data.from_arrays(np.zeros((6, 3, 4, 4), np.uint8), np.arange(6) % 2)
    with pytest.raises(ValueError, match="6 images"):
        data.from_arrays(np.zeros((6, 4, 4), np.uint8), np.arange(5) % 2)


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_npz_files(tmp_path):
    raw = _npz(BREAST)
    cases = []
    # Truncated: the second half (with the zip directory) is gone.
    blob = BREAST.read_bytes()
    trunc = tmp_path / "truncated.npz"
    trunc.write_bytes(blob[: len(blob) // 2])
    cases.append((trunc, "corrupt, truncated"))
    # Corrupt member data: the zip directory is fine, the CRC of train_images is not.
    good = _write(tmp_path / "good.npz", **raw)
    b = bytearray(good.read_bytes())
    b[2000:2100] = bytes(100)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(b))
    cases.append((corrupt, "corrupt"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all")
    cases.append((junk, "not an npz"))
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, raw["train_images"])
    cases.append((npy, ".npy array"))
    missing = _write(tmp_path / "missing.npz", train_images=raw["train_images"],
                     val_labels=raw["val_labels"], test_labels=raw["test_labels"])
    cases.append((missing, "missing key.*train_labels"))
    other = _write(tmp_path / "other.npz", x=raw["train_images"])
    cases.append((other, "neither a MedMNIST npz"))
    frac = dict(raw, train_labels=raw["train_labels"] + 0.5)
    cases.append((_write(tmp_path / "frac.npz", **frac), "must be integers"))
    one = dict(raw, train_labels=np.zeros_like(raw["train_labels"]))
    cases.append((_write(tmp_path / "one.npz", **one), "only 1 class"))
    for path, match in cases:
        with pytest.raises(ValueError, match=match) as exc:
            data.load_target(path, "train")
        assert str(path) in _one_line(exc), path


def test_bad_split_and_path(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        data.load_target(BREAST, "training")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_target(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="disagree"):
        data.load_target(BREAST, "fold2", fold=3)


def test_data_module_never_imports_torch():
    code = ("import sys, gradnca_onnx.data as d; "
            f"d.load_target({str(BREAST)!r}, 'fold1'); "
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
