"""Time and peak memory of every target-based metric on wide and on many features (issue 24).

A headless ViT or a flattened feature map gives D = 16k-26k features for N ~ 100 images; the
paper's targets give D = 512 for N ~ 1,100. Each (metric, size) runs in its own child process
(``python bench_metrics_wide.py --child ...``), so a crash (SIGSEGV) or a run past the time
limit is recorded for that case instead of ending the benchmark, and the peak resident memory
(``ru_maxrss``) is the case's own. The metric is called through
``gradnca_onnx.metrics.compute_metrics(..., errors="record")``, the path ``rank --metrics`` takes,
so a metric refused by the memory pre-check shows as ``skipped`` with its note. numba kernels
and imports are warmed up on a small input first and not timed.

    python benchmarks/bench_metrics_wide.py                      # the three sizes below
    python benchmarks/bench_metrics_wide.py --sizes 120x16384 --metrics sfda,hscore
    PYTHONPATH=/path/to/old/tree python benchmarks/bench_metrics_wide.py   # another version
    python benchmarks/bench_metrics_wide.py --blas-threads 1     # steadier on a busy machine

Columns: seconds of the metric call; peak RSS of the child (MiB); "extra", the peak minus the
RSS just before the call (what the metric itself needed); status, value and note.

On a machine whose cores are busy with other work, OpenBLAS worker threads spin and small
products run many times slower (see ``bench_metrics.py``); ``--blas-threads 1`` removes that
noise, but also hides crashes of the threaded BLAS (the D = 16k SFDA Cholesky).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import (
    features,  # noqa: E402  (one generator for every metric benchmark)
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

#: The target-based metrics (the static ones, params and source_images, read files only).
METRICS = ("logme", "leep", "nleep", "parc", "sfda", "ncti", "gbc", "hscore", "nce", "transrate")
#: N x D: a headless ViT on a 120-image target; the paper's size; ten times the paper's N.
SIZES = ("120x16384", "1100x512", "11000x512")
SOURCE_CLASSES = 1000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(name: str, n: int, d: int, c: int, blas_threads: int) -> None:
    """Run one metric once on seeded features and print one JSON line."""
    import warnings

    from threadpoolctl import threadpool_limits

    import gradnca_onnx.metrics as gm

    if blas_threads:
        threadpool_limits(limits=blas_threads, user_api="blas")
    warnings.simplefilter("ignore")
    Xs, ys = features(60, 8, 3, seed=1)
    gm.compute_metrics([name], Xs, ys, np.random.default_rng(1).normal(size=(60, 5)),
                       errors="record")  # imports, numba kernels
    X, y = features(n, d, c, seed=0)
    X = X.astype(np.float32)  # what the engine hands over (onnxruntime's output)
    logits = (np.random.default_rng(1).normal(size=(n, SOURCE_CLASSES))).astype(np.float32)
    before = _rss_bytes()
    t0 = time.perf_counter()
    res = gm.compute_metrics([name], X, y, logits, errors="record")[name]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak": peak, "extra": max(peak - before, 0),
                      "status": res.status, "value": res.value, "note": res.note}))


def run_case(name: str, n: int, d: int, c: int, timeout: float, blas_threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, str(n), str(d), str(c), str(blas_threads)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"> {timeout:.0f} s (stopped)", "seconds": time.perf_counter() - t0}
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return {"status": f"killed by {sig}", "seconds": time.perf_counter() - t0}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": f"exit {proc.returncode}: {last[:120]}",
                "seconds": time.perf_counter() - t0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated NxD")
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="limit BLAS threads in every case (default: the library's)")
    parser.add_argument("--child", nargs=5, metavar=("METRIC", "N", "D", "C", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, n, d, c, threads = args.child
        child(name, int(n), int(d), int(c), int(threads))
        return
    import gradnca_onnx

    print(f"machine: {machine_line()}", flush=True)
    print(f"gradnca_onnx from {Path(gradnca_onnx.__file__).parent}; {args.classes} classes, "
          f"features float32, {SOURCE_CLASSES} source logits; BLAS threads: "
          f"{args.blas_threads or 'library default'}; load average {os.getloadavg()[0]:.1f}")
    header = (f"{'metric':<10}{'N':>7}{'D':>7}{'seconds':>9}{'peak MiB':>10}{'extra MiB':>11}"
              "  status / value / note")
    print(header)
    print("-" * len(header))
    for size in args.sizes.split(","):
        n, d = (int(v) for v in size.lower().split("x"))
        for name in [m for m in args.metrics.split(",") if m]:
            r = run_case(name, n, d, args.classes, args.timeout, args.blas_threads)
            peak = f"{r['peak'] / 2**20:.0f}" if "peak" in r else "-"
            extra = f"{r['extra'] / 2**20:.0f}" if "extra" in r else "-"
            what = r["status"] if "value" not in r else (
                f"{r['status']} {r['value']:.6g}" + (f" ({r['note'][:90]})" if r["note"] else ""))
            print(f"{name:<10}{n:>7}{d:>7}{r['seconds']:>9.2f}{peak:>10}{extra:>11}  {what}",
                  flush=True)


if __name__ == "__main__":
    main()
