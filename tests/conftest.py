"""Fixtures shared by the test modules, and the skip of tests whose real data is absent.

Plain helpers and the paths (``DATA``: $GRADNCA_TEST_DATA, else ``../shared/data``) are in
``_support.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _support import DATA, MEDICAL, NO_DATA_REASON, copy_zoo, small_target


def _names_missing_data(text: str) -> bool:
    return str(DATA) in text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Without the real data directory, a test that fails because it reads a file there is
    reported as skipped with :data:`NO_DATA_REASON`, not as a failure: the suite must pass in a
    clone with nothing beside it. Only errors that name a path inside the absent directory are
    turned into skips; with the directory present nothing changes."""
    outcome = yield
    report = outcome.get_result()
    if DATA.is_dir() or call.excinfo is None or report.outcome != "failed":
        return
    exc = call.excinfo.value
    text = " ".join(str(x) for x in (exc, getattr(exc, "filename", ""),
                                     getattr(exc, "stderr", ""), getattr(exc, "output", "")))
    if _names_missing_data(text):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {NO_DATA_REASON}")


@pytest.fixture(scope="session")
def medical_dir() -> Path:
    if not MEDICAL.is_dir():
        pytest.skip(NO_DATA_REASON)
    return MEDICAL


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch single-threaded in a module: the suite runs on 2 (often shared) cores, where
    OpenMP threads spinning for a busy core cost far more than they give (10x slowdowns seen)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: Python source that makes every later import of torch (and of the packages built on it) fail
#: as if they were not installed.
_NO_TORCH_PRELUDE = """\
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "pytorch_metric_learning"):
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture
def run_without_torch():
    """``run(code, timeout=300)``: run Python ``code`` (dedented) in a child process where torch
    cannot be imported, as in an install without the torch extra; returns the
    ``CompletedProcess`` (text output captured)."""

    def run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _NO_TORCH_PRELUDE + textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> dict[str, Path]:
    """A zoo, a filled feature cache and a run store that no bad input may change (one per test
    module), and the good target that filled the cache."""
    from gradnca_onnx.cli import main
    from gradnca_onnx.training.store import RunStore

    base = tmp_path_factory.mktemp("bad-inputs")
    zoo = copy_zoo(base / "zoo")
    target = small_target(base / "good.npz")
    cache = base / "cache"
    res = CliRunner().invoke(main, ["rank", "--quiet", "--zoo", str(zoo), "--target",
                                    str(target), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    store = base / "runs.sqlite"
    RunStore(store).close()
    return {"zoo": zoo, "cache": cache, "store": store, "target": target}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo zoo, the first 150 images of its target (fast), and a feature cache for the
    module."""
    from gradnca_onnx.data.load import load_target
    from gradnca_onnx.demo import demo_paths
    from gradnca_onnx.engine import FeatureCache

    zoo, target = demo_paths()
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    return zoo, load_target(target).subset(np.arange(150)), cache
