"""Build the demo zoo shipped in ``gradnca_onnx/resources/demo`` (deterministic, CPU, ~1 min).

    python scripts/build_demo_zoo.py [--out gradnca_onnx/resources/demo] [--only NAME]

Five small CNNs, each pre-trained from scratch on a different real medical dataset in
``../shared/data/medical`` (RetinaMNIST, PneumoniaMNIST, brain-tumour MRI, white blood cells,
AdrenalMNIST3D mid-slices), one randomly initialised CNN, and one small vision transformer
(torchvision's ``VisionTransformer``: 7 px patches, 2 blocks, 64-d) pre-trained on the white
blood cells; all exported with this project's exporter at 28 px. ``--only NAME`` rebuilds one
member and leaves the others as they are. The bundled target is the official BreastMNIST (28 px, CC BY 4.0),
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


def demovit(n_classes: int):
    from torchvision.models import VisionTransformer

    # 16 patches of 7 px + a class token, 2 blocks: ~0.1 M parameters. Its S_FU layers are the
    # patch embedding and the first block's attention input projection (rule
    # first-two-weight-layers): the transformer member of the demo.
    return VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=4,
                             hidden_dim=64, mlp_dim=128, num_classes=n_classes)


def sources():
    """(name, description, TargetData) of each pre-training dataset, at 28 px."""
    from gradnca_onnx.data.dataset import from_arrays
    from gradnca_onnx.data.load import load_target
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


def pretrain(model, data, seed: int, *, transformer: bool = False):
    import torch

    from gradnca_onnx.data.preprocess import preprocess

    x = torch.from_numpy(preprocess(data.images, mean=(0.5,) * 3, std=(0.5,) * 3, channels=3))
    y = torch.from_numpy(data.labels)
    g = torch.Generator().manual_seed(seed)
    if transformer:  # SGD at the CNNs' rate diverges for a ViT trained from scratch
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(EPOCHS * (3 if transformer else 1)):
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
    ap.add_argument("--only", metavar="NAME", default=None,
                    help="Rebuild only this member (e.g. vit-blood-cells).")
    args = ap.parse_args()
    import torch

    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.sources import from_module

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    zoo = args.out / "zoo"
    if zoo.exists() and args.only is None:
        shutil.rmtree(zoo)
    zoo.mkdir(parents=True, exist_ok=True)
    wanted = (lambda name: args.only in (None, name))
    data_by_name = {}
    for i, (name, desc, data) in enumerate(sources()):
        data_by_name[name] = (desc, data)
        if not wanted(name):
            continue
        torch.manual_seed(SEED + i)
        model = democnn(data.n_classes)
        acc = pretrain(model, data, SEED + i)
        export_model(from_module(model, name="democnn"), zoo, name=name, input_size=28,
                     norm="half", pretrained_on=desc, grads_batch=32, force=True)
        print(f"{name}: {len(data)} images, {data.n_classes} classes, train accuracy {acc:.3f}")
    if wanted("random-init"):
        torch.manual_seed(SEED + 99)
        export_model(from_module(democnn(2).eval(), name="democnn"), zoo, name="random-init",
                     input_size=28, norm="half", pretrained_on="nothing (random initialisation)",
                     grads_batch=32, force=True)
    if wanted("vit-blood-cells"):
        desc, data = data_by_name["blood-cells"]
        torch.manual_seed(SEED + 7)
        model = demovit(data.n_classes)
        acc = pretrain(model, data, SEED + 7, transformer=True)
        export_model(from_module(model, name="demovit"), zoo, name="vit-blood-cells",
                     input_size=28, norm="half", pretrained_on=f"{desc} (tiny ViT)",
                     grads_batch=32, force=True)
        print(f"vit-blood-cells: {len(data)} images, {data.n_classes} classes, train accuracy "
              f"{acc:.3f}")
    shutil.copyfile(MEDICAL / "breastmnist" / "breastmnist.npz", args.out / "breastmnist.npz")
    print(f"demo zoo written to {zoo}")


if __name__ == "__main__":
    main()
