"""Two ``gradnca_onnx.rank`` calls at once against the same two calls one after the other, and
one call's peak memory against the target's and the zoo's size.

    python benchmarks/bench_concurrency.py [--n 546] [--repeats 3] [--out results.json]

Concurrency: the demo zoo (7 members) on the first n training images of the bundled
BreastMNIST, no feature cache. Per setting of ``threads`` (1, and the default: every pool at
one thread per core), the ratio is the wall time of two calls in two threads over the wall time
of the same two calls in sequence (median of ``--repeats``); 0.5 is the floor on 2 cores (each
call on its own core), 1.0 means concurrency bought nothing, above 1 the calls' pools fight.

Memory: per (n, number of members), a fresh child process runs one call with ``threads=1`` and
reports its peak resident set size (``VmHWM``) and the baseline of the same process after
importing the package and loading the target (what the call itself added is the difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

MEMORY_CHILD = r"""
import json, sys
import numpy as np

def hwm():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import gradnca_onnx as g
from gradnca_onnx.demo import demo_paths
zoo, target = demo_paths()
d = np.load(target)
x, y = d["train_images"][:{n}], d["train_labels"][:{n}]
members = sorted(p.name for p in zoo.iterdir() if (p / "manifest.json").is_file())[:{k}]
import gradnca_onnx.api, onnxruntime  # the modules a call loads, before the baseline
base = hwm()
g.rank(zoo, (x, y), threads=1, models=members)
print(json.dumps({{"base_mib": base, "peak_mib": hwm()}}))
"""


def _calls(zoo: Path, x: np.ndarray, y: np.ndarray, threads: int | None,
           concurrent: bool) -> float:
    import gradnca_onnx as g

    def one() -> None:
        ranking = g.rank(zoo, (x, y), threads=threads)
        assert ranking.ok, ranking.failed

    started = time.perf_counter()
    if concurrent:
        workers = [threading.Thread(target=one) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    else:
        one()
        one()
    return time.perf_counter() - started


def concurrency(n: int, repeats: int) -> list[dict]:
    import gradnca_onnx as g
    from gradnca_onnx.demo import demo_paths

    zoo, target = demo_paths()
    d = np.load(target)
    x, y = d["train_images"][:n], d["train_labels"][:n]
    g.rank(zoo, (x, y), threads=1)  # warm-up: imports, onnxruntime's first session
    rows = []
    for threads in (1, None):
        serial, parallel = [], []
        for _ in range(repeats):
            serial.append(_calls(zoo, x, y, threads, concurrent=False))
            parallel.append(_calls(zoo, x, y, threads, concurrent=True))
        s, p = statistics.median(serial), statistics.median(parallel)
        rows.append({"threads": threads, "serial_s": round(s, 2), "concurrent_s": round(p, 2),
                     "ratio": round(p / s, 3)})
        print(f"threads={threads}: two calls in sequence {s:.2f} s, concurrently {p:.2f} s, "
              f"ratio {p / s:.2f} (floor 0.5 on 2 cores)", flush=True)
    return rows


def memory(sizes: list[int], members: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        for k in members:
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD.format(n=n, k=k)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"n": n, "members": k, "base_mib": round(r["base_mib"], 1),
                   "peak_mib": round(r["peak_mib"], 1),
                   "call_mib": round(r["peak_mib"] - r["base_mib"], 1)}
            rows.append(row)
            print(f"n={n} members={k}: peak RSS {row['peak_mib']} MiB, the call added "
                  f"{row['call_mib']} MiB", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=546, help="target images (546 = the whole train)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[150, 546])  # 546: the whole train split
    ap.add_argument("--members", type=int, nargs="+", default=[1, 3, 7])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    result = {"cpu": machine()["cpu"], "machine": machine(), "n": args.n,
              "concurrency": concurrency(args.n, args.repeats),
              "memory": memory(args.sizes, args.members)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
