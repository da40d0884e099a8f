"""3-D members: the gradient pass per volume against its torch floor, the split pass's
residuals per volume, and the peak memory of one model's score on 300 volumes.

    python benchmarks/bench_3d.py [--size 64] [--n 24] [--threads 1 2] [--grads-batch 4]
                                  [--memory-n 300] [--memory-size 32] [--out FILE.json]

For ``r3d_18`` (torchvision video) and a MONAI 3-D ResNet-18 (``spatial_dims=3``, one
channel), randomly initialised and exported at ``size``^3, scored on ``n`` AdrenalMNIST3D
volumes (the 64^3 validation split from ../shared/data, resampled; random volumes when it is
absent):
  * ours: the engine's split gradient pass (``forward.onnx`` over the S_FU batches, the
    triplet cotangent, ``backward.onnx``), as ``rank`` runs it;
  * floor: torch eager forward + the backward S_FU needs, only the two S_FU weights requiring
    grad, over the same batches (what any gradient-based score must pay);
  * the ratio ours / floor (the issue's goal: <= 1.0), at 1 and 2 threads (torch and
    onnxruntime get the same count);
  * residual MiB per volume: what the split pass keeps between its halves (manifest
    ``split.residual_bytes`` over the grads batch);
  * peak memory (VmHWM) of a process scoring one model (exported at ``memory-size``^3) on
    ``memory-n`` volumes with ``gradnca_onnx.rank``.
Ratios are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_concurrency import cpu_model  # next to this file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "medical" / "adrenalmnist3d" / "adrenalmnist3d_64.npz"
MODELS = (("r3d_18", None, None), ("monai:resnet18", {"spatial_dims": 3}, 1))


def volumes(n: int, seed: int = 0):
    """``n`` AdrenalMNIST3D 64^3 volumes and labels (both classes), or random ones."""
    if DATA.exists():
        with np.load(DATA) as f:
            x, y = f["val_images"], f["val_labels"][:, 0]
        idx = np.concatenate([np.flatnonzero(y == 1)[: n // 2], np.flatnonzero(y == 0)])[:n]
        reps = -(-n // len(idx))
        idx = np.tile(idx, reps)[:n]
        return x[idx], y[idx].astype(np.int64), "AdrenalMNIST3D 64^3 (val)"
    g = np.random.default_rng(seed)
    return (g.integers(0, 256, (n, 64, 64, 64), dtype=np.uint8),
            np.arange(n, dtype=np.int64) % 2, "random volumes (no ../shared/data)")


def floor_seconds(module, manifest, x, slices, threads: int) -> float:
    """torch eager forward + backward to the two S_FU weights only, over ``slices``."""
    import torch

    from gradnca_onnx.exporters.feature_model import FeatureModel

    torch.set_num_threads(threads)
    for p in module.parameters():
        p.requires_grad_(False)
    w1 = module.get_submodule(manifest.layers.conv1).weight
    w2 = module.get_submodule(manifest.layers.conv2).weight
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    body = FeatureModel(module, manifest.layers.features, with_logits=False)
    xt = torch.from_numpy(x)
    t0 = time.perf_counter()
    for sl in slices:
        (f,) = body(xt[sl])
        torch.autograd.grad(f, [w1, w2], torch.ones_like(f))
    return time.perf_counter() - t0


def ours_seconds(model_dir: Path, manifest, target, x, threads: int) -> float:
    from gradnca_onnx.engine import RuntimeConfig
    from gradnca_onnx.engine.split_pass import split_passes

    runtime = RuntimeConfig(threads=threads)
    t0 = time.perf_counter()
    split_passes(lambda g: runtime.open(model_dir, manifest, g, arena=False), manifest, x,
                 target.labels, runtime.residual_memory,
                 lambda stage, total: (lambda done: None), {})
    return time.perf_counter() - t0


PEAK = """
import sys, numpy as np, gradnca_onnx
from gradnca_onnx import data
n, zoo = int(sys.argv[1]), sys.argv[2]
g = np.random.default_rng(0)
t = data.from_arrays(g.integers(0, 256, (n, 64, 64, 64), dtype=np.uint8), np.arange(n) % 2)
gradnca_onnx.rank(zoo, t, threads=2, cache=False)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print(int(line.split()[1]) // 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--grads-batch", type=int, default=4)
    ap.add_argument("--memory-n", type=int, default=300)
    ap.add_argument("--memory-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure

    from gradnca_onnx import data, sources
    from gradnca_onnx.engine.scoring import _prepare
    from gradnca_onnx.exporters import export_model
    from gradnca_onnx.scores import fu_batch_slices
    from gradnca_onnx.zoo import load_manifest

    vols, labels, what = volumes(args.n)
    target = data.from_arrays(vols, labels)
    rows = []
    print(f"CPU: {cpu_model()}; {args.n} volumes ({what}) at {args.size}^3")
    with tempfile.TemporaryDirectory() as tmp:
        for arch, kwargs, channels in MODELS:
            loaded = sources.create_model(arch, arch_kwargs=kwargs, channels=channels)
            out = export_model(loaded, Path(tmp) / "zoo", input_size=args.size,
                               depth=args.size, grads_batch=args.grads_batch)
            m = load_manifest(out, verify=False)
            x = _prepare(target, m)
            slices = fu_batch_slices(len(x))
            per = m.split.residual_bytes / m.batch_policy.grads_batch / 2 ** 20
            for threads in args.threads:
                ours = ours_seconds(out, m, target, x, threads)
                floor = floor_seconds(loaded.module, m, x, slices, threads)
                row = {"model": arch, "size": args.size, "threads": threads, "n": args.n,
                       "ours_s": round(ours, 2), "floor_s": round(floor, 2),
                       "ours_per_volume_s": round(ours / args.n, 3),
                       "ratio": round(ours / floor, 2), "residual_mib_per_volume": round(per, 1)}
                rows.append(row)
                print(json.dumps(row))
        mem = []
        for arch, kwargs, channels in MODELS:
            zoo = Path(tmp) / f"mem-{arch.replace(':', '-')}"
            loaded = sources.create_model(arch, arch_kwargs=kwargs, channels=channels)
            export_model(loaded, zoo, input_size=args.memory_size, depth=args.memory_size,
                         grads_batch=8)
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", PEAK, str(args.memory_n), str(zoo)],
                                 capture_output=True, text=True, check=True)
            row = {"model": arch, "size": args.memory_size, "n": args.memory_n,
                   "peak_mib": int(res.stdout.split()[-1]),
                   "seconds": round(time.perf_counter() - t0, 1)}
            mem.append(row)
            print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"),
                                        "pass": rows, "memory": mem}, indent=2) + "\n")


if __name__ == "__main__":
    main()
