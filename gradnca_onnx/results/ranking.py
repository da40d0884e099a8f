"""The ranking of a zoo on a target, as the engine produces it and every output renders it.

:class:`ZooRanking` holds one target's result (a :class:`ModelResult` per member, best first);
:class:`Rankings` holds the results of one run over several targets. Each renders itself as
every output ``gradnca-onnx rank`` writes: the aligned table, CSV, JSON and the plots of
``--resamples``, so the Python API produces the same bytes as the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .. import __version__
from ..errors import InputError


@dataclass
class ModelResult:
    """What the engine found for one model of the zoo.

    ``features_only`` is ``None`` for a member with both graphs, else why it has no S_FU (from
    its manifest); such a member has ``fu``, ``score`` and ``rank`` ``None``.
    """

    name: str
    path: Path
    lp: float | None = None
    fu: float | None = None
    score: float | None = None
    rank: int | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    cached: bool = False
    seconds: float = 0.0
    architecture: str = ""
    pretrained_on: str = ""
    features_only: str | None = None
    #: ``rank --resamples`` / ``rank --folds`` blocks (schema ``rank/2``), else ``None``.
    resampling: dict[str, Any] | None = None
    folds: dict[str, Any] | None = None
    #: The two S_FU layers, the rule that chose them and their family (``conv+conv``,
    #: ``conv+linear``...: :func:`layer_family`), from the manifest; ``None`` without S_FU.
    layers: dict[str, Any] | None = None

    @property
    def family(self) -> str | None:
        """The kinds of the two S_FU layers (``conv+conv`` for the paper's CNNs)."""
        return None if self.layers is None else self.layers.get("family")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``ranked`` (has S), ``features-only`` (S_LP and baselines only) or ``failed``."""
        if self.error is not None:
            return "failed"
        return "features-only" if self.features_only is not None else "ranked"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.name, "rank": self.rank, "score": self.score, "lp": self.lp,
            "fu": self.fu, "metrics": dict(self.metrics), "architecture": self.architecture,
            "pretrained_on": self.pretrained_on, "cached": self.cached,
            "seconds": round(self.seconds, 3), "notes": list(self.notes), "error": self.error,
            "features_only": self.features_only,
        }
        if self.layers is not None:
            out["layers"] = dict(self.layers)
        for key in ("resampling", "folds"):  # schema rank/2 only
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


#: The kind of an S_FU layer by the rank of its weight.
_KINDS = {2: "linear", 3: "conv1d", 4: "conv", 5: "conv3d"}


def layer_family(shape1: Any, shape2: Any) -> str:
    """``KIND1+KIND2`` of two S_FU weights by their rank: ``conv`` (a 2-D convolution's 4-D
    kernel), ``linear`` (a 2-D matrix: a linear layer, an attention projection), ``conv1d``,
    ``conv3d``. S_FU ratios compare like with like only within one family."""
    return "+".join(_KINDS.get(len(s), f"{len(s)}d") if s else "?" for s in (shape1, shape2))


@dataclass
class ZooRanking:
    """The ranked zoo for one target (best first; models that failed last, unranked)."""

    target: str
    split: str
    n_samples: int
    n_classes: int
    scenario: str
    models: list[ModelResult]
    metrics: list[str] = field(default_factory=list)
    #: zoo-level ``rank --resamples`` / ``rank --folds`` settings and results (schema rank/2).
    resampling: dict[str, Any] | None = None
    folds: dict[str, Any] | None = None
    #: K of the smoothed S_LP (``rank --lp-jitters K``); 0: the paper's S_LP.
    lp_jitters: int = 0
    #: The target's image order (``TargetData.order``: S_FU batches are consecutive images)
    #: and its notes on how it was read (16-bit values mapped, resized while loading).
    order: str = "dataset"
    target_notes: list[str] = field(default_factory=list)
    #: One line on what was read (:meth:`~gradnca_onnx.data.TargetData.describe`): images,
    #: values (8-bit, or modality, range and unit), images per class. ``rank`` prints it to
    #: standard error; it is not part of the table, CSV or JSON (their bytes stay as before).
    target_summary: str = field(default="", compare=False)
    #: Notes on the ranking as a whole (S_FU compared across layer families, a zoo of two).
    notes: list[str] = field(default_factory=list)
    #: ``rank --within-family``: each family of S_FU layers combined and ranked on its own.
    within_family: bool = False

    @property
    def schema(self) -> str:
        """``gradnca-onnx/rank/2`` when it carries resampling or fold blocks or the smoothed
        S_LP's ``lp`` block, else ``/1``."""
        extended = self.resampling is not None or self.folds is not None or bool(self.lp_jitters)
        return "gradnca-onnx/rank/2" if extended else "gradnca-onnx/rank/1"

    def to_dict(self) -> dict[str, Any]:
        """The rank JSON document (schema :attr:`schema`) as a dict."""
        # Imported here: the metrics registry and the S_LP module load scikit-learn and the
        # compiled core, which reading or rendering a ranking does not need.
        from ..metrics import METRICS
        from ..scores.label_prediction import JITTER_SCALE

        out: dict[str, Any] = {
            "schema": self.schema, "package_version": __version__,
            "target": {"name": self.target, "split": self.split, "n_samples": self.n_samples,
                       "n_classes": self.n_classes, "order": self.order,
                       "notes": list(self.target_notes)},
            "scenario": self.scenario,
            "metrics": {name: {"title": METRICS[name].title,
                               "higher_is_better": METRICS[name].higher_is_better}
                        for name in self.metrics},
            "models": [m.to_dict() for m in self.models],
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if self.within_family:
            out["within_family"] = True
        if self.lp_jitters:
            out["lp"] = {"definition": "jitter-mean", "jitters": self.lp_jitters,
                         "jitter_scale": JITTER_SCALE}
        for key in ("resampling", "folds"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @property
    def failed(self) -> list[ModelResult]:
        """The members that could not be scored (each with its ``error``), in zoo order."""
        return [m for m in self.models if not m.ok]

    @property
    def ok(self) -> bool:
        """Whether every member was scored (features-only members count as scored)."""
        return not self.failed

    def to_json(self) -> str:
        """``rank --format json``: :meth:`to_dict` as indented JSON, one trailing newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        """``rank --format csv`` (:func:`~gradnca_onnx.results.render.render_csv`)."""
        from .render import render_csv

        return render_csv(self)

    def to_table(self) -> str:
        """``rank --format table`` (:func:`~gradnca_onnx.results.render.render_table`)."""
        from .render import render_table

        return render_table(self)

    def table(self) -> str:
        """The aligned table ``gradnca-onnx rank`` prints (:meth:`to_table`)."""
        return self.to_table()

    def __str__(self) -> str:
        return self.to_table()

    def to_frame(self) -> Any:
        """The CSV of :meth:`to_csv` as a ``pandas.DataFrame`` (one row per model, same
        columns and values; empty cells are NaN). Needs pandas."""
        return _frame(self.to_csv())

    def plot(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """``rank --resamples N --plot DIR``: the forest plot and the rank-probability heat
        map, PNG and PDF (:func:`~gradnca_onnx.results.plots.plot_ranking`)."""
        from .plots import plot_ranking

        return plot_ranking(self, directory, prefix=prefix)


@dataclass
class Rankings:
    """The rankings of one zoo on several targets, in the order given.

    ``several_targets`` is true when the targets were several, or came from a directory of
    targets: the CSV then gets a ``target`` column and the JSON holds every ranking in one
    ``gradnca-onnx/rank-targets`` document, and plot files are named after each target.
    Otherwise the single ranking renders as :class:`ZooRanking` does.
    """

    rankings: list[ZooRanking]
    several_targets: bool = True

    def __post_init__(self) -> None:
        if not self.rankings or (not self.several_targets and len(self.rankings) != 1):
            # Rendered as one target, the other rankings would be dropped without a word.
            raise InputError(f"Rankings: {len(self.rankings)} rankings with several_targets="
                             f"{self.several_targets}; one target renders exactly one ranking")

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.rankings)

    def __len__(self) -> int:
        return len(self.rankings)

    def __getitem__(self, i: int) -> ZooRanking:
        return self.rankings[i]

    def to_json(self) -> str:
        """``rank --format json``."""
        from .render import render_json_targets

        if self.several_targets:
            return render_json_targets(self.rankings)
        return self.rankings[0].to_json()

    def to_csv(self) -> str:
        """``rank --format csv``."""
        from .render import render_csv_targets

        if self.several_targets:
            return render_csv_targets(self.rankings)
        return self.rankings[0].to_csv()

    def to_table(self) -> str:
        """``rank --format table``: each target's table, one after the other."""
        return "\n".join(r.to_table() for r in self.rankings)

    def table(self) -> str:
        """The tables ``gradnca-onnx rank`` prints (:meth:`to_table`)."""
        return self.to_table()

    def __str__(self) -> str:
        return self.to_table()

    def to_dict(self) -> dict[str, Any]:
        """The document :meth:`to_json` writes, as a dict."""
        return cast("dict[str, Any]", json.loads(self.to_json()))  # to_json writes an object

    def to_frame(self) -> Any:
        """The CSV of :meth:`to_csv` as a ``pandas.DataFrame`` (with a ``target`` column when
        the targets are several). Needs pandas."""
        return _frame(self.to_csv())

    @property
    def failed(self) -> list[ModelResult]:
        """The members that could not be scored, over every target."""
        return [m for r in self.rankings for m in r.failed]

    @property
    def ok(self) -> bool:
        """Whether every member was scored on every target."""
        return not self.failed

    def plot(self, directory: str | Path) -> list[Path]:
        """``rank --resamples N --plot DIR`` for every target (file names after the target
        when there are several)."""
        paths: list[Path] = []
        for ranking in self.rankings:
            paths += ranking.plot(directory,
                                  prefix=f"{ranking.target}_" if self.several_targets else "")
        return paths


#: The ranking of one zoo on one target: the name the top-level API uses.
Ranking = ZooRanking


def _frame(csv_text: str) -> Any:
    """A DataFrame of the package's CSV (so the frame holds exactly what the CSV holds)."""
    import io

    from ..errors import optional_import

    pandas = optional_import("pandas", "frame", "to_frame()")
    return pandas.read_csv(io.StringIO(csv_text))
