"""Large targets in bounded time (``rank --max-samples``): above the bound every member is
scored on one class-stratified, seeded subsample, stated in every output; at or below it the
results are those of the whole target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import gradnca_onnx
from gradnca_onnx.api import rank as api_rank
from gradnca_onnx.cli import main
from gradnca_onnx.data.dataset import from_arrays
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine.bounded import DEFAULT_MAX_SAMPLES, bounded_target
from gradnca_onnx.errors import InputError

ZOO, TARGET = demo_paths()
TWO = "retina,adrenal"


def _target(n: int = 600, groups: bool = False):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [n // 2, n // 3, n - n // 2 - n // 3])
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    t = from_arrays(images, labels, name="t")
    if groups:  # patients of four images each, as a label table's group column gives
        from dataclasses import replace

        t = replace(t, groups=tuple(f"p{i // 4}" for i in range(n)))
    return t


def test_at_or_below_the_bound_the_target_is_used_whole():
    t = _target()
    for bound in (0, len(t), len(t) + 1):
        same, note = bounded_target(t, bound)
        assert same is t and note is None


def test_the_subsample_keeps_each_class_share_and_is_seeded():
    t = _target()
    sub, note = bounded_target(t, 300, seed=0)
    assert len(sub) == 300
    np.testing.assert_array_equal(np.bincount(sub.labels), np.bincount(t.labels) // 2)
    again, _ = bounded_target(t, 300, seed=0)
    other, _ = bounded_target(t, 300, seed=1)
    assert again.sha256 == sub.sha256 != other.sha256  # the cache key follows the images
    assert "300 of its 600 images" in note and "seed 0" in note and "--max-samples 0" in note


def test_patients_stay_whole():
    t = _target(groups=True)
    sub, note = bounded_target(t, 200)
    kept = {}
    for g in sub.groups:
        kept[g] = kept.get(g, 0) + 1
    assert set(kept.values()) == {4} and "each patient whole" in note


@pytest.mark.parametrize("bad", [-1, 3, 2.5, True])
def test_bad_bounds_are_refused(bad):
    from gradnca_onnx.engine.bounded import check_max_samples

    with pytest.raises(InputError, match="max_samples"):
        check_max_samples(bad)


def test_default_bound_leaves_the_demo_unchanged(tmp_path):
    assert DEFAULT_MAX_SAMPLES >= 546
    full = api_rank(ZOO, TARGET, split="train", models=TWO, max_samples=0)
    default = api_rank(ZOO, TARGET, split="train", models=TWO)
    assert [(m.name, m.score, m.lp, m.fu) for m in full.models] == \
        [(m.name, m.score, m.lp, m.fu) for m in default.models]
    assert not any("subsampled" in n for n in default.notes)


def test_above_the_bound_every_output_says_so_and_scores_the_subsample(tmp_path):
    cache = tmp_path / "c"
    res = CliRunner().invoke(main, ["rank", "--demo", "--models", TWO, "--max-samples", "120",
                                    "--format", "json", "--quiet", "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["target"]["n_samples"] == 120
    assert any("120 of its 546 images" in n for n in doc["notes"])
    for fmt in ("table", "csv"):
        out = CliRunner().invoke(main, ["rank", "--demo", "--models", TWO, "--max-samples",
                                        "120", "--format", fmt, "--quiet", "--cache",
                                        str(cache)]).stdout
        assert "120 of its 546 images" in out
    # the same numbers as ranking the subsample itself, whole
    target = gradnca_onnx.load_target(TARGET, "train")
    sub, _ = bounded_target(target, 120)
    direct = api_rank(ZOO, sub, models=TWO, max_samples=0)
    got = {m["model"]: (m["lp"], m["fu"]) for m in doc["models"]}
    assert got == {m.name: (m.lp, m.fu) for m in direct.models}


def test_cli_bad_bound_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["rank", "--demo", "--max-samples", "-5",
                                    "--cache", str(tmp_path / "c")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--max-samples" in lines[0]
    assert not (tmp_path / "c").exists()


def test_numpy_integers_are_bounds():
    from gradnca_onnx.engine.bounded import check_max_samples, check_sample_seed

    assert check_max_samples(np.int64(300)) == 300 and check_sample_seed(np.int32(2)) == 2
