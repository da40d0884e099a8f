"""The smoothed S_LP (``rank --lp-jitters K``, issue 17 item 3): an extension, off by default.

The reference is the scikit-learn pipeline of the paper under single-threaded BLAS, run here on
each jittered copy of the features and averaged; the package is bit-identical to that pipeline
on identical inputs (``test_label_prediction``), so the comparison is exact up to the mean's
summation order (1e-12).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gradnca_onnx.cli import main
from gradnca_onnx.engine import rank_zoo
from gradnca_onnx.engine.resample import resample_zoo
from gradnca_onnx.scores import label_prediction_score
from gradnca_onnx.scores.label_prediction import JITTER_SCALE, jittered_features

from _support import DEMO_CNNS, random_problem, sklearn_slp

def test_jitter_mean_matches_the_sklearn_pipeline_on_each_jittered_copy() -> None:
    X, y = random_problem(200, 64, 3, seed=5)
    X = X.astype(np.float32)
    ref = np.mean([sklearn_slp(jittered_features(X, s), y)[0] for s in range(3)])
    ours = label_prediction_score(X, y, jitters=3)
    assert abs(ours - ref) <= 1e-12
    # The jitter is the stated relative size, in the features' dtype, and seeded.
    J = jittered_features(X, 0)
    assert J.dtype == np.float32
    rel = np.abs(J.astype(np.float64) / X - 1)
    assert 0 < np.median(rel) < 3 * JITTER_SCALE
    assert np.array_equal(J, jittered_features(X, 0))
    assert label_prediction_score(X, y, jitters=0) == label_prediction_score(X, y)


@pytest.mark.parametrize("bad", [1, -2, 2.5, True, "5"])
def test_bad_jitters_are_refused(bad) -> None:
    X, y = random_problem(60, 8, 2, seed=1)
    with pytest.raises(ValueError, match="jitters must be 0"):
        label_prediction_score(X, y, jitters=bad)


def test_rank_with_jitters_reuses_the_features_and_changes_only_s_lp(demo) -> None:
    zoo, target, cache = demo
    plain = rank_zoo(zoo, target, cache=cache, models=DEMO_CNNS)
    smooth = rank_zoo(zoo, target, cache=cache, models=DEMO_CNNS, lp_jitters=3)
    by_name = {m.name: m for m in plain.models}
    for m in smooth.models:
        p = by_name[m.name]
        assert m.cached  # the paper's cache entry serves the smoothed variant too
        assert m.fu == p.fu
        assert any("mean over 3 feature jitters" in n for n in m.notes)
    # S_LP from the cached features, through the public function.
    from gradnca_onnx.engine.scoring import model_passes
    from gradnca_onnx.engine.runtime import RuntimeConfig
    from gradnca_onnx.zoo import list_zoo

    for e in list_zoo(zoo):
        if e.path.name in DEMO_CNNS:
            arrays, hit, _ = model_passes(e.path, e.manifest, target, runtime=RuntimeConfig(),
                                          cache=cache)
            assert hit
            want = label_prediction_score(arrays["features"], target.labels,
                                          n_components=min(50, e.manifest.feature_dim),
                                          jitters=3)
            got = next(m for m in smooth.models if m.name == e.path.name)
            assert got.lp == want
            assert float(arrays["lp"]) == by_name[e.path.name].lp  # the cache keeps the paper's
    d = smooth.to_dict()
    assert d["schema"] == "gradnca-onnx/rank/2"
    assert d["lp"] == {"definition": "jitter-mean", "jitters": 3, "jitter_scale": JITTER_SCALE}
    assert "lp" not in plain.to_dict() and plain.schema == "gradnca-onnx/rank/1"


def test_identity_resample_with_jitters_reproduces_the_smoothed_scores(demo) -> None:
    zoo, target, cache = demo
    smooth = rank_zoo(zoo, target, cache=cache, models=DEMO_CNNS, lp_jitters=2)
    res = resample_zoo(zoo, target, 1, cache=cache, models=DEMO_CNNS, lp_jitters=2,
                       subsamples=[np.arange(len(target))])
    assert res.resampling["lp_jitters"] == 2
    for m, p in zip(res.models, smooth.models):
        assert m.name == p.name
        assert m.resampling["lp"]["lo"] == m.resampling["lp"]["hi"] == p.lp
        assert m.resampling["score"]["lo"] == p.score


def test_cli_lp_jitters(demo, tmp_path) -> None:
    zoo, _, cache = demo
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["rank", "--demo", "--models", "retina,pneumonia",
                                    "--lp-jitters", "2", "--format", "json", "--out", str(out),
                                    "--cache", str(tmp_path / "c"), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["lp"]["jitters"] == 2
    bad = CliRunner().invoke(main, ["rank", "--demo", "--lp-jitters", "1", "--no-cache"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1].startswith("Error: --lp-jitters must be 0")
