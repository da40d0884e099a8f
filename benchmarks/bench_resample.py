"""``rank --resamples`` on the demo zoo: cost per resample, and the cheap S_FU estimator's bias.

    python benchmarks/bench_resample.py [--resamples 50] [--seed 0] [--cache DIR]

Ranks the bundled demo zoo (7 members, BreastMNIST train, n = 546) once to fill the cache, then
with ``--resamples N`` twice: S_FU re-batched (a ``grads.onnx`` pass per batch of every
subsample) and from the cached batches drawn with replacement (no pass). Prints the wall time
of each and, per model, the plain S_FU, the median and 95% width of S_FU under both estimators,
the cheap one's relative bias (median vs the re-batched median) and width ratio, and P(rank 1)
under both. Nothing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import sys

import argparse
import tempfile
import time

from gradnca_onnx.data.load import load_target
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import FeatureCache, rank_zoo
from gradnca_onnx.engine.resample import resample_zoo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--resamples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="cache directory (default: a fresh one)")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    zoo, path = demo_paths()
    target = load_target(path)
    cache = FeatureCache(args.cache or tempfile.mkdtemp(prefix="bench_resample_"))
    t0 = time.perf_counter()
    rank_zoo(zoo, target, cache=cache)
    print(f"plain rank (fills the cache): {time.perf_counter() - t0:.1f} s")
    runs = {}
    for fu in ("batches", "rebatch"):
        t0 = time.perf_counter()
        runs[fu] = resample_zoo(zoo, target, args.resamples, seed=args.seed, cache=cache, fu=fu)
        print(f"--resamples {args.resamples} --fu-resample {fu}: "
              f"{time.perf_counter() - t0:.1f} s")
    cheap = {m.name: m for m in runs["batches"].models}
    print(f"{'model':16s} {'S_FU':>7s}  {'batches med':>11s} {'width':>6s}  {'rebatch med':>11s} "
          f"{'width':>6s}  {'bias':>6s} {'width ratio':>11s}  P(rank 1) b/r")
    for m in runs["rebatch"].models:
        r, b = m.resampling, cheap[m.name].resampling
        if r is None or r["fu"] is None:
            continue
        wr, wb = r["fu"]["hi"] - r["fu"]["lo"], b["fu"]["hi"] - b["fu"]["lo"]
        bias = (b["fu"]["median"] - r["fu"]["median"]) / r["fu"]["median"]
        print(f"{m.name:16s} {m.fu:7.4f}  {b['fu']['median']:11.4f} {wb:6.3f}  "
              f"{r['fu']['median']:11.4f} {wr:6.3f}  {bias:+6.3f} {wb / wr:11.2f}  "
              f"{b['p_rank1']:.2f}/{r['p_rank1']:.2f}")


if __name__ == "__main__":
    main()
