"""mypy on the public API, as pyproject.toml's ``[tool.mypy]`` configures it: the top-level
package and the modules that define its ``__all__`` pass with every ``--strict`` flag, and the
lazily imported top-level names have their real types (not ``Any``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gradnca_onnx as g

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mypy", reason="mypy is in the test extra")

#: Code appended to every checked module of a copy of the package, each line breaking one
#: strict flag (the error code mypy gives it): the strictness is shown to apply, module by
#: module.
VIOLATIONS = {
    "no-untyped-def": "def _untyped_for_test(x):\n    return x\n",  # disallow_untyped_defs
    "type-arg": "def _bare_for_test() -> list:\n    return []\n",  # disallow_any_generics
    "no-any-return": ("def _any_for_test() -> int:\n    import json\n\n"
                      "    return json.loads('1')\n"),  # warn_return_any
    "unused-ignore": "_ignored_for_test = 1  # type: ignore[assignment]\n",  # warn_unused_ignores
}


def mypy(*args: str, cwd: Path, cache: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m mypy`` in ``cwd`` (whose pyproject.toml configures it), caching in ``cache``
    so that nothing is written into the checkout."""
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *args],
                          cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def config() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mypy"]


def strict_modules(cfg: dict[str, Any]) -> list[str]:
    """The modules of the override that turns the strict flags on."""
    (strict,) = [o for o in cfg["overrides"] if o.get("disallow_untyped_defs")]
    return list(strict["module"])


def module_of(file: str) -> str:
    """``gradnca_onnx/scores/__init__.py`` -> ``gradnca_onnx.scores``."""
    parts = Path(file).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the runs on the checkout (the second reuses the first's analysis)."""
    return tmp_path_factory.mktemp("mypy-cache")


def test_public_api_passes_strict_mypy(cache: Path) -> None:
    res = mypy(cwd=ROOT, cache=cache)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # An override naming a module that is not checked (a typo, a moved module) would leave it
    # unchecked while the run passes.
    assert "unused section" not in out, out


def test_config_checks_every_module_that_defines_the_public_api() -> None:
    cfg = config()
    strict = strict_modules(cfg)
    assert sorted(strict) == sorted(module_of(f) for f in cfg["files"])
    assert cfg["follow_imports"] == "silent"
    defining = {getattr(g, name).__module__ for name in g.__all__ if name != "__version__"}
    missing = sorted(defining - set(strict))
    assert not missing, f"add {missing} to [tool.mypy] files and the strict override"


def test_lazy_top_level_names_have_their_types(cache: Path, tmp_path: Path) -> None:
    """mypy sees what each lazily imported name is (``combine`` was typed as the submodule of
    that name) and so catches a wrong argument to :func:`gradnca_onnx.rank`."""
    lazy = sorted(g._LAZY)
    snippet = tmp_path / "uses_api.py"
    snippet.write_text("import gradnca_onnx as g\n\n"
                       + "".join(f"reveal_type(g.{name})\n" for name in lazy)
                       + 'g.rank("zoo", "target", threads="x")\n')
    # MYPYPATH: the checkout's package, whatever is installed.
    res = mypy(str(snippet), cwd=ROOT, cache=cache, env={"MYPYPATH": str(ROOT)})
    out = res.stdout + res.stderr
    revealed = re.findall(r'Revealed type is "(.*)"', out)
    assert len(revealed) == len(lazy), out
    for name, typ in zip(lazy, revealed):
        assert typ != "Any" and "ModuleType" not in typ, f"g.{name}: {typ}"
    assert res.returncode == 1, out
    assert re.search(r'uses_api\.py:\d+: error: Argument "threads" to "rank" has incompatible '
                     r'type "str"; expected "(int \| None|Optional\[int\])"', out), out


def test_strict_flags_catch_their_errors_in_every_public_module(tmp_path: Path) -> None:
    """The same configuration on a copy of the package with one violation of each of four
    strict flags appended to every checked module: each is reported in each module."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "gradnca_onnx", tmp_path / "gradnca_onnx",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "resources"))
    files = config()["files"]
    for file in files:
        with open(tmp_path / file, "a") as f:
            f.write("\n\n" + "\n\n".join(VIOLATIONS.values()))
    res = mypy(cwd=tmp_path, cache=tmp_path / "cache")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    for file in files:
        for code in VIOLATIONS:
            assert re.search(rf"^{re.escape(file)}:\d+: error: .*\[{code}\]$", out,
                             re.MULTILINE), f"{file}: no [{code}] error\n{out}"
