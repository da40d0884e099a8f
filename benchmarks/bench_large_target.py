"""Large targets: how far the subsampled ranking (``rank --max-samples``) moves from the full
one, and the time and memory of one model on a 100,000-image target.

    python benchmarks/bench_large_target.py --n 16000 --max-samples 5000 --seeds 0,1,2 \\
        [--models 5] [--big 100000] [--json out.json]

The target: PneumoniaMNIST (all splits, 5,856 images, ``../shared/data``) grown to ``--n``
images by augmentation (a flip, a shift of up to 2 px, Gaussian noise of SD 4 grey levels),
so no two images are equal. The zoo: the bundled demo zoo's first ``--models`` CNNs (28 px).
Reported: Kendall's tau between the full ranking (every image) and each subsampled one, for
S and for S_LP, the top-1 agreement, and the spread of the subsampled S_LP across seeds; then
one model ranked on ``--big`` images with the default bound, whole process, in a child
process (time and peak RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine, machine_line  # noqa: E402

PNEUMONIA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "medical" /
             "pneumoniamnist-modified" / "aksufatih-snn-medmnist" / "pneumoniamnist.npz")


def grown_target(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    with np.load(PNEUMONIA) as z:
        images = np.concatenate([z[f"{s}_images"] for s in ("train", "val", "test")])
        labels = np.concatenate([z[f"{s}_labels"] for s in ("train", "val", "test")]).ravel()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), n)
    pick[: len(images)] = np.arange(min(n, len(images)))  # every original image once
    out = images[pick].astype(np.float32)
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    shifts = rng.integers(-2, 3, (n, 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(out[i], (dy, dx), axis=(0, 1))
    out += rng.normal(0, 4.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), labels[pick].astype(np.int64)


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def agreement(args: argparse.Namespace) -> dict:
    import gradnca_onnx as g
    from gradnca_onnx.demo import demo_paths

    zoo, _ = demo_paths()
    models = sorted(p.name for p in zoo.iterdir() if (p / "grads.onnx").exists()
                    and "vit" not in p.name)[: args.models]
    images, labels = grown_target(args.n)
    runs = {}
    t0 = time.perf_counter()
    full = g.rank(zoo, (images, labels), models=models, max_samples=0, threads=args.threads)
    runs["full"] = {"seconds": time.perf_counter() - t0}
    by = {m.name: m for m in full.models}
    ref_s = [by[m].score for m in models]
    ref_lp = [by[m].lp for m in models]
    print(f"full n={args.n}: {runs['full']['seconds']:.0f} s; top {full.models[0].name}",
          flush=True)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        sub = g.rank(zoo, (images, labels), models=models, max_samples=args.max_samples,
                     sample_seed=seed, threads=args.threads)
        seconds = time.perf_counter() - t0
        sb = {m.name: m for m in sub.models}
        row = {"seed": seed, "seconds": seconds,
               "tau_S": kendall(ref_s, [sb[m].score for m in models]),
               "tau_lp": kendall(ref_lp, [sb[m].lp for m in models]),
               "top1_same": sub.models[0].name == full.models[0].name,
               "lp": {m: sb[m].lp for m in models}}
        rows.append(row)
        print(f"seed {seed}: {seconds:.0f} s, tau(S) {row['tau_S']:.2f}, tau(S_LP) "
              f"{row['tau_lp']:.2f}, same top-1 {row['top1_same']}", flush=True)
    spread = {m: float(np.ptp([r["lp"][m] for r in rows])) for m in models}
    return {"n": args.n, "max_samples": args.max_samples, "models": models,
            "full": {"seconds": runs["full"]["seconds"], "lp": dict(zip(models, ref_lp)),
                     "score": dict(zip(models, ref_s))},
            "subsampled": rows, "lp_range_across_seeds": spread}


def big_run(args: argparse.Namespace) -> dict:
    """One model on ``--big`` images with the default bound, whole ``gradnca-onnx rank``."""
    from gradnca_onnx.demo import demo_paths

    zoo, _ = demo_paths()
    images, labels = grown_target(args.big, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "big.npz"
        np.savez(target, train_images=images, train_labels=labels[:, None],
                 val_images=images[:6], val_labels=labels[:6, None],
                 test_images=images[:6], test_labels=labels[:6, None])
        cmd = [sys.executable, "-m", "gradnca_onnx", "rank", "--zoo", str(zoo), "--target",
               str(target), "--split", "train", "--models", "retina", "--no-cache", "--quiet",
               "--threads", str(args.threads)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"{args.big:,} images, one model, whole process: {seconds:.0f} s, peak {peak:.2f} GiB",
          flush=True)
    return {"n": args.big, "seconds": seconds, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=16000)
    parser.add_argument("--max-samples", type=int, default=5000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--big", type=int, default=100000)
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {machine_line(args.threads)}", flush=True)
    out = {"machine": machine(), "threads": args.threads}
    if args.big:
        out["big"] = big_run(args)
    if not args.skip_agreement:
        out["agreement"] = agreement(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
