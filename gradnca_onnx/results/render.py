"""The rank outputs as text: the aligned table, CSV and JSON of one or several targets.

Every function takes :class:`~gradnca_onnx.results.ranking.ZooRanking` objects (or anything
with their fields) and returns the text ``gradnca-onnx rank`` prints; the CLI only chooses
which and where.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .text import aligned, printable

if TYPE_CHECKING:
    from .ranking import ModelResult, ZooRanking

#: What the table shows for S and S_FU of a features-only member (no grads.onnx): not a
#: number, and not the "-" of a model that failed.
NOT_AVAILABLE = "n/a"


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_table(ranking: ZooRanking) -> str:
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
    lines = [f"Target {printable(ranking.target)} ({printable(ranking.split)}, "
             f"n={ranking.n_samples}, "
             f"{ranking.n_classes} classes), {ranking.scenario} scenario"]
    if ranking.order != "dataset":
        # S_FU's batches are consecutive images: say when they are not the file's own order.
        lines[0] += f", images in {printable(ranking.order)} order"
    lines += [f"  note (target): {printable(n)}" for n in ranking.target_notes]
    lines += aligned(rows)
    lines += [f"  note (zoo): {printable(n)}" for n in ranking.notes]
    for m in ranking.models:
        if m.error:
            lines.append(f"! {printable(m.name)}: not scored: {printable(m.error)}")
        if m.layers is not None:
            lay = m.layers
            lines.append(f"  S_FU layers ({printable(m.name)}): {printable(lay['fu_layer1'])} / "
                         f"{printable(lay['fu_layer2'])} ({lay['family']}, "
                         f"{printable(lay['rule'] or 'rule not recorded')})")
        for note in dict.fromkeys(m.notes):
            lines.append(f"  note ({printable(m.name)}): {printable(note)}")
    return "\n".join(lines) + "\n" + _resampling_table(ranking) + _folds_table(ranking)


def _iv(block: dict[str, Any] | None, digits: int = 4) -> str:
    """``lo..hi`` of a percentile interval block, ``-`` when there is none."""
    if block is None:
        return "-"
    return f"{block['lo']:.{digits}f}..{block['hi']:.{digits}f}"


def _versus_top(b: dict[str, Any]) -> str:
    if b["distinguishable_from_top"] is None:
        return NOT_AVAILABLE
    if b.get("is_top"):
        return "top"
    return "below" if b["distinguishable_from_top"] else "indistinguishable"


def _resampling_table(ranking: ZooRanking) -> str:
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
        rows.append((str(m.rank) if m.rank else "-", printable(m.name), _iv(b["score"]),
                     _iv(b["lp"]),
                     _iv(b["fu"]) if b["fu"] is not None or m.features_only is None
                     else NOT_AVAILABLE,
                     _fmt(b["p_rank1"], 2), f"{ri[0]}-{ri[1]}" if ri else "-",
                     _fmt(b["p_at_least_top"], 2), _versus_top(b),
                     *(_iv(b["metrics"].get(k)) for k in ranking.metrics)))
    lines += aligned(rows)
    lines.append(f"  rule: {rs['rule']}")
    return "\n".join(lines) + "\n"


def _msd(block: dict[str, Any] | None, digits: int = 4) -> str:
    if block is None or block["mean"] is None:
        return "-"
    sd = "-" if block["sd"] is None else f"{block['sd']:.{digits}f}"
    return f"{block['mean']:.{digits}f}±{sd}"


def _folds_table(ranking: ZooRanking) -> str:
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
    lines += aligned(rows)
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


def _num(v: Any) -> str:
    """A CSV cell: empty for a missing value, ``true``/``false``, else ``repr`` (exact)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def render_csv(ranking: ZooRanking) -> str:
    """The ranking as CSV; empty cells are missing values, ``status`` says why.

    ``status`` is ``ranked``, ``features-only`` (S and S_FU empty: no grads.onnx) or ``failed``
    (see ``error``); ``fu_layer1``, ``fu_layer2`` and ``fu_family`` name the two S_FU layers and
    their family; ``notes`` holds the zoo's notes (S_FU compared across layer families, ties
    at S = 0, a two-member zoo) and then the member's own, joined by `` | ``, on every row, so
    that a reader of any one row sees them. With ``--resamples`` or ``--folds`` their columns
    follow (:func:`_extra_columns`).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra_header, extra_row = _extra_columns(ranking)
    w.writerow(["rank", "model", "score", "lp", "fu", *ranking.metrics, "architecture",
                "pretrained_on", "error", "status", "fu_layer1", "fu_layer2", "fu_family",
                "notes", *extra_header])
    for m in ranking.models:
        lay = m.layers or {}
        w.writerow([m.rank or "", m.name, _num(m.score), _num(m.lp), _num(m.fu),
                    *(_num(m.metrics.get(k)) for k in ranking.metrics),
                    m.architecture, m.pretrained_on, m.error or "", m.status,
                    lay.get("fu_layer1", ""), lay.get("fu_layer2", ""), lay.get("family", ""),
                    " | ".join(dict.fromkeys([*ranking.notes, *m.notes])), *extra_row(m)])
    return buf.getvalue()


Row = Callable[["ModelResult"], list[str]]


def _extra_columns(ranking: ZooRanking) -> tuple[list[str], Row]:
    """CSV columns of the resampling / fold blocks: (header, row function)."""
    if ranking.resampling is not None:
        return _resampling_columns(ranking)
    if ranking.folds is not None:
        return _fold_columns(ranking)
    return [], lambda m: []


def _resampling_columns(ranking: ZooRanking) -> tuple[list[str], Row]:
    terms = ["score", "lp", "fu", *ranking.metrics]
    header = [f"{t}_{b}" for t in terms for b in ("lo", "hi")] + [
        "p_rank1", "rank_lo", "rank_hi", "p_at_least_top", "distinguishable_from_top"]

    def row(m: ModelResult) -> list[str]:
        b = m.resampling
        if b is None:
            return [""] * len(header)
        iv = lambda t: (b["metrics"].get(t) if t in ranking.metrics else b.get(t))  # noqa
        cells = [_num(None if iv(t) is None else iv(t)[k]) for t in terms for k in ("lo", "hi")]
        ri = b["rank_interval"] or [None, None]
        return cells + [_num(b["p_rank1"]), _num(ri[0]), _num(ri[1]),
                        _num(b["p_at_least_top"]), _num(b["distinguishable_from_top"])]
    return header, row


def _fold_columns(ranking: ZooRanking) -> tuple[list[str], Row]:
    terms = ["score", "lp", "fu", *ranking.metrics, "rank"]
    stats = ("mean", "sd", "min", "max")
    header = [f"{t}_fold_{k}" for t in terms for k in stats] + ["ranks_by_fold"]

    def row(m: ModelResult) -> list[str]:
        b = m.folds
        if b is None:
            return [""] * len(header)
        get = lambda t: b["metrics"][t] if t in ranking.metrics else b[t]  # noqa: E731
        cells = [_num(get(t)[k]) for t in terms for k in stats]
        return cells + [";".join("" if r is None else str(r) for r in b["rank"]["values"])]
    return header, row


def render_csv_targets(rankings: Sequence[ZooRanking]) -> str:
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


def render_json_targets(rankings: Sequence[ZooRanking]) -> str:
    """One JSON document over several targets (each entry is a single-target result)."""
    from .. import __version__

    extended = any(r.schema.endswith("/2") for r in rankings)
    schema = f"gradnca-onnx/rank-targets/{2 if extended else 1}"
    return json.dumps({"schema": schema, "package_version": __version__,
                       "rankings": [r.to_dict() for r in rankings]}, indent=2) + "\n"
