"""Throughput of a zoo x targets scoring job: local executor vs Ray, and a scaling estimate.

    python benchmarks/bench_executors.py [--workers 1,2] [--targets 6] [--repeats 2]
                                         [--json OUT.json]

The job: the bundled demo zoo (6 models) on ``--targets`` targets cut from the bundled
BreastMNIST (train, test, val, then train again under new names), feature cache off, so every
(model, target) task runs its ONNX passes. Timed:

* ``local``, onnxruntime on 1 thread and on all cores (what a single workstation does);
* ``ray`` with a fresh local Ray instance of N CPUs for each N in ``--workers`` (one task per
  CPU, onnxruntime on 1 thread per task). Ray's start-up is timed separately.

Every Ray run's rankings are checked to be identical to the local ones. Each task reports its own
scoring time, so every run splits into task time and overhead (Ray scheduling, object transfer,
the driver's zoo step). The estimate for N dedicated CPUs: T(N) = max(W / N, L) + o, with W the
summed task time of the smallest Ray run, L its longest task, o the largest overhead seen (valid
on nodes like this one, with the zoo and cache on a shared file system).
No assertion on speed: figures are reported, never goals (the machine may be shared).
"""

from __future__ import annotations

from pathlib import Path

import sys

import argparse
import json
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402


def _targets(k: int) -> list:
    from gradnca_onnx.data.load import load_target
    from gradnca_onnx.demo import demo_paths

    _, path = demo_paths()
    splits = ["train", "test", "val"]
    return [load_target(path, splits[i % 3], name=f"breast-{splits[i % 3]}-{i}") for i in range(k)]


def _rows(rankings) -> list:
    return [[(m.name, m.rank, m.score, m.lp, m.fu) for m in r.models] for r in rankings]


def _job(zoo, targets, executor, threads, repeats=1):
    """Best of ``repeats`` wall times of the whole job (a shared machine adds noise, never
    removes work), and the rankings."""
    from gradnca_onnx.engine import RuntimeConfig
    from gradnca_onnx.executors import rank_targets

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = rank_targets(zoo, targets, executor=executor,
                           runtime=RuntimeConfig(device="cpu", threads=threads), cache=None)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _work(rankings) -> float:
    return float(sum(m.seconds for r in rankings for m in r.models))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="Ray CPU counts to time (comma-separated).")
    ap.add_argument("--targets", type=int, default=6, help="Number of targets (6 models each).")
    ap.add_argument("--repeats", type=int, default=2, help="Timed repeats per mode (best kept).")
    ap.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure

    import os

    import ray

    from gradnca_onnx.demo import demo_paths
    from gradnca_onnx.executors import LocalExecutor, RayExecutor

    zoo, _ = demo_paths()
    targets = _targets(args.targets)
    workers = sorted({int(w) for w in args.workers.split(",")})
    figures: dict = {"cores": os.cpu_count(), "targets": len(targets), "models": 6,
                     "repeats": args.repeats,
                     "tasks": 6 * len(targets), "modes": {}}
    n_tasks = figures["tasks"]

    _job(zoo, targets[:1], LocalExecutor(), 1)  # warm-up: imports, page cache
    secs, ref = _job(zoo, targets, LocalExecutor(), 1, args.repeats)
    figures["modes"]["local, 1 thread"] = secs
    work = {"local, 1 thread": _work(ref)}
    secs, out = _job(zoo, targets, LocalExecutor(), None, args.repeats)
    work["local, all cores"] = _work(out)
    # Multi-threaded onnxruntime may change the last bits of a score, never the order.
    assert [[m[:2] for m in r] for r in _rows(out)] == [[m[:2] for m in r] for r in _rows(ref)]
    figures["modes"]["local, all cores"] = secs
    ray_secs = {}
    for n in workers:
        t0 = time.perf_counter()
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup = time.perf_counter() - t0
        ex = RayExecutor()
        _job(zoo, targets[:1], ex, 1)  # start the worker processes, import the package there
        secs, out = _job(zoo, targets, ex, 1, args.repeats)
        assert _rows(out) == _rows(ref), "Ray results differ from the local executor"
        ray.shutdown()
        figures["longest_task_s"] = max(figures.get("longest_task_s", 0.0),
                                        max(m.seconds for r in out for m in r.models)
                                        if n == workers[0] else 0.0)
        ray_secs[n] = secs
        figures["modes"][f"ray, {n} CPU(s)"] = secs
        work[f"ray, {n} CPU(s)"] = _work(out)
        figures[f"ray_startup_s_{n}"] = startup

    print(f"{figures['models']} models x {len(targets)} targets = {n_tasks} tasks, no cache, "
          f"{figures['cores']} cores")
    figures["task_seconds"] = work
    # task s: the per-task scoring time summed (measured inside the tasks, last repeat);
    # busy: task s / (wall x CPUs used), how much of the CPUs the scoring itself kept busy.
    print(f"{'mode':<22}{'seconds':>9}{'tasks/s':>9}{'task s':>9}{'busy':>7}")
    for mode, secs in figures["modes"].items():
        cpus = int(mode.split(", ")[1].split()[0]) if mode.startswith("ray") else 1
        print(f"{mode:<22}{secs:>9.2f}{n_tasks / secs:>9.2f}{work[mode]:>9.2f}"
              f"{work[mode] / (secs * cpus):>7.2f}")
    for n in workers:
        print(f"(ray start-up with {n} CPU(s): {figures[f'ray_startup_s_{n}']:.1f} s, not "
              "included)")
    # Scaling model from the measurements: a job on N dedicated CPUs takes the uncontended
    # task time W (summed over tasks, from the smallest Ray run) spread over N, plus the
    # overhead o that Ray and the driver add (wall - task time / CPUs, the largest seen), and
    # never less than the longest single task L plus o.
    n0 = workers[0]
    w = work[f"ray, {n0} CPU(s)"]
    overheads = {n: ray_secs[n] - work[f"ray, {n} CPU(s)"] / n for n in workers}
    o = max(0.0, max(overheads.values()))
    longest = figures["longest_task_s"]
    slow = {n: work[f"ray, {n} CPU(s)"] / work[f"ray, {n0} CPU(s)"] for n in workers}
    print("Ray overhead (wall - task s / CPUs): " +
          ", ".join(f"{n} CPU(s) {overheads[n]:.2f} s" for n in workers))
    print("per-task slow-down vs the first Ray run (CPU contention on this machine): " +
          ", ".join(f"{n} CPU(s) x{slow[n]:.2f}" for n in workers))
    est = {}
    print(f"estimate on N dedicated CPUs: T(N) = max({w:.2f}/N, {longest:.2f}) + {o:.2f} s")
    for n in (1, 2, 4, 8, 16, 32, 64):
        if n > n_tasks:
            break
        t = max(w / n, longest) + o
        est[n] = t
        print(f"  N={n:<3} {t:7.2f} s  {n_tasks / t:7.2f} tasks/s")
    figures.update(overhead_s=overheads, slowdown=slow, estimate_s=est)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
