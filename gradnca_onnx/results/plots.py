"""Figures of ``rank --resamples``: a forest plot of S and a rank-probability heat map.

Both are written as PNG and PDF by :mod:`gradnca_onnx.results.figure` (matplotlib's object
API, atomic, no dates in the metadata), so the same ranking gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..io.atomic import not_regular
from .figure import FORMATS, figure, save_figure

if TYPE_CHECKING:
    from .ranking import ZooRanking

#: The figures of one ranking, each written as ``<prefix><stem>.<format>``.
STEMS = ("forest", "rank_probabilities")


def plot_files(prefix: str = "") -> list[str]:
    """The names of the files :func:`plot_ranking` writes for ``prefix``."""
    return [f"{prefix}{stem}.{fmt}" for stem in STEMS for fmt in FORMATS]


def _ranked(ranking: ZooRanking) -> list[Any]:
    models = [m for m in ranking.models
              if m.resampling is not None and m.resampling.get("score") is not None]
    if not models:
        raise InputError("--plot: no model has S intervals (no ranked member, or no "
                         "--resamples); rank with --resamples N")
    return models


def plot_forest(ranking: ZooRanking, stem: str | Path) -> list[Path]:
    """S per ranked model (plain value and resampling interval), P(rank 1) beside each row."""
    models = _ranked(ranking)
    rs = ranking.resampling or {}
    fig = figure(6.4, 0.9 + 0.38 * len(models))
    ax = fig.add_subplot()
    y = np.arange(len(models))[::-1]
    for yi, m in zip(y, models):
        b = m.resampling
        below = b["distinguishable_from_top"]
        color = "0.55" if below else "tab:blue"
        ax.plot([b["score"]["lo"], b["score"]["hi"]], [yi, yi], color=color, lw=2)
        ax.plot([m.score], [yi], "o", color=color, ms=5)
        ax.text(1.04, yi, f"{b['p_rank1']:.2f}", va="center", fontsize=8,
                transform=ax.get_yaxis_transform())
    ax.text(1.04, len(models) - 0.4, "P(best)", fontsize=8, fontweight="bold",
            transform=ax.get_yaxis_transform())
    ax.set_yticks(y, [f"{m.rank}. {m.name}" for m in models], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.7, len(models) - 0.3)
    pct = f"{100 * rs.get('level', 0.95):g}%"
    ax.set_xlabel(f"S (dot: all images; line: {pct} interval over {rs.get('n_resamples')} "
                  "resamples; grey: below the top)", fontsize=8)
    ax.set_title(f"{ranking.target} ({ranking.split}, n={ranking.n_samples})", fontsize=9)
    return save_figure(fig, stem)


def plot_rank_probabilities(ranking: ZooRanking, stem: str | Path) -> list[Path]:
    """Heat map of P(rank = k) over the resamples (models x ranks), each cell annotated."""
    models = _ranked(ranking)
    p = np.array([m.resampling["rank_probabilities"] for m in models], dtype=np.float64)
    fig = figure(1.6 + 0.55 * p.shape[1], 0.9 + 0.38 * len(models))
    ax = fig.add_subplot()
    img = ax.imshow(p, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(p.shape[1]), [str(k) for k in range(1, p.shape[1] + 1)], fontsize=8)
    ax.set_yticks(range(len(models)), [m.name for m in models], fontsize=8)
    ax.set_xlabel("rank over the resamples", fontsize=8)
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            ax.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if p[i, j] > 0.6 else "black")
    fig.colorbar(img, ax=ax, label="P(rank)")
    ax.set_title(f"{ranking.target}: rank probabilities", fontsize=9)
    return save_figure(fig, stem)


def plot_ranking(ranking: ZooRanking, directory: str | Path, prefix: str = "") -> list[Path]:
    """``forest`` and ``rank_probabilities`` (PNG and PDF) of a resampled ranking in
    ``directory`` (created), file names after ``prefix``."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"--plot {out}: exists and is not a directory; give a directory")
    # All four files are checked before the first is written, so a refusal leaves none new.
    for name in plot_files(prefix):
        kind = not_regular(out / name)
        if kind is not None:
            raise InputError(f"--plot {out}: {out / name} is {kind}, not a regular file; "
                             "remove it or give --plot another directory")
    out.mkdir(parents=True, exist_ok=True)
    forest, probabilities = STEMS
    return (plot_forest(ranking, out / f"{prefix}{forest}")
            + plot_rank_probabilities(ranking, out / f"{prefix}{probabilities}"))
