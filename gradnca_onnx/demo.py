"""The bundled demo: a zoo of six small CNNs and one small ViT, and the BreastMNIST target (see resources/demo)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import InputError


def demo_paths() -> tuple[Path, Path]:
    """``(zoo_dir, target_npz)`` of the demo shipped inside the package."""
    root = Path(str(resources.files("gradnca_onnx") / "resources" / "demo"))
    zoo, target = root / "zoo", root / "breastmnist.npz"
    if not zoo.is_dir() or not target.is_file():
        raise InputError(f"the demo files are missing from {root}; reinstall gradnca-onnx")
    return zoo, target
