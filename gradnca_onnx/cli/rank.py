"""``gradnca-onnx rank``: score every model of a zoo on a target dataset, best first."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from ..errors import InputError
from . import main
from ._errors import check_not_input, check_output_dir, check_output_file, user_errors
from ._text import printable


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


#: What the table shows for S and S_FU of a features-only member (no grads.onnx): not a
#: number, and not the "-" of a model that failed.
NOT_AVAILABLE = "n/a"


def render_table(ranking) -> str:
    """The ranking as an aligned text table, then one line per failure and per note.

    A features-only member shows ``n/a`` for S and S_FU, ``-`` for its rank, and a note.
    Every zoo- or target-supplied string (names, pre-trained on, errors, notes) goes through
    :func:`printable`: a control or bidi character shows as an escape, never acts.
    """
    rows = [("rank", "model", "S", "S_LP", "S_FU", *ranking.metrics, "pre-trained on", "")]
    for m in ranking.models:
        na = m.ok and m.features_only is not None
        score = NOT_AVAILABLE if na else _fmt(m.score)
        fu = NOT_AVAILABLE if na else _fmt(m.fu)
        rows.append((str(m.rank) if m.rank else "-", printable(m.name), score, _fmt(m.lp), fu,
                     *(_fmt(m.metrics.get(k)) for k in ranking.metrics),
                     printable(m.pretrained_on or ""), "cached" if m.cached else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"Target {printable(ranking.target)} ({printable(ranking.split)}, "
             f"n={ranking.n_samples}, "
             f"{ranking.n_classes} classes), {ranking.scenario} scenario"]
    if ranking.order != "dataset":
        # S_FU's batches are consecutive images: say when they are not the file's own order.
        lines[0] += f", images in {printable(ranking.order)} order"
    lines += [f"  note (target): {printable(n)}" for n in ranking.target_notes]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    for m in ranking.models:
        if m.error:
            lines.append(f"! {printable(m.name)}: not scored: {printable(m.error)}")
        for note in dict.fromkeys(m.notes):
            lines.append(f"  note ({printable(m.name)}): {printable(note)}")
    return "\n".join(lines) + "\n" + _resampling_table(ranking) + _folds_table(ranking)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _iv(block, digits: int = 4) -> str:
    """``lo-hi`` of a percentile interval block, ``-`` when there is none."""
    if block is None:
        return "-"
    return f"{block['lo']:.{digits}f}..{block['hi']:.{digits}f}"


def _resampling_table(ranking) -> str:
    """The ``--resamples`` block: intervals, P(rank 1), rank interval, comparison with the top."""
    rs = ranking.resampling
    if rs is None:
        return ""
    pct = f"{100 * rs['level']:g}%"
    sizes = "/".join(str(n) for n in rs["sizes"])
    lines = ["", f"How sure: {rs['n_resamples']} class-stratified subsamples without "
             f"replacement of {sizes} images (fraction {rs['fraction']:g}, seed {rs['seed']}), "
             f"{pct} percentile intervals, S_FU {rs['fu_estimator']}"]
    rows = [("rank", "model", f"S {pct}", f"S_LP {pct}", f"S_FU {pct}", "P(rank 1)", "ranks",
             "P(>= top)", "vs top", *(f"{k} {pct}" for k in ranking.metrics))]
    for m in ranking.models:
        b = m.resampling
        if b is None:
            continue
        ri = b["rank_interval"]
        if b["distinguishable_from_top"] is None:
            vs = NOT_AVAILABLE
        elif b.get("is_top"):
            vs = "top"
        else:
            vs = "below" if b["distinguishable_from_top"] else "indistinguishable"
        rows.append((str(m.rank) if m.rank else "-", printable(m.name), _iv(b["score"]),
                     _iv(b["lp"]),
                     _iv(b["fu"]) if b["fu"] is not None or m.features_only is None
                     else NOT_AVAILABLE,
                     _fmt(b["p_rank1"], 2), f"{ri[0]}-{ri[1]}" if ri else "-",
                     _fmt(b["p_at_least_top"], 2), vs,
                     *(_iv(b["metrics"].get(k)) for k in ranking.metrics)))
    lines += _aligned(rows)
    lines.append(f"  rule: {rs['rule']}")
    return "\n".join(lines) + "\n"


def _msd(block, digits: int = 4) -> str:
    if block is None or block["mean"] is None:
        return "-"
    sd = "-" if block["sd"] is None else f"{block['sd']:.{digits}f}"
    return f"{block['mean']:.{digits}f}±{sd}"


def _folds_table(ranking) -> str:
    """The ``--folds`` block: mean ± SD [min, max] per model, ranks per fold, Kendall tau."""
    fs = ranking.folds
    if fs is None:
        return ""
    sizes = "/".join(str(n) for n in dict.fromkeys(fs["n_samples"]))
    lines = ["", f"Fold-to-fold spread: {fs['n_folds']} paper folds of the official train "
             f"split (n={sizes} each); the ranking above is fold 1's"]
    rows = [("model", "S mean±SD", "S min..max", "S_LP mean±SD", "S_FU mean±SD", "rank by fold",
             *(f"{k} mean±SD" for k in ranking.metrics))]
    for m in ranking.models:
        b = m.folds
        if b is None:
            continue
        s = b["score"]
        rng = "-" if s["min"] is None else f"{s['min']:.4f}..{s['max']:.4f}"
        ranks = ",".join("-" if r is None else str(r) for r in b["rank"]["values"])
        rows.append((printable(m.name), _msd(s), rng, _msd(b["lp"]), _msd(b["fu"]), ranks,
                     *(_msd(b["metrics"].get(k)) for k in ranking.metrics)))
    lines += _aligned(rows)
    for term, label in (("score", "S"), ("lp", "S_LP"), ("fu", "S_FU")):
        kt = fs["kendall_tau"][term]
        if kt["mean"] is None:
            lines.append(f"  Kendall tau between fold rankings by {label}: undefined")
        else:
            lines.append(f"  Kendall tau between fold rankings by {label}: mean {kt['mean']:.2f}"
                         f", min {kt['min']:.2f}, max {kt['max']:.2f} over {len(kt['pairs'])} "
                         "pairs of folds")
    lines.append("  best model per fold: "
                 f"{', '.join(printable(t) if t else '-' for t in fs['top'])}")
    return "\n".join(lines) + "\n"


def render_csv(ranking) -> str:
    """The ranking as CSV; empty cells are missing values, ``status`` says why.

    ``status`` is ``ranked``, ``features-only`` (S and S_FU empty: no grads.onnx) or ``failed``
    (see ``error``). With ``--resamples`` or ``--folds`` their columns follow ``status``
    (:func:`_extra_columns`).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra_header, extra_row = _extra_columns(ranking)
    w.writerow(["rank", "model", "score", "lp", "fu", *ranking.metrics, "architecture",
                "pretrained_on", "error", "status", *extra_header])
    num = lambda v: "" if v is None else repr(v)  # noqa: E731
    for m in ranking.models:
        w.writerow([m.rank or "", m.name, num(m.score), num(m.lp), num(m.fu),
                    *(num(m.metrics.get(k)) for k in ranking.metrics),
                    m.architecture, m.pretrained_on, m.error or "", m.status, *extra_row(m)])
    return buf.getvalue()


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _extra_columns(ranking):
    """CSV columns of the resampling / fold blocks: (header, row function)."""
    terms = ["score", "lp", "fu", *ranking.metrics]
    if ranking.resampling is not None:
        header = [f"{t}_{b}" for t in terms for b in ("lo", "hi")] + [
            "p_rank1", "rank_lo", "rank_hi", "p_at_least_top", "distinguishable_from_top"]

        def row(m):
            b = m.resampling
            if b is None:
                return [""] * len(header)
            iv = lambda t: (b["metrics"].get(t) if t in ranking.metrics else b.get(t))  # noqa
            cells = [_num(None if iv(t) is None else iv(t)[k]) for t in terms
                     for k in ("lo", "hi")]
            ri = b["rank_interval"] or [None, None]
            return cells + [_num(b["p_rank1"]), _num(ri[0]), _num(ri[1]),
                            _num(b["p_at_least_top"]), _num(b["distinguishable_from_top"])]
        return header, row
    if ranking.folds is not None:
        stats = ("mean", "sd", "min", "max")
        header = [f"{t}_fold_{k}" for t in [*terms, "rank"] for k in stats] + ["ranks_by_fold"]

        def row(m):
            b = m.folds
            if b is None:
                return [""] * len(header)
            get = lambda t: b["metrics"][t] if t in ranking.metrics else b[t]  # noqa: E731
            cells = [_num(get(t)[k]) for t in [*terms, "rank"] for k in stats]
            return cells + [";".join("" if r is None else str(r) for r in b["rank"]["values"])]
        return header, row
    return [], lambda m: []


def render_csv_targets(rankings) -> str:
    """One CSV over several targets: the single-target columns after a ``target`` column."""
    parts = []
    for i, ranking in enumerate(rankings):
        lines = render_csv(ranking).splitlines(keepends=True)
        if i == 0:
            parts.append("target," + lines[0])
        parts.extend(f"{_csv_cell(ranking.target)},{line}" for line in lines[1:])
    return "".join(parts)


def _csv_cell(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def render_json_targets(rankings) -> str:
    """One JSON document over several targets (each entry is a single-target result)."""
    from .. import __version__

    extended = any(r.schema.endswith("/2") for r in rankings)
    schema = f"gradnca-onnx/rank-targets/{2 if extended else 1}"
    return json.dumps({"schema": schema, "package_version": __version__,
                       "rankings": [r.to_dict() for r in rankings]}, indent=2) + "\n"


def _is_target_folder_of_folders(path: Path) -> bool:
    """Whether ``path`` holds targets (folders of class folders) rather than being one."""
    from ..data.folders import split_subfolders

    if split_subfolders(path):
        return False  # train/val/test sub-folders: one target with its splits
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(subdirs) and all(
        any(c.is_dir() and not c.name.startswith(".") for c in d.iterdir()) for d in subdirs)


def expand_targets(values: tuple[Path, ...]) -> tuple[list[Path], bool]:
    """The target paths of the --target values, and whether a directory of targets was given.

    A directory holding ``.npz`` files stands for those files; a directory whose every
    sub-folder has class sub-folders stands for those sub-folders; any other directory is one
    image-folder target.
    """
    paths: list[Path] = []
    expanded = False
    for value in values:
        p = Path(value)
        if not p.exists():
            raise InputError(f"target {p} does not exist")
        if p.is_dir():
            npz = sorted(f for f in p.glob("*.npz") if f.is_file())
            if npz:
                paths.extend(npz)
                expanded = True
                continue
            if _is_target_folder_of_folders(p):
                paths.extend(sorted(d for d in p.iterdir()
                                    if d.is_dir() and not d.name.startswith(".")))
                expanded = True
                continue
        paths.append(p)
    return paths, expanded


@contextmanager
def _progress(enabled: bool) -> Iterator:
    """A progress callback drawing one rich bar per model and stage, started on first use (so an
    error raised before any work prints nothing but its own line)."""
    if not enabled:
        yield None
        return
    state: dict = {}

    def update(model: str, stage: str, done: int, total: int) -> None:
        if "bar" not in state:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            state["bar"] = Progress(TextColumn("{task.description}"), BarColumn(),
                                    MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                                    console=Console(stderr=True))
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


def _check_sureness_options(resamples, seed, fraction, level, fu, folds, split,
                            executor_name) -> None:
    """Refuse contradictory --resamples / --folds settings, bad values (with or without
    --resamples) and --resamples settings given without it, before any work."""
    from ..engine.resample import check_resample_options

    if resamples is not None and folds:
        raise InputError("give --resamples or --folds, not both (run rank twice)")
    check_resample_options(resamples, fraction, level, fu, seed)
    ctx = click.get_current_context(silent=True)
    given = [opt for name, opt in _RESAMPLE_ONLY.items()
             if ctx is not None and ctx.get_parameter_source(name)
             is click.core.ParameterSource.COMMANDLINE]
    if resamples is None and given:
        # A setting that silently does nothing would let the user believe it was applied.
        raise InputError(f"{', '.join(given)} act(s) only with --resamples N; add --resamples "
                         f"N (e.g. 200) or drop {', '.join(given)}")
    if folds and split is not None:
        raise InputError(f"--folds scores the paper's folds of the train split; drop --split "
                         f"{split}")
    if (resamples is not None or folds) and executor_name != "local":
        raise InputError("--resamples and --folds run in this process; use --executor local")


def _sure_ranking(zoo_dir, path, target, sure, **kwargs):
    """One target's ranking with its --resamples or --folds blocks."""
    if sure["folds"]:
        from ..engine.folds import rank_folds

        return rank_folds(zoo_dir, path, **kwargs)
    from ..engine.resample import resample_zoo

    return resample_zoo(zoo_dir, target, sure["resamples"], seed=sure["seed"],
                        fraction=sure["fraction"], level=sure["level"], fu=sure["fu"], **kwargs)


def _plot_files(target_paths) -> list[str]:
    """The files ``--plot`` writes for one target (several targets: known after loading, so
    the writer checks those itself)."""
    from ..engine.rank_plots import plot_files

    return plot_files() if len(target_paths) == 1 and not Path(target_paths[0]).is_dir() else []


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30}


def memory_size(text: str, option: str) -> int:
    """Bytes of a size such as ``2GiB``, ``512MiB``, ``1.5G`` or ``0``."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise InputError(f"{option} must be a size such as 512MiB, 2GiB or 0; got {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


@main.command("rank")
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
                   "transrate, params (parameter count of features.onnx), source_images (source-dataset size the manifest records, null when it does not). Metrics needing logits are skipped, with a note, for headless "
                   "models.")
@click.option("--faithful", is_flag=True,
              help="Baseline metrics with the released code's quirks (README, Baseline metrics).")
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
              help="onnxruntime intra-op threads (default: all cores).")
@click.option("--residual-memory", "residual_memory", default="2GiB", show_default=True,
              metavar="SIZE",
              help="Memory the gradient pass may hold per S_FU batch for its residuals (e.g. "
                   "512MiB, 4GiB); chunks past it are recomputed (a note says how many). 0: no "
                   "split pass (features.onnx, then grads.onnx).")
@click.option("--no-resize", is_flag=True,
              help="Refuse targets whose image size differs from a model's input size instead of "
                   "resizing them (bilinear).")
@click.option("--size", "size", default=None, metavar="HxW|N",
              help="Image folders: resize every image to H x W (N: N x N) pixels, bilinear, while "
                   "loading; needed when a folder's images differ in size (the target's notes "
                   "record it). Models then resize to their own input as usual.")
@click.option("--demo", is_flag=True,
              help="Rank the bundled demo zoo on the bundled BreastMNIST target (offline).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
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
@user_errors
def rank_command(zoo_dir, target_paths, split, scenario, fmt, out, models, metrics, faithful,
                 lp_jitters, cache_dir, no_cache, device, threads, residual_memory, no_resize, demo, quiet,
                 executor_name, ray_address, max_retries, resamples, seed, fraction, level,
                 fu_resample, plot_dir, folds, size) -> None:
    """Rank the models of a zoo by their transferability to one or more target datasets."""
    from ..data.load import load_target
    from ..data.preprocess import parse_size
    from ..engine import FeatureCache, RuntimeConfig, default_cache_dir, rank_zoo
    from ..engine.runtime import cap_threads
    from ..executors import make_executor, rank_targets
    from ..io.atomic import atomic_write_text
    from ..scores.label_prediction import check_jitters

    if demo:
        from ..demo import demo_paths

        zoo_default, target_default = demo_paths()
        zoo_dir = zoo_dir or zoo_default
        target_paths = target_paths or (target_default,)
    if zoo_dir is None or not target_paths:
        raise InputError("give --zoo DIR and --target PATH (or --demo for the bundled example)")
    _check_sureness_options(resamples, seed, fraction, level, fu_resample, folds, split,
                            executor_name)
    if size is not None and folds:
        raise InputError("--size resizes image folders, and --folds scores npz files: drop --size")
    hw = None if size is None else parse_size(size, "--size")
    threads, capped = cap_threads(threads, "--threads")
    if capped:
        click.echo(f"Warning: {capped}", err=True)
    if plot_dir is not None and resamples is None:
        raise InputError("--plot draws the intervals of --resamples: add --resamples N")
    # Every output path and setting is checked before the work starts, not after it. No
    # output may replace an input or land inside the zoo, the cache or a target folder.
    cache_root = None if no_cache else (cache_dir or default_cache_dir())
    cache_option = ("--cache (GRADNCA_CACHE)" if cache_dir is None and
                    os.environ.get("GRADNCA_CACHE") else "--cache")
    inputs = {"--target": target_paths, "--zoo": zoo_dir}
    check_not_input(cache_root, cache_option, inputs)  # cache entries are written there
    inputs[cache_option] = cache_root
    check_output_dir(plot_dir, "--plot", inputs, files=() if plot_dir is None else
                     _plot_files(target_paths))
    check_output_file(out, "--out", inputs, stdout=True)
    cache = FeatureCache(cache_root)
    cache.check_writable(cache_option)
    RuntimeConfig(device=device).providers()  # an unusable --device fails now
    memory_size(residual_memory, "--residual-memory")
    check_jitters(lp_jitters, "--lp-jitters")
    paths, expanded = expand_targets(target_paths)
    if not paths:
        raise InputError(f"no target found in {', '.join(map(str, target_paths))}")
    targets = [None if folds else load_target(p, split, size=hw) for p in paths]
    combined = expanded or len(targets) > 1
    model_names = [m.strip() for m in models.split(",")] if models else None
    executor = make_executor(executor_name, address=ray_address, max_retries=max_retries)
    # A Ray task asks for one CPU: onnxruntime's default of one thread per core would
    # oversubscribe every node.
    runtime = RuntimeConfig(device=device,
                            threads=threads or (None if executor.in_process else 1),
                            residual_memory=memory_size(residual_memory, "--residual-memory"))
    sure = dict(resamples=resamples, seed=seed, fraction=fraction, level=level,
                fu=fu_resample, folds=folds)
    started = time.perf_counter()
    try:
        with _progress(not quiet) as progress:
            if resamples is not None or folds:
                rankings = [_sure_ranking(zoo_dir, p, t, sure, scenario=scenario,
                                          runtime=runtime, cache=cache, resize=not no_resize,
                                          models=model_names, metrics=_baselines(metrics),
                                          faithful=faithful, progress=progress,
                                          lp_jitters=lp_jitters)
                            for p, t in zip(paths, targets)]
            elif executor.in_process and not combined:
                rankings = [rank_zoo(zoo_dir, targets[0], scenario=scenario, runtime=runtime,
                                     cache=cache, resize=not no_resize, models=model_names,
                                     metrics=_baselines(metrics), faithful=faithful,
                                     progress=progress, lp_jitters=lp_jitters)]
            else:
                rankings = rank_targets(zoo_dir, targets, executor=executor, scenario=scenario,
                                        runtime=runtime, cache=cache, resize=not no_resize,
                                        models=model_names, metrics=_baselines(metrics),
                                        faithful=faithful, progress=progress,
                                        lp_jitters=lp_jitters)
    finally:
        executor.close()
    if resamples is not None and not quiet:
        n_models = sum(1 for r in rankings for m in r.models if m.resampling is not None)
        click.echo(f"Resampling: {resamples} subsamples x {n_models} model(s) in "
                   f"{time.perf_counter() - started:.1f} s (S_FU {fu_resample})", err=True)
    if not any(m.ok for r in rankings for m in r.models):
        # Nothing to rank: the input does not fit any model (e.g. --no-resize with another
        # image size); say why in one line rather than print an empty table.
        first = next(m for r in rankings for m in r.models)
        raise InputError(f"no model of the zoo could be scored; {first.name}: {first.error}")
    if fmt == "json":
        text = (render_json_targets(rankings) if combined else
                json.dumps(rankings[0].to_dict(), indent=2) + "\n")
    elif fmt == "csv":
        text = render_csv_targets(rankings) if combined else render_csv(rankings[0])
    else:
        text = "\n".join(render_table(r) for r in rankings)
    if out is not None:
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)
    if plot_dir is not None:
        from ..engine.rank_plots import plot_ranking

        for ranking in rankings:
            plot_ranking(ranking, plot_dir, prefix=f"{ranking.target}_" if combined else "")
    for ranking in rankings:
        broken = [m for m in ranking.models if not m.ok]
        if broken:
            where = f" on {printable(ranking.target)}" if combined else ""
            click.echo(f"Warning: {len(broken)} model(s) could not be scored{where}: "
                       f"{', '.join(printable(m.name) for m in broken)} (see the report)",
                       err=True)
