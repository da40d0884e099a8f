"""Peak memory (RSS) and time of one model's score, with and without the split gradient pass.

    python benchmarks/bench_memory.py [--archs resnet18 densenet121] [--size 224] [--n 1100]
                                      [--budgets 2GiB 0] [--threads 2] [--arena engine on off]

Each architecture (random init) is exported once; then, per residual budget, a fresh child
process scores it on n real images (11 classes pooled from ../shared/data, resized) and reports
its peak resident set size (``ru_maxrss``) and wall time. Budget 0 is the pass without the
split (features.onnx over every image, then grads.onnx per S_FU batch).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {tests!r})
from _support import real_images
from gradnca_onnx.engine.runtime import memory_size
from gradnca_onnx.data.dataset import from_arrays
from gradnca_onnx.engine import FeatureCache, RuntimeConfig, rank_zoo
if {arena!r} != "engine":  # every session with onnxruntime's CPU arena on or off
    from gradnca_onnx.engine import runtime as rt
    _open = rt.RuntimeConfig.open
    rt.RuntimeConfig.open = lambda self, *a, arena=True, **k: _open(self, *a, arena={arena!r} == "on", **k)
images, labels = real_images("pool11", {n}, seed=0)
target = from_arrays(images, labels, name="pool11")
runtime = RuntimeConfig(threads={threads}, residual_memory=memory_size({budget!r}, "budget"))
t0 = time.perf_counter()
r = rank_zoo({zoo!r}, target, cache=FeatureCache(None), runtime=runtime)
m = r.models[0]
print(json.dumps({{"seconds": time.perf_counter() - t0, "error": m.error, "notes": m.notes,
                  "fu": m.fu, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "densenet121"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=1100)
    ap.add_argument("--budgets", nargs="+", default=["2GiB", "0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arena", nargs="+", choices=["engine", "on", "off"], default=["engine"],
                    help="onnxruntime's CPU memory arena: as the engine runs (off for the split "
                         "pass's sessions, on otherwise), or on / off in every session.")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure

    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.sources import load_torchvision
    from gradnca_onnx.zoo import load_manifest

    for arch in args.archs:
        zoo = Path(tempfile.mkdtemp(prefix=f"bench-mem-{arch}-"))
        out = export_model(load_torchvision(arch, seed=0), zoo, input_size=args.size,
                           pretrained_on="random init")
        m = load_manifest(out, verify=False)
        per_image = m.split.residual_bytes / m.batch_policy.grads_batch / 2**20
        for budget, arena in [(b, a) for b in args.budgets for a in args.arena]:
            code = CHILD.format(tests=str(ROOT / "tests"), n=args.n, threads=args.threads,
                                budget=budget, zoo=str(zoo), arena=arena)
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            notes = [n for n in row["notes"] if n.startswith("gradient pass:")]
            print(f"{arch} {args.size}px n={args.n} T={args.threads} budget {budget} arena "
                  f"{arena}: peak RSS "
                  f"{row['rss_mib']:.0f} MiB, {row['seconds']:.1f} s (residuals "
                  f"{per_image:.1f} MiB/image) S_FU {row['fu']:.6f} "
                  f"{notes[0] if notes else ''}  [{time.perf_counter() - t0:.0f} s with start-up]",
                  flush=True)


if __name__ == "__main__":
    main()
