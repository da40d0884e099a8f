"""``rank`` against the paper's reference pipeline, and one model's score against its floor.

    python benchmarks/bench_rank.py [--sizes 28 224] [--n 1100] [--models 2]

For each image size: a zoo of randomly initialised torchvision resnet18 models (exported once,
export time not counted) scored on n images with 11 classes (real images pooled from
../shared/data, resized), timed
  * reference: torch eager forward for the features + scikit-learn NCA/k-NN (default threads) +
    the S_FU pass with pytorch-metric-learning and autograd, per model (REFERENCE 3-4);
  * ours: ``rank_zoo`` on onnxruntime (no cache);
  * floor: one torch-eager forward + backward pass over the same images (batches of the S_FU
    size, loss = sum of the features), the least any method that needs a gradient can pay.
Ratios are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[28, 224])
    ap.add_argument("--n", type=int, default=1100)
    ap.add_argument("--models", type=int, default=2)
    args = ap.parse_args()

    import tempfile

    import torch
    import torchvision
    from pytorch_metric_learning.losses import TripletMarginLoss
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    from conftest import real_images
    from gradnca_onnx.data.dataset import from_arrays
    from gradnca_onnx.data.preprocess import preprocess
    from gradnca_onnx.engine import FeatureCache, rank_zoo
    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.exporters.loading import from_module
    from gradnca_onnx.scores import fu_batch_slices

    images, labels = real_images("pool11", args.n, seed=0)
    for size in args.sizes:
        zoo = Path(tempfile.mkdtemp(prefix=f"bench-zoo-{size}-"))
        models = []
        for i in range(args.models):
            torch.manual_seed(i)
            m = torchvision.models.resnet18(num_classes=10).eval()
            models.append(m)
            export_model(from_module(m, name="resnet18"), zoo, name=f"resnet18-{i}",
                         input_size=size, norm="half", grads_batch=32)
        target = from_arrays(images, labels, name="pool11")
        x = torch.from_numpy(preprocess(images, mean=(0.5,) * 3, std=(0.5,) * 3,
                                        size=None if size == 28 else size, channels=3))
        y = torch.as_tensor(labels)

        t0 = time.perf_counter()
        ref_parts = {"forward": 0.0, "nca_knn": 0.0, "fu": 0.0}
        for m in models:
            body = torch.nn.Sequential(*list(m.children())[:-1], torch.nn.Flatten())
            t = time.perf_counter()
            with torch.no_grad():
                feats = torch.cat([body(x[s:s + 64]) for s in range(0, len(x), 64)]).numpy()
            ref_parts["forward"] += time.perf_counter() - t
            t = time.perf_counter()
            nca = NeighborhoodComponentsAnalysis(n_components=50, random_state=42).fit(feats, labels)
            e = nca.transform(feats)
            KNeighborsClassifier(5).fit(e, labels).predict_proba(e)
            ref_parts["nca_knn"] += time.perf_counter() - t
            t = time.perf_counter()
            for sl in fu_batch_slices(len(x)):
                m.zero_grad()
                TripletMarginLoss()(body(x[sl]), y[sl]).backward()
                _ = (m.conv1.weight.grad.norm(), m.layer1[0].conv1.weight.grad.norm())
            ref_parts["fu"] += time.perf_counter() - t
        t_ref = time.perf_counter() - t0

        t0 = time.perf_counter()
        ranking = rank_zoo(zoo, target, cache=FeatureCache(None))
        t_ours = time.perf_counter() - t0
        assert all(r.ok for r in ranking.models), [r.error for r in ranking.models]

        m = models[0]
        body = torch.nn.Sequential(*list(m.children())[:-1], torch.nn.Flatten())
        t0 = time.perf_counter()
        for sl in fu_batch_slices(len(x)):
            m.zero_grad()
            body(x[sl]).sum().backward()
        t_floor = time.perf_counter() - t0
        per_model = t_ours / args.models
        print(f"{size} px, n={args.n}, {args.models} resnet18: reference {t_ref:.1f} s "
              f"(forward {ref_parts['forward']:.1f} + NCA/k-NN {ref_parts['nca_knn']:.1f} + S_FU "
              f"{ref_parts['fu']:.1f}) | rank {t_ours:.1f} s -> {t_ref / t_ours:.2f}x faster | "
              f"one model {per_model:.1f} s = {per_model / t_floor:.2f}x one torch forward+backward "
              f"({t_floor:.1f} s)")


if __name__ == "__main__":
    main()
