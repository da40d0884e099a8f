"""Small inputs shared by the hardening tests (issue 15): a two-model copy of the demo zoo, a
small MedMNIST-like target, manifest edits, and a tree snapshot to prove nothing changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

import gradnca_onnx

DEMO = Path(gradnca_onnx.__file__).parent / "resources" / "demo"
DEMO_ZOO = DEMO / "zoo"
BREAST = DEMO / "breastmnist.npz"
#: Two demo models are enough to show "one bad member, the rest still ranked".
MODELS = ("adrenal", "retina")


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
