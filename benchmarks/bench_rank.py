"""``rank`` against the paper's reference pipeline, and one model's score against its floor.

    python benchmarks/bench_rank.py [--sizes 28 224] [--n 1100] [--models 2] [--threads 1 2]
                                    [--profile] [--arch resnet18]

For each image size and thread count: a zoo of randomly initialised torchvision models
(exported once, export time not counted) scored on n images with 11 classes (real images
pooled from ../shared/data, resized), timed
  * reference: torch eager forward for the features + scikit-learn NCA/k-NN + the S_FU pass
    with pytorch-metric-learning and autograd, per model (REFERENCE 3-4);
  * ours: ``rank_zoo`` on onnxruntime (no cache), and one model's stages: the forward pass
    (features, logits, residuals), the cotangent, the backward, S_LP, and (not part of
    ``rank`` unless asked for) every baseline metric;
  * floor: torch eager forward + the backward S_FU needs, with only the two S_FU weights
    requiring grad, over the S_FU batches (what any gradient-based score must pay);
  * onnxruntime's forward alone (features.onnx over every image), for scale;
  * the compute floor: the multiply-adds of that forward and backward (direct convolution,
    only the kernel taps that read the image, not its zero padding; counted with forward
    hooks) at this machine's float32 GEMM rate (a large torch.mm on the same threads), and
    the reference's time over it: the largest speed-up any implementation of the score by
    direct convolution could reach here, S_LP left out.
With ``--profile``, onnxruntime's per-operator shares of the forward and backward graphs.
Torch, onnxruntime and the reference's BLAS get the same thread count. Ratios are printed;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _floor(model, conv1, conv2, x, slices) -> float:
    """torch eager forward + backward to the two S_FU weights only."""
    import torch

    for p in model.parameters():
        p.requires_grad_(False)
    w1, w2 = model.get_submodule(conv1).weight, model.get_submodule(conv2).weight
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    body = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.Flatten())
    t0 = time.perf_counter()
    for sl in slices:
        f = body(x[sl])
        torch.autograd.grad(f, [w1, w2], torch.ones_like(f))
    for p in model.parameters():
        p.requires_grad_(True)
    return time.perf_counter() - t0


def _gemm_rate(threads: int) -> float:
    """This machine's float32 multiply-add rate (per second) on ``threads`` threads: the
    fastest of a few 2048^3 torch.mm runs, the kernel convolutions are built on."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2048 ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _image_taps(length: int, out: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    """(output position, kernel tap) pairs of one dimension whose tap reads the input, not
    the zero padding."""
    pos = np.arange(out)[:, None] * stride - pad + np.arange(kernel)[None, :] * dil
    return int(((pos >= 0) & (pos < length)).sum())


def _pass_macs(model, conv1: str, conv2: str, size: int) -> int:
    """Multiply-adds per image of the forward to the features and the backward S_FU needs,
    counting only kernel taps that read the input (a product with the zero padding is no
    work a cleverer kernel must do, so the count is a floor for any direct convolution).

    Forward: every convolution and linear layer but the head (the last child). Backward: the
    input gradient of every such layer but the first S_FU convolution (its input is the
    image), plus the two S_FU weight gradients, each as many multiply-adds as its forward.
    """
    import torch

    head = list(model.children())[-1]
    count: dict = {}

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Linear):
            count[mod] = out.numel() * mod.in_features
            return
        taps = 1
        for i in range(2):
            taps *= _image_taps(inp[0].shape[2 + i], out.shape[2 + i], mod.kernel_size[i],
                                mod.stride[i], mod.padding[i], mod.dilation[i])
        count[mod] = taps * mod.out_channels * mod.in_channels // mod.groups

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
              and m is not head]
    hooks = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    first, second = model.get_submodule(conv1), model.get_submodule(conv2)
    forward = sum(count.values())
    return forward + (forward - count[first]) + count[first] + count[second]


def _reference(models, x, y, labels, conv1, conv2) -> dict[str, float]:
    import torch
    from pytorch_metric_learning.losses import TripletMarginLoss
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    from gradnca_onnx.scores import fu_batch_slices

    parts = {"forward": 0.0, "nca_knn": 0.0, "fu": 0.0}
    for m in models:
        body = torch.nn.Sequential(*list(m.children())[:-1], torch.nn.Flatten())
        t = time.perf_counter()
        with torch.no_grad():
            feats = torch.cat([body(x[s:s + 64]) for s in range(0, len(x), 64)]).numpy()
        parts["forward"] += time.perf_counter() - t
        t = time.perf_counter()
        nca = NeighborhoodComponentsAnalysis(n_components=50, random_state=42).fit(feats, labels)
        e = nca.transform(feats)
        KNeighborsClassifier(5).fit(e, labels).predict_proba(e)
        parts["nca_knn"] += time.perf_counter() - t
        t = time.perf_counter()
        for sl in fu_batch_slices(len(x)):
            m.zero_grad()
            TripletMarginLoss()(body(x[sl]), y[sl]).backward()
            _ = (m.get_submodule(conv1).weight.grad.norm(),
                 m.get_submodule(conv2).weight.grad.norm())
        parts["fu"] += time.perf_counter() - t
    return parts


def _stages(model_dir: Path, target, threads: int) -> dict[str, float]:
    """One model's stage times through the engine's own functions."""
    from gradnca_onnx.engine import RuntimeConfig
    from gradnca_onnx.engine.scoring import LP_SETTINGS, _prepare
    from gradnca_onnx.engine.split_pass import split_passes
    from gradnca_onnx.scores import label_prediction_score
    from gradnca_onnx.zoo import load_manifest

    manifest = load_manifest(model_dir, verify=False)
    runtime = RuntimeConfig(threads=threads)
    x = _prepare(target, manifest)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # without the memory arenas, as rank_zoo opens the split pass's sessions
    feats, logits, _, _, _ = split_passes(
        lambda g: runtime.open(model_dir, manifest, g, arena=False), manifest, x,
        target.labels, runtime.residual_memory, lambda stage, total: (lambda done: None), timings)
    timings["pass"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    label_prediction_score(feats, target.labels, **LP_SETTINGS)
    timings["lp"] = time.perf_counter() - t0
    from gradnca_onnx.metrics import compute_metrics, resolve_names

    t0 = time.perf_counter()
    compute_metrics(resolve_names("all"), feats, target.labels, logits, errors="record",
                    model_dir=model_dir)
    timings["metrics"] = time.perf_counter() - t0
    sess = runtime.open(model_dir, manifest, "features")
    t0 = time.perf_counter()
    for s in range(0, len(x), 64):
        sess.run(None, {"images": x[s:s + 64]})
    timings["ort_forward_only"] = time.perf_counter() - t0
    return timings


def _profile(model_dir: Path, threads: int) -> dict[str, list[tuple[str, float]]]:
    """onnxruntime's per-operator kernel-time shares of forward.onnx and backward.onnx."""
    import onnxruntime as ort

    from gradnca_onnx.io.sessions import session_options
    from gradnca_onnx.zoo import load_manifest, residual_names

    m = load_manifest(model_dir, verify=False)
    b = m.batch_policy.grads_batch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, m.input.channels, m.input.height, m.input.width), np.float32)
    c = rng.standard_normal((b, m.feature_dim), np.float32)
    names = list(residual_names(m.split.residuals))
    shares = {}
    for graph in ("forward", "backward"):
        opts = session_options(m.ort_optimization, threads=threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / graph)
        sess = ort.InferenceSession(str(model_dir / f"{graph}.onnx"), opts,
                                    providers=["CPUExecutionProvider"])
        if graph == "forward":
            res = sess.run(None, {"images": x})[-len(names):]
            sess.run(None, {"images": x})
        else:
            sess.run(None, {"cotangent": c, **dict(zip(names, res))})
        events = json.loads(Path(sess.end_profiling()).read_text())
        per_op: collections.Counter = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"]
        total = sum(per_op.values())
        shares[graph] = [(op, v / total) for op, v in per_op.most_common(6)]
    return shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[28, 224])
    ap.add_argument("--n", type=int, default=1100)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure

    import torch
    import torchvision
    from _support import real_images
    from threadpoolctl import threadpool_limits

    from gradnca_onnx.data.dataset import from_arrays
    from gradnca_onnx.data.preprocess import preprocess
    from gradnca_onnx.engine import FeatureCache, RuntimeConfig, rank_zoo
    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.scores import fu_batch_slices
    from gradnca_onnx.sources import PAPER_ARCHITECTURES, from_module

    spec = PAPER_ARCHITECTURES[args.arch]
    images, labels = real_images("pool11", args.n, seed=0)
    for size in args.sizes:
        zoo = Path(tempfile.mkdtemp(prefix=f"bench-zoo-{size}-"))
        models = []
        for i in range(args.models):
            torch.manual_seed(i)
            m = getattr(torchvision.models, args.arch)(num_classes=10).eval()
            models.append(m)
            export_model(from_module(m, name=args.arch), zoo, name=f"{args.arch}-{i}",
                         input_size=size, norm="half", grads_batch=32, head=spec.head,
                         convs=(spec.conv1, spec.conv2))
        target = from_arrays(images, labels, name="pool11")
        x = torch.from_numpy(preprocess(images, mean=(0.5,) * 3, std=(0.5,) * 3,
                                        size=None if size == 28 else size, channels=3))
        y = torch.as_tensor(labels)
        for threads in args.threads:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            with threadpool_limits(limits=threads, user_api="blas"):
                # scikit-learn's BLAS on the same threads as torch: unpinned, its two
                # threads busy-wait against any other load (NCA 1.6 to 6.8 s a model here)
                ref = _reference(models, x, y, labels, spec.conv1, spec.conv2)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            ranking = rank_zoo(zoo, target, cache=FeatureCache(None),
                               runtime=RuntimeConfig(threads=threads))
            t_ours = time.perf_counter() - t0
            assert all(r.ok for r in ranking.models), [r.error for r in ranking.models]
            floor = _floor(models[0], spec.conv1, spec.conv2, x, fu_batch_slices(len(x)))
            compute = (_pass_macs(models[0], spec.conv1, spec.conv2, x.shape[-1]) * len(x)
                       / _gemm_rate(threads))
            st = _stages(zoo / f"{args.arch}-0", target, threads)
            per_model = t_ours / args.models
            score = st["pass"] + st["lp"]
            print(f"{args.arch} {size} px, n={args.n}, {threads} thread(s): reference "
                  f"{t_ref:.1f} s (forward {ref['forward']:.1f} + NCA/k-NN {ref['nca_knn']:.1f}"
                  f" + S_FU {ref['fu']:.1f}) | rank {t_ours:.1f} s for {args.models} models -> "
                  f"{t_ref / t_ours:.2f}x faster")
            print(f"  one model: score {score:.1f} s = forward {st.get('forward', 0):.1f} + "
                  f"cotangent {st.get('cotangent', 0):.2f} + backward {st.get('backward', 0):.1f}"
                  f" + recompute {st.get('recompute', 0):.1f} + S_LP {st['lp']:.1f} "
                  f"(+ all baseline metrics {st['metrics']:.1f}) "
                  f"(rank per model {per_model:.1f} s) | floor (torch forward + S_FU backward) "
                  f"{floor:.1f} s -> gradient pass {st['pass'] / floor:.2f}x floor, whole "
                  f"score {score / floor:.2f}x | onnxruntime features.onnx alone "
                  f"{st['ort_forward_only']:.1f} s")
            ref_model = t_ref / args.models
            print(f"  compute floor (image-tap multiply-adds at this machine's GEMM rate) "
                  f"{compute:.2f} s per model -> at most {ref_model / compute:.1f}x faster than "
                  f"the reference with S_LP free, {ref_model / (compute + st['lp']):.1f}x with "
                  f"this S_LP; rank's gradient pass {st['pass'] / compute:.2f}x the compute floor")
            if args.profile:
                for graph, shares in _profile(zoo / f"{args.arch}-0", threads).items():
                    print(f"  {graph}.onnx: " + ", ".join(f"{op} {100 * v:.0f}%"
                                                         for op, v in shares))


if __name__ == "__main__":
    main()
