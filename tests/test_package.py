"""Packaging: the compiled core is importable, scoring never imports torch, the CLI answers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from click.testing import CliRunner

import gradnca_onnx
from gradnca_onnx.cli import main

def test_scoring_works_with_torch_hidden(run_without_torch) -> None:
    out = run_without_torch(
        """
        import sys
        import numpy as np
        import gradnca_onnx as g
        import gradnca_onnx.core, gradnca_onnx.scores, gradnca_onnx.cli
        rng = np.random.default_rng(0)
        X = rng.normal(size=(120, 60)); y = rng.integers(0, 3, 120)
        lp = g.label_prediction_score(X, y)
        loss, grad = g.triplet_loss_grad(X[:20], y[:20])
        s = g.combine([lp, lp + 0.1], [1.0, 2.0])
        assert "torch" not in sys.modules, "torch was imported"
        print("ok", round(lp, 4), s.tolist())
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_core_extension_is_compiled() -> None:
    from gradnca_onnx import _core

    assert _core.__file__.endswith((".so", ".pyd"))


def test_core_openmp_threads_follow_omp_num_threads() -> None:
    """The compiled kernels use the threads OpenMP is given (or one, in a build without
    OpenMP, which then ignores the setting)."""
    code = "from gradnca_onnx import _core; print(_core.openmp_threads())"
    got = {}
    for n in (1, 3):
        env = dict(os.environ, OMP_NUM_THREADS=str(n))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        got[n] = int(out.stdout)
    assert got in ({1: 1, 3: 3}, {1: 1, 3: 1}), got


def test_version_flag() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert gradnca_onnx.__version__ in result.output


def test_console_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "gradnca_onnx", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and gradnca_onnx.__version__ in out.stdout


def _modules_after(code: str) -> set[str]:
    """Top-level modules (and a few heavy submodules) loaded by ``code`` in a fresh process."""
    probe = code + textwrap.dedent("""
        import sys
        heavy = ("torch", "sklearn", "numba", "onnxruntime", "scipy.optimize", "scipy.stats",
                 "gradnca_onnx._core", "gradnca_onnx.metrics", "matplotlib", "ray")
        print("loaded:" + ",".join(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("loaded:")][-1]
    return set(filter(None, line[len("loaded:"):].split(",")))


def test_help_imports_no_heavy_package() -> None:
    """Issue 16: `--help` took 2.3 s importing scipy.optimize, scipy.stats and the core for
    nothing; no command's code is imported until it runs (under 1 s here, not asserted)."""
    loaded = _modules_after(textwrap.dedent("""
        from click.testing import CliRunner
        from gradnca_onnx.cli import main
        for args in (["--help"], ["rank", "--help"], ["export", "--help"], ["evaluate", "--help"]):
            assert CliRunner().invoke(main, args).exit_code == 0
    """))
    assert loaded == set(), loaded


def test_rank_without_metrics_does_not_import_them() -> None:
    """Issue 16: `rank` imported the baseline metrics (scikit-learn's modules, numba: ~3 s)
    even when none was asked for."""
    loaded = _modules_after(textwrap.dedent("""
        from click.testing import CliRunner
        from gradnca_onnx.cli import main
        res = CliRunner().invoke(main, ["rank", "--demo", "--models", "adrenal,retina",
                                        "--no-cache", "--quiet"])
        assert res.exit_code == 0, res.output
    """))
    assert "onnxruntime" in loaded and "gradnca_onnx._core" in loaded
    assert not loaded & {"torch", "numba", "gradnca_onnx.metrics", "matplotlib", "ray"}, loaded
