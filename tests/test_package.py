"""Packaging: the compiled core is importable, scoring never imports torch, the CLI answers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from click.testing import CliRunner

import gradnca_onnx
from gradnca_onnx.cli import main

HIDE_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class HideTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "pytorch_metric_learning"):
                raise ImportError(f"{name} is hidden for this test")
            return None
    sys.meta_path.insert(0, HideTorch())
    """
)


def test_scoring_works_with_torch_hidden() -> None:
    code = HIDE_TORCH + textwrap.dedent(
        """
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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_core_extension_is_compiled() -> None:
    from gradnca_onnx import _core

    assert _core.__file__.endswith((".so", ".pyd"))
    assert _core.openmp_threads() >= 1


def test_version_flag() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert gradnca_onnx.__version__ in result.output


def test_console_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "gradnca_onnx", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and gradnca_onnx.__version__ in out.stdout
