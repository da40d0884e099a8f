"""``gradnca-onnx finetune``: ground-truth fine-tuning grids, and ``finetune summarize``.

torch is imported only when a grid runs, so ``finetune summarize`` works without it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ._errors import (
    UserInputError,
    check_output_dir,
    check_output_file,
    user_errors,
)


def _training_runner() -> Any:
    """The training runner, or one line naming the torch extra when it is not installed."""
    from ..sources import require_torch

    require_torch("fine-tuning")
    from ..training import runner

    return runner


def _batch_sizes(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--batch-size {value!r} must be integers separated by commas") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batch-size {value!r} must be positive integers")
    return sizes


class _Bars:
    """Progress on stderr: on a terminal, rich bars (one over the grid, one over the epochs of
    the current run); in a log (``lines``), one line per run as it ends."""

    def __init__(self, title: str, enabled: bool, lines: bool = False) -> None:
        from ._progress import rich_bars

        self.progress = rich_bars("{task.fields[info]}", enabled=enabled and not lines)
        self.title = title
        self.lines = lines and enabled
        self.total = 0
        self.ended = 0
        self.grid_task: Any = None
        self.run_task: Any = None
        self.started: float | None = None  # the run in flight's start (runs in this process)

    def __enter__(self) -> "_Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def grid_start(self, total: int, done: int) -> None:
        self.total, self.ended = total, done
        self.grid_task = self.progress.add_task(self.title, total=total, completed=done,
                                                info=f"{done} already in the store")
        self._line(f"{self.title}: {total} runs, {done} already in the store")

    def run_start(self, config: Any, index: int) -> None:
        self.started = time.perf_counter()
        if self.run_task is not None:
            self.progress.remove_task(self.run_task)
        self.run_task = self.progress.add_task(f"  run {index + 1}: {config.label()}",
                                               total=config.max_epochs, info="")

    def epoch(self, m: Any) -> None:
        if self.run_task is not None:
            self.progress.update(self.run_task, advance=1,
                                 info=f"val AUC {m.val_auc:.3f}  loss {m.val_loss:.3f}")

    def run_end(self, config: Any, result: Any, skipped: bool) -> None:
        if skipped:
            return
        self.ended += 1
        took = "" if self.started is None else f" in {time.perf_counter() - self.started:.1f} s"
        self.started = None
        if result is None:
            self._line(f"[{self.ended}/{self.total}] {config.label()}: failed{took}")
        else:
            self._line(f"[{self.ended}/{self.total}] {config.label()}: {result.stop_reason} at "
                       f"epoch {result.epochs_run}, test AUC {result.test_auc:.3f}{took}")
        if self.run_task is not None and result is not None:
            self.progress.update(self.run_task, completed=config.max_epochs,
                                 info=f"{result.stop_reason} at epoch {result.epochs_run}, "
                                      f"test AUC {result.test_auc:.3f}")
        self.progress.update(self.grid_task, advance=1, info="")

    def _line(self, text: str) -> None:
        if self.lines:
            click.echo(f"gradnca-onnx finetune: {text}", err=True)


@click.group("finetune", invoke_without_command=True)
@click.option("--source", metavar="MODEL_DIR_OR_CHECKPOINT",
              help="The pre-trained model: an exported model directory of any source (rebuilt "
                   "from its manifest; pass its checkpoint with --checkpoint if not beside it), "
                   "a checkpoint file (with --arch), or what export --arch names: a "
                   "torchvision name, timm:NAME, hf:DIR, monai:NAME (random init unless "
                   "--checkpoint), or package.module:callable. TorchScript files are refused "
                   "(their head cannot be replaced).")
@click.option("--target", metavar="PATH",
              help="MedMNIST npz (paper fold 1 + official test), paper fold npz (with --test), "
                   "or an image folder.")
@click.option("--store", metavar="RUNS.sqlite", help="SQLite run store (created if missing).")
@click.option("--preset", default="quick", show_default=True, metavar="quick|paper|FILE",
              help="Hyper-parameter grid: a preset or a YAML/JSON grid file.")
@click.option("--arch", metavar="NAME|KIND:NAME|MODULE:CALLABLE",
              help="Architecture of a checkpoint --source, as export --arch names it (or a "
                   "factory).")
@click.option("--arch-kwarg", "arch_kwargs", multiple=True, metavar="KEY=VALUE",
              help="Constructor argument of a named --source (or --arch); repeatable; VALUE as "
                   "for export --arch-kwarg.")
@click.option("--checkpoint", metavar="PATH", type=click.Path(),
              help="Weights for a named --source, or the checkpoint of an exported directory "
                   "(or the folder holding it; of a Hugging Face member: its save_pretrained "
                   "directory).")
@click.option("--normalisation", metavar="imagenet|half|MEAN,STD",
              help="Input normalisation (default: the manifest's, else half = 0.5/0.5; use "
                   "imagenet for ImageNet-pretrained weights).")
@click.option("--head", metavar="MODULE", help="Final layer to replace (default: last Linear).")
@click.option("--trust-pickle", is_flag=True, help="Allow checkpoints that pickle whole modules.")
@click.option("--trust-code", is_flag=True,
              help="Allow an exported --source whose manifest names Python code (a factory "
                   "source) to be rebuilt: imports and calls it. Only for a zoo you trust.")
@click.option("--source-name", help="Row name in the ground truth (default: model name).")
@click.option("--target-name", help="Column name in the ground truth (default: dataset name).")
@click.option("--fold", type=click.IntRange(min=0), default=1, show_default=True,
              help="Paper fold used for train/val of a MedMNIST npz; 0 = the full official splits.")
@click.option("--test", "test_path", metavar="MEDMNIST.npz", type=click.Path(dir_okay=False),
              help="Official npz with the test split, for a fold-file --target.")
@click.option("--batch-size", "batch_size", metavar="N[,N]",
              help="Override the grid's batch sizes (needed for targets outside paper Table 1).")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (on a busy machine 1 is often fastest).")
@click.option("--no-progress", is_flag=True,
              help="No progress: no bars on a terminal, no line per run in a log.")
@click.option("--executor", "executor_name", default="local", show_default=True,
              metavar="local|ray",
              help="local: runs one after the other here; ray: one Ray task per grid run (the "
                   "store is written by this process only).")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to join (default: $RAY_ADDRESS, else a Ray instance started "
                   "on this machine).")
@click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Ray: times a run whose worker died is started again before it is failed.")
@click.option("--seeds", "n_seeds", type=int, default=None, metavar="K",
              help="After the grid, repeat its selected configuration (the lowest validation "
                   "loss run) with K seeds: the grid's seed and the next K - 1. Finished "
                   "replicates are kept; `summarize --replicates DIR` writes one ground truth "
                   "per seed.")
@click.option("--seed-list", "seed_list", default=None, metavar="S1,S2,...",
              help="Like --seeds, with these seeds (at least two).")
@click.pass_context
@user_errors
def finetune(ctx: click.Context, source: str | None, target: str | None, store: str | None,
             preset: str, arch: str | None, arch_kwargs: tuple[str, ...],
             checkpoint: str | None, normalisation: str | None,
             head: str | None, trust_pickle: bool, trust_code: bool, source_name: str | None,
             target_name: str | None, fold: int, test_path: str | None, batch_size: str | None,
             device: str, threads: int | None, no_progress: bool, executor_name: str,
             ray_address: str | None, max_retries: int, n_seeds: int | None,
             seed_list: str | None) -> None:
    """Fine-tune SOURCE on TARGET over a hyper-parameter grid; every run goes into STORE.

    The paper's protocol (REFERENCE section 7). A grid that is stopped resumes: finished runs
    are skipped and a run that was in flight is done again. `finetune summarize` turns the
    store into the ground-truth CSV that `evaluate` reads.
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [o for o, v in (("--source", source), ("--target", target), ("--store", store))
               if not v]
    if missing:
        raise InputError(f"finetune needs {', '.join(missing)} (or the summarize sub-command)")
    from ..executors import EXECUTORS, make_executor
    from ..executors.base import _import_ray
    from ..training.grid import load_grid
    from ..training.store import RunStore

    # Bad executor input fails before the slow loading below (Ray itself starts after it).
    kind = executor_name.strip().lower()
    if kind not in EXECUTORS:
        make_executor(kind)  # raises the one-line error for an unknown name
    if kind == "local" and ray_address:
        raise InputError("--ray-address needs --executor ray")
    if kind == "ray":
        _import_ray()
    from .export import parse_pairs

    kwargs = parse_pairs(arch_kwargs, "--arch-kwarg")
    grid = load_grid(preset).with_batch_sizes(_batch_sizes(batch_size))
    seeds = _replicate_seeds(n_seeds, seed_list, grid.seed)
    if seeds is not None and kind != "local":
        raise InputError("--seeds / --seed-list run the replicates in this process; use "
                         "--executor local")
    if Path(store).exists():
        _check_store(store)
        RunStore(store).close()  # a bad store fails before any slow loading
    else:
        check_output_file(store, "--store")
    runner = _training_runner()
    import torch

    from ..engine.runtime import cap_threads

    threads, capped = cap_threads(threads, "--threads")
    if capped:
        click.echo(f"Warning: {capped}", err=True)
    if threads:
        torch.set_num_threads(threads)
    check_device(device)  # before any run is recorded, and on a finished store too
    from ..training.source import load_source

    src = load_source(source, arch=arch, checkpoint=checkpoint, normalisation=normalisation,
                      name=source_name, head=head, trust_pickle=trust_pickle,
                      trust_code=trust_code, arch_kwargs=kwargs or None)
    tgt = runner.load_target_splits(target, fold=fold or None, test=test_path, name=target_name)
    grid.expand(tgt.name)  # unknown batch sizes fail here, before any run
    from ..training.loop import check_batch_size, check_trainable, is_3d_model

    check_trainable(tgt.train, is_3d_model(src.module))  # before the store is created

    for size in grid.batch_sizes(tgt.name):  # batch size 1 with BatchNorm: before the store
        check_batch_size(src.module, size, src.name)
    executor = make_executor(executor_name, address=ray_address, max_retries=max_retries)
    try:
        with RunStore(store) as st:
            click.echo(f"source {src.name}; target {tgt.name} ({tgt.description}: "
                       f"{len(tgt.train)}/{len(tgt.val)}/{len(tgt.test) if tgt.test else 0} "
                       f"images, {tgt.n_classes} classes); grid {grid.name}", err=True)
            with _Bars(f"{src.name} -> {tgt.name} [{grid.name}]", enabled=not no_progress,
                       lines=not sys.stderr.isatty()) as bars:
                if seeds is not None:
                    reps = runner.run_seeds(src, tgt, grid, st, seeds, device=device,
                                            progress=bars)
                    out = reps.grid
                elif executor.in_process:
                    out = runner.run_grid(src, tgt, grid, st, device=device, progress=bars)
                else:
                    from ..executors import run_grid_on

                    # One CPU per Ray task: more torch threads would oversubscribe the node.
                    out = run_grid_on(executor, src, tgt, grid, st, device=device,
                                      threads=threads or 1, progress=bars)
    finally:
        executor.close()
    click.echo(f"{out.total} runs: {out.finished} done now, {out.skipped} already in "
               f"{store}, {out.failed} failed")
    errors = list(out.errors)
    if seeds is not None:
        cfg = runner.config_of(reps.selected)
        click.echo(f"{len(seeds)} seed replicates of the selected run {reps.selected_key[:12]} "
                   f"({cfg.label()}), seeds {','.join(map(str, seeds))}: {reps.finished} done "
                   f"now, {reps.skipped} already in {store}, {reps.failed} failed")
        errors += reps.errors
    if errors:
        for err in errors[:5]:
            click.echo(f"Warning: run failed: {' '.join(err.split())[:300]}", err=True)
        raise SystemExit(1)


def _check_store(store: str) -> None:
    """Refuse a ``--store`` that exists but is no regular file, before SQLite opens it.

    Links are followed (SQLite writes through them, replacing nothing); a device, FIFO or
    socket is refused: SQLite would read nothing from it, write runs into it, and leave a
    journal file beside it. A directory gets the run store's own message.
    """
    from ..io.atomic import not_regular

    p = Path(store)
    if p.is_dir() or p.is_file():
        return
    kind = not_regular(p.resolve()) or "not a regular file"
    raise UserInputError(f"--store {store} is {kind}, not a run store file; give the path of "
                         "a run store (RUNS.sqlite) or of a new file")


def _replicate_seeds(n_seeds: int | None, seed_list: str | None, first: int
                     ) -> list[int] | None:
    """The seed list of --seeds K / --seed-list S1,S2 (``None``: no replicates)."""
    from ..training.grid import check_seeds, default_seeds

    if n_seeds is not None and seed_list is not None:
        raise InputError("give --seeds K or --seed-list S1,S2,..., not both")
    if n_seeds is not None:
        return default_seeds(n_seeds, first)
    if seed_list is None:
        return None
    try:
        values = [int(v) for v in seed_list.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--seed-list {seed_list!r} must be integers separated by commas"
                         ) from None
    return check_seeds(values)


def check_device(device: str) -> None:
    """Refuse a torch device that does not exist or is not available here, in one line."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N"
                         ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device} was asked for but no CUDA GPU is available to "
                             "torch here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA "
                             "device(s); use cuda:0 or cpu")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"--device {device} is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r} is not supported; use cpu or cuda")


@finetune.command("summarize")
@click.option("--store", required=True, metavar="RUNS.sqlite", type=click.Path(dir_okay=False),
              help="The run store.")
@click.option("--out", metavar="TRUTH.csv", type=click.Path(dir_okay=False),
              help="Write the ground-truth CSV here (default: print it).")
@click.option("--value", type=click.Choice(["test_auc", "test_acc", "test_loss"]),
              default="test_auc", show_default=True, help="Value of the selected run.")
@click.option("--replicates", "replicates_dir", metavar="DIR", type=click.Path(file_okay=False),
              default=None,
              help="Also write one ground truth per seed replicate (finetune --seeds) as "
                   "DIR/truth_seed<S>.csv, for `evaluate --replicate`.")
@user_errors
def summarize(store: str, out: str | None, value: str, replicates_dir: str | None) -> None:
    """Sources x targets ground truth: per pair, the run with the lowest validation loss."""
    from ..training.store import RunStore
    from ..training.summary import ground_truth, replicate_ground_truths

    if not Path(store).exists():
        raise InputError(f"run store {store} does not exist")
    _check_store(store)
    # The store is the one input: no output may replace it (nor a file of another output).
    inputs = {"--store": store}
    check_output_file(out, "--out", inputs, stdout=True)
    check_output_dir(replicates_dir, "--replicates", inputs)
    with RunStore(store) as st:
        table = ground_truth(st, value=value)
        reps = replicate_ground_truths(st, value=value) if replicates_dir else {}
        n = st.count("finished")
    from ..io.atomic import atomic_write_text

    if reps:
        folder = Path(replicates_dir)  # type: ignore[arg-type]
        names = [f"truth_seed{seed}.csv" for seed in reps]
        check_output_dir(folder, "--replicates", inputs, files=names)
        _check_out_not_replicate(out, [folder / name for name in names])
        folder.mkdir(parents=True, exist_ok=True)
        for seed, rep in reps.items():
            atomic_write_text(folder / f"truth_seed{seed}.csv", rep.to_csv())
        click.echo(f"{len(reps)} replicate ground truths (seeds "
                   f"{','.join(map(str, reps))}) -> {folder}", err=True)
    text = table.to_csv()
    if out is None:
        click.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    click.echo(f"{len(table.sources)} sources x {len(table.targets)} targets from {n} finished "
               f"runs -> {out}", err=True)


def _check_out_not_replicate(out: str | None, paths: list[Path]) -> None:
    """Refuse an ``--out`` that is one of the replicate files ``--replicates`` writes."""
    if out is None:
        return
    real = os.path.realpath(out)
    for path in paths:
        if os.path.realpath(path) == real:
            raise UserInputError(f"--out {out} is also the --replicates file {path}; choose "
                                 "another path")
