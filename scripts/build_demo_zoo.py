"""Build the demo zoo shipped in ``gradnca_onnx/resources/demo`` (deterministic, CPU, ~1 min).

    python scripts/build_demo_zoo.py [--out gradnca_onnx/resources/demo]

Five small CNNs, each pre-trained from scratch on a different real medical dataset in
``../shared/data/medical`` (RetinaMNIST, PneumoniaMNIST, brain-tumour MRI, white blood cells,
AdrenalMNIST3D mid-slices), plus one randomly initialised model; all exported with this
project's exporter at 28 px. The bundled target is the official BreastMNIST (28 px, CC BY 4.0),
which none of the sources saw. Seeds are fixed and torch runs single-threaded with deterministic
algorithms, so the same machine rebuilds the same weights.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDICAL = ROOT.parent / "shared" / "data" / "medical"
EPOCHS = 6
SEED = 0


def democnn(n_classes: int):
    import torch
    from torch import nn

    # 3 conv blocks, 64-d features: big enough for the paper's 50-d NCA, ~25 k parameters.
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes),
    )


def sources():
    """(name, description, TargetData) of each pre-training dataset, at 28 px."""
    from gradnca_onnx.data.dataset import from_arrays, load_target
    from gradnca_onnx.data.folders import load_image_folder

    yield ("retina", "RetinaMNIST (DeepDRiD fundus, 5 DR grades), CC BY 4.0",
           load_target(MEDICAL / "retinamnist" / "retinamnist.npz", "train"))
    yield ("pneumonia", "PneumoniaMNIST (balanced copy), CC BY 4.0",
           load_target(MEDICAL / "pneumoniamnist-modified" / "aksufatih-snn-medmnist" /
                       "pneumoniamnist.npz", "train"))
    yield ("brain-mri", "Brain tumour MRI (Nickparvar, 4 classes, duplicates removed), CC0 1.0",
           load_image_folder(MEDICAL / "brain-tumor-mri-nickparvar-224" / "Testing", dedupe=True,
                             size=28, mode="L"))
    yield ("blood-cells", "White blood cells (BCCD-derived, 4 types), MIT upstream",
           load_image_folder(MEDICAL / "blood-cell-wbc-bccd-augmented" / "TEST", size=28,
                             mode="RGB"))
    with np.load(MEDICAL / "adrenalmnist3d" / "adrenalmnist3d.npz") as f:
        vol, lab = f["train_images"], f["train_labels"][:, 0]
    yield ("adrenal", "AdrenalMNIST3D mid-axial slices (2 classes), CC BY 4.0",
           from_arrays(vol[:, 14], lab, name="adrenalmnist3d-slices"))


def pretrain(model, data, seed: int):
    import torch

    from gradnca_onnx.data.preprocess import preprocess

    x = torch.from_numpy(preprocess(data.images, mean=(0.5,) * 3, std=(0.5,) * 3, channels=3))
    y = torch.from_numpy(data.labels)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "gradnca_onnx" / "resources" / "demo")
    args = ap.parse_args()
    import torch

    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.exporters.loading import from_module

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    zoo = args.out / "zoo"
    if zoo.exists():
        shutil.rmtree(zoo)
    zoo.mkdir(parents=True)
    for i, (name, desc, data) in enumerate(sources()):
        torch.manual_seed(SEED + i)
        model = democnn(data.n_classes)
        acc = pretrain(model, data, SEED + i)
        export_model(from_module(model, name="democnn"), zoo, name=name, input_size=28,
                     norm="half", pretrained_on=desc, grads_batch=32)
        print(f"{name}: {len(data)} images, {data.n_classes} classes, train accuracy {acc:.3f}")
    torch.manual_seed(SEED + 99)
    export_model(from_module(democnn(2).eval(), name="democnn"), zoo, name="random-init",
                 input_size=28, norm="half", pretrained_on="nothing (random initialisation)",
                 grads_batch=32)
    shutil.copyfile(MEDICAL / "breastmnist" / "breastmnist.npz", args.out / "breastmnist.npz")
    print(f"demo zoo written to {zoo}")


if __name__ == "__main__":
    main()
