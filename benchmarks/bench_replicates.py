"""The ground truth's own noise on a small real case (issue 17 item 5).

    python benchmarks/bench_replicates.py [--work DIR] [--seeds 3] [--targets breastmnist]

Six small CNNs (the demo zoo's recipe, ``scripts/build_demo_zoo.py``: five pre-trained from
scratch on real medical datasets, one random-init) are exported and ranked on each target's
paper fold 1 with every metric (``rank --split fold1 --metrics all``), then fine-tuned with the
``quick`` grid and their selected configuration repeated with K seeds
(:func:`gradnca_onnx.training.run_seeds`, the API of ``finetune --seeds K``). ``finetune
summarize --replicates`` writes one ground truth per seed and ``evaluate --rank ...
--replicate ...`` reports, per target, the tau between replicate ground truths beside each
metric's. Everything is seeded and resumable (the run store keeps finished runs; the zoo and
rank output are kept when present). CPU only, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEDICAL = ROOT.parent / "shared" / "data" / "medical"
TARGETS = {"breastmnist": MEDICAL / "breastmnist" / "breastmnist.npz",
           "retinamnist": MEDICAL / "retinamnist" / "retinamnist.npz"}


def _demo_recipe():
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_demo_zoo  # noqa: PLC0415 - the demo zoo's own recipe, not a package module

    return build_demo_zoo


def build_sources(work: Path) -> dict[str, Path]:
    """Pre-train (or reload) the six CNNs; export each into ``work/zoo``. Name -> checkpoint."""
    import torch

    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.sources import from_module

    recipe = _demo_recipe()
    zoo, ckpts = work / "zoo", work / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for i, (name, desc, data) in enumerate(recipe.sources()):
        out[name] = _one_source(recipe, zoo, ckpts / f"{name}.pt", name, desc, data.n_classes,
                                lambda model, s=i, d=data: recipe.pretrain(model, d, s),
                                recipe.SEED + i, export_model, from_module)
    out["random-init"] = _one_source(recipe, zoo, ckpts / "random-init.pt", "random-init",
                                     "nothing (random initialisation)", 2, None,
                                     recipe.SEED + 99, export_model, from_module)
    return out


def _one_source(recipe, zoo, ckpt, name, desc, n_classes, train, seed, export_model,
                from_module) -> Path:
    import torch

    if not ckpt.exists():
        torch.manual_seed(seed)
        model = recipe.democnn(n_classes)
        if train is not None:
            train(model)
        model.eval()
        torch.save({"n_classes": n_classes, "state_dict": model.state_dict()}, ckpt)
    if not (zoo / name / "manifest.json").exists():
        export_model(from_module(load_model(ckpt), name="democnn"), zoo, name=name,
                     input_size=28, norm="half", pretrained_on=desc, grads_batch=32, force=True)
    return ckpt


def load_model(ckpt: Path):
    """The democnn of a checkpoint written by :func:`build_sources`."""
    import torch

    blob = torch.load(ckpt, weights_only=True)
    model = _demo_recipe().democnn(blob["n_classes"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def rank_target(work: Path, target: str) -> Path:
    out = work / "rank" / f"{target}.json"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "gradnca_onnx", "rank", "--zoo", str(work / "zoo"),
               "--target", str(TARGETS[target]), "--split", "fold1", "--metrics", "all",
               "--format", "json", "--out", str(out), "--cache", str(work / "cache"),
               "--threads", "1"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def finetune_target(work: Path, ckpts: dict[str, Path], target: str, seeds: list[int]) -> dict:
    from gradnca_onnx import training

    tgt = training.load_target_splits(TARGETS[target])
    timings = {}
    for name, ckpt in ckpts.items():
        t0 = time.perf_counter()
        src = training.load_source(load_model(ckpt), name=name)
        out = training.run_seeds(src, tgt, "quick", work / "runs.sqlite", seeds)
        timings[name] = {"seconds": time.perf_counter() - t0, "grid_done": out.grid.finished,
                         "replicates_done": out.finished, "failed": out.grid.failed + out.failed}
        print(f"{target} <- {name}: grid {out.grid.finished} new / {out.grid.total}, replicates "
              f"{out.finished} new / {len(seeds)} ({timings[name]['seconds']:.0f} s)", flush=True)
    return timings


def evaluate(work: Path, targets: list[str]) -> dict:
    store = work / "runs.sqlite"
    subprocess.run([sys.executable, "-m", "gradnca_onnx", "finetune", "summarize", "--store",
                    str(store), "--out", str(work / "truth.csv"), "--replicates",
                    str(work / "replicates")], check=True)
    reps = sorted((work / "replicates").glob("truth_seed*.csv"),
                  key=lambda p: int(p.stem.removeprefix("truth_seed")))
    base = [sys.executable, "-m", "gradnca_onnx", "evaluate", "--truth", str(work / "truth.csv")]
    for t in targets:
        base += ["--rank", str(work / "rank" / f"{t}.json")]
    for p in reps:
        base += ["--replicate", str(p)]
    table = subprocess.run(base, check=True, capture_output=True, text=True).stdout
    doc = json.loads(subprocess.run(base + ["--format", "json"], check=True,
                                    capture_output=True, text=True).stdout)
    (work / "evaluation.txt").write_text(table)
    (work / "evaluation.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(table)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "medical_small" / "work-replicates",
                    help="work folder (git-ignored by default)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", default="breastmnist")
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    import torch

    from gradnca_onnx.training import default_seeds

    torch.set_num_threads(1)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    seeds = default_seeds(args.seeds)
    args.work.mkdir(parents=True, exist_ok=True)
    clock = {}
    t0 = time.perf_counter()
    ckpts = build_sources(args.work)
    clock["pre-train + export (s)"] = time.perf_counter() - t0
    for t in targets:
        t0 = time.perf_counter()
        rank_target(args.work, t)
        clock[f"rank {t} (s)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        clock[f"finetune {t}"] = finetune_target(args.work, ckpts, t, seeds)
        clock[f"finetune {t} (s)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(args.work, targets)
    clock["summarize + evaluate (s)"] = time.perf_counter() - t0
    (args.work / "timings.json").write_text(json.dumps(clock, indent=2) + "\n")
    print(json.dumps({k: v for k, v in clock.items() if k.endswith("(s)")}, indent=2))


if __name__ == "__main__":
    main()
