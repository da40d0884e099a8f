"""Plain helpers shared by the test modules; the fixtures are in ``conftest.py``.

Where things are (the checkout, the demo zoo and target, the real data directory and the small
real files bundled under ``tests/data``); small MedMNIST-like targets and copies of demo-zoo
members; manifest edits; a tree snapshot that proves a failed command changed nothing; the
one-line error of the command line and the bad-input context; real images turned into test
features; zoo members made without torch; the scikit-learn S_LP of the paper.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import gradnca_onnx

# --------------------------------------------------------------------------- where things are
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DEMO = Path(gradnca_onnx.__file__).parent / "resources" / "demo"
DEMO_ZOO = DEMO / "zoo"
#: The official BreastMNIST (28 px) file, shipped with the package as the demo target and
#: byte-identical to ``DATA/medical/breastmnist/breastmnist.npz`` (sha256 3a22d2a4...).
BREAST = DEMO / "breastmnist.npz"
#: The seed paper's released benchmark results, shipped with the package.
SHIPPED_BENCHMARK = Path(gradnca_onnx.__file__).parent / "resources" / "medmnist_transfer_benchmark"
#: Two demo models are enough to show "one bad member, the rest still ranked".
MODELS = ("adrenal", "retina")
#: The demo zoo's CNN members that the resampling tests rank.
DEMO_CNNS = ["retina", "pneumonia", "blood-cells"]

#: The real data the tests read, outside the repository: $GRADNCA_TEST_DATA, else
#: ``../shared/data`` beside the checkout (what CI provides).
DATA = Path(os.environ.get("GRADNCA_TEST_DATA") or ROOT.parent / "shared" / "data")
MEDICAL = DATA / "medical"
#: Small real files copied from ``DATA`` (same layout, sources and licences in SOURCES.md
#: there), so that the tests that need only them run in a clone with nothing beside it.
BUNDLED = TESTS / "data"
BUNDLED_MEDICAL = BUNDLED / "medical"
#: AdrenalMNIST3D (28 px), bundled.
ADRENAL3D = BUNDLED_MEDICAL / "adrenalmnist3d" / "adrenalmnist3d.npz"
#: The first files (sorted) of four classes of the brain-MRI folder, bundled: glioma,
#: meningioma and pituitary 10 each, notumor 4. The full folder is only in ``DATA``.
MRI_FEW = BUNDLED_MEDICAL / "brain-tumor-mri-nickparvar-224" / "Testing"
#: Why a test that reads the real data directory is skipped in a clone with nothing beside it.
NO_DATA_REASON = (f"needs the real data directory {DATA}, which is absent (put shared/ beside "
                  "the checkout or set GRADNCA_TEST_DATA)")


def needs_data(path: Path) -> Path:
    """``path`` inside the real data directory, or skip the calling test with the reason."""
    if not DATA.is_dir():
        pytest.skip(NO_DATA_REASON)
    return path


# --------------------------------------------------------------------------- targets and zoos
def copy_zoo(dest: Path, models=MODELS) -> Path:
    """A copy of some demo zoo members under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for m in models:
        shutil.copytree(DEMO_ZOO / m, dest / m)
    return dest


def small_arrays(n_train: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """The official keys of a MedMNIST npz, with the first images of the bundled BreastMNIST."""
    with np.load(BREAST) as f:
        full = {k: f[k] for k in f.files}
    out = {}
    for split, n in (("train", n_train), ("val", 12), ("test", 12)):
        out[f"{split}_images"] = full[f"{split}_images"][:n]
        out[f"{split}_labels"] = full[f"{split}_labels"][:n]
    return out


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def small_target(path: Path, **overrides: np.ndarray) -> Path:
    """A small MedMNIST npz (30 train images), with some arrays replaced."""
    arrays = small_arrays()
    arrays.update(overrides)
    return write_npz(path, **arrays)


def edit_manifest(model_dir: Path, edit) -> None:
    """Apply ``edit(dict)`` to a model's manifest.json (the graphs block is dropped so that
    it cannot disagree with the edited fields)."""
    path = model_dir / "manifest.json"
    data = json.loads(path.read_text())
    data.pop("graphs", None)
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def rehash(model_dir: Path, name: str) -> None:
    """Record a file's current size and sha256 in the manifest (a consistent, swapped file)."""
    blob = (model_dir / name).read_bytes()

    def edit(d):
        d["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}

    edit_manifest(model_dir, edit)


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (path -> bytes), to compare before and after a command."""
    out: dict[str, bytes] = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.read_bytes()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = p.read_bytes()
    return out


def make_model_dir(zoo: Path, name: str = "m1", *, num_classes: int | None = 10) -> Path:
    """A model directory with placeholder graph files (the zoo layer never parses ONNX)."""
    from gradnca_onnx.zoo import (BatchPolicy, InputSpec, LayerSpec, Manifest, SourceSpec,
                                  file_entry, write_manifest)

    d = zoo / name
    d.mkdir(parents=True)
    (d / "features.onnx").write_bytes(b"features-" + name.encode())
    (d / "grads.onnx").write_bytes(b"grads-" + name.encode())
    m = Manifest(
        name=name, architecture="resnet18", pretrained_on="ImageNet-1k",
        source=SourceSpec(kind="torchvision", reference="resnet18", checkpoint="w.pt",
                          checkpoint_sha256="0" * 64, options={"seed": 0}),
        input=InputSpec(channels=3, height=64, width=64, mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225)),
        layers=LayerSpec(features="fc", conv1="conv1", conv2="layer1.0.conv1",
                         conv1_weight_shape=(64, 3, 7, 7), conv2_weight_shape=(64, 64, 3, 3)),
        feature_dim=512, num_classes=num_classes, opset=18, batch_policy=BatchPolicy(8),
        ort_optimization="all",
        files={f: file_entry(d / f) for f in ("features.onnx", "grads.onnx")},
        package_version="0.1.0", producer={"torch": "2.14.1"}, created="2026-01-01T00:00:00+00:00",
    )
    write_manifest(d, m)
    return d


def make_features_only_dir(zoo: Path, name: str = "fo") -> Path:
    """A features-only member (schema 2): no grads.onnx, no conv or gradient-batch fields."""
    from gradnca_onnx.zoo import (BatchPolicy, InputSpec, LayerSpec, Manifest, SourceSpec,
                                  file_entry, write_manifest)

    d = zoo / name
    d.mkdir(parents=True)
    (d / "features.onnx").write_bytes(b"features-" + name.encode())
    m = Manifest(
        name=name, architecture="alexnetish", pretrained_on="unknown",
        source=SourceSpec(kind="onnx", reference="a.onnx", checkpoint="a.onnx",
                          checkpoint_sha256="1" * 64, options={"opset": 17}),
        input=InputSpec(channels=3, height=28, width=28, mean=(0.5,) * 3, std=(0.5,) * 3),
        layers=LayerSpec(features="dense", conv1=None, conv2=None, conv1_weight_shape=None,
                         conv2_weight_shape=None),
        feature_dim=6, num_classes=3, opset=17, batch_policy=BatchPolicy(None),
        ort_optimization="all", files={"features.onnx": file_entry(d / "features.onnx")},
        package_version="0.1.0", producer={"onnx": "1.23.2"}, created="2026-01-01T00:00:00+00:00",
        features_only="operator LRN (node 'norm1') is not supported by the ONNX importer",
    )
    write_manifest(d, m)
    return d


# --------------------------------------------------------------------------- the command line
def assert_one_line_error(res, *fragments: str) -> None:
    """A command that failed with exit 2 and one ``Error:`` line on stderr holding every
    fragment."""
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


#: A small ground-truth CSV (three sources, two targets) for ``evaluate``.
TRUTH = "source,a,b\ns1,0.1,0.2\ns2,0.3,0.1\ns3,0.5,0.9\n"


@dataclass
class Ctx:
    """The shared, pre-existing state (zoo, cache, store) of the bad-input tests (the ``state``
    fixture) and a fresh per-case directory in which a case builds its bad input."""

    zoo: Path
    cache: Path
    store: Path
    target: Path
    tmp: Path

    def npz(self, **overrides) -> str:
        return str(small_target(self.tmp / "t.npz", **overrides))

    def labels(self, values) -> str:
        return self.npz(train_labels=np.asarray(values).reshape(-1, 1))

    def broken_zoo(self, edit: Callable[[Path], None], models=("adrenal",)) -> str:
        z = copy_zoo(self.tmp / "zoo", models)
        edit(z / models[0])
        return str(z)

    def file(self, name: str, data: bytes = b"x") -> str:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return str(p)

    def folder(self, layout: dict[str, list[bytes]]) -> str:
        root = self.tmp / "imgs"
        for cls, blobs in layout.items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            for i, b in enumerate(blobs):
                (root / cls / f"{i}.png").write_bytes(b)
        return str(root)

    def rank(self, *args: str) -> list[str]:
        return ["rank", "--quiet", "--zoo", str(self.zoo), "--cache", str(self.cache), *args]


# --------------------------------------------------------------------------- real images
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
    """``n`` real 28x28 RGB uint8 images and labels from the real data directory (the calling
    test is skipped with the reason where it is absent).

    kind="binary": PneumoniaMNIST (normal / pneumonia).
    kind="pool11": 11 classes pooled from real datasets: RetinaMNIST grades 0-4, BreastMNIST
    (2), PneumoniaMNIST (2) and two brain-MRI classes (glioma, meningioma).
    """
    needs_data(MEDICAL)
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


# --------------------------------------------------------------------------- the paper's S_LP
def sklearn_slp(X: np.ndarray, y: np.ndarray, n_components: int = 50, k: int = 5):
    """S_LP as the paper computes it (scikit-learn NCA + k-NN, single-threaded BLAS), and the
    NCA projection."""
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        nca = NeighborhoodComponentsAnalysis(n_components=n_components, random_state=42).fit(X, y)
        E = nca.transform(X)
        proba = KNeighborsClassifier(n_neighbors=k).fit(E, y).predict_proba(E)
    cols = np.searchsorted(np.unique(y), y)
    return float(proba[np.arange(len(y)), cols].mean()), nca.components_


def random_problem(n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Gaussian features around ``c`` class centres, every class present."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    centers = rng.normal(size=(c, d)) * 0.5
    X = centers[y] + rng.normal(size=(n, d))
    return X, y


# --------------------------------------------------------------------------- features-only members
#: Classes and feature dimension of :func:`lrn_classifier`.
LRN_K = 3
LRN_D = 6


def lrn_classifier(seed: int = 0, *, nhwc: bool = False):
    """Conv -> LRN -> Conv -> GAP -> Flatten -> Gemm -> Softmax, plus an ArgMax output (an
    ``onnx.ModelProto``).

    LRN (local response normalisation, AlexNet-era) runs in onnxruntime but is not among the
    importer's differentiable operators, so the gradient graph cannot be built.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32),
                                       name)

    inits = [init("w1", (4, 3, 3, 3)), init("b1", (4,), 0.1), init("w2", (LRN_D, 4, 3, 3)),
             init("wg", (LRN_K, LRN_D), 0.5), init("bg", (LRN_K,), 0.1)]
    nodes = []
    src = "image"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], "to_nchw",
                                      perm=[0, 3, 1, 2]))
        src = "nchw"
    nodes += [
        helper.make_node("Conv", [src, "w1", "b1"], ["a"], "conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["a"], ["n"], "norm1", size=3, alpha=1e-3, beta=0.75, bias=1.0),
        helper.make_node("Relu", ["n"], ["r"], "relu1"),
        helper.make_node("Conv", ["r", "w2"], ["c"], "conv_b", strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], "dense", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], "softmax", axis=1),
        helper.make_node("ArgMax", ["logits"], ["cls"], "argmax", axis=1, keepdims=0),
    ]
    shape = ["N", 28, 28, 3] if nhwc else ["N", 3, 28, 28]
    graph = helper.make_graph(
        nodes, "lrn_classifier", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", LRN_K]),
         helper.make_tensor_value_info("cls", TensorProto.INT64, ["N"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def import_lrn(tmp_path: Path, zoo: Path, name: str = "lrn", seed: int = 0, *extra) -> Path:
    """:func:`lrn_classifier` imported into ``zoo`` as a features-only member."""
    import onnx
    from click.testing import CliRunner

    from gradnca_onnx.cli import main

    path = tmp_path / f"{name}.onnx"
    onnx.save(lrn_classifier(seed), path)
    res = CliRunner().invoke(main, ["import", str(path), "--name", name, "--out", str(zoo),
                                    "--features-only-fallback", *map(str, extra)])
    assert res.exit_code == 0, res.output
    return zoo / name


# --------------------------------------------------------------- a member against torch autograd
def member_parity(module, model_dir: Path, *, n: int = 2, seed: int = 1) -> dict[str, float]:
    """A torch-exported member against its torch module: the relative error of
    ``features.onnx`` and of the S_FU gradient ratio of ``grads.onnx`` (and of the split pass
    when the member has one) against float64 autograd, and ``floor``, torch float32's own
    ratio error against float64 (the scale the exported ratio is judged on).

    ``module`` is what the member was exported from (``LoadedModel.module``); the manifest's
    ``layers`` name the feature layer (``""``: the module's output) and the two S_FU layers
    (modules with a ``weight``, or weight parameters), all inside ``module``.
    """
    import copy

    import torch

    from gradnca_onnx.engine.batching import open_session, run_grads
    from gradnca_onnx.exporters.feature_model import FeatureModel
    from gradnca_onnx.zoo import load_manifest

    m = load_manifest(model_dir, verify=False)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m.input.channels, *m.input.spatial, generator=g)
    c = torch.randn(n, m.feature_dim, generator=g)

    def weight(model, path):
        try:
            return model.get_submodule(path).weight
        except AttributeError:
            return model.get_parameter(path)

    def ratio(model, images):
        (f,) = FeatureModel(model, m.layers.features, with_logits=False)(images)
        w1, w2 = weight(model, m.layers.conv1), weight(model, m.layers.conv2)
        g1, g2 = torch.autograd.grad(f, [w1, w2], c.to(f.dtype))
        return float(g2.norm() / g1.norm()), f

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    ref, f64 = ratio(copy.deepcopy(module).double(), x.double())
    own, _ = ratio(module, x)
    (feats,) = open_session(model_dir, "features", manifest=m, threads=1).run(
        ["features"], {"images": x.numpy()})
    out = {"features": rel(feats, f64.detach().numpy()), "floor": abs(own / ref - 1)}
    _, g1, g2 = run_grads(open_session(model_dir, "grads", manifest=m, threads=1), x.numpy(),
                          c.numpy())
    out["ratio"] = abs(float(np.linalg.norm(g2) / np.linalg.norm(g1)) / ref - 1)
    return out


# --------------------------------------------------------------------------- DICOM written here
def write_ct_dicom(path: Path, hu: np.ndarray, *, window: tuple[float, float] | None = None,
                   pixels: bool = True, **attributes: object) -> Path:
    """A CT image of ``hu`` ((H, W), or (F, H, W) for a multi-frame object) written with
    pydicom, stored as HU + 1024 in unsigned 16 bits (the usual rescale intercept -1024);
    ``window``: its (centre, width); ``pixels=False``: no pixel data; ``attributes``: further
    DICOM attributes by keyword (``ImagePositionPatient``, ``SeriesInstanceUID``, ...)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "CT", generate_uid()
    ds.Rows, ds.Columns = hu.shape[-2:]
    if hu.ndim == 3:
        ds.NumberOfFrames = hu.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if pixels:
        ds.PixelData = (np.asarray(hu) + 1024).astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_nifti_volumes(folder: Path, n_per_class: int = 6, *, sizes=None):
    """NIfTI volumes from real AdrenalMNIST3D shapes, stored int16 with scl_slope/inter (so
    the physical values differ from the stored ones), and their label table."""
    import nibabel as nib

    from gradnca_onnx import data

    with np.load(ADRENAL3D) as f:
        x, y = f["train_images"], f["train_labels"][:, 0]
    idx = [*np.flatnonzero(y == 1)[:n_per_class], *np.flatnonzero(y == 0)[:n_per_class]]
    rows, expected = ["path,label"], []
    for k, i in enumerate(idx):
        vol = x[i]
        if sizes is not None:
            vol = vol[: sizes[k % len(sizes)]]
        stored = vol.T.astype(np.int16) * 4 - 100  # (x, y, z) on disk
        img = nib.Nifti1Image(stored, np.diag([1.5, 1.5, 2.0, 1.0]))
        img.header.set_slope_inter(0.5, 10.0)
        path = folder / f"v{k:02d}.nii.gz"
        nib.save(img, path)
        expected.append(np.asarray(nib.load(path).get_fdata(), np.float64).T)  # (z, y, x)
        rows.append(f"{path.name},{'adrenal' if y[i] else 'normal'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    # A table is read in the class-interleaved order of image folders (S_FU's batches).
    codes = [0 if r.endswith("adrenal") else 1 for r in rows[1:]]
    return folder / "labels.csv", [expected[i] for i in data.class_interleaved_order(codes)]


def tiny_training_target(path: Path) -> Path:
    """A two-class 28 px MedMNIST-style npz (16/8/8 images) for fine-tuning tests: grey
    squares, class 1 brighter."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        y = np.arange(n) % 2
        arrays[f"{split}_images"] = (rng.integers(0, 60, (n, 28, 28))
                                     + 120 * y[:, None, None]).astype(np.uint8)
        arrays[f"{split}_labels"] = y.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def hub_snapshot(cache: Path, repo: str) -> Path:
    """The snapshot directory of ``repo`` (``ORG/NAME``) in a Hugging Face cache rooted at
    ``cache``, laid out as huggingface_hub writes it (``models--ORG--NAME/snapshots/COMMIT``
    and ``refs/main`` naming the commit); created empty, for the test to save a model in."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    snapshot_dir = base / "snapshots" / commit
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    return snapshot_dir


def small_cnn():
    """A small CNN in eval mode: Conv + BatchNorm, a strided conv, a max-pool, a head (the
    split pass's residual kinds and the shared weights are checked on it)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(3, 2, 1), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 3),
    ).eval()
