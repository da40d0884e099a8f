"""``gradnca-onnx rank``: score every model of a zoo on a target dataset, best first.

This module parses and checks the options, then calls :func:`gradnca_onnx.api.rank` (the
Python API, which takes a keyword for every option) and prints what the result renders; the
ranking and its outputs are the library's.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click

from ..errors import InputError
from ._errors import check_not_input, check_output_dir, check_output_file, user_errors


@dataclass(frozen=True)
class RankArgs:
    """The values of ``rank``'s options, one field per option (its click parameter name)."""

    zoo_dir: Path | None
    target_paths: tuple[Path, ...]
    split: str | None
    scenario: str
    fmt: str
    out: Path | None
    models: str | None
    metrics: str | None
    faithful: bool
    lp_jitters: int
    cache_dir: Path | None
    no_cache: bool
    device: str
    threads: int | None
    residual_memory: str
    gradient_pass: str
    no_resize: bool
    size: str | None
    demo: bool
    quiet: bool
    executor_name: str
    ray_address: str | None
    max_retries: int
    max_samples: int | None
    resamples: int | None
    seed: int
    fraction: float
    level: float
    fu_resample: str
    plot_dir: Path | None
    folds: bool
    within_family: bool
    path_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    split_column: str | None = None

    def columns(self) -> dict[str, str | None] | None:
        """The label-table columns given (``None``: none, each role found by name)."""
        given = {"path": self.path_column, "label": self.label_column,
                 "group": self.group_column, "split": self.split_column}
        return {k: v for k, v in given.items() if v is not None} or None


@contextmanager
def _progress(enabled: bool) -> Iterator:
    """How ``rank`` shows its progress on standard error: bars on a terminal; a line per
    member scored in a log (standard error redirected), where bars would print nothing until
    the end (:mod:`gradnca_onnx.engine.log`); nothing when not ``enabled`` (``--quiet``)."""
    if not enabled:
        yield None
    elif sys.stderr.isatty():
        with _bars() as update:
            yield update
    else:
        with _log_lines():
            yield None


@contextmanager
def _bars() -> Iterator:
    """A progress callback drawing one bar per model and stage, started on first use (so an
    error raised before any work prints nothing but its own line)."""
    state: dict = {}

    def update(model: str, stage: str, done: int, total: int) -> None:
        if "bar" not in state:
            from ._progress import rich_bars

            state["bar"] = rich_bars(transient=True)
            state["bar"].start()
            state["tasks"] = {}
        key = (model, stage)
        if key not in state["tasks"]:
            state["tasks"][key] = state["bar"].add_task(f"{model}: {stage}", total=total)
        state["bar"].update(state["tasks"][key], completed=done)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].stop()


@contextmanager
def _log_lines() -> Iterator:
    """The engine's log records on standard error, one line each, while the ranking runs."""
    import logging

    from ._progress import LogLines

    logger = logging.getLogger("gradnca_onnx")
    handler = LogLines("rank")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.summary()


_OWN = ("gradnca", "lp", "fu")


def _baselines(spec: str | None) -> list[str] | None:
    """The baseline names of a --metrics value (the paper's own three are always reported)."""
    if not spec:
        return None
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if "all" in names:
        return ["all"] if len(names) == 1 else _fail_all()
    return [n for n in names if n not in _OWN] or None


def _fail_all() -> list[str]:
    raise InputError("--metrics all cannot be combined with other names")


#: Options that act only with --resamples (parameter name -> option).
_RESAMPLE_ONLY = {"seed": "--seed", "fraction": "--fraction", "level": "--level",
                  "fu_resample": "--fu-resample"}


def _check_sureness_options(args: RankArgs) -> None:
    """Refuse contradictory --resamples / --folds settings, bad values (with or without
    --resamples) and --resamples settings given without it, before any work."""
    from ..engine.options import check_resample_options
    from ..executors.ranking import check_sureness

    check_sureness(args.resamples is not None, args.folds)
    check_resample_options(args.resamples, args.fraction, args.level, args.fu_resample,
                           args.seed)
    ctx = click.get_current_context(silent=True)
    given = [opt for name, opt in _RESAMPLE_ONLY.items()
             if ctx is not None and ctx.get_parameter_source(name)
             is click.core.ParameterSource.COMMANDLINE]
    if args.resamples is None and given:
        # A setting that silently does nothing would let the user believe it was applied.
        raise InputError(f"{', '.join(given)} act(s) only with --resamples N; add --resamples "
                         f"N (e.g. 200) or drop {', '.join(given)}")
    if args.folds and args.split is not None:
        raise InputError(f"--folds scores the paper's folds of the train split; drop --split "
                         f"{args.split}")
    check_sureness(args.resamples is not None, args.folds, args.executor_name == "local")


def _plot_files(target_paths) -> list[str]:
    """The files ``--plot`` writes for one target (several targets: known after loading, so
    the writer checks those itself)."""
    from ..results.plots import plot_files

    return plot_files() if len(target_paths) == 1 and not Path(target_paths[0]).is_dir() else []


@click.command("rank")
@click.option("--zoo", "zoo_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Zoo directory (one sub-directory per exported model).")
@click.option("--target", "target_paths", type=click.Path(path_type=Path), multiple=True,
              help="MedMNIST .npz, a paper fold .npz, or a folder with one sub-folder per class; "
                   "repeat it, or give a directory of such targets, to rank on several.")
@click.option("--split", default=None,
              help="train, val, test, all or fold1..fold5 (default: train for .npz files, all "
                   "images for folders).")
@click.option("--scenario", type=click.Choice(["dataset", "cross-domain"]), default="dataset",
              show_default=True,
              help="dataset: sources of one architecture; cross-domain: the paper's model "
                   "scenario (both terms inverted, Eq. 8).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this file (atomically) instead of standard output.")
@click.option("--models", default=None, help="Comma-separated subset of the zoo's model names.")
@click.option("--metrics", default=None,
              help="Baseline metrics from the same pass, comma-separated or 'all': gradnca, lp, "
                   "fu (always shown), logme, leep, nleep, parc, sfda, ncti, gbc, hscore, nce, "
                   "transrate, params (parameter count of features.onnx), source_images "
                   "(source-dataset size the manifest records, null when it does not). Metrics "
                   "needing logits are skipped, with a note, for headless models.")
@click.option("--faithful", is_flag=True,
              help="Baseline metrics with the released code's quirks (README, Baseline metrics).")
@click.option("--gradient-pass", "gradient_pass", default="auto", show_default=True,
              type=click.Choice(["auto", "split", "whole"]),
              help="auto: the split pass (each image forward once) for a model whose residuals "
                   "of a whole S_FU batch fit --residual-memory, else features.onnx + "
                   "grads.onnx, said in its notes; split: whenever one chunk fits (the rest "
                   "recomputed); whole: never.")
@click.option("--max-samples", "max_samples", type=int, default=None, metavar="N",
              help="Above N images, score a class-stratified subsample of N (seed 0; the same "
                   "images for every model), stated in the notes: S_LP's NCA is quadratic in "
                   "the number of images. 0 scores every image. [default: 5000]")
@click.option("--lp-jitters", "lp_jitters", type=int, default=0, show_default=True,
              metavar="K",
              help="S_LP as the mean over K >= 2 copies of the features jittered by 1e-6 "
                   "(smooths NCA's numerical noise, K times the S_LP cost; an extension, not "
                   "the paper's). 0: the paper's S_LP.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Feature cache directory (default: $GRADNCA_CACHE or "
                                 "~/.cache/gradnca-onnx).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the feature cache.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for every pool of the run: onnxruntime, the NCA products, OpenMP, "
                   "numba and BLAS (default: all cores).")
@click.option("--residual-memory", "residual_memory", default="2GiB", show_default=True,
              metavar="SIZE",
              help="Memory the gradient pass may hold per S_FU batch for its residuals (e.g. "
                   "512MiB, 4GiB); chunks past it are recomputed (a note says how many). 0: no "
                   "split pass (features.onnx, then grads.onnx).")
@click.option("--no-resize", is_flag=True,
              help="Refuse targets whose image size differs from a model's input size instead of "
                   "resizing them (bilinear).")
@click.option("--size", "size", default=None, metavar="HxW|N|DxHxW",
              help="Image folders: resize every image to H x W (N: N x N) pixels, bilinear, while "
                   "loading; needed when a folder's images differ in size (the target's notes "
                   "record it). Volumes (NIfTI): DxHxW (N: a cube), trilinear. Models then "
                   "resize to their own input as usual.")
@click.option("--path-column", "path_column", default=None, metavar="NAME",
              help="Label tables (.csv/.tsv targets): the column of image paths [default: "
                   "path, file, filename, image...].")
@click.option("--label-column", "label_column", default=None, metavar="NAME[,NAME...]",
              help="Label tables: the label column, or several 0/1 columns (multi-label) "
                   "[default: label, class, diagnosis...].")
@click.option("--group-column", "group_column", default=None, metavar="NAME",
              help="Label tables: the patient column, kept together in resamples [default: "
                   "patient, patient_id, subject...].")
@click.option("--split-column", "split_column", default=None, metavar="NAME",
              help="Label tables: the train/val/test column that --split reads [default: "
                   "split, subset, partition].")
@click.option("--demo", is_flag=True,
              help="Rank the bundled demo zoo on the bundled BreastMNIST target (offline).")
@click.option("--quiet", is_flag=True,
              help="No progress: no bars on a terminal, no line per model in a log.")
@click.option("--executor", "executor_name", default="local", show_default=True,
              metavar="local|ray",
              help="local: score in this process; ray: one Ray task per model x target.")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to join (default: $RAY_ADDRESS, else a Ray instance started "
                   "on this machine).")
@click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Ray: times a task whose worker died is run again before it is reported.")
@click.option("--resamples", type=int, default=None, metavar="N",
              help="How sure is the ranking: also score N class-stratified subsamples of the "
                   "target (from the cached features) and report intervals, P(rank 1), rank "
                   "intervals and which models are distinguishable from the top.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="--resamples: seed of the subsamples (same seed, same output).")
@click.option("--fraction", type=float, default=0.5, show_default=True,
              help="--resamples: share of each class kept per subsample (without replacement).")
@click.option("--level", type=float, default=0.95, show_default=True,
              help="--resamples: interval level; a model is distinguishable from the top when "
                   "P(S >= top's S) < 1 - level.")
@click.option("--fu-resample", type=click.Choice(["rebatch", "batches"]), default="rebatch",
              show_default=True,
              help="--resamples: S_FU from a grads.onnx pass per batch of each subsample "
                   "(rebatch), or from the cached batches drawn with replacement (batches: no "
                   "pass, narrower intervals; README).")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path), default=None,
              metavar="DIR",
              help="--resamples: write a forest plot of S (intervals, P(best)) and a "
                   "rank-probability heat map to DIR, PNG and PDF.")
@click.option("--folds", "folds", is_flag=True,
              help="Score on each of the paper's five folds of the official train split and "
                   "report the fold-to-fold spread of every score and of the ranking.")
@click.option("--within-family", "within_family", is_flag=True,
              help="Combine and rank each family of S_FU layers (conv+conv for CNNs, "
                   "conv+linear for ViTs, ...) on its own: S_FU ratios of different layer kinds "
                   "are not on one scale (an extension for mixed zoos).")
@user_errors
def rank_command(**values: Any) -> None:
    """Rank the models of a zoo by their transferability to one or more target datasets."""
    args = _with_demo(RankArgs(**values))
    settings = _check(args)
    _run(args, settings)


def _with_demo(args: RankArgs) -> RankArgs:
    """``args`` with the bundled demo's zoo and target where --demo asks for them."""
    from dataclasses import replace

    if args.demo:
        from ..demo import demo_paths

        zoo, target = demo_paths()
        args = replace(args, zoo_dir=args.zoo_dir or zoo,
                       target_paths=args.target_paths or (target,))
    if args.zoo_dir is None or not args.target_paths:
        raise InputError("give --zoo DIR and --target PATH (or --demo for the bundled example)")
    return args


def _check(args: RankArgs) -> dict[str, Any]:
    """Every option checked before any work; the parsed values the run needs.

    No output may replace an input or land inside the zoo, the cache or a target folder.
    """
    from ..data.preprocess import parse_size
    from ..engine import FeatureCache, RuntimeConfig, default_cache_dir
    from ..engine.bounded import check_max_samples
    from ..engine.runtime import cap_threads, memory_size
    from ..scores.label_prediction import check_jitters

    _check_sureness_options(args)
    if args.size is not None and args.folds:
        raise InputError("--size resizes image folders, and --folds scores npz files: drop --size")
    size = None if args.size is None else parse_size(args.size, "--size")
    threads, capped = cap_threads(args.threads, "--threads")
    if capped:
        click.echo(f"Warning: {capped}", err=True)
    if args.plot_dir is not None and args.resamples is None:
        raise InputError("--plot draws the intervals of --resamples: add --resamples N")
    cache_root = None if args.no_cache else (args.cache_dir or default_cache_dir())
    cache_option = ("--cache (GRADNCA_CACHE)" if args.cache_dir is None and
                    os.environ.get("GRADNCA_CACHE") else "--cache")
    inputs = {"--target": args.target_paths, "--zoo": args.zoo_dir}
    check_not_input(cache_root, cache_option, inputs)  # cache entries are written there
    inputs[cache_option] = cache_root
    check_output_dir(args.plot_dir, "--plot", inputs, files=() if args.plot_dir is None else
                     _plot_files(args.target_paths))
    check_output_file(args.out, "--out", inputs, stdout=True)
    cache = FeatureCache(cache_root)
    cache.check_writable(cache_option)
    RuntimeConfig(device=args.device).providers()  # an unusable --device fails now
    memory = memory_size(args.residual_memory, "--residual-memory")
    check_jitters(args.lp_jitters, "--lp-jitters")
    check_max_samples(args.max_samples, "--max-samples")
    return {"size": size, "threads": threads, "cache": cache, "residual_memory": memory}


def _run(args: RankArgs, checked: dict[str, Any]) -> None:
    """Rank through the Python API (:func:`gradnca_onnx.api.rank`), print (or write) the
    output and the plots, warn of failures."""
    from ..api import rank
    from ..results import Rankings

    one = len(args.target_paths) == 1
    started = time.perf_counter()
    with _progress(not args.quiet) as progress:
        result = rank(
            args.zoo_dir, args.target_paths[0] if one else list(args.target_paths),
            split=args.split, size=checked["size"], scenario=args.scenario, models=args.models,
            metrics=_baselines(args.metrics), faithful=args.faithful,
            lp_jitters=args.lp_jitters, cache=checked["cache"], device=args.device,
            threads=checked["threads"], residual_memory=checked["residual_memory"],
            resize=not args.no_resize, resamples=args.resamples, seed=args.seed,
            fraction=args.fraction, level=args.level, fu_resample=args.fu_resample,
            folds=args.folds, executor=args.executor_name, ray_address=args.ray_address,
            max_retries=args.max_retries, progress=progress,
            within_family=args.within_family, columns=args.columns(),
            max_samples=args.max_samples, gradient_pass=args.gradient_pass)
    if not isinstance(result, Rankings):
        result = Rankings([result], several_targets=False)
    if not args.quiet:
        for ranking in result:
            if ranking.target_summary:
                click.echo(f"Read: {ranking.target_summary}", err=True)
    if args.resamples is not None and not args.quiet:
        n_models = sum(1 for r in result for m in r.models if m.resampling is not None)
        click.echo(f"Resampling: {args.resamples} subsamples x {n_models} model(s) in "
                   f"{time.perf_counter() - started:.1f} s (S_FU {args.fu_resample})", err=True)
    _print(args, result)


def _print(args: RankArgs, result: Any) -> None:
    """The output in --format (to --out or standard output), the plots, and a warning per
    target whose models could not all be scored."""
    from ..io.atomic import atomic_write_text
    from ..results.text import printable

    if not any(m.ok for r in result for m in r.models):
        # Nothing to rank: the input does not fit any model (e.g. --no-resize with another
        # image size); say why in one line rather than print an empty table.
        first = next(m for r in result for m in r.models)
        raise InputError(f"no model of the zoo could be scored; {first.name}: {first.error}")
    text = {"json": result.to_json, "csv": result.to_csv, "table": result.to_table}[args.fmt]()
    if args.out is not None:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    if args.plot_dir is not None:
        result.plot(args.plot_dir)
    for ranking in result:
        broken = [m for m in ranking.models if not m.ok]
        if broken:
            where = f" on {printable(ranking.target)}" if result.several_targets else ""
            click.echo(f"Warning: {len(broken)} model(s) could not be scored{where}: "
                       f"{', '.join(printable(m.name) for m in broken)} (see the report)",
                       err=True)
