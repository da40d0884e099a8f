"""The study's report: tables from the run store and the rankings, ``gradnca-onnx evaluate`` per
scenario, a paired bootstrap of the mean tau, the paper's Tables 2/3 beside ours, timings.

Everything here reads what the earlier stages wrote; nothing is tuned. The primary analysis of
each scenario is the paper's protocol for that scenario, fixed before any result was seen:

* dataset scenario: the seven methods of Table 2, GradNCA = min-max product (REFERENCE 5);
* model scenario: the seven methods of Table 3, GradNCA with both terms inverted (Eq. 8) and
  PARC, NCTI, LEEP, NLEEP as 1 - score, as the paper reports them.

Secondary analyses (all ten baselines plus the two GradNCA terms; the model scenario without
the paper's inversions) are reported as such.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gradnca_onnx.evaluation.benchmark import (
    GRADNCA,
    INVERTED_IN_MODEL_SCENARIO,
    PAPER_METHODS,
    combine_table,
    paper_benchmark,
)
from gradnca_onnx.evaluation.correlation import correlation
from gradnca_onnx.evaluation.report import evaluate
from gradnca_onnx.evaluation.table import SourceTargetTable
from gradnca_onnx.training import ground_truth

#: rank JSON key -> method name in the report (paper spelling for the paper's methods).
METHOD_NAMES: dict[str, str] = {
    "logme": "LogME", "leep": "LEEP", "nleep": "NLEEP", "parc": "PARC", "sfda": "SFDA",
    "ncti": "NCTI", "gbc": "GBC", "hscore": "H-score", "nce": "NCE", "transrate": "TransRate",
    "lp": "S_LP", "fu": "S_FU", "params": "params", "source_images": "source_images",
}
#: Secondary methods beside the primary seven: four more baselines, the two GradNCA terms and
#: the static baselines ``params`` (parameter count of features.onnx) and ``source_images``
#: (the number of pre-training images the manifest records; 0 for the random-init control).
#: Rank JSON written before one existed has none, and it is then left out.
SECONDARY: tuple[str, ...] = ("GBC", "H-score", "NCE", "TransRate", "S_LP", "S_FU", "params",
                              "source_images")
#: Why a static baseline cannot rank (every candidate has the same value).
STATIC_REASONS = {
    "params": "the same value for every candidate source (one architecture, so one "
              "parameter count): a static baseline that ranks nothing here",
    "source_images": "the same value for every candidate source (all pre-trained on one "
                     "dataset): a static baseline that ranks nothing here",
}
CONFIDENCE = 0.95


# ----------------------------------------------------------------------------------------------
# tables


def _rank_tables(study: Any, scenario: str, faithful: bool = False, *,
                 folder: str | None = None) -> dict[str, SourceTargetTable]:
    """Method -> sources x targets table from the per-target rank JSON files (own row NaN) of
    the pass in ``folder`` (default: the scenario's plain or ``--faithful`` pass)."""
    sources = list(study.members(scenario))
    targets = list(study.cfg.targets)
    vals: dict[str, np.ndarray] = {}
    folder = folder or scenario + ("-faithful" if faithful else "")
    for j, t in enumerate(targets):
        doc = json.loads((study.work / "rank" / folder / f"{t}.json").read_text())
        for m in doc["models"]:
            if m.get("error"):
                raise SystemExit(f"rank {scenario}/{t}: model {m['model']} failed: {m['error']}")
            i = sources.index(m["model"])
            cells = {"score": m["score"], "lp": m["lp"], "fu": m["fu"], **m["metrics"]}
            for k, v in cells.items():
                arr = vals.setdefault(k, np.full((len(sources), len(targets)), np.nan))
                arr[i, j] = np.nan if v is None else float(v)
    out = {METHOD_NAMES.get(k, GRADNCA if k == "score" else k):
           SourceTargetTable(sources, targets, v, name=k) for k, v in vals.items()}
    return out


def _truth(study: Any, scenario: str) -> SourceTargetTable:
    full = ground_truth(study.store)
    cfg = study.cfg
    rows = list(study.members(scenario))
    # The model scenario's `arch` row is the dataset scenario's model_source model.
    stored = [cfg.model_source if (scenario == "model" and r == cfg.arch) else r for r in rows]
    sub = full.select(stored, list(cfg.targets))
    values = sub.values.copy()
    for j, t in enumerate(cfg.targets):  # the target's own source is not a candidate
        values[[i for i, r in enumerate(rows) if r == t], j] = np.nan
    return SourceTargetTable(rows, list(cfg.targets), values, name=f"truth ({scenario})")


def _primary(tables: Mapping[str, SourceTargetTable], scenario: str) -> dict[str, SourceTargetTable]:
    out = {}
    for m in PAPER_METHODS:
        t = tables[m]
        if scenario == "model" and m in INVERTED_IN_MODEL_SCENARIO:
            t = t.map_values(lambda v: 1.0 - v, name=f"1 - {m}")
        out[m] = t
    return out


def _extended(tables: Mapping[str, SourceTargetTable], scenario: str) -> dict[str, SourceTargetTable]:
    out = _primary(tables, scenario)
    for m in SECONDARY:
        if m in tables:
            out[m] = tables[m]
    return out


def _unflipped(tables: Mapping[str, SourceTargetTable]) -> dict[str, SourceTargetTable]:
    out = {m: tables[m] for m in PAPER_METHODS if m != GRADNCA}
    out[GRADNCA] = combine_table(tables["S_LP"], tables["S_FU"], "dataset")
    return out


# ----------------------------------------------------------------------------------------------
# evaluation


def rankable(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable]
             ) -> tuple[dict[str, SourceTargetTable], dict[str, str]]:
    """Split off methods that cannot be ranked: tau is undefined on every target (scores
    constant or missing over the candidate sources). ``evaluate`` refuses those; the report
    lists them with the reason instead of failing the study."""
    keep, dropped = {}, {}
    for m, table in scores.items():
        ok = False
        for j, t in enumerate(truth.targets):
            cand = ~np.isnan(truth.values[:, j])
            x = table.select(truth.sources, [t]).values[cand, 0]
            ok |= bool(np.isfinite(x).all() and np.unique(x).size > 1)
        if ok:
            keep[m] = table
        elif m in STATIC_REASONS:
            dropped[m] = STATIC_REASONS[m]
        else:
            dropped[m] = "scores missing or constant over the sources on every target"
    return keep, dropped


def _evaluate_cli(truth_csv: Path, score_csvs: Mapping[str, Path], scenario: str, out_stem: Path,
                  *, n_bootstrap: int, plots: Path | None) -> dict[str, Any]:
    """``gradnca-onnx evaluate`` (table and JSON), the user-facing command, as a subprocess."""
    base = [sys.executable, "-m", "gradnca_onnx", "evaluate", "--truth", str(truth_csv),
            "--scenario", scenario]
    for m, p in score_csvs.items():
        base += ["--scores", f"{m}={p}"]
    # The text table shows no intervals, so only the JSON run pays for the bootstrap.
    extra = ["--bootstrap", str(n_bootstrap), "--seed", "0"] + (["--plot", str(plots)] if plots else [])
    runs = [("table", out_stem.with_suffix(".txt"), []), ("json", out_stem.with_suffix(".json"), extra)]
    for fmt, path, more in runs:
        cmd = base + ["--format", fmt] + more
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"evaluate failed ({out_stem.name}): {proc.stderr.strip()}")
        path.write_text(proc.stdout)
    return json.loads(out_stem.with_suffix(".json").read_text())


def paired_bootstrap(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable], *,
                     n: int, seed: int = 0) -> dict[str, Any]:
    """Mean tau over targets with percentile intervals, resampling the sources of every target
    with replacement; one resample serves all methods (paired), so differences are comparable.
    Replicates where a method's tau is undefined on some target are dropped for that method."""
    rng = np.random.default_rng(seed)
    methods = list(scores)
    reps = np.full((n, len(methods)), np.nan)
    per_target = []
    for j, t in enumerate(truth.targets):
        keep = ~np.isnan(truth.values[:, j])
        y = truth.values[keep, j]
        xs = [scores[m].select(truth.sources, [t]).values[keep, 0] for m in methods]
        per_target.append((y, xs, rng.integers(0, y.size, size=(n, y.size))))
    for b in range(n):
        acc = np.zeros(len(methods))
        for y, xs, idx in per_target:
            i = idx[b]
            acc += [correlation(x[i], y[i], "weighted_tau") for x in xs]
        reps[b] = acc / len(per_target)
    lo, hi = 50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)
    out: dict[str, Any] = {"n_resamples": n, "confidence": CONFIDENCE, "mean_tau": {}, "ci": {},
                           "p_better": {}}
    for k, m in enumerate(methods):
        col = reps[:, k]
        col = col[np.isfinite(col)]
        out["ci"][m] = [float(np.percentile(col, lo)), float(np.percentile(col, hi))] if col.size else None
    for k, m in enumerate(methods):
        out["p_better"][m] = {}
        for k2, m2 in enumerate(methods):
            ok = np.isfinite(reps[:, k]) & np.isfinite(reps[:, k2])
            out["p_better"][m][m2] = float(np.mean(reps[ok, k] > reps[ok, k2])) if ok.any() else None
    return out


def _mean_tau(ev: Mapping[str, Any]) -> dict[str, float | None]:
    out = {}
    for m in ev["methods"]:
        vals = [v for v in ev["tau"][m].values() if v is not None]
        out[m] = float(np.mean(vals)) if vals else None
    return out


def _paper(scenario: str) -> dict[str, Any]:
    truth, scores = paper_benchmark(scenario)  # type: ignore[arg-type]
    ev = evaluate(truth, scores, scenario=scenario).to_dict()
    return {"avg_rank": ev["avg_rank"], "mean_tau": _mean_tau(ev), "n_targets": len(ev["targets"]),
            "friedman_p": (ev["friedman"] or {}).get("p_value")}


# ----------------------------------------------------------------------------------------------
# how sure the ranking is (issue 17 item 7) and the smoothed S_LP (item 3)


def sureness(study: Any, scenario: str, truth: SourceTargetTable) -> list[dict[str, Any]]:
    """Per target, ``rank --resamples`` against the ground truth.

    Whether the ground truth's best source is in the set the tool calls indistinguishable
    from the top (the plain top plus every model not distinguishable from it), and the
    P(rank 1) the tool gave its own top pick and the truth's best source.
    """
    rows = []
    for j, t in enumerate(truth.targets):
        doc = json.loads((study.work / "rank" / f"{scenario}-resamples" / f"{t}.json").read_text())
        models = {m["model"]: m for m in doc["models"] if m.get("resampling")}
        col = truth.values[:, j]
        cand = [truth.sources[i] for i in np.flatnonzero(~np.isnan(col))]
        best_auc = np.nanmax(col)
        best = [truth.sources[i] for i in np.flatnonzero(col == best_auc)]
        top = next(m["model"] for m in doc["models"] if m["rank"] == 1)
        top_set = [n for n in cand if models[n]["resampling"]["distinguishable_from_top"] is False]
        p1 = {n: models[n]["resampling"]["p_rank1"] for n in cand}
        truth_best = best[0]
        rows.append({
            "target": t, "n_candidates": len(cand), "truth_best": truth_best,
            "truth_best_tied": best[1:], "plain_top": top, "top_right": top in best,
            "top_set": top_set, "best_in_top_set": any(b in top_set for b in best),
            "p_rank1_plain_top": p1[top], "p_rank1_truth_best": p1[truth_best],
            # Brier score of P(rank 1) as a forecast of the truth's best source.
            "brier": float(sum((p1[n] - (n in best)) ** 2 for n in cand)),
            "brier_uniform": float(sum((1 / len(cand) - (n in best)) ** 2 for n in cand)),
            "n_resamples": doc["resampling"]["n_resamples"],
        })
    return rows


def _sureness_lines(rows_by_scenario: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    cases = [r for rows in rows_by_scenario.values() for r in rows]
    n = len(cases)
    n_res = cases[0]["n_resamples"]
    lines = ["## How sure is the ranking? (`rank --resamples`)", "",
             f"`gradnca-onnx rank --resamples {n_res} --seed 0` per scenario and target: each "
             "resample keeps half of every class without replacement (README, How sure is the "
             "ranking), S_FU re-batched through `grads.onnx`. The *top set* is the plain "
             "rank-1 model plus every model not distinguishable from it (P(S >= top's S) >= "
             "0.05 over the resamples). The rule was fixed before these figures were seen.", ""]
    rows = []
    for scen, rs in rows_by_scenario.items():
        for r in rs:
            rows.append([scen, r["target"], r["truth_best"] + (" (tied)" if r["truth_best_tied"] else ""),
                         r["plain_top"], "yes" if r["top_right"] else "no",
                         f"{len(r['top_set'])} of {r['n_candidates']}: " + ", ".join(r["top_set"]),
                         "yes" if r["best_in_top_set"] else "no",
                         _f(r["p_rank1_plain_top"], 2), _f(r["p_rank1_truth_best"], 2),
                         _f(r["brier"], 2), _f(r["brier_uniform"], 2)])
    lines += _md_table(["scenario", "target", "truth's best", "plain top", "top right",
                        "top set", "truth's best in it", "P(rank 1) of the top",
                        "P(rank 1) of the truth's best", "Brier", "Brier, uniform"], rows)
    hits = sum(r["top_right"] for r in cases)
    covered = sum(r["best_in_top_set"] for r in cases)
    size = np.mean([len(r["top_set"]) for r in cases])
    cands = np.mean([r["n_candidates"] for r in cases])
    conf = np.mean([r["p_rank1_plain_top"] for r in cases])
    p_truth = np.mean([r["p_rank1_truth_best"] for r in cases])
    brier = np.mean([r["brier"] for r in cases])
    uniform = np.mean([r["brier_uniform"] for r in cases])
    lines += ["", "What this says (computed from the table; 8 cases are too few for more than "
              "a description):", "",
              f"- The plain top was the truth's best in {hits} of {n} cases; its mean P(rank 1) "
              f"was {conf:.2f}, so the tool's confidence in its pick was "
              f"{'above' if conf > hits / n else 'at or below'} its hit rate ({hits / n:.2f}).",
              f"- The truth's best source was in the top set in {covered} of {n} cases; the top "
              f"set held {size:.1f} of {cands:.1f} candidates on average.",
              f"- Mean P(rank 1) of the truth's best source: {p_truth:.2f} (a uniform guess: "
              f"{1 / cands:.2f}). Mean Brier score of P(rank 1) {brier:.2f} against "
              f"{uniform:.2f} for a uniform forecast (lower is better).", ""]
    return lines


def smoothed_lp(study: Any, scenario: str, truth: SourceTargetTable) -> dict[str, Any]:
    """Per target, tau of S and S_LP with the paper's S_LP and with ``--lp-jitters K``."""
    plain = _rank_tables(study, scenario)
    smooth = _rank_tables(study, scenario, folder=f"{scenario}-lp-jitters")
    out: dict[str, Any] = {"jitters": study.cfg.lp_jitters, "tau": {}, "max_abs_lp_shift": float(
        np.nanmax(np.abs(smooth["S_LP"].values - plain["S_LP"].values)))}
    for label, tables in (("paper", plain), ("smoothed", smooth)):
        for m in (GRADNCA, "S_LP"):
            taus = {}
            for j, t in enumerate(truth.targets):
                keep = ~np.isnan(truth.values[:, j])
                x = tables[m].select(truth.sources, [t]).values[keep, 0]
                taus[t] = float(correlation(x, truth.values[keep, j], "weighted_tau"))
            out["tau"][f"{m} ({label})"] = taus
    return out


def _smoothed_lines(by_scenario: Mapping[str, Mapping[str, Any]]) -> list[str]:
    k = next(iter(by_scenario.values()))["jitters"]
    lines = ["## The smoothed S_LP (`rank --lp-jitters`)", "",
             f"S_LP as the mean over {k} copies of the features jittered by 1e-6 (an extension "
             "that smooths NCA's numerical noise; README, S_LP's numerical noise) against the "
             "paper's S_LP: weighted Kendall tau per target (GradNCA as in each scenario's "
             "rank output; the model scenario's S is Eq. 8).", ""]
    rows, changed = [], 0
    for scen, res in by_scenario.items():
        targets = list(next(iter(res["tau"].values())))
        for m in (GRADNCA, "S_LP"):
            a, b = res["tau"][f"{m} (paper)"], res["tau"][f"{m} (smoothed)"]
            diff = [t for t in targets if not np.isclose(a[t], b[t], rtol=0, atol=1e-12)]
            changed += len(diff)
            rows.append([scen, m, *(f"{a[t]:.2f} -> {b[t]:.2f}" for t in targets),
                         f"{np.mean(list(a.values())):.3f} -> {np.mean(list(b.values())):.3f}"])
    lines += _md_table(["scenario", "method",
                        *(f"target {i + 1}" for i in range(len(targets))), "mean tau"], rows)
    names = {s: ", ".join(next(iter(r["tau"].values()))) for s, r in by_scenario.items()}
    shift = max(r["max_abs_lp_shift"] for r in by_scenario.values())
    lines += ["", f"Targets in order: {next(iter(names.values()))}. The largest S_LP change is "
              f"{shift:.4f}; {changed} of the {sum(2 * len(next(iter(r['tau'].values()))) for r in by_scenario.values())} "
              "taus above change.", ""]
    return lines


# ----------------------------------------------------------------------------------------------
# markdown


def _f(v: Any, d: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{d}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _verdict(ev: Mapping[str, Any], boot: Mapping[str, Any], scenario: str) -> list[str]:
    """Plain statements derived from the numbers (no hand-written claims)."""
    avg = ev["avg_rank"]
    order = sorted(avg, key=lambda m: avg[m])
    best, second = order[0], order[1]
    mt = _mean_tau(ev)
    fr = ev["friedman"]
    p = None if fr is None else fr["p_value"]
    tied = [m for m in order if avg[m] == avg[best]]
    head = (f"**{best}**" if len(tied) == 1 else
            " and ".join(f"**{m}**" for m in tied) + f" tied, listed first: {best}")
    lines = [f"- Best average rank: {head} ({avg[best]:.2f}; next {second} {avg[second]:.2f}, "
             f"last {order[-1]} {avg[order[-1]]:.2f}). Mean tau_w of {best}: {_f(mt[best])} "
             f"(95% paired-bootstrap interval {_fmt_ci(boot['ci'].get(best))}); {second}: "
             f"{_f(mt[second])} ({_fmt_ci(boot['ci'].get(second))})."]
    pb = boot["p_better"][best][second]
    lines.append(f"- In {boot['n_resamples']} paired bootstrap resamples of the sources, {best}'s "
                 f"mean tau_w exceeds {second}'s in {_f(100 * pb if pb is not None else None, 1)}% "
                 f"of them.")
    if p is None:
        lines.append("- Friedman test: not defined here (needs 3 methods and 2 targets).")
    else:
        sig = "significant" if p < 0.05 else "not significant"
        gap = avg[order[-1]] - avg[best]
        cd = ev["cd"]
        lines.append(f"- Friedman test over {len(ev['targets'])} targets: p = {p:.3g} ({sig} at 0.05). "
                     f"Nemenyi CD = {_f(cd, 2)}: the spread between best and worst average rank "
                     f"({gap:.2f}) is {'larger' if cd is not None and gap > cd else 'smaller'} "
                     f"than the CD, so {'at least that pair differs' if cd is not None and gap > cd else 'no pair of methods is shown to differ'}.")
    return lines


def _place(avg: Mapping[str, float], method: str) -> int:
    return 1 + sum(1 for v in avg.values() if v < avg[method])


def _versus_paper(ev: Mapping[str, Any], paper: Mapping[str, Any], scenario: str) -> list[str]:
    table = "Table 2" if scenario == "dataset" else "Table 3"
    ours, theirs = ev["avg_rank"], {m: v for m, v in paper["avg_rank"].items() if m in ev["avg_rank"]}
    best_p = min(theirs, key=lambda m: theirs[m])
    best_o = min(ours, key=lambda m: ours[m])
    common = [m for m in ours if m in theirs]
    a = np.array([ours[m] for m in common])
    b = np.array([theirs[m] for m in common])
    rho = float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])
    return [f"- Against the paper's {table} ({paper['n_targets']} targets, its released results "
            f"recomputed): there {best_p} has the best average rank ({theirs[best_p]:.2f}) and "
            f"GradNCA places {_place(theirs, GRADNCA)} of {len(theirs)}; here {best_o} is best "
            f"and GradNCA places {_place(ours, GRADNCA)} of {len(ours)}. Spearman correlation of "
            f"the two average-rank orders over the {len(common)} methods: {rho:.2f}."]


def _fmt_ci(ci: Any) -> str:
    return "–" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _scenario_section(name: str, ev: Mapping[str, Any], boot: Mapping[str, Any],
                      paper: Mapping[str, Any], ext: Mapping[str, Any], truth: SourceTargetTable,
                      extra: Mapping[str, Any] | None, plots: str,
                      faithful: Mapping[str, Any]) -> list[str]:
    targets = ev["targets"]
    lines = [f"## {name.capitalize()} scenario", ""]
    rows = [[s, *(_f(truth.values[i, j]) for j in range(len(truth.targets)))]
            for i, s in enumerate(truth.sources)]
    lines += ["Ground truth (test AUC of the lowest-validation-loss run of the `quick` grid; "
              "– = the target's own source):", ""]
    lines += _md_table(["source", *truth.targets], rows) + [""]
    lines += ["Weighted Kendall tau (rank per target), primary analysis:", ""]
    rows = []
    for m in ev["methods"]:
        cells = []
        for t in targets:
            tau, r = ev["tau"][m][t], ev["rank"][m][t]
            ci = ev.get("tau_ci", {}).get("interval", {}).get(m, {}).get(t)
            cells.append(f"{_f(tau, 2)} ({r}) {_fmt_ci(ci)}")
        rows.append([m, *cells, _f(ev["avg_rank"][m], 2), _f(_mean_tau(ev)[m], 3),
                     _fmt_ci(boot["ci"].get(m)), _f(paper["avg_rank"].get(m), 2),
                     _f(paper["mean_tau"].get(m), 3)])
    lines += _md_table(["method", *(f"{t} tau (rank) [95% CI]" for t in targets), "avg rank",
                        "mean tau", "mean tau 95% CI", "paper avg rank", "paper mean tau"], rows)
    fr = ev["friedman"]
    lines += ["", f"Friedman: chi2 = {_f(fr and fr['statistic'], 2)}, p = {_f(fr and fr['p_value'], 4)}; "
              f"Nemenyi CD (alpha 0.05) = {_f(ev['cd'], 3)}. Paper ({paper['n_targets']} targets): "
              f"Friedman p = {_f(paper['friedman_p'], 4)}.", ""]
    lines += ["What this says:", ""] + _verdict(ev, boot, name) + _versus_paper(ev, paper, name) + [""]
    lines += [f"Figures: [CD diagram]({plots}/critical_difference.png), "
              f"[scatter grid]({plots}/scatter_grid.png), [tau heat map]({plots}/tau_heatmap.png).",
              ""]
    lines += ["Secondary: every metric of the package (the primary columns, plus GBC, H-score, "
              "NCE, TransRate, the two GradNCA terms S_LP and S_FU raw, and the static "
              "baselines params, the parameter count of each source's features.onnx, and "
              "source_images, the number of images it was pre-trained on as its manifest "
              "records it (0 for the random-init control); higher = better):", ""]
    rows = [[m, _f(ext["avg_rank"][m], 2), _f(_mean_tau(ext)[m], 3)] for m in ext["methods"]]
    lines += _md_table(["method", "avg rank", "mean tau"], rows) + [""]
    lines += ["Secondary: the seven methods computed as the released code computes them "
              "(`rank --faithful`, REFERENCE 6; e.g. SFDA returns 1.0 when its classifier "
              "separates the target perfectly, where the package default returns NaN):", ""]
    rows = [[m, _f(faithful["avg_rank"][m], 2), _f(_mean_tau(faithful)[m], 3)]
            for m in faithful["methods"]]
    lines += _md_table(["method", "avg rank", "mean tau"], rows) + [""]
    if extra is not None:
        lines += ["Secondary: the model scenario without the paper's inversions (GradNCA = "
                  "dataset-scenario min-max product; PARC, NCTI, LEEP, NLEEP raw):", ""]
        rows = [[m, _f(extra["avg_rank"][m], 2), _f(_mean_tau(extra)[m], 3)] for m in extra["methods"]]
        lines += _md_table(["method", "avg rank", "mean tau"], rows) + [""]
    return lines


def build(study: Any) -> None:
    res: Path = study.results
    res.mkdir(parents=True, exist_ok=True)
    cfg = study.cfg
    summary: dict[str, Any] = {"config": cfg.name, "scenarios": {}}
    sections: list[str] = []
    headline: list[str] = []
    for scenario in ("dataset", "model"):
        d = res / scenario
        if d.exists():
            shutil.rmtree(d)
        (d / "scores").mkdir(parents=True)
        tables = _rank_tables(study, scenario)
        # The CLI's score must equal the released combination rule applied to its own terms.
        mode = "dataset" if scenario == "dataset" else "model"
        recombined = combine_table(tables["S_LP"], tables["S_FU"], mode)  # type: ignore[arg-type]
        diff = float(np.nanmax(np.abs(recombined.values - tables[GRADNCA].values)))
        if not diff <= 1e-12:
            raise SystemExit(f"{scenario}: rank's GradNCA score differs from combine_table by {diff}")
        truth = _truth(study, scenario)
        truth_csv = d / "truth.csv"
        truth.to_csv(truth_csv)
        for rank_json in sorted((study.work / "rank" / scenario).glob("*.json")):
            shutil.copyfile(rank_json, d / f"rank-{rank_json.name}")
        for rank_json in sorted((study.work / "rank" / f"{scenario}-faithful").glob("*.json")):
            shutil.copyfile(rank_json, d / f"rank-faithful-{rank_json.name}")

        dropped: dict[str, str] = {}

        def write(group: Mapping[str, SourceTargetTable], sub: str) -> dict[str, Path]:
            (d / "scores" / sub).mkdir(parents=True, exist_ok=True)
            group, gone = rankable(truth, group)
            dropped.update({f"{m} ({sub})": why for m, why in gone.items()})
            paths = {}
            for m, t in group.items():
                paths[m] = d / "scores" / sub / f"{m}.csv"
                t.to_csv(paths[m])
            return paths

        prim = _primary(tables, scenario)
        ev = _evaluate_cli(truth_csv, write(prim, "primary"), scenario, d / "evaluation",
                           n_bootstrap=cfg.bootstrap, plots=d / "plots")
        ext = _evaluate_cli(truth_csv, write(_extended(tables, scenario), "all"), scenario,
                            d / "evaluation-all", n_bootstrap=0, plots=None)
        extra = None
        if scenario == "model":
            extra = _evaluate_cli(truth_csv, write(_unflipped(tables), "unflipped"), scenario,
                                  d / "evaluation-unflipped", n_bootstrap=0, plots=None)
        faithful = _evaluate_cli(truth_csv, write(_primary(_rank_tables(study, scenario, True),
                                                           scenario), "faithful"),
                                 scenario, d / "evaluation-faithful", n_bootstrap=0, plots=None)
        boot = paired_bootstrap(truth, rankable(truth, prim)[0], n=cfg.bootstrap)
        (d / "bootstrap.json").write_text(json.dumps(boot, indent=2) + "\n")
        paper = _paper(scenario)
        summary["scenarios"][scenario] = {"avg_rank": ev["avg_rank"], "mean_tau": _mean_tau(ev),
                                          "friedman": ev["friedman"], "cd": ev["cd"],
                                          "bootstrap_ci": boot["ci"], "paper": paper,
                                          "gradnca_recombination_max_abs_diff": diff}
        summary["scenarios"][scenario]["not_rankable"] = dropped
        headline += [f"**{scenario.capitalize()} scenario** ({len(ev['targets'])} targets, "
                     f"{int(np.min(np.sum(~np.isnan(truth.values), axis=0)))} candidate "
                     "sources each):", ""] + _verdict(ev, boot, scenario) + \
            _versus_paper(ev, paper, scenario) + [""]
        sections += _scenario_section(scenario, ev, boot, paper, ext, truth, extra,
                                      f"{scenario}/plots", faithful)
        if dropped:
            sections += ["Not rankable here (left out of the analysis named in brackets): "
                         + "; ".join(f"{m}: {why}" for m, why in dropped.items()) + ".", ""]
    sure = {scen: sureness(study, scen, _truth(study, scen)) for scen in ("dataset", "model")}
    smooth = {scen: smoothed_lp(study, scen, _truth(study, scen)) for scen in ("dataset", "model")}
    summary["sureness"], summary["smoothed_lp"] = sure, smooth
    sections += _sureness_lines(sure) + _smoothed_lines(smooth)
    for scen in ("dataset", "model"):
        for kind in ("resamples", "lp-jitters"):
            for rank_json in sorted((study.work / "rank" / f"{scen}-{kind}").glob("*.json")):
                shutil.copyfile(rank_json, res / scen / f"rank-{kind}-{rank_json.name}")
    (res / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    # The run store is the primary record (every run's epochs and predictions): ship it.
    with open(study.store, "rb") as f, gzip.GzipFile(res / "runs.sqlite.gz", "wb", mtime=0) as g:
        shutil.copyfileobj(f, g)
    _write_markdown(study, sections, headline)


def _pretrain_rows(study: Any) -> list[list[str]]:
    rows = []
    for arch, ds in study.pretrain_units():
        meta = json.loads(study.checkpoint(arch, ds).with_suffix(".json").read_text())
        acc = ("not reported (leaky split)" if ds == "bloodcells" else _f(meta["val_acc"]))
        rows.append([arch, ds, str(meta["n_train"]), f"{meta['best_epoch']}/{meta['epochs']}",
                     _f(meta["val_loss"]), f"{math.log(meta['n_classes']):.3f}", acc,
                     f"{meta['seconds']:.0f}"])
    return rows


def _write_markdown(study: Any, sections: list[str], headline: list[str]) -> None:
    cfg = study.cfg
    data = json.loads((study.work / "datasets.json").read_text())
    lines = [f"# Real-data transfer study at CPU scale ({cfg.name})", "",
             "Produced by `python benchmarks/medical_small/study.py"
             + ("" if cfg.name == "full" else f" --config {cfg.name}") + "`; every number below is "
             "read from the run store (`runs.sqlite.gz`: every run's hyper-parameters, "
             "epochs and test predictions) and the rank/evaluate outputs in this folder. "
             "Design and caveats: [../README.md](../README.md).", ""]
    lines += ["## Summary", "", "Generated from the numbers below (primary analyses: the paper's "
              "seven methods and its conventions for each scenario).", ""] + headline
    lines += ["## Data", ""]
    rows = [[n, str(v["n_classes"]), f"{v['train']}/{v['val']}/{v['test']}",
             "target + source" if n in cfg.targets else "source only"] for n, v in sorted(data.items())]
    lines += _md_table(["dataset (28 px)", "classes", "train/val/test", "role"], rows) + [""]
    lines += ["## Sources", "",
              f"Dataset scenario: {cfg.arch} pre-trained on each dataset, plus a random-init "
              f"{cfg.arch}. Model scenario: {', '.join(cfg.model_archs)}, each pre-trained on "
              f"{cfg.model_source}.", ""]
    lines += _md_table(["architecture", "pre-trained on", "train images", "best epoch",
                        "val loss", "chance loss ln C", "val accuracy", "seconds"],
                       _pretrain_rows(study))
    lines += ["", "A validation loss near ln C means the source learned little of its own task "
              "under the common recipe; such sources stay in the study (a transferability metric "
              "should rank them low when they transfer badly). The blood-cell validation split "
              "leaks (augmented copies of the same cells), so even its loss overstates learning.",
              ""]
    lines += sections
    lines += ["## Wall time", "", "See [timings.md](timings.md).", ""]
    (study.results / "README.md").write_text("\n".join(lines))


def write_timings(study: Any) -> None:
    t = json.loads((study.work / "timings.json").read_text())
    rows = [[k, f"{v['seconds'] / 60:.1f}", str(v["units"]), str(v["invocations"])]
            for k, v in sorted(t.items())]
    total = sum(v["seconds"] for v in t.values())
    lines = [f"# Wall time per stage ({study.cfg.name} study, {study.workers} workers, "
             f"{study.device})", "",
             "Summed over every invocation that did work in the stage (an interrupted and resumed "
             "stage counts both parts).", ""]
    lines += _md_table(["stage", "minutes", "units", "invocations"], rows)
    lines += ["", f"Total: {total / 60:.1f} minutes.", ""]
    (study.results / "timings.md").write_text("\n".join(lines))
    shutil.copyfile(study.work / "timings.json", study.results / "timings.json")
