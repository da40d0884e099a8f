"""``gradnca-onnx rank``: score every model of a zoo on a target dataset, best first."""

from __future__ import annotations

import csv
import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from . import main
from ._errors import user_errors


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_table(ranking) -> str:
    rows = [("rank", "model", "S", "S_LP", "S_FU", *ranking.metrics, "pre-trained on", "")]
    for m in ranking.models:
        rows.append((str(m.rank) if m.rank else "-", m.name, _fmt(m.score), _fmt(m.lp), _fmt(m.fu),
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
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "model", "score", "lp", "fu", *ranking.metrics, "architecture",
                "pretrained_on", "error"])
    num = lambda v: "" if v is None else repr(v)  # noqa: E731
    for m in ranking.models:
        w.writerow([m.rank or "", m.name, num(m.score), num(m.lp), num(m.fu),
                    *(num(m.metrics.get(k)) for k in ranking.metrics),
                    m.architecture, m.pretrained_on, m.error or ""])
    return buf.getvalue()


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
@click.option("--target", "target_path", type=click.Path(path_type=Path),
              help="MedMNIST .npz, a paper fold .npz, or a folder with one sub-folder per class.")
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
@user_errors
def rank_command(zoo_dir, target_path, split, scenario, fmt, out, models, metrics, faithful,
                 cache_dir, no_cache, device, threads, no_resize, demo, quiet) -> None:
    """Rank the models of a zoo by their transferability to a target dataset."""
    from ..data.dataset import load_target
    from ..engine import FeatureCache, RuntimeConfig, default_cache_dir, rank_zoo
    from ..zoo import atomic_write_text

    if demo:
        from ..demo import demo_paths

        zoo_default, target_default = demo_paths()
        zoo_dir = zoo_dir or zoo_default
        target_path = target_path or target_default
    if zoo_dir is None or target_path is None:
        raise ValueError("give --zoo DIR and --target PATH (or --demo for the bundled example)")
    if not Path(target_path).exists():
        raise ValueError(f"target {target_path} does not exist")
    target = load_target(target_path, split)
    cache = FeatureCache(None if no_cache else (cache_dir or default_cache_dir()))
    with _progress(not quiet) as progress:
        ranking = rank_zoo(zoo_dir, target, scenario=scenario,
                           runtime=RuntimeConfig(device=device, threads=threads), cache=cache,
                           resize=not no_resize,
                           models=[m.strip() for m in models.split(",")] if models else None,
                           metrics=_baselines(metrics), faithful=faithful, progress=progress)
    if fmt == "json":
        text = json.dumps(ranking.to_dict(), indent=2) + "\n"
    elif fmt == "csv":
        text = render_csv(ranking)
    else:
        text = render_table(ranking)
    if out is not None:
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)
    broken = [m for m in ranking.models if not m.ok]
    if broken:
        click.echo(f"Warning: {len(broken)} model(s) could not be scored: "
                   f"{', '.join(m.name for m in broken)} (see the report)", err=True)
    if not any(m.ok for m in ranking.models):
        raise SystemExit(1)
