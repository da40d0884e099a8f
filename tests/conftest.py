"""Shared fixtures: real medical images from ../shared/data, turned into test features."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The real data the tests read, outside the repository: $GRADNCA_TEST_DATA, else
#: ``../shared/data`` beside the checkout (what CI provides).
DATA = Path(os.environ.get("GRADNCA_TEST_DATA") or ROOT.parent / "shared" / "data")
SHARED = DATA.parent
MEDICAL = DATA / "medical"
#: Why a test that reads it is skipped in a clone with nothing beside it.
NO_DATA_REASON = (f"needs the real data directory {DATA}, which is absent (put shared/ beside "
                  "the checkout or set GRADNCA_TEST_DATA)")


def _names_missing_data(text: str) -> bool:
    return str(DATA) in text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Without the real data directory, a test that fails because it reads a file there is
    reported as skipped with :data:`NO_DATA_REASON`, not as a failure: the suite must pass in a
    clone with nothing beside it. Only errors that name a path inside the absent directory are
    turned into skips; with the directory present nothing changes."""
    outcome = yield
    report = outcome.get_result()
    if DATA.is_dir() or call.excinfo is None or report.outcome != "failed":
        return
    exc = call.excinfo.value
    text = " ".join(str(x) for x in (exc, getattr(exc, "filename", ""),
                                     getattr(exc, "stderr", ""), getattr(exc, "output", "")))
    if _names_missing_data(text):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {NO_DATA_REASON}")


def _rgb28(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:  # grey -> 3 channels, as PIL convert("RGB") does
        images = np.repeat(images[..., None], 3, axis=-1)
    return images


@functools.lru_cache(maxsize=None)
def _npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@functools.lru_cache(maxsize=None)
def _mri28() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    root = MEDICAL / "brain-tumor-mri-nickparvar-224" / "Testing"
    images, labels = [], []
    for label, cls in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for f in sorted((root / cls).iterdir()):
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB").resize((28, 28), Image.BILINEAR)))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def real_images(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real 28x28 RGB uint8 images and labels.

    kind="binary": PneumoniaMNIST (normal / pneumonia).
    kind="pool11": 11 classes pooled from real datasets: RetinaMNIST grades 0-4, BreastMNIST
    (2), PneumoniaMNIST (2) and two brain-MRI classes (glioma, meningioma).
    """
    rng = np.random.default_rng(seed)
    if kind == "binary":
        d = _npz(str(MEDICAL / "pneumoniamnist-modified" / "aksufatih-snn-medmnist" / "pneumoniamnist.npz"))
        x, y = _rgb28(d["train_images"]), d["train_labels"][:, 0].astype(np.int64)
    elif kind == "pool11":
        r = _npz(str(MEDICAL / "retinamnist" / "retinamnist.npz"))
        b = _npz(str(MEDICAL / "breastmnist" / "breastmnist.npz"))
        p = _npz(str(MEDICAL / "pneumoniamnist-modified" / "aksufatih-snn-medmnist" / "pneumoniamnist.npz"))
        mx, my = _mri28()
        keep = my < 2
        parts = [
            (np.concatenate([r["train_images"], r["val_images"]]),
             np.concatenate([r["train_labels"], r["val_labels"]])[:, 0]),
            (_rgb28(b["train_images"]), b["train_labels"][:, 0] + 5),
            (_rgb28(p["train_images"][::4]), p["train_labels"][::4, 0] + 7),
            (mx[keep], my[keep] + 9),
        ]
        x = np.concatenate([a for a, _ in parts])
        y = np.concatenate([c for _, c in parts]).astype(np.int64)
    else:
        raise ValueError(kind)
    # Five of every class first, so that small draws still hold every class; the rest at random.
    first = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in np.unique(y)])
    rest = rng.choice(np.setdiff1d(np.arange(len(y)), first), size=n - len(first), replace=False)
    idx = rng.permutation(np.concatenate([first, rest]))
    return x[idx], y[idx]


def pixel_features(images: np.ndarray, side: int = 8) -> np.ndarray:
    """Grey pixels area-averaged to side x side (D = side^2), scaled to [0, 1]."""
    grey = images.astype(np.float64).mean(axis=-1) / 255.0
    k = grey.shape[1] // side
    grey = grey[:, : side * k, : side * k]
    return grey.reshape(len(grey), side, k, side, k).mean(axis=(2, 4)).reshape(len(grey), -1)


def cnn_features(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Penultimate features (D = 512) of a randomly initialised torchvision resnet18."""
    torch = pytest.importorskip("torch")
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10).eval()
    model.fc = torch.nn.Identity()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        return model(x).double().numpy()


#: Python source that makes every later ``import torch`` fail as if torch were not installed;
#: prepend it to code run in a subprocess (``python -c``) to test a torch-free install.
NO_TORCH_PRELUDE = """\
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="session")
def medical_dir() -> Path:
    if not MEDICAL.is_dir():
        pytest.skip(NO_DATA_REASON)
    return MEDICAL


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch single-threaded in a module: the suite runs on 2 (often shared) cores, where
    OpenMP threads spinning for a busy core cost far more than they give (10x slowdowns seen)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
