"""``gradnca-onnx rank``: score every model of a zoo on a target dataset, best first."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from . import main
from ._errors import check_output_file, user_errors


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


#: What the table shows for S and S_FU of a features-only member (no grads.onnx): not a
#: number, and not the "-" of a model that failed.
NOT_AVAILABLE = "n/a"


def render_table(ranking) -> str:
    """The ranking as an aligned text table, then one line per failure and per note.

    A features-only member shows ``n/a`` for S and S_FU, ``-`` for its rank, and a note.
    """
    rows = [("rank", "model", "S", "S_LP", "S_FU", *ranking.metrics, "pre-trained on", "")]
    for m in ranking.models:
        na = m.ok and m.features_only is not None
        score = NOT_AVAILABLE if na else _fmt(m.score)
        fu = NOT_AVAILABLE if na else _fmt(m.fu)
        rows.append((str(m.rank) if m.rank else "-", m.name, score, _fmt(m.lp), fu,
                     *(_fmt(m.metrics.get(k)) for k in ranking.metrics),
                     m.pretrained_on or "", "cached" if m.cached else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"Target {ranking.target} ({ranking.split}, n={ranking.n_samples}, "
             f"{ranking.n_classes} classes), {ranking.scenario} scenario"]
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    for m in ranking.models:
        if m.error:
            lines.append(f"! {m.name}: not scored: {m.error}")
        for note in dict.fromkeys(m.notes):
            lines.append(f"  note ({m.name}): {note}")
    return "\n".join(lines) + "\n"


def render_csv(ranking) -> str:
    """The ranking as CSV; empty cells are missing values, ``status`` says why.

    ``status`` is ``ranked``, ``features-only`` (S and S_FU empty: no grads.onnx) or ``failed``
    (see ``error``).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "model", "score", "lp", "fu", *ranking.metrics, "architecture",
                "pretrained_on", "error", "status"])
    num = lambda v: "" if v is None else repr(v)  # noqa: E731
    for m in ranking.models:
        w.writerow([m.rank or "", m.name, num(m.score), num(m.lp), num(m.fu),
                    *(num(m.metrics.get(k)) for k in ranking.metrics),
                    m.architecture, m.pretrained_on, m.error or "", m.status])
    return buf.getvalue()


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

    return json.dumps({"schema": "gradnca-onnx/rank-targets/1", "package_version": __version__,
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
            raise ValueError(f"target {p} does not exist")
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
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

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
    raise ValueError("--metrics all cannot be combined with other names")


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
                   "transrate. Metrics needing logits are skipped, with a note, for headless "
                   "models.")
@click.option("--faithful", is_flag=True,
              help="Baseline metrics with the released code's quirks (README, Baseline metrics).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Feature cache directory (default: $GRADNCA_CACHE or "
                                 "~/.cache/gradnca-onnx).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the feature cache.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime intra-op threads (default: all cores).")
@click.option("--no-resize", is_flag=True,
              help="Refuse targets whose image size differs from a model's input size instead of "
                   "resizing them (bilinear).")
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
@user_errors
def rank_command(zoo_dir, target_paths, split, scenario, fmt, out, models, metrics, faithful,
                 cache_dir, no_cache, device, threads, no_resize, demo, quiet, executor_name,
                 ray_address, max_retries) -> None:
    """Rank the models of a zoo by their transferability to one or more target datasets."""
    from ..data.dataset import load_target
    from ..engine import FeatureCache, RuntimeConfig, default_cache_dir, rank_zoo
    from ..executors import make_executor, rank_targets
    from ..zoo import atomic_write_text

    if demo:
        from ..demo import demo_paths

        zoo_default, target_default = demo_paths()
        zoo_dir = zoo_dir or zoo_default
        target_paths = target_paths or (target_default,)
    if zoo_dir is None or not target_paths:
        raise ValueError("give --zoo DIR and --target PATH (or --demo for the bundled example)")
    # Every output path and setting is checked before the work starts, not after it.
    check_output_file(out, "--out")
    cache = FeatureCache(None if no_cache else (cache_dir or default_cache_dir()))
    cache.check_writable("--cache" if cache_dir else
                         "--cache (GRADNCA_CACHE)" if os.environ.get("GRADNCA_CACHE") else "--cache")
    RuntimeConfig(device=device).providers()  # an unusable --device fails now
    paths, expanded = expand_targets(target_paths)
    if not paths:
        raise ValueError(f"no target found in {', '.join(map(str, target_paths))}")
    targets = [load_target(p, split) for p in paths]
    combined = expanded or len(targets) > 1
    model_names = [m.strip() for m in models.split(",")] if models else None
    executor = make_executor(executor_name, address=ray_address, max_retries=max_retries)
    # A Ray task asks for one CPU: onnxruntime's default of one thread per core would
    # oversubscribe every node.
    runtime = RuntimeConfig(device=device,
                            threads=threads or (None if executor.in_process else 1))
    try:
        with _progress(not quiet) as progress:
            if executor.in_process and not combined:
                rankings = [rank_zoo(zoo_dir, targets[0], scenario=scenario, runtime=runtime,
                                     cache=cache, resize=not no_resize, models=model_names,
                                     metrics=_baselines(metrics), faithful=faithful,
                                     progress=progress)]
            else:
                rankings = rank_targets(zoo_dir, targets, executor=executor, scenario=scenario,
                                        runtime=runtime, cache=cache, resize=not no_resize,
                                        models=model_names, metrics=_baselines(metrics),
                                        faithful=faithful, progress=progress)
    finally:
        executor.close()
    if not any(m.ok for r in rankings for m in r.models):
        # Nothing to rank: the input does not fit any model (e.g. --no-resize with another
        # image size); say why in one line rather than print an empty table.
        first = next(m for r in rankings for m in r.models)
        raise ValueError(f"no model of the zoo could be scored; {first.name}: {first.error}")
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
    for ranking in rankings:
        broken = [m for m in ranking.models if not m.ok]
        if broken:
            where = f" on {ranking.target}" if combined else ""
            click.echo(f"Warning: {len(broken)} model(s) could not be scored{where}: "
                       f"{', '.join(m.name for m in broken)} (see the report)", err=True)
