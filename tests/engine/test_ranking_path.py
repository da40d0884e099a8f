"""One ranking path: one preamble, one unit of work and one zoo step for local, executor,
resampled and per-fold rankings; the options object; tie-aware ranks."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from gradnca_onnx.data.load import load_target
from gradnca_onnx.demo import demo_paths
from gradnca_onnx.engine import FeatureCache, RankOptions, rank_zoo, resample_zoo
from gradnca_onnx.engine import ranking as ranking_module
from gradnca_onnx.engine.ranking import plan_ranking, rank_each
from gradnca_onnx.errors import InputError
from gradnca_onnx.evaluation.ranking import best_first_ranks
from gradnca_onnx.executors import LocalExecutor, rank_targets

MODELS = ["adrenal", "retina", "random-init"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    zoo, target = demo_paths()
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    full = load_target(target)
    return zoo, full.subset(np.arange(90)), full.subset(np.arange(90, 170)), cache


def _docs(rankings) -> list[dict]:
    out = []
    for r in rankings:
        d = r.to_dict()
        for m in d["models"]:
            m.pop("seconds"), m.pop("cached")
        out.append(d)
    return out


def test_the_options_object_and_keywords_are_one_setting(demo) -> None:
    zoo, a, _, cache = demo
    options = RankOptions(models=MODELS, cache=cache, metrics="params")
    by_object = rank_zoo(zoo, a, options)
    by_keywords = rank_zoo(zoo, a, models=MODELS, cache=cache, metrics="params")
    overridden = rank_zoo(zoo, a, RankOptions(models=["adrenal"], cache=cache), models=MODELS,
                          metrics="params")
    assert _docs([by_object]) == _docs([by_keywords]) == _docs([overridden])
    with pytest.raises(TypeError):
        RankOptions.of(None, modles=MODELS)  # a misspelt setting is an error, not ignored


def test_local_executor_and_per_target_path_agree(demo) -> None:
    zoo, a, b, cache = demo
    b = dataclasses.replace(b, name="b")  # rank_targets needs one name per target
    options = RankOptions(models=MODELS, cache=cache)
    each = rank_each(zoo, [a, b], options)
    single = [rank_zoo(zoo, t, options) for t in (a, b)]
    tasks = rank_targets(zoo, [a, b], executor=LocalExecutor(), options=options)
    assert _docs(each) == _docs(single) == _docs(tasks)


def test_identity_resample_reproduces_the_plain_ranking(demo) -> None:
    zoo, a, _, cache = demo
    plain = rank_zoo(zoo, a, models=MODELS, cache=cache)
    resampled = resample_zoo(zoo, a, 2, subsamples=[np.arange(len(a))] * 2, fu="batches",
                             models=MODELS, cache=cache)
    for p, r in zip(plain.models, resampled.models):
        assert (p.name, p.rank, p.score) == (r.name, r.rank, r.score)
        assert r.resampling["lp"]["lo"] == r.resampling["lp"]["hi"] == p.lp
        assert r.resampling["score"]["median"] == p.score


def test_the_preamble_checks_before_any_work(demo, monkeypatch) -> None:
    zoo, a, _, cache = demo
    calls = []
    monkeypatch.setattr(ranking_module, "score_arrays", lambda *args, **kw: calls.append(args))
    for bad, match in (({"scenario": "model-ish"}, "scenario must be"),
                       ({"metrics": "nope"}, "nope"), ({"lp_jitters": 1}, "lp_jitters"),
                       ({"models": ["absent"]}, "no model named")):
        options = RankOptions(cache=cache, **bad)
        with pytest.raises(InputError, match=match):
            rank_zoo(zoo, a, options)
        with pytest.raises(InputError, match=match):
            rank_targets(zoo, [a], executor=LocalExecutor(), options=options)
        with pytest.raises(InputError, match=match):
            resample_zoo(zoo, a, 2, fu="batches", options=options)
    assert calls == []


def test_a_bug_in_the_unit_keeps_its_traceback_locally(demo, monkeypatch) -> None:
    """A member's bad input is its error line; a bug (here a TypeError) is not disguised as
    one when ranking in this process."""
    zoo, a, _, cache = demo

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(ranking_module, "score_arrays", broken)
    with pytest.raises(TypeError, match="a bug"):
        rank_zoo(zoo, a, models=MODELS, cache=cache)

    def bad_member(*args, **kwargs):
        raise InputError("graph and manifest disagree")

    monkeypatch.setattr(ranking_module, "score_arrays", bad_member)
    ranking = rank_zoo(zoo, a, models=MODELS, cache=cache)
    assert [m.error for m in ranking.models] == ["graph and manifest disagree"] * 3


def test_the_plan_travels_to_workers(demo) -> None:
    zoo, a, _, cache = demo
    plan, entries, targets = plan_ranking(zoo, [a], RankOptions(models=MODELS, cache=cache,
                                                                progress=lambda *a: None))
    assert pickle.loads(pickle.dumps(plan)).metric_names == plan.metric_names
    assert [e.path.name for e in entries] == sorted(MODELS)
    assert targets == [a]  # below the sample bound the target is used whole


def test_best_first_ranks_share_the_better_rank() -> None:
    scores = np.array([0.5, 1.0, 0.5, 0.0, 1.0])
    ranks = best_first_ranks(scores)
    # the definition: 1 + the number of strictly higher scores
    assert ranks.tolist() == [1 + int((scores > s).sum()) for s in scores] == [3, 1, 3, 5, 1]
    assert ranks.dtype == np.int64
    rows = np.array([[0.1, 0.2, 0.2], [0.3, 0.3, 0.3]])
    assert best_first_ranks(rows).tolist() == [[3, 1, 1], [1, 1, 1]]
    with pytest.raises(InputError, match="finite"):
        best_first_ranks([0.1, np.nan])
