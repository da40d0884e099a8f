"""The layers of the package (``.importlinter``): each imports only the layers below it, no
import circle inside any package, and nothing that ranks imports torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"

pytest.importorskip("importlinter", reason="import-linter is in the test extra")


def lint(path: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package found first on ``path`` (no cache written anywhere)."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([sys.executable, "-c",
                           "import sys; from importlinter.cli import lint_imports_command as c; "
                           "sys.argv = ['lint-imports', sys.argv[1], '--no-cache']; c()",
                           str(CONFIG)], capture_output=True, text=True, env=env, cwd=path)


def test_import_contracts_hold():
    res = lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 3 kept, 0 broken." in res.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("core/__init__.py", "from ..engine import rank_zoo", "Each layer imports only"),
    ("data/dataset.py", "from . import load", "No import circle"),
    ("metrics/base.py", "import torch", "Ranking never imports torch"),
])
def test_each_contract_catches_its_break(tmp_path, module, line, contract):
    """A copy of the package with one upward import, one circle or one torch import added
    breaks the contract that forbids it (the contracts are not vacuous)."""
    pkg = tmp_path / "gradnca_onnx"
    shutil.copytree(ROOT / "gradnca_onnx", pkg,
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "resources"))
    with open(pkg / module, "a") as f:
        f.write(f"\n{line}  # noqa\n")
    res = lint(tmp_path)
    assert res.returncode != 0, res.stdout
    # (an upward import between top-level packages is also a circle among them)
    broken = [ln for ln in res.stdout.splitlines() if "BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken), res.stdout
