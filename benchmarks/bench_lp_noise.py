"""S_LP's numerical noise on real features (issue 17 item 3): perturbation and thread count.

    python benchmarks/bench_lp_noise.py [--seeds 8] [--iters 50 300] [--models retina,...]

Features: the bundled demo zoo's members on the demo target (real BreastMNIST images,
n = 546). Per model and NCA iteration budget: S_LP of the features, then of the features times
(1 + 1e-6 * N(0, 1)) for each seed, and S_LP with 1 and with 2 threads. Prints the spread
(max - min) under the perturbation next to the smallest S_LP gap between two models of the zoo.
``max_iter=50`` is the paper's (scikit-learn's default); more iterations move NCA closer to
convergence. Nothing is asserted.

``--variants paper,converged,seeds5`` (issue 17 item 3; ``seeds5`` is what ``rank --lp-jitters
5`` computes, the engine's default stays the paper's definition) then measures whether an S_LP variant removes the noise: per model, the SD
over ``--seeds`` outer 1e-6 perturbations of

* ``paper``: NCA(max_iter=50, tol=1e-5), the paper's S_LP;
* ``converged``: NCA run to convergence (max_iter=2000, tol=1e-12);
* ``seeds5``: the mean of the paper's S_LP over five fixed 1e-6 jitters of the features
  (seeds 0-4), a smoothing of the numerical noise (it costs five S_LP).

and the SD ratio to ``paper`` (below 1: less noise; "removes most" = below 0.5).
"""

from __future__ import annotations

from pathlib import Path

import sys

import argparse
import tempfile
import time

import numpy as np

from gradnca_onnx.data.load import load_target
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import FeatureCache
from gradnca_onnx.engine.runtime import RuntimeConfig
from gradnca_onnx.engine.scoring import model_passes
from gradnca_onnx.scores import label_prediction_probabilities, label_prediction_score
from gradnca_onnx.scores.label_prediction import jittered_features
from gradnca_onnx.zoo import list_zoo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402


def lp(x, y, iters, threads=None) -> float:
    return float(np.mean(label_prediction_probabilities(
        x, y, n_components=min(50, x.shape[1]), max_iter=iters, n_threads=threads)))


#: ``f * (1 + 1e-6 * N(0, 1))`` with a seeded generator: the package's own jitter.
jitter = jittered_features


VARIANTS = {
    "paper": lambda x, y: lp(x, y, 50),
    "converged": lambda x, y: float(np.mean(label_prediction_probabilities(
        x, y, n_components=min(50, x.shape[1]), max_iter=2000, tol=1e-12))),
    "seeds5": lambda x, y: label_prediction_score(x, y, n_components=min(50, x.shape[1]),
                                                  jitters=5),
}


def variant_noise(feats: dict, y, names: list[str], n_outer: int) -> None:
    """Per model and variant: SD over ``n_outer`` outer perturbations, and the SD ratio."""
    print(f"variants (SD over {n_outer} outer 1e-6 perturbations; ratio = SD / paper's SD):")
    print(f"  {'model':16s} " + " ".join(f"{n + ' S_LP':>15s} {'SD':>8s} {'ratio':>6s}"
                                         for n in names) + f" {'seconds':>8s}")
    sds = {n: [] for n in names}
    for m, f in feats.items():
        t0 = time.perf_counter()
        cells = []
        for n in names:
            vals = [VARIANTS[n](jitter(f, 1000 + k), y) for k in range(n_outer)]
            sds[n].append(float(np.std(vals)))
            ratio = sds[n][-1] / sds["paper"][-1] if sds["paper"][-1] > 0 else float("nan")
            cells.append(f"{VARIANTS[n](f, y):15.4f} {sds[n][-1]:8.5f} {ratio:6.2f}")
        print(f"  {m:16s} " + " ".join(cells) + f" {time.perf_counter() - t0:8.0f}")
    for n in names:
        print(f"  {n}: median SD {np.median(sds[n]):.5f}, max SD {max(sds[n]):.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--iters", type=int, nargs="+", default=[50, 300])
    ap.add_argument("--models", default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--variants", default=None, metavar="paper,converged,seeds5",
                    help="Also measure the noise of these S_LP variants ('paper' is added).")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    zoo, path = demo_paths()
    target = load_target(path)
    cache = FeatureCache(args.cache or tempfile.mkdtemp(prefix="bench_lp_noise_"))
    wanted = set(args.models.split(",")) if args.models else None
    feats = {}
    for e in list_zoo(zoo):
        if wanted is None or e.path.name in wanted:
            arrays, _, _ = model_passes(e.path, e.manifest, target, runtime=RuntimeConfig(),
                                        cache=cache)
            feats[e.path.name] = arrays["features"]
    y = target.labels
    for iters in args.iters:
        t0 = time.perf_counter()
        base = {m: lp(f, y, iters) for m, f in feats.items()}
        gaps = np.diff(np.sort(list(base.values())))
        print(f"max_iter={iters}: smallest S_LP gap between two models {gaps.min():.4f}, "
              f"median gap {np.median(gaps):.4f}")
        print(f"  {'model':16s} {'S_LP':>7s} {'spread 1e-6':>11s} {'SD':>7s} {'1 vs 2 threads':>15s}")
        for m, f in feats.items():
            rng = np.random.default_rng(0)
            pert = [lp((f * (1 + 1e-6 * rng.standard_normal(f.shape))).astype(f.dtype), y, iters)
                    for _ in range(args.seeds)]
            thr = abs(lp(f, y, iters, 1) - lp(f, y, iters, 2))
            print(f"  {m:16s} {base[m]:7.4f} {max(pert) - min(pert):11.5f} {np.std(pert):7.5f} "
                  f"{thr:15.2e}")
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    if args.variants:
        names = ["paper"] + [n for n in args.variants.split(",") if n and n != "paper"]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
        variant_noise(feats, y, names, args.seeds)


if __name__ == "__main__":
    main()
