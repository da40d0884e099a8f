"""Static baselines take numbers; the engine reads them from the member's files.

``metrics`` is a pure layer: computing ``params`` or ``source_images`` reads no file (the
metric gets :class:`MemberFacts`), and importing the metrics loads neither onnx nor the zoo
format. :func:`read_member_facts` reads only the facts asked for, and a fact it cannot read
becomes that metric's error, never a number.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradnca_onnx.metrics as gm
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine.member import count_parameters, read_member_facts
from gradnca_onnx.errors import InputError
from gradnca_onnx.metrics import MemberFacts

X = np.random.default_rng(0).normal(size=(20, 4))
Y = np.repeat([0, 1], 10)


def test_the_metrics_take_numbers() -> None:
    facts = MemberFacts(params=1234, source_images=None)
    assert gm.params(facts) == 1234.0 and gm.source_images(facts) is None
    out = gm.compute_metrics("params,source_images", X, Y, member=facts)
    assert (out["params"].status, out["params"].value) == ("ok", 1234.0)
    assert out["source_images"].skipped and "does not record" in out["source_images"].note
    broken = MemberFacts(problems={"params": "m/features.onnx: not a readable ONNX graph"})
    with pytest.raises(InputError, match="not a readable"):
        gm.params(broken)
    rec = gm.compute_metrics("params", X, Y, member=broken, errors="record")["params"]
    assert rec.status == "error" and math.isnan(rec.value)
    assert rec.note == "error: m/features.onnx: not a readable ONNX graph"


def test_the_engine_reads_only_the_facts_asked_for(tmp_path) -> None:
    zoo, _ = demo_paths()
    member = zoo / "retina"
    facts = read_member_facts(member)
    assert facts.params == count_parameters(member) > 1000 and not facts.problems
    only = read_member_facts(member, ["source_images"])
    assert only.params is None and not only.problems
    (tmp_path / "empty").mkdir()
    missing = read_member_facts(tmp_path / "empty", ["params"])
    assert set(missing.problems) == {"params"} and "no features.onnx" in missing.problems["params"]


def test_importing_the_metrics_reads_no_model_format() -> None:
    code = textwrap.dedent("""
        import sys
        import gradnca_onnx.metrics
        print(",".join(m for m in ("onnx", "gradnca_onnx.zoo", "gradnca_onnx.engine")
                       if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == ""
