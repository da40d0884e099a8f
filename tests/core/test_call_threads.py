"""One thread budget per call: ``limited_threads`` bounds the NCA products, OpenMP, numba and
BLAS, restores them afterwards, and concurrent calls share BLAS's process-wide setting safely."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import gradnca_onnx as g
from gradnca_onnx.core import _parallel as par


def _threads(api: str) -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == api}


@pytest.fixture
def two_blas_threads():
    """BLAS at 2 threads for the test (the bound must visibly lower it)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        if _threads("blas") != {2}:
            pytest.skip("this BLAS does not take a thread count")
        yield


def test_limited_threads_bounds_and_restores(two_blas_threads):
    before_omp = _threads("openmp")
    with par.limited_threads(1):
        assert par.default_threads() == 1
        assert _threads("blas") == {1}
        assert _threads("openmp") in ({1}, set())
        assert par.Products().n_threads == 1
    assert _threads("blas") == {2}
    assert _threads("openmp") == before_omp
    assert par.default_threads() == par.available_cores() or "GRADNCA_NUM_THREADS" in __import__(
        "os").environ


def test_concurrent_blocks_share_blas_as_the_smallest_limit(two_blas_threads):
    inside, release, seen = threading.Event(), threading.Event(), {}

    def other():
        with par.limited_threads(1):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with par.single_threaded_blas():
        seen["both"] = _threads("blas")
    seen["other only"] = _threads("blas")   # the other block is still inside: still pinned
    release.set()
    t.join()
    seen["none"] = _threads("blas")
    assert seen == {"both": {1}, "other only": {1}, "none": {2}}
    # the bound of a thread's call does not leak into another thread's default
    out = {}
    with par.limited_threads(1):
        w = threading.Thread(target=lambda: out.setdefault("t", par.default_threads()))
        w.start()
        w.join()
    assert out["t"] == par.default_threads()


def test_numba_threads_follow_the_call_bound():
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    with par.limited_threads(1), par.numba_threads():
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_rank_with_threads_bounds_every_pool(two_blas_threads, monkeypatch):
    from gradnca_onnx.demo import demo_paths
    from gradnca_onnx.io import sessions

    made = []
    real = sessions.session_options

    def spy(*args, **kwargs):
        so = real(*args, **kwargs)
        made.append((so.intra_op_num_threads, so.inter_op_num_threads))
        return so

    monkeypatch.setattr(sessions, "session_options", spy)
    import gradnca_onnx.engine.runtime as runtime

    monkeypatch.setattr(runtime, "session_options", spy)
    zoo, target = demo_paths()
    d = np.load(target)
    seen = []

    def progress(*_):
        seen.append((par.default_threads(), frozenset(_threads("blas"))))

    ranking = g.rank(zoo, (d["train_images"][:60], d["train_labels"][:60]), threads=1,
                     models=["retina"], progress=progress)
    assert ranking.ok
    assert made and set(made) == {(1, 1)}
    assert seen and set(seen) == {(1, frozenset({1}))}
    assert _threads("blas") == {2}


def test_a_bound_never_raises_blas_above_its_count():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        with par.limited_threads(2):
            assert _threads("blas") <= {1}
        assert _threads("blas") <= {1}
