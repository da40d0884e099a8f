"""The real-data study (benchmarks/medical_small) end to end on its miniature configuration:
two pre-trained sources + a random-init control, two targets, a three-architecture model
scenario; then resumed after an interruption, which must redo exactly the lost work and
reproduce every number.

Every reported number is recomputed here from the primary records: the ground truth from the
SQLite run store (lowest validation loss per pair, REFERENCE 7), the taus with
``scipy.stats.weightedtau`` on the written score and truth tables (REFERENCE 8), the GradNCA
column and the model-scenario inversions from the rank JSON files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import weightedtau

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "medical_small" / "study.py"

# The miniature study takes 3.5 minutes here, a quarter of the default suite's budget; its
# stages (pre-training, export, ranking, fine-tuning, the ground truth, the report's taus) are
# each tested on their own in the default suite, so the end-to-end run is under -m slow.
pytestmark = pytest.mark.slow


def _run(work: Path, data: Path) -> str:
    env = {**os.environ, "GRADNCA_MEDICAL_DATA": str(data)}
    proc = subprocess.run([sys.executable, str(STUDY), "--config", "mini", "--work", str(work),
                           "--workers", "2", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _table(path: Path) -> dict[str, dict[str, float]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    targets = rows[0][2:]
    return {r[1]: {t: (float(v) if v else math.nan) for t, v in zip(targets, r[2:])}
            for r in rows[1:]}


def _truth_from_store(store: Path) -> dict[tuple[str, str], float]:
    """REFERENCE 7 from the raw rows: per pair, the test AUC of the lowest-val-loss run."""
    db = sqlite3.connect(store)
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for src, tgt, loss, auc in db.execute(
            "SELECT source, target, val_loss, test_auc FROM runs WHERE status = 'finished' "
            "ORDER BY started_at"):
        if loss is not None and ((src, tgt) not in best or loss < best[(src, tgt)][0]):
            best[(src, tgt)] = (loss, auc)
    db.close()
    return {k: v[1] for k, v in best.items()}


@pytest.fixture(scope="module")
def study(tmp_path_factory, medical_dir):
    work = tmp_path_factory.mktemp("mini")
    first = _run(work, medical_dir)
    return work, first, medical_dir


def test_ground_truth_is_the_store_rule(study):
    work = study[0]
    raw = _truth_from_store(work / "runs.sqlite")
    for scenario in ("dataset", "model"):
        truth = _table(work / "results" / scenario / "truth.csv")
        for source, row in truth.items():
            stored = "breastmnist" if (scenario == "model" and source == "resnet18") else source
            for target, value in row.items():
                if source == target:
                    assert math.isnan(value)
                else:
                    assert value == raw[(stored, target)], (scenario, source, target)
    # Both scenarios have 3 candidate sources on each of the 2 targets.
    assert len(_table(work / "results" / "dataset" / "truth.csv")) == 3
    assert len(_table(work / "results" / "model" / "truth.csv")) == 3


def test_taus_and_scores_follow_from_the_written_tables(study):
    work = study[0]
    for scenario in ("dataset", "model"):
        d = work / "results" / scenario
        truth = _table(d / "truth.csv")
        ev = json.loads((d / "evaluation.json").read_text())
        assert set(ev["methods"]) >= {"GradNCA", "LogME", "NCTI", "PARC"}
        for method in ev["methods"]:
            scores = _table(d / "scores" / "primary" / f"{method}.csv")
            for target in ev["targets"]:
                src = [s for s in truth if not math.isnan(truth[s][target])]
                x = np.array([scores[s][target] for s in src])
                y = np.array([truth[s][target] for s in src])
                want = weightedtau(x, y).statistic
                got = ev["tau"][method][target]
                if got is None:
                    assert not np.isfinite(want) or not np.isfinite(x).all()
                else:
                    assert got == pytest.approx(want, abs=1e-12), (scenario, method, target)
        # The columns are the CLI's own numbers: GradNCA = rank's S, PARC inverted in the
        # model scenario only (the paper's Table 3 convention).
        gradnca = _table(d / "scores" / "primary" / "GradNCA.csv")
        parc = _table(d / "scores" / "primary" / "PARC.csv")
        for target in ev["targets"]:
            doc = json.loads((d / f"rank-{target}.json").read_text())
            assert doc["scenario"] == ("dataset" if scenario == "dataset" else "cross-domain")
            assert target not in {m["model"] for m in doc["models"]}
            for m in doc["models"]:
                assert gradnca[m["model"]][target] == m["score"]
                want = m["metrics"]["parc"] if scenario == "dataset" else 1.0 - m["metrics"]["parc"]
                assert parc[m["model"]][target] == want


def test_report_and_figures(study):
    work = study[0]
    res = work / "results"
    text = (res / "README.md").read_text()
    assert "## Dataset scenario" in text and "## Model scenario" in text
    assert "Best average rank" in text and "Friedman" in text
    for scenario in ("dataset", "model"):
        for fig in ("critical_difference.png", "scatter_grid.png", "tau_heatmap.png"):
            assert (res / scenario / "plots" / fig).stat().st_size > 1000
        boot = json.loads((res / scenario / "bootstrap.json").read_text())
        assert boot["n_resamples"] == 50
    timings = json.loads((res / "timings.json").read_text())
    assert {"2 pre-train", "3 export", "4 fine-tune", "5 rank"} <= set(timings)


def test_resume_redoes_only_lost_work_and_reproduces(study):
    work, first, data = study
    assert "10 runs in 10 pairs, 10 to do" in first
    res = work / "results"
    before = {p: p.read_bytes() for p in [res / "dataset" / "truth.csv",
                                          res / "model" / "truth.csv",
                                          res / "dataset" / "evaluation.json",
                                          res / "model" / "evaluation.json"]}
    # Simulate an interruption: one run caught mid-flight, one ranking never written.
    db = sqlite3.connect(work / "runs.sqlite")
    key, auc = db.execute("SELECT run_key, test_auc FROM runs WHERE source = 'brainmri' "
                          "AND target = 'retinamnist'").fetchone()
    db.execute("UPDATE runs SET status = 'running', test_auc = NULL WHERE run_key = ?", (key,))
    db.commit()
    db.close()
    (work / "rank" / "model" / "pneumoniamnist.json").unlink()
    second = _run(work, data)
    assert "pre-train: 4 models (0 trained now)" in second
    assert "export: 0 models exported now" in second
    assert "10 runs in 10 pairs, 1 to do" in second
    assert second.count("ranked ") == 1 and "ranked model/pneumoniamnist" in second
    db = sqlite3.connect(work / "runs.sqlite")
    status, redone = db.execute("SELECT status, test_auc FROM runs WHERE run_key = ?",
                                (key,)).fetchone()
    db.close()
    assert status == "finished" and redone == auc  # seeded, single-threaded: bit-identical
    for path, content in before.items():
        assert path.read_bytes() == content, path


def test_missing_data_is_one_line(tmp_path):
    env = {**os.environ, "GRADNCA_MEDICAL_DATA": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, str(STUDY), "--config", "mini", "--work",
                           str(tmp_path / "w")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0] and "GRADNCA_MEDICAL_DATA" in lines[0]
