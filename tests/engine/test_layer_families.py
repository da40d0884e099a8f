"""Mixed zoos: every output names each member's S_FU layers and their family; a zoo mixing
families says S_FU is compared across them, ``within_family`` ranks each family on its own;
ties at S = 0 and two-member zoos say what min-max can and cannot tell."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import gradnca_onnx as g
from gradnca_onnx.cli import main
from gradnca_onnx.engine.ranking import combine_zoo
from gradnca_onnx.results import ModelResult
from gradnca_onnx.results.ranking import layer_family

CNNS = ["retina", "blood-cells", "pneumonia"]
VIT = "vit-blood-cells"


@pytest.fixture(scope="module")
def demo_arrays():
    import numpy as np

    from gradnca_onnx.demo import demo_paths

    zoo, target = demo_paths()
    d = np.load(target)
    return zoo, (d["train_images"][:120], d["train_labels"][:120])


def test_layer_family_by_weight_rank():
    assert layer_family((64, 3, 7, 7), (64, 64, 3, 3)) == "conv+conv"
    assert layer_family((192, 3, 16, 16), (576, 192)) == "conv+linear"
    assert layer_family((8, 1, 3, 3, 3), (8, 8, 3)) == "conv3d+conv1d"


def test_every_output_names_the_layers_and_a_mixed_zoo_says_so(demo_arrays):
    zoo, data = demo_arrays
    ranking = g.rank(zoo, data, models=[*CNNS, VIT], threads=1)
    fams = {m.name: m.family for m in ranking.models}
    assert fams == {**{n: "conv+conv" for n in CNNS}, VIT: "conv+linear"}
    vit = next(m for m in ranking.models if m.name == VIT)
    assert vit.layers["fu_layer1"] == "conv_proj"
    assert vit.layers["rule"] == "first-two-weight-layers"
    mixed = [n for n in ranking.notes if n.startswith("S_FU is compared across layer families")]
    assert len(mixed) == 1 and "conv+linear: vit-blood-cells" in mixed[0]
    doc = json.loads(ranking.to_json())
    assert doc["notes"] == ranking.notes
    assert {m["model"]: m["layers"]["family"] for m in doc["models"]} == fams
    header, *rows = csv.reader(io.StringIO(ranking.to_csv()))
    assert header[-4:] == ["fu_layer1", "fu_layer2", "fu_family", "notes"]
    assert sorted(r[-2] for r in rows) == ["conv+conv"] * 3 + ["conv+linear"]
    assert all(mixed[0] in r[-1].split(" | ") for r in rows)  # the zoo's note on every row
    table = ranking.table()
    assert "note (zoo): S_FU is compared across layer families" in table
    assert f"S_FU layers ({VIT}): conv_proj / " in table


def test_within_family_ranks_each_family_on_its_own(demo_arrays):
    zoo, data = demo_arrays
    ranking = g.rank(zoo, data, models=[*CNNS, VIT], threads=1, within_family=True)
    assert ranking.within_family and json.loads(ranking.to_json())["within_family"] is True
    by_family = {}
    for m in ranking.models:
        by_family.setdefault(m.family, []).append(m)
    assert [m.family for m in ranking.models] == sorted(m.family for m in ranking.models)
    assert [m.rank for m in by_family["conv+linear"]] == [1]
    cnn = by_family["conv+conv"]
    assert cnn[0].rank == 1 and sorted(m.rank for m in cnn) == [m.rank for m in cnn]
    # The CNNs' S is min-max over the CNNs alone: the same as ranking the CNNs by themselves.
    alone = g.rank(zoo, data, models=CNNS, threads=1)
    assert {m.name: m.score for m in cnn} == {m.name: m.score for m in alone.models}
    assert not any(n.startswith("S_FU is compared across") for n in ranking.notes)
    res = CliRunner().invoke(main, ["rank", "--demo", "--quiet", "--no-cache",
                                    "--within-family", "--models", ",".join([*CNNS, VIT]),
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["within_family"] is True


def _result(name: str, lp: float, fu: float, family: str = "conv+conv") -> ModelResult:
    return ModelResult(name=name, path=Path(name), lp=lp, fu=fu,
                       layers={"fu_layer1": "a", "fu_layer2": "b", "rule": "user",
                               "family": family})


def test_ties_at_zero_and_two_member_zoos_explain_themselves():
    from gradnca_onnx.data.dataset import from_arrays
    import numpy as np

    target = from_arrays(np.zeros((6, 8, 8), np.uint8), [0, 1] * 3)
    # a: lowest S_LP, b: lowest S_FU -> both S = 0, tied
    ranking = combine_zoo(target, [_result("a", 0.1, 2.0), _result("b", 0.5, 1.0),
                                   _result("c", 0.9, 3.0)], {})
    a, b = (next(m for m in ranking.models if m.name == n) for n in "ab")
    assert a.score == b.score == 0.0 and a.rank == b.rank
    assert any("S = 0 because its S_LP is the lowest" in n and "tied with b" in n
               for n in a.notes)
    assert any("S = 0 because its S_FU is the lowest" in n for n in b.notes)
    two = combine_zoo(target, [_result("a", 0.1, 2.0), _result("b", 0.5, 1.0)], {})
    assert any(n.startswith("min-max over two models") for n in two.notes)
    assert not any(n.startswith("min-max over two models") for n in ranking.notes)
