"""``gradnca_onnx.rank``: the one call a pipeline embeds (targets in any form, every setting
checked before any model runs, callbacks' errors reach the caller, results in every form the
command line prints)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import gradnca_onnx as g
from gradnca_onnx.cli import main
from gradnca_onnx.demo import demo_paths

#: Three demo members (one ViT among them) keep each call to a few seconds.
MODELS = ["retina", "blood-cells", "vit-blood-cells"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The demo zoo and the first 120 training images of its target, as arrays and as an npz
    file the command line reads."""
    zoo, target = demo_paths()
    d = np.load(target)
    x, y = d["train_images"][:120], d["train_labels"][:120].ravel()
    path = tmp_path_factory.mktemp("target") / "small.npz"
    # a MedMNIST file: every split's labels (the reader checks them); the images of train
    np.savez(path, train_images=x, train_labels=y[:, None], val_images=x[:10],
             val_labels=y[:10, None], test_images=x[:10], test_labels=y[:10, None])
    return zoo, x, y, path


def _recorder():
    calls = []
    return calls, lambda *a: calls.append(a)


def test_rank_takes_arrays_and_ranks_the_demo_zoo(small):
    zoo, x, y, _ = small
    calls, progress = _recorder()
    ranking = g.rank(zoo, (x, y), threads=1, models=MODELS, progress=progress)
    assert isinstance(ranking, g.Ranking) and ranking.ok and ranking.failed == []
    assert sorted(m.name for m in ranking.models) == sorted(MODELS)
    ranks = [m.rank for m in ranking.models]  # best first (ties share the better rank)
    assert ranks[0] == 1 and ranks == sorted(ranks)
    assert all(0 <= m.score <= 1 for m in ranking.models)
    assert calls, "the progress callback was called"
    # The same arrays as a loaded target, and the zoo as a Zoo object: the same scores.
    again = g.rank(g.Zoo(zoo), g.from_arrays(x, y), threads=1, models=MODELS)
    assert [(m.name, m.score) for m in again.models] == \
        [(m.name, m.score) for m in ranking.models]


@pytest.mark.parametrize("settings, message", [
    ({"device": "gpu"}, "device must be one of"),
    ({"features_batch": 0}, "features_batch must be an integer >= 1"),
    ({"threads": -1}, "threads must be an integer >= 1"),
    ({"threads": 1.5}, "threads must be an integer >= 1"),
    ({"residual_memory": -1}, "residual_memory must be an integer >= 0"),
    ({"residual_memory": "lots"}, "residual_memory must be a size"),
    ({"metrics": "nope"}, "unknown metric 'nope'"),
    ({"scenario": "model-ish"}, "scenario must be"),
    ({"models": ["no-such-model"]}, "has no model named"),
    ({"lp_jitters": 1}, "lp_jitters"),
    ({"seed": 3}, "seed act(s) only with resamples"),
    ({"resamples": 1}, "--resamples must be an integer >= 2"),
    ({"resamples": 3, "folds": True}, "not both"),
    ({"errors": "ignore"}, "errors must be 'record' or 'raise'"),
    ({"split": "test"}, "split and size apply to target files"),
])
def test_every_bad_setting_raises_before_any_model_runs(small, settings, message):
    zoo, x, y, _ = small
    calls, progress = _recorder()
    with pytest.raises(g.InputError) as info:
        g.rank(zoo, (x, y), progress=progress, **settings)
    assert message in str(info.value)
    assert calls == []


def test_an_unusable_device_raises_before_any_model_runs(small):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: device='cuda' is usable here")
    zoo, x, y, _ = small
    calls, progress = _recorder()
    with pytest.raises(g.InputError, match="no CUDA provider"):
        g.rank(zoo, (x, y), device="cuda", progress=progress)
    assert calls == []


def test_the_callbacks_exception_reaches_the_caller_unchanged(small):
    zoo, x, y, _ = small
    boom = KeyError("the caller's own bug")

    def progress(*_):
        raise boom

    with pytest.raises(KeyError) as info:
        g.rank(zoo, (x, y), models=MODELS[:1], progress=progress)
    assert info.value is boom
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_a_failed_member_is_recorded_or_raised(small, tmp_path):
    zoo, x, y, _ = small
    copy = tmp_path / "zoo"
    for name in MODELS[:2]:
        shutil.copytree(zoo / name, copy / name)
    (copy / MODELS[0] / "features.onnx").write_bytes(b"not the exported graph")
    ranking = g.rank(copy, (x, y))
    assert not ranking.ok and [m.name for m in ranking.failed] == [MODELS[0]]
    assert ranking.models[0].name == MODELS[1] and ranking.models[0].rank == 1
    with pytest.raises(g.RankingError, match=f"1 model\\(s\\) could not be scored "
                                             f"\\({MODELS[0]}\\)") as info:
        g.rank(copy, (x, y), errors="raise")
    assert info.value.ranking.failed[0].name == MODELS[0]


def test_several_targets_give_rankings(small):
    zoo, x, y, path = small
    result = g.rank(zoo, [(x, y), path], models=MODELS[:2])
    assert isinstance(result, g.Rankings) and len(result) == 2 and result.ok
    assert [r.target for r in result] == ["arrays", "small"]
    # the npz holds the same images: the same scores
    assert [m.score for m in result[0].models] == [m.score for m in result[1].models]
    with pytest.raises(g.InputError, match="empty list"):
        g.rank(zoo, [])


def _cli(*args: str) -> str:
    res = CliRunner().invoke(main, ["rank", "--quiet", "--no-cache", *args])
    assert res.exit_code == 0, res.output
    return res.output


def _without_timings(text: str) -> dict:
    doc = json.loads(text)
    for m in doc["models"]:
        m.pop("seconds")
    return doc


def test_outputs_equal_the_command_lines(small):
    pd = pytest.importorskip("pandas")
    zoo, _, _, path = small
    args = ["--zoo", str(zoo), "--target", str(path), "--models", ",".join(MODELS),
            "--metrics", "logme,params"]
    ranking = g.rank(zoo, path, models=MODELS, metrics="logme,params")
    assert _without_timings(ranking.to_json()) == _without_timings(_cli(*args, "--format",
                                                                         "json"))
    assert ranking.to_dict()["models"][0]["model"] == ranking.models[0].name
    csv_text = _cli(*args, "--format", "csv")
    assert ranking.to_csv() == csv_text
    assert ranking.table() == str(ranking) == _cli(*args)
    frame = ranking.to_frame()
    pd.testing.assert_frame_equal(frame, pd.read_csv(io.StringIO(csv_text)))
    assert list(frame["model"]) == [m.name for m in ranking.models]
    assert np.allclose(frame["score"], [m.score for m in ranking.models], rtol=0, atol=1e-12)


def test_top_level_names():
    for name in g.__all__:
        assert getattr(g, name) is not None, name
    assert g.rank.__module__ == "gradnca_onnx.api"
    assert issubclass(g.RankingError, g.GradncaError)
    with pytest.raises(AttributeError):
        g.no_such_name  # noqa: B018


def test_the_readmes_pipeline_example_runs(capsys):
    from _support import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- pipeline-example -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    ranking = namespace["ranking"]
    assert ranking.ok and namespace["best"] == ranking.models[0].name
    assert ranking.table() in capsys.readouterr().out


def test_the_engine_refuses_a_target_that_is_not_loaded(small):
    from gradnca_onnx.engine import rank_zoo

    zoo, x, y, _ = small
    with pytest.raises(g.InputError, match="must be a TargetData .* got tuple"):
        rank_zoo(zoo, (x, y))


def test_a_zoo_object_reaches_the_engine_as_its_path(small):
    """``zoo`` may be a :class:`~gradnca_onnx.Zoo` (an ``os.PathLike``): a message about the zoo
    names its directory, not the object's repr (mypy found the Zoo passed where a path goes)."""
    zoo, x, y, _ = small
    with pytest.raises(g.InputError) as caught:
        g.rank(g.Zoo(zoo), (x, y), models=["no-such-model"], threads=1)
    assert str(caught.value).startswith(f"zoo {zoo} has no model named"), caught.value
