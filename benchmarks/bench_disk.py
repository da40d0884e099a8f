"""What a member costs on disk against its checkpoint (issue: one copy of the weights).

Exports each architecture (torchvision, random init: the sizes do not depend on the values)
at the given input size into a temporary zoo and reports the member's files against the size
of ``torch.save(model.state_dict())``:

    python benchmarks/bench_disk.py --archs resnet18,densenet121,vit_b_16,convnext_tiny \\
        --size 224 [--json out.json]

The member holds four graphs (features, grads, forward, backward) that share one
``weights.bin`` (each distinct tensor once); the graphs themselves are the nodes.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine, machine_line  # noqa: E402


def checkpoint_bytes(arch: str) -> int:
    import torch
    import torchvision

    buf = io.BytesIO()
    torch.save(torchvision.models.get_model(arch).state_dict(), buf)
    return buf.tell()


def member_bytes(arch: str, size: int, zoo: Path) -> tuple[dict[str, int], float]:
    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.sources.registry import create_model

    t0 = time.perf_counter()
    out = export_model(create_model(arch), zoo, input_size=size, pretrained_on="ImageNet")
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return files, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--archs", default="resnet18,densenet121,vit_b_16,convnext_tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print(f"machine: {machine_line()}")
    print("| model | input | checkpoint | member | ratio | weights.bin | graphs |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            files, seconds = member_bytes(arch, args.size, Path(tmp))
            ckpt = checkpoint_bytes(arch)
            total = sum(files.values())
            graphs = sum(v for k, v in files.items() if k.endswith(".onnx"))
            rows.append({"arch": arch, "size": args.size, "checkpoint_bytes": ckpt,
                         "member_bytes": total, "ratio": total / ckpt, "files": files,
                         "export_seconds": seconds})
            print(f"| {arch} | {args.size} px | {ckpt / 2**20:.1f} MiB | {total / 2**20:.1f} MiB "
                  f"| {total / ckpt:.2f}x | {files.get('weights.bin', 0) / 2**20:.1f} MiB "
                  f"| {graphs / 2**20:.2f} MiB |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
