"""Figures of an evaluation: score-vs-AUC scatter grid, critical-difference diagram, tau heat map.

matplotlib is imported only when a figure is drawn (``pip install "gradnca-onnx[plot]"``);
figures are made and saved (PNG and PDF) by :mod:`gradnca_onnx.results.figure`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ..results.figure import FORMATS, figure, save_figure
from .correlation import paired_values
from .table import PathLike, SourceTargetTable, align

if TYPE_CHECKING:
    from .report import Evaluation

#: The figures :func:`plot_evaluation` writes (stems in ``out``), each in every format.
PLOT_STEMS: tuple[str, ...] = ("scatter_grid", "critical_difference", "tau_heatmap")
#: Their file names, for a caller that checks an output directory before any work.
PLOT_FILES: tuple[str, ...] = tuple(f"{stem}.{fmt}" for stem in PLOT_STEMS for fmt in FORMATS)


def plot_scatter_grid(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable],
                      stem: PathLike, *, tau: ArrayLike | None = None) -> list[Path]:
    """Score (y) against ground truth (x) for every target (rows) and method (columns).

    Each panel shows the sources (the target's own row dropped) and a least-squares
    regression line, like the paper's Figure 5.

    Parameters
    ----------
    truth : SourceTargetTable
    scores : mapping of str to SourceTargetTable
        Method -> scores, all with the same targets.
    stem : path-like
        Output path without extension; ``.png`` and ``.pdf`` are written.
    tau : array-like of shape (n_targets, n_methods), optional
        Shown in each panel's title when given.

    Returns
    -------
    list of Path
        The files written.
    """
    methods = list(scores)
    if not methods:
        raise InputError("no methods to plot")
    targets = scores[methods[0]].targets
    tau_m = None if tau is None else np.asarray(tau, dtype=np.float64)
    fig = figure(2.0 * len(methods) + 1.0, 1.7 * len(targets) + 0.5)
    axes = fig.subplots(len(targets), len(methods), squeeze=False)
    for j, m in enumerate(methods):
        table, truth_t = align(scores[m].select(None, targets), truth)
        for i, target in enumerate(targets):
            ax = axes[i][j]
            x_score, y_truth, _ = paired_values(table, truth_t, target)
            ok = ~(np.isnan(x_score) | np.isnan(y_truth))
            ax.scatter(y_truth[ok], x_score[ok], s=10, color="tab:blue")
            # A regression line needs two distinct truth values and a non-constant score.
            if ok.sum() >= 2 and np.ptp(y_truth[ok]) > 0 and np.ptp(x_score[ok]) > 0:
                slope, icpt = np.polyfit(y_truth[ok], x_score[ok], 1)
                xs = np.linspace(y_truth[ok].min(), y_truth[ok].max(), 2)
                ax.plot(xs, slope * xs + icpt, color="black", linewidth=1)
            title = m if i == 0 else ""
            if tau_m is not None:
                t = tau_m[i, j]
                title = (title + "\n" if title else "") + ("tau = -" if math.isnan(t) else f"tau = {t:.2f}")
            ax.set_title(title, fontsize=7)
            ax.tick_params(labelsize=5)
            # Near-constant scores (SFDA) otherwise get a large offset label over the title.
            ax.yaxis.get_offset_text().set_fontsize(5)
            ax.xaxis.get_offset_text().set_fontsize(5)
            if j == 0:
                ax.set_ylabel(f"{target}\nscore", fontsize=7)
            if i == len(targets) - 1:
                ax.set_xlabel("ground truth", fontsize=7)
    return save_figure(fig, stem)


def _cliques(avg: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (in sorted order) of methods whose average ranks differ by less than CD."""
    order = np.argsort(avg, kind="stable")
    r = avg[order]
    spans = []
    for a in range(len(r)):
        b = a
        while b + 1 < len(r) and r[b + 1] - r[a] < cd:
            b += 1
        if b > a and not any(s <= a and b <= e for s, e in spans):
            spans.append((a, b))
    return spans


def plot_critical_difference(avg_rank: Mapping[str, float], cd: float, stem: PathLike, *,
                             title: str | None = None) -> list[Path]:
    """Demšar's critical-difference diagram.

    Methods sit on a rank axis (1 = best, on the left); a thick bar joins each maximal group
    whose average ranks differ by less than ``cd`` (not significantly different); the CD itself
    is drawn above the axis.

    Parameters
    ----------
    avg_rank : mapping of str to float
        Average rank per method.
    cd : float
        Critical difference (e.g. :func:`~.stats.critical_difference`).
    stem : path-like
        Output path without extension.
    title : str, optional

    Returns
    -------
    list of Path
    """
    names = list(avg_rank)
    avg = np.array([avg_rank[n] for n in names], dtype=np.float64)
    if len(names) < 2:
        raise InputError("a critical-difference diagram needs at least 2 methods")
    if not np.isfinite(avg).all() or not (math.isfinite(cd) and cd > 0):
        raise InputError("average ranks and the critical difference must be finite (cd > 0)")
    k = len(names)
    lo, hi = 1, max(k, int(math.ceil(avg.max())))
    order = np.argsort(avg, kind="stable")
    half = (k + 1) // 2
    n_rows = max(half, k - half)
    fig = figure(6.0, 1.6 + 0.28 * n_rows)
    ax = fig.add_subplot()
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_ylim(-(n_rows + 2.0), 2.2)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="black", linewidth=1)
    for t in range(lo, hi + 1):
        ax.vlines(t, 0, 0.15, color="black", linewidth=1)
        ax.text(t, 0.3, str(t), ha="center", va="bottom", fontsize=8)
    ax.hlines(1.4, lo, lo + cd, color="black", linewidth=1.5)
    ax.vlines([lo, lo + cd], 1.3, 1.5, color="black", linewidth=1.5)
    ax.text(lo + cd / 2, 1.6, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for pos, idx in enumerate(order):
        left = pos < half
        row = pos if left else k - 1 - pos
        y = -(row + 1.0)
        x_end = lo - 0.3 if left else hi + 0.3
        ax.plot([avg[idx], avg[idx], x_end], [0, y, y], color="black", linewidth=0.8)
        ax.text(x_end + (-0.05 if left else 0.05), y, f"{names[idx]} ({avg[idx]:.2f})",
                ha="right" if left else "left", va="center", fontsize=8)
    for c, (a, b) in enumerate(_cliques(avg, cd)):
        y = -0.35 - 0.22 * c
        ax.hlines(y, avg[order[a]] - 0.05, avg[order[b]] + 0.05, color="tab:red", linewidth=3)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, stem)


def plot_tau_heatmap(tau: ArrayLike, methods: Sequence[str], targets: Sequence[str],
                     stem: PathLike, *, title: str | None = None) -> list[Path]:
    """Heat map of tau (targets x methods), each cell annotated, NaN shown as ``-``.

    Parameters
    ----------
    tau : array-like of shape (n_targets, n_methods)
    methods, targets : sequence of str
    stem : path-like
        Output path without extension.
    title : str, optional

    Returns
    -------
    list of Path
    """
    m = np.asarray(tau, dtype=np.float64)
    if m.shape != (len(targets), len(methods)):
        raise InputError(f"tau has shape {m.shape}; expected ({len(targets)}, {len(methods)}) "
                         "(targets x methods)")
    fig = figure(1.0 + 0.9 * len(methods), 0.8 + 0.4 * len(targets))
    ax = fig.add_subplot()
    img = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(methods)), list(methods), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(targets)), list(targets), fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if not math.isnan(v) and abs(v) > 0.6 else "black")
    fig.colorbar(img, ax=ax, label="weighted Kendall tau")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, stem)


def plot_evaluation(evaluation: "Evaluation", directory: PathLike) -> list[Path]:
    """Write all three figures of ``evaluation`` into ``directory`` (PNG and PDF each).

    Files: ``scatter_grid``, ``critical_difference`` (when there are at least two methods) and
    ``tau_heatmap``, each ``.png`` and ``.pdf``.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"plot directory {str(out)!r} exists and is not a directory")
    scen = f"{evaluation.scenario} scenario"
    paths = plot_scatter_grid(evaluation.truth, evaluation.scores, out / PLOT_STEMS[0], tau=evaluation.tau)
    if evaluation.cd is not None:
        paths += plot_critical_difference(dict(zip(evaluation.methods, evaluation.avg_rank)),
                                          evaluation.cd, out / PLOT_STEMS[1],
                                          title=f"Average rank, {scen}")
    paths += plot_tau_heatmap(evaluation.tau, evaluation.methods, evaluation.targets,
                              out / PLOT_STEMS[2], title=f"Weighted Kendall tau, {scen}")
    return paths
