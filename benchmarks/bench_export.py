"""Export cost and gradient-graph speed for the paper's nine architectures and the supported
transformers (random init).

For each architecture and image size: the time of ``export_model`` (features.onnx + tracing and
exporting grads.onnx, forward.onnx and backward.onnx + a features check), the files' sizes,
and the time of one gradient pass (features and the two S_FU weight gradients for a batch) in
onnxruntime, by the split pass (forward.onnx then backward.onnx, what ``rank`` runs) and by
grads.onnx, against the floor: torch eager forward + backward with only the two S_FU weights
requiring grad, on the same CPU threads. Times are the fastest of a few interleaved runs;
ratios come from one benchmark run.

    python benchmarks/bench_export.py                       # all nine, 64 and 224 px
    python benchmarks/bench_export.py --archs resnet18 --sizes 64 --repeats 5
    python benchmarks/bench_export.py --transformers        # ViT, Swin, MaxViT, timm ViT/DeiT

A transformer's S_FU layers may be a parameter (``in_proj_weight``); torch's side differentiates
exactly the two weights the manifest names, with its own default attention kernels.
"""

from __future__ import annotations

import sys

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from gradnca_onnx.engine.batching import open_session
from gradnca_onnx.exporters import FeatureModel, export_model
from gradnca_onnx.exporters.layers import weight_name
from gradnca_onnx.sources import PAPER_ARCHITECTURES, create_model
from gradnca_onnx.zoo import load_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

#: Transformers of the zoo and the constructor arguments a given input size needs.
TRANSFORMERS = {
    "vit_b_16": lambda size: {"image_size": size},
    "swin_t": lambda size: {},
    "maxvit_t": lambda size: {},  # 224 px only (7 x 7 windows down to 1/32)
    "timm:vit_tiny_patch16_224": lambda size: {"img_size": size},
    "timm:deit_tiny_patch16_224": lambda size: {"img_size": size},
}


def _interleaved_min(fns: dict, repeats: int) -> dict:
    """Fastest of ``repeats`` runs of each function, run in turns.

    On a shared machine other jobs only ever add time, so the minimum is the least disturbed
    estimate; taking turns exposes both runtimes to the same background load.
    """
    for fn in fns.values():
        fn()  # warm-up: allocator, oneDNN primitive caches, onnxruntime arena
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def bench_one(arch: str, size: int, batch: int, zoo: Path, thread_counts: list[int],
              repeats: int) -> list[dict]:
    kwargs = TRANSFORMERS[arch](size) if arch in TRANSFORMERS else {}
    loaded = create_model(arch, arch_kwargs=kwargs, seed=0)
    name = f"{arch.replace(':', '-')}-{size}"
    t = time.perf_counter()
    out = export_model(loaded, zoo, name=name, input_size=size, grads_batch=batch, force=True)
    export_s = time.perf_counter() - t
    m = load_manifest(out, verify=False)
    sizes = {f: m.files[f].bytes / 1e6 for f in m.files}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    c = torch.randn(batch, m.feature_dim, generator=g)
    feed = {"images": x.numpy(), "cotangent": c.numpy()}
    res = [f"r{i}" for i in range(m.split.residuals)]

    model = loaded.module
    for p in model.parameters():  # autograd then computes only what the two gradients need
        p.requires_grad_(False)
    w1 = model.get_parameter(weight_name(model, m.layers.conv1)).requires_grad_(True)
    w2 = model.get_parameter(weight_name(model, m.layers.conv2)).requires_grad_(True)
    fm = FeatureModel(model, m.layers.features, with_logits=False)

    def torch_pass():
        (f,) = fm(x)
        torch.autograd.grad(f, [w1, w2], c)

    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        sess = open_session(out, "grads", manifest=m, threads=threads)
        fwd = open_session(out, "forward", manifest=m, threads=threads)
        bwd = open_session(out, "backward", manifest=m, threads=threads)

        def split_pass():
            held = fwd.run(res, {"images": feed["images"]})
            bwd.run(None, {"cotangent": feed["cotangent"], **dict(zip(res, held))})

        best = _interleaved_min({"split": split_pass, "grads": lambda: sess.run(None, feed),
                                 "torch": torch_pass}, repeats)
        rows.append({
            "arch": arch, "size": size, "batch": batch, "threads": threads,
            "export_s": export_s, "features_mb": sizes["features.onnx"],
            "grads_mb": sizes["grads.onnx"],
            "split_mb": sizes["forward.onnx"] + sizes["backward.onnx"],
            "residual_mib_per_image": m.split.residual_bytes / batch / 2**20,
            "split_s": best["split"], "grads_s": best["grads"], "torch_s": best["torch"],
            "split_over_floor": best["split"] / best["torch"],
            "grads_over_floor": best["grads"] / best["torch"]})
    shutil.rmtree(out, ignore_errors=True)  # disk
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| architecture | px | batch | threads | export (s) | features / grads / split "
             "(MB) | residuals (MiB/image) | split pass (s) | grads.onnx (s) | floor: torch (s) "
             "| split / floor | grads / floor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['size']} | {r['batch']} | {r['threads']} "
                     f"| {r['export_s']:.1f} | {r['features_mb']:.1f} / {r['grads_mb']:.1f} / "
                     f"{r['split_mb']:.1f} | {r['residual_mib_per_image']:.2f} "
                     f"| {r['split_s']:.3f} | {r['grads_s']:.3f} | {r['torch_s']:.3f} "
                     f"| {r['split_over_floor']:.2f} | {r['grads_over_floor']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--archs", nargs="+", default=None,
                    help="--arch names (torchvision, timm:NAME, ...) [default: the paper's nine]")
    ap.add_argument("--transformers", action="store_true",
                    help="the transformers of TRANSFORMERS instead of the paper's nine")
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    ap.add_argument("--batch", nargs="+", type=int, default=[16, 8],
                    help="grads batch per size (same order as --sizes)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="CPU threads for both runtimes, one run per count")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    if len(args.batch) != len(args.sizes):
        ap.error("give one --batch per --sizes entry")
    archs = args.archs or (list(TRANSFORMERS) if args.transformers
                           else list(PAPER_ARCHITECTURES))
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, batch in zip(args.sizes, args.batch):
            for arch in archs:
                if arch == "maxvit_t" and size != 224:
                    continue
                for r in bench_one(arch, size, batch, Path(tmp), args.threads, args.repeats):
                    rows.append(r)
                    print(f"{arch:20s} {size:4d}px B={batch:<3d} T={r['threads']} export "
                          f"{r['export_s']:6.1f}s  split {r['split_s']:7.3f}s  grads "
                          f"{r['grads_s']:7.3f}s  floor {r['torch_s']:7.3f}s  split/floor "
                          f"{r['split_over_floor']:.2f}", flush=True)
    print()
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
