"""Progress a batch job's log can read: one line per member scored, from the engine's log
records (``gradnca_onnx.engine.log``), printed by ``rank`` when standard error is not a
terminal (click's test runner: a pipe, as a redirected job has)."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from gradnca_onnx.api import rank as api_rank
from gradnca_onnx.cli import main
from gradnca_onnx.demo import demo_paths

DEMO_ZOO, DEMO_TARGET = demo_paths()
TWO = "retina,vit-blood-cells"
TWO_CNNS = "retina,adrenal"
LINE = re.compile(r"^gradnca-onnx rank: \[(\d)/2\] (\S+) on breastmnist \(train\): (\S+) in "
                  r"\d+\.\d s(.*)$")


def _log(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("gradnca-onnx rank:")]


def test_redirected_rank_prints_a_line_per_member_then_a_summary(tmp_path: Path) -> None:
    args = ["rank", "--demo", "--models", TWO, "--cache", str(tmp_path / "c")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = _log(res.stderr)
    assert len(lines) == 4, res.stderr
    assert re.match(r"gradnca-onnx rank: 2 model\(s\) of .+ to score on 1 target\(s\)$", lines[0])
    members = [LINE.match(ln) for ln in lines[1:3]]
    assert all(members), lines
    assert [(m.group(1), m.group(2), m.group(3)) for m in members] == [
        ("1", "retina", "ranked"), ("2", "vit-blood-cells", "ranked")]
    # the passes each member ran, timed
    assert all(re.match(r" \(features \d+\.\d s, gradients \d+\.\d s", m.group(4))
               for m in members), lines
    assert re.match(r"gradnca-onnx rank: 2 model score\(s\) in \d+\.\d s, 0 failed$", lines[3])
    # the output itself is untouched, on standard output
    assert "retina" in res.stdout and "gradnca-onnx rank:" not in res.stdout

    again = _log(CliRunner().invoke(main, args).stderr)
    assert all(ln.endswith("from the cache") for ln in again[1:3]), again


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["rank", "--demo", "--models", TWO, "--quiet",
                                    "--cache", str(tmp_path / "c")])
    assert res.exit_code == 0 and _log(res.stderr) == [], res.stderr


def test_a_failed_member_is_its_line_with_the_error(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    for name in TWO.split(","):
        shutil.copytree(Path(DEMO_ZOO) / name, zoo / name)
    graph = zoo / "retina" / "features.onnx"
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")  # fails its sha256
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(DEMO_TARGET),
                                    "--split", "train", "--no-cache"])
    assert res.exit_code == 0, res.output
    lines = _log(res.stderr)
    failed = [ln for ln in lines if " retina on " in ln]
    assert len(failed) == 1 and ": failed in " in failed[0] and "; error: " in failed[0]
    assert "sha256" in failed[0]
    assert lines[-1].endswith(", 1 failed")


def test_the_python_api_logs_the_same_records(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gradnca_onnx"):
        api_rank(DEMO_ZOO, DEMO_TARGET, split="train", models=TWO,
                              cache=tmp_path / "c")
    members = [r for r in caplog.records if getattr(r, "gradnca_member", None)]
    assert [r.gradnca_member for r in members] == ["ranked", "ranked"]
    assert [r.getMessage().split(" on ")[0] for r in members] == TWO.split(",")
    plans = [r for r in caplog.records if getattr(r, "gradnca_tasks", None)]
    assert [r.gradnca_tasks for r in plans] == [2]


def test_members_of_one_input_convention_share_one_preprocessed_target(tmp_path):
    from gradnca_onnx.engine import scoring
    from gradnca_onnx.zoo import load_manifest

    a, b = (load_manifest(DEMO_ZOO / n).input for n in TWO_CNNS.split(","))
    assert (a.channels, a.height, a.mean, a.std) == (b.channels, b.height, b.mean, b.std)
    made = scoring.PREPARED.made
    api_rank(DEMO_ZOO, DEMO_TARGET, split="train", models=TWO_CNNS)
    assert scoring.PREPARED.made == made + 1
    assert scoring.PREPARED._value is None  # released when the ranking ends
