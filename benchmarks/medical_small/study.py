"""The CPU-scale real-data transfer study: pre-train, export, fine-tune, rank, evaluate, report.

    python benchmarks/medical_small/study.py                  # the full study (resumable)
    python benchmarks/medical_small/study.py --config mini    # a two-source, two-target miniature

Every stage writes its products atomically under ``--work`` and skips what is already there,
so an interrupted study (Ctrl-C, a lost session) continues where it stopped when the same
command is run again: pre-trained checkpoints, exported models, each fine-tuning run (one
SQLite run store, written by this process only), each target's ranking. The report under
``--results`` is rebuilt from those products at the end. ``--device auto`` trains on a GPU when
torch sees one (the engine uses onnxruntime's CUDA provider when that is installed); nothing
else changes. See README.md next to this file for the design.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datasets as D  # noqa: E402  (next to this file)

RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class StudyConfig:
    """What the study trains and ranks; the paper's protocol everywhere else.

    ``dataset_sources`` are pre-trained with ``arch`` (dataset scenario; plus a random-init
    ``arch``); ``model_archs`` are all pre-trained on ``model_source`` (model scenario; the
    ``arch`` member is the dataset scenario's ``model_source`` model, fine-tuned once).
    """

    name: str
    targets: tuple[str, ...]
    dataset_sources: tuple[str, ...]
    arch: str
    model_archs: tuple[str, ...]
    model_source: str
    pretrain_epochs: int
    grid: Any  # a preset name or a GridSpec
    pretrain_max_images: int | None = None
    #: Fine-tuning batch sizes for targets outside the paper's Table 1.
    batch_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    bootstrap: int = 1000
    image_size: int = 28
    seed: int = 0
    #: ``rank --resamples`` per scenario and target (issue 17 item 7) and K of the smoothed
    #: S_LP (``rank --lp-jitters``, item 3), each a pass of its own after the paper's.
    resamples: int = 50
    lp_jitters: int = 5


def _mini_grid() -> Any:
    from gradnca_onnx.training import QUICK
    return replace(QUICK, name="mini", lr=(1e-2,), weight_decay=(0.0,), max_epochs=2, patience=1,
                   notes="miniature study only")


CONFIGS: dict[str, Callable[[], StudyConfig]] = {
    "full": lambda: StudyConfig(
        name="full",
        targets=("breastmnist", "retinamnist", "pneumoniamnist", "brainmri"),
        dataset_sources=("breastmnist", "retinamnist", "pneumoniamnist", "brainmri", "bloodcells"),
        arch="resnet18",
        model_archs=("resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet1_0",
                     "googlenet"),
        model_source="bloodcells",
        pretrain_epochs=15,
        grid="quick",
        batch_sizes={"brainmri": (32,)},
        bootstrap=1000,
    ),
    "mini": lambda: StudyConfig(
        name="mini",
        targets=("retinamnist", "pneumoniamnist"),
        # Two pre-trained sources + the random-init control: with only two candidates the
        # min-max product is 0 for both whenever each wins one term, so tau is undefined.
        dataset_sources=("breastmnist", "brainmri"),
        arch="resnet18",
        model_archs=("resnet18", "shufflenet_v2_x0_5", "mobilenet_v3_small"),
        model_source="breastmnist",
        pretrain_epochs=1,
        pretrain_max_images=256,
        grid=_mini_grid(),
        bootstrap=50,
        resamples=4,
        lp_jitters=2,
    ),
}


# ----------------------------------------------------------------------------------------------
# bookkeeping


class Timings:
    """Wall seconds per stage, summed over every invocation that did work (resumes included)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def add(self, stage: str, seconds: float, units: int) -> None:
        entry = self.data.setdefault(stage, {"seconds": 0.0, "units": 0, "invocations": 0})
        entry["seconds"] += seconds
        entry["units"] += units
        entry["invocations"] += 1
        write_json(self.path, self.data)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _worker_init() -> None:
    import torch
    torch.set_num_threads(1)


def pool_run(fn: Callable[..., Any], calls: list[tuple[tuple, dict]], workers: int,
             on_done: Callable[[int, Any], None]) -> None:
    """Run ``fn(*args, **kwargs)`` for each call in ``workers`` spawned processes.

    ``on_done(i, value)`` runs here, in completion order, so every write happens in this
    process. An exception in a call stops the study (after the calls in flight) with its
    message: a study with a silently missing unit would report the wrong thing.
    """
    if not calls:
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as ex:
        futures: dict[Future, int] = {}
        try:
            for i, (args, kwargs) in enumerate(calls):
                futures[ex.submit(fn, *args, **kwargs)] = i
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(futures[fut], fut.result())
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise


# ----------------------------------------------------------------------------------------------
# stage 2: pre-training (runs in worker processes)


def pretrain_one(arch: str, data_path: str, out: str, *, epochs: int, seed: int,
                 max_images: int | None, device: str) -> dict[str, Any]:
    """Train ``arch`` from random initialisation on a dataset's train split; keep the weights
    of the epoch with the lowest validation loss. A fixed recipe for every source (SGD,
    Nesterov momentum 0.9, lr 0.05 cosine, weight decay 5e-4, batch 64, horizontal flips)."""
    import numpy as np
    import torch
    import torchvision

    from gradnca_onnx.data.load import load_target
    from gradnca_onnx.data.preprocess import normalization, preprocess
    from gradnca_onnx.sources import PAPER_ARCHITECTURES

    start = time.perf_counter()
    mean, std = normalization("half")
    train, val = load_target(data_path, "train"), load_target(data_path, "val")
    images, labels = train.images, train.labels
    if max_images is not None and len(labels) > max_images:
        keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:max_images])
        images, labels = images[keep], labels[keep]
    x = torch.from_numpy(preprocess(images, mean=mean, std=std, channels=3)).to(device)
    y = torch.from_numpy(np.array(labels)).to(device)
    xv = torch.from_numpy(preprocess(val.images, mean=mean, std=std, channels=3)).to(device)
    yv = torch.from_numpy(np.array(val.labels)).to(device)
    torch.manual_seed(seed)
    spec = PAPER_ARCHITECTURES.get(arch)
    model = torchvision.models.get_model(arch, weights=None, num_classes=train.n_classes,
                                         **(spec.defaults if spec else {})).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    g = torch.Generator().manual_seed(seed)
    slow_bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               and m.momentum is not None and m.momentum < 0.1]
    best: dict[str, Any] = {"val_loss": float("inf")}
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=g)
        flips = torch.rand(len(y), generator=g) < 0.5
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            xb = x[idx]
            xb = torch.where(flips[idx].to(device)[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
        sched.step()
        if slow_bn:
            _recalibrate_bn(model, x, slow_bn)
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(xv[i:i + 256]) for i in range(0, len(yv), 256)])
            val_loss = float(torch.nn.functional.cross_entropy(logits, yv))
            val_acc = float((logits.argmax(1) == yv).float().mean())
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "val_acc": val_acc, "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    tmp = out + ".tmp"
    torch.save(best.pop("state"), tmp)
    os.replace(tmp, out)
    return {"arch": arch, "dataset": Path(data_path).stem, "epochs": epochs,
            "n_train": int(len(labels)), "n_classes": int(train.n_classes),
            "best_epoch": best["epoch"],
            "val_loss": best["val_loss"], "val_acc": best["val_acc"],
            "bn_recalibrated": len(slow_bn), "seed": seed,
            "seconds": time.perf_counter() - start, "device": device}


def _recalibrate_bn(model: Any, x: Any, layers: list) -> None:
    """Recompute BatchNorm running statistics as exact averages over the training images.

    torchvision gives mobilenet_v3 (momentum 0.01) and mnasnet (3e-4) running averages meant
    for ImageNet-length training; after the few hundred steps of this recipe their running
    statistics are still near initialisation, so the trained model is at chance in eval mode
    (measured on the blood cells: 0.25 eval-mode vs 0.80 train-mode validation accuracy for
    mobilenet_v3_small). Layers with torchvision's default momentum (0.1) converge within
    the recipe and are left alone.
    """
    import torch

    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 256):
            if len(x) - i >= 2:
                model(x[i:i + 256])
    for m, mom in zip(layers, saved):
        m.momentum = mom
    model.train(was_training)


# ----------------------------------------------------------------------------------------------
# stage 3: export (worker processes)


def export_one(arch: str, checkpoint: str | None, zoo: str, name: str, *, description: str,
               image_size: int, seed: int, source_images: int) -> dict[str, Any]:
    from gradnca_onnx.exporters.api import export_model
    from gradnca_onnx.sources import load_torchvision

    start = time.perf_counter()
    loaded = load_torchvision(arch, checkpoint, seed=seed)
    export_model(loaded, zoo, name=name, input_size=image_size, norm="half",
                 pretrained_on=description, source_images=source_images, force=True)
    return {"name": name, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------------------
# the study


class Study:
    def __init__(self, config: StudyConfig, work: Path, results: Path, *, workers: int,
                 device: str) -> None:
        self.cfg, self.work, self.results = config, work, results
        self.workers, self.device = workers, device
        self.timings = Timings(work / "timings.json")
        self.data_dir = work / "data"
        self.ckpt_dir = work / "checkpoints"
        self.zoos = {"dataset": work / "zoo-dataset", "model": work / "zoo-model"}
        self.store = work / "runs.sqlite"

    # -- names -------------------------------------------------------------------------------

    def pretrain_units(self) -> list[tuple[str, str]]:
        """(architecture, dataset) of every model that needs pre-training."""
        units = [(self.cfg.arch, d) for d in self.cfg.dataset_sources]
        units += [(a, self.cfg.model_source) for a in self.cfg.model_archs if a != self.cfg.arch]
        return units

    def checkpoint(self, arch: str, dataset: str) -> Path:
        return self.ckpt_dir / f"{arch}-{dataset}.pt"

    def members(self, scenario: str) -> dict[str, tuple[str, Path | None, str]]:
        """Zoo member name -> (architecture, checkpoint or None, description)."""
        c = self.cfg
        if scenario == "dataset":
            out = {d: (c.arch, self.checkpoint(c.arch, d),
                       f"{D.DESCRIPTIONS[d]}; {c.arch} trained from scratch")
                   for d in c.dataset_sources}
            out[RANDOM_INIT] = (c.arch, None, f"nothing ({c.arch}, random initialisation)")
            return out
        return {a: (a, self.checkpoint(a, c.model_source),
                    f"{D.DESCRIPTIONS[c.model_source]}; {a} trained from scratch")
                for a in c.model_archs}

    def pairs(self) -> list[tuple[str, str, str]]:
        """(zoo scenario, member, target) of every fine-tuning pair, each model once."""
        c = self.cfg
        out = [("dataset", m, t) for t in c.targets for m in self.members("dataset") if m != t]
        # The model scenario's `arch` member has the dataset scenario's model_source weights.
        out += [("model", a, t) for t in c.targets for a in c.model_archs if a != c.arch]
        return out

    # -- stages ------------------------------------------------------------------------------

    def stage_data(self) -> None:
        start = time.perf_counter()
        names = sorted(set(self.cfg.targets) | set(self.cfg.dataset_sources) | {self.cfg.model_source})
        todo = [n for n in names if not (self.data_dir / f"{n}.npz").exists()]
        for n in names:
            D.build(n, self.data_dir)
        summary = {n: D.summary(self.data_dir / f"{n}.npz") for n in names}
        write_json(self.work / "datasets.json", summary)
        if todo:
            self.timings.add("1 data", time.perf_counter() - start, len(todo))
        log(f"data: {len(names)} datasets ({len(todo)} built)")

    def stage_pretrain(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        # A unit's seed is its place in the full list, not in what is left to do, so a
        # resumed stage trains a model with the seed a fresh run gives it.
        seeds = {u: self.cfg.seed + i for i, u in enumerate(self.pretrain_units())}
        units = [(a, d) for a, d in self.pretrain_units() if not self.checkpoint(a, d).exists()]
        start = time.perf_counter()
        calls = [((a, str(self.data_dir / f"{d}.npz"), str(self.checkpoint(a, d))),
                  {"epochs": self.cfg.pretrain_epochs, "seed": seeds[(a, d)],
                   "max_images": self.cfg.pretrain_max_images, "device": self.device})
                 for a, d in units]

        def done(i: int, meta: dict[str, Any]) -> None:
            a, d = units[i]
            write_json(self.checkpoint(a, d).with_suffix(".json"), meta)
            log(f"pre-trained {a} on {d}: best epoch {meta['best_epoch']}/{meta['epochs']} "
                f"({meta['seconds']:.0f} s)")

        pool_run(pretrain_one, calls, self.workers, done)
        if units:
            self.timings.add("2 pre-train", time.perf_counter() - start, len(units))
        log(f"pre-train: {len(self.pretrain_units())} models ({len(units)} trained now)")

    def stage_export(self) -> None:
        units = [(s, m, spec) for s in ("dataset", "model") for m, spec in self.members(s).items()
                 if not (self.zoos[s] / m / "manifest.json").exists()]
        start = time.perf_counter()
        calls = [((arch, None if ck is None else str(ck), str(self.zoos[s]), m),
                  {"description": desc, "image_size": self.cfg.image_size, "seed": self.cfg.seed,
                   "source_images": self.source_images(ck)})
                 for s, m, (arch, ck, desc) in units]
        pool_run(export_one, calls, self.workers,
                 lambda i, r: log(f"exported {units[i][0]}/{r['name']} ({r['seconds']:.0f} s)"))
        if units:
            self.timings.add("3 export", time.perf_counter() - start, len(units))
        log(f"export: {len(units)} models exported now")

    def source_images(self, checkpoint: Path | None) -> int:
        """Images a source was pre-trained on (manifest ``source_images``; 0: random init)."""
        if checkpoint is None:
            return 0
        return int(json.loads(checkpoint.with_suffix(".json").read_text())["n_train"])

    def _source(self, scenario: str, member: str) -> Any:
        from gradnca_onnx.training import load_source
        _, ck, _ = self.members(scenario)[member]
        return load_source(self.zoos[scenario] / member, checkpoint=ck, name=member)

    def stage_finetune(self) -> None:
        from gradnca_onnx.executors.finetuning import train_task
        from gradnca_onnx.training import load_grid, open_store
        from gradnca_onnx.training.runner import load_target_splits, run_row, task_key

        spec = load_grid(self.cfg.grid)
        targets = {t: load_target_splits(self.data_dir / f"{t}.npz", fold=1)
                   for t in self.cfg.targets}
        sources: dict[tuple[str, str], Any] = {}
        tasks = []
        st = open_store(self.store)
        try:
            for scenario, member, t in self.pairs():
                key_s = (scenario, member)
                if key_s not in sources:
                    sources[key_s] = self._source(scenario, member)
                src, tgt = sources[key_s], targets[t]
                grid = spec.with_batch_sizes(self.cfg.batch_sizes.get(t))
                for cfg in grid.expand(tgt.name):
                    key = task_key(src, tgt, cfg)
                    if not st.is_finished(key):
                        tasks.append((src, tgt, cfg, key, grid.name))
            total = sum(len(spec.with_batch_sizes(self.cfg.batch_sizes.get(t)).expand(t))
                        for _, _, t in self.pairs())
            log(f"fine-tune: {total} runs in {len(self.pairs())} pairs, {len(tasks)} to do")
            # Longest first (epoch cost grows with the class count) keeps both workers busy.
            tasks.sort(key=lambda x: -x[1].n_classes)
            start = time.perf_counter()
            finished = 0

            def done(i: int, result: Any) -> None:
                nonlocal finished
                src, tgt, cfg, key, grid_name = tasks[i]
                # A run interrupted between these writes stays `running` and is redone.
                st.start_run(key, run_row(src, tgt, cfg, grid_name=grid_name, device=self.device))
                for m in result.history:
                    st.log_epoch(key, m.to_dict())
                st.finish_run(key, result.to_dict(), result.predictions)
                finished += 1
                el = time.perf_counter() - start
                eta = el / finished * (len(tasks) - finished)
                log(f"run {finished}/{len(tasks)}: {src.name} -> {tgt.name} {cfg.label()}: "
                    f"test AUC {result.test_auc:.3f}, {len(result.history)} epochs "
                    f"(elapsed {el / 60:.1f} min, ETA {eta / 60:.1f} min)")

            calls = [((src, tgt, cfg), {"device": self.device, "threads": 1})
                     for src, tgt, cfg, _, _ in tasks]
            try:
                pool_run(train_task, calls, self.workers, done)
            finally:
                if finished:
                    self.timings.add("4 fine-tune", time.perf_counter() - start, finished)
        finally:
            st.close()

    def rank_passes(self) -> list[tuple[str, str, list[str]]]:
        """(scenario, output folder, extra ``rank`` options) of every rank pass.

        The package's defaults with every metric; ``--faithful`` (the released code's metric
        behaviour, REFERENCE 6) for the secondary analysis; ``--resamples`` (how sure the
        ranking is, issue 17 item 7) and ``--lp-jitters`` (the smoothed S_LP, item 3) with S and
        its terms only. Every pass after the first reuses the feature cache.
        """
        metrics = ["--metrics", "all"]
        out = [(s, s, metrics) for s in ("dataset", "model")]
        out += [(s, f"{s}-faithful", [*metrics, "--faithful"]) for s in ("dataset", "model")]
        out += [(s, f"{s}-resamples", ["--resamples", str(self.cfg.resamples), "--seed", "0"])
                for s in ("dataset", "model")]
        out += [(s, f"{s}-lp-jitters", ["--lp-jitters", str(self.cfg.lp_jitters)])
                for s in ("dataset", "model")]
        return out

    def stage_rank(self) -> None:
        """Every rank pass (:meth:`rank_passes`) for every target, one JSON file each."""
        start, n = time.perf_counter(), 0
        for scenario, folder, extra in self.rank_passes():
            members = list(self.members(scenario))
            for t in self.cfg.targets:
                out = self.work / "rank" / folder / f"{t}.json"
                if out.exists():
                    continue
                models = [m for m in members if m != t]
                cmd = [sys.executable, "-m", "gradnca_onnx", "rank", "--zoo", str(self.zoos[scenario]),
                       "--target", str(self.data_dir / f"{t}.npz"), "--split", "fold1",
                       "--scenario", "dataset" if scenario == "dataset" else "cross-domain",
                       "--models", ",".join(models), "--format", "json",
                       "--out", str(out), "--cache", str(self.work / "cache"), "--quiet",
                       "--threads", str(self.workers), "--device",
                       "cuda" if self.device.startswith("cuda") else "cpu", *extra]
                out.parent.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"rank failed for {folder}/{t}: {proc.stderr.strip()}")
                n += 1
                log(f"ranked {folder}/{t} ({time.perf_counter() - t0:.0f} s)")
        if n:
            self.timings.add("5 rank", time.perf_counter() - start, n)

    def stage_report(self) -> None:
        import report
        start = time.perf_counter()
        report.build(self)
        self.timings.add("6 evaluate + report", time.perf_counter() - start, 1)
        report.write_timings(self)
        log(f"report written to {self.results}")


STAGES = ("data", "pretrain", "export", "finetune", "rank", "report")


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="full")
    ap.add_argument("--work", type=Path, default=None,
                    help="Working directory (default: benchmarks/medical_small/work-<config>).")
    ap.add_argument("--results", type=Path, default=None,
                    help="Report directory (default: benchmarks/medical_small/results for the "
                         "full study, <work>/results otherwise).")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="Worker processes (one torch thread each).")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (pre-training and "
                                                     "fine-tuning; rank uses onnxruntime).")
    ap.add_argument("--until", choices=STAGES, default="report", help="Stop after this stage.")
    args = ap.parse_args(list(argv) if argv is not None else None)
    config = CONFIGS[args.config]()
    work = args.work or HERE / f"work-{config.name}"
    results = args.results or (HERE / "results" if config.name == "full" else work / "results")
    device = args.device
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not D.MEDICAL.is_dir():
        raise ValueError(f"data folder {D.MEDICAL} not found; the study reads "
                         "../shared/data/medical next to the repository (or set "
                         "GRADNCA_MEDICAL_DATA)")
    work.mkdir(parents=True, exist_ok=True)
    study = Study(config, work, results, workers=max(1, args.workers), device=device)
    log(f"study {config.name}: work {work}, results {results}, {study.workers} workers, {device}")
    for stage in STAGES:
        getattr(study, f"stage_{stage}")()
        if stage == args.until:
            break


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:  # unreadable data or settings: one line, not a traceback
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: finished units are kept; run the same command to continue",
              file=sys.stderr)
        sys.exit(130)
