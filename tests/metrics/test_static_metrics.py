"""Static baselines as metrics: ``params`` from the graph's initializers (issue 17 item 6)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import gradnca_onnx.metrics as gm
from gradnca_onnx.cli import main
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine.member import count_parameters, read_member_facts


def _tiny_graph(path) -> None:
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
    nodes = [helper.make_node("Gemm", ["images", "w", "b"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["features"])]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4])],
                              [w, b, shape])
    onnx.save(helper.make_model(graph), str(path / "features.onnx"))


def test_params_counts_float_initializers_only(tmp_path) -> None:
    _tiny_graph(tmp_path)
    assert count_parameters(tmp_path) == 16  # 3x4 weight + 4 biases, not the int64 shape
    assert gm.params(read_member_facts(tmp_path)) == 16.0
    with pytest.raises(ValueError, match="no features.onnx"):
        count_parameters(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "features.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable ONNX graph"):
        count_parameters(tmp_path / "bad")


def test_params_matches_an_independent_count_on_the_demo_zoo() -> None:
    zoo, _ = demo_paths()
    for member in sorted(zoo.iterdir()):
        model = onnx.load(str(member / "features.onnx"))
        expected = sum(numpy_helper.to_array(t).size for t in model.graph.initializer
                       if numpy_helper.to_array(t).dtype.kind == "f")
        assert count_parameters(member) == expected > 1000, member.name
    assert count_parameters(zoo / "vit-blood-cells") > count_parameters(zoo / "retina")


def test_registry_and_compute_metrics(tmp_path) -> None:
    assert "params" in gm.resolve_names("all") and gm.METRICS["params"].needs_model
    X = np.random.default_rng(0).normal(size=(20, 4))
    y = np.repeat([0, 1], 10)
    out = gm.compute_metrics("all", X, y)
    assert out["params"].skipped and out["params"].note.startswith(gm.NO_MODEL_NOTE)
    _tiny_graph(tmp_path)
    facts = read_member_facts(tmp_path)
    assert gm.compute_metrics("params", X, y, member=facts)["params"].value == 16.0
    rec = gm.compute_metrics("params", X, y, member=read_member_facts(tmp_path / "nope"),
                             errors="record")
    assert rec["params"].status == "error" and "features.onnx" in rec["params"].note
    assert gm.zoo_scores("params", [out["params"]]).shape == (1,)


def test_rank_reports_params_per_model(tmp_path) -> None:
    res = CliRunner().invoke(main, ["rank", "--demo", "--models", "retina,vit-blood-cells",
                                    "--metrics", "params", "--format", "json", "--quiet",
                                    "--cache", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["metrics"]["params"]["higher_is_better"] is True
    zoo, _ = demo_paths()
    for m in data["models"]:
        assert m["metrics"]["params"] == count_parameters(zoo / m["model"])
