"""Epochs per second of a resnet18 fine-tune, to size a hyper-parameter grid.

    python benchmarks/bench_finetune.py [--sizes 28 64 224] [--threads 2] [--epochs 2]
                                        [--device cpu|cuda] [--no-augment] [--json]

What one epoch is here: the paper's protocol on BreastMNIST fold 1 (200 training images, 50
validation images; the 64 px file, resized with Pillow bilinear to each size): one pass of
SGD (Nesterov momentum, batch 32) over the training set with the paper's augmentation
pipeline, then the validation loss/AUC in eval mode. A paper fold of a C-class target has
100*C training and 25*C validation images, so an epoch there costs about C/2 times this.
The model is torchvision's resnet18, randomly initialised (no download needed; pretrained
weights cost the same). The first epoch (warm-up) is excluded from the rate.
No assertion: the numbers are for sizing, and a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BREAST64 = ROOT.parent / "shared" / "data" / "medical" / "breastmnist" / "breastmnist_64.npz"


def measure(size: int, epochs: int, device: str, augment: bool, path: Path = BREAST64) -> dict:
    import torch

    from gradnca_onnx.training import (
        RunConfig,
        finetune,
        load_source,
        load_target_splits,
    )
    from gradnca_onnx.training.loop import prepare_target

    target = load_target_splits(path)
    source = load_source("resnet18")
    data = prepare_target(target.train, target.val, None, image_size=size, mean=source.mean,
                          std=source.std, channels=source.channels)
    times: list[float] = []
    cfg = RunConfig(lr=0.01, weight_decay=1e-4, momentum=0.9, batch_size=32,
                    max_epochs=epochs + 1, patience=epochs + 1, image_size=size, augment=augment)
    model = source.module
    result = finetune(model, data, cfg, device=device,
                      on_epoch=lambda m: times.append(m.seconds))
    steady = times[1:] or times
    per_epoch = sum(steady) / len(steady)
    return {"image_size": size, "epochs_timed": len(steady), "seconds_per_epoch": per_epoch,
            "epochs_per_second": 1.0 / per_epoch, "warmup_epoch_s": times[0],
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
            "augment": augment,
            "n_train": len(target.train), "n_val": len(target.val),
            "stop": result.stop_reason}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 224])
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per size (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", type=Path, default=BREAST64, help="the BreastMNIST 64 px npz")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        t = time.perf_counter()
        row = measure(size, args.epochs, args.device, not args.no_augment, args.data)
        row["total_s"] = time.perf_counter() - t
        rows.append(row)
        if not args.json:
            print(f"resnet18 {size:>3} px: {row['epochs_per_second']:.3f} epochs/s "
                  f"({row['seconds_per_epoch']:.2f} s/epoch; {row['n_train']} train + "
                  f"{row['n_val']} val images, batch 32, {row['threads']} thread(s), "
                  f"{row['device']}, augment={row['augment']})", flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
