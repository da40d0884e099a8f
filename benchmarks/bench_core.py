"""Speed and memory of the compiled core against the references, measured in one run.

    python benchmarks/bench_core.py [--quick]

Prints, after a warm-up of each side:
  * S_LP (NCA 50 + 5-NN) time vs the scikit-learn pipeline at n=1100/D=512/C=11 and
    n=5000/D=2048/C=11. scikit-learn is timed twice: with its default threading (what a user
    gets) and single-threaded (threadpool_limits(1): the configuration whose score gradnca-onnx
    reproduces bit for bit; scikit-learn's multi-threaded score depends on the thread count);
  * peak memory of S_LP at n=20,000/D=512 (a fresh subprocess each, RSS high-water mark) and of
    one scikit-learn objective evaluation at smaller n (it holds several dense n x n matrices);
  * triplet loss + gradient per batch of 183 with 11 classes vs pytorch-metric-learning + autograd.
No assertion: ratios are reported, never absolute goals (machines are noisy).
"""

from __future__ import annotations

from pathlib import Path

import argparse
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402


def problem(n: int, d: int, c: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    # Weakly separated classes: NCA runs its 50 iterations, as on real features.
    X = rng.normal(size=(c, d))[y] * 0.1 + rng.normal(size=(n, d))
    return X, y


def sklearn_slp(X, y):
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    nca = NeighborhoodComponentsAnalysis(n_components=50, random_state=42).fit(X, y)
    E = nca.transform(X)
    p = KNeighborsClassifier(5).fit(E, y).predict_proba(E)
    return float(p[np.arange(len(y)), np.searchsorted(np.unique(y), y)].mean()), nca.n_iter_


def timed(fn, repeat: int):
    fn()  # warm-up
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_slp(n: int, d: int, repeat: int) -> dict:
    import gradnca_onnx as g

    X, y = problem(n, d, 11)
    t_ours, s_ours = timed(lambda: g.label_prediction_score(X, y), repeat)
    t_sk_def, (s_sk_def, it_def) = timed(lambda: sklearn_slp(X, y), repeat)
    with threadpool_limits(limits=1):
        t_sk_one, (s_sk_one, it_one) = timed(lambda: sklearn_slp(X, y), repeat)
    return {
        "n": n, "D": d, "ours_s": t_ours, "sklearn_default_s": t_sk_def,
        "sklearn_1thread_s": t_sk_one, "speedup_vs_default": t_sk_def / t_ours,
        "speedup_vs_1thread": t_sk_one / t_ours, "S_LP_ours": s_ours,
        "S_LP_sklearn_1thread": s_sk_one, "S_LP_sklearn_default": s_sk_def,
        "nca_iterations": it_one,
    }


PEAK = textwrap.dedent(
    """
    import sys, time, numpy as np
    n, d, which, iters = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

    def hwm():  # resident high-water mark of this process, GiB
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 2**20

    def reset_hwm():  # a forked child inherits its parent's mark; "5" resets it (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 11, n)
    X = rng.normal(size=(11, d))[y] * 0.1 + rng.normal(size=(n, d))
    if which == "ours":
        from gradnca_onnx.scores import label_prediction_probabilities
        reset_hwm()
        base = hwm()
        t = time.perf_counter()
        label_prediction_probabilities(X, y, max_iter=iters)
    else:
        from sklearn.neighbors import NeighborhoodComponentsAnalysis as N
        reset_hwm()
        base = hwm()
        t = time.perf_counter()
        m = N(n_components=50); m.n_iter_ = 0
        A = rng.normal(size=(50, d)) * 0.05
        m._loss_grad_lbfgs(A.ravel(), X, y[:, None] == y[None, :], -1.0)
    peak = hwm()
    print(peak, peak - base, time.perf_counter() - t)
    """
)


def peak_memory(n: int, d: int, which: str, iters: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK, str(n), str(d), which, str(iters)],
                         capture_output=True, text=True, check=True)
    total, extra, secs = map(float, out.stdout.split())
    return {"n": n, "D": d, "which": which, "peak_rss_gib": total, "extra_gib": extra,
            "seconds": secs, "nca_max_iter": iters}


def bench_triplet(repeat: int) -> dict:
    import torch
    from pytorch_metric_learning.losses import TripletMarginLoss

    import gradnca_onnx as g

    X, y = problem(183, 512, 11, seed=1)
    X32 = X.astype(np.float32)
    loss_fn = TripletMarginLoss()
    labels = torch.as_tensor(y)

    def pml():
        e = torch.tensor(X32, requires_grad=True)
        loss_fn(e, labels).backward()
        return e.grad

    t_pml, _ = timed(pml, repeat)
    t_ours, _ = timed(lambda: g.triplet_loss_grad(X32, y), repeat)
    return {"batch": 183, "D": 512, "classes": 11, "ours_ms": t_ours * 1e3, "pml_ms": t_pml * 1e3,
            "speedup": t_pml / t_ours, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the n=5000 and n=20,000 runs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    results: dict = {"slp": [], "triplet": None}
    if not args.memory_only:
        results["slp"].append(bench_slp(1100, 512, args.repeat))
        if not args.quick:
            results["slp"].append(bench_slp(5000, 2048, 1))
        results["triplet"] = bench_triplet(max(args.repeat, 10))
    if not args.quick:
        results["memory"] = [
            # Memory is the same every iteration; 5 keep the run short.
            peak_memory(20000, 512, "ours", 5),
            peak_memory(5000, 512, "sklearn", 0),
            peak_memory(10000, 512, "sklearn", 0),
        ]
    for row in results["slp"]:
        print(f"S_LP n={row['n']} D={row['D']}: ours {row['ours_s']:.3f} s | scikit-learn default "
              f"{row['sklearn_default_s']:.3f} s ({row['speedup_vs_default']:.1f}x) | scikit-learn "
              f"1 thread {row['sklearn_1thread_s']:.3f} s ({row['speedup_vs_1thread']:.1f}x) | "
              f"S_LP ours {row['S_LP_ours']:.6f} = 1-thread {row['S_LP_sklearn_1thread']:.6f} "
              f"(default-thread sklearn {row['S_LP_sklearn_default']:.6f})")
    t = results["triplet"]
    if t:
        print(f"triplet loss+grad B=183 D=512 C=11: ours {t['ours_ms']:.2f} ms | pml+autograd "
              f"{t['pml_ms']:.2f} ms ({t['speedup']:.1f}x)")
    for m in results.get("memory", []):
        what = "S_LP full fit" if m["which"] == "ours" else "scikit-learn, one objective evaluation"
        print(f"peak RSS n={m['n']} D={m['D']} {what}: {m['peak_rss_gib']:.2f} GiB "
              f"(+{m['extra_gib']:.2f} GiB over the process before the call, {m['seconds']:.1f} s)")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
