"""The command line imports a sub-command's module only when that command runs or ``--help``
lists it, and the command modules import nothing from ``gradnca_onnx.cli`` itself (no import
circle held together by import order)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import click
from click.testing import CliRunner

import gradnca_onnx.cli as cli
from gradnca_onnx.cli import main
from gradnca_onnx.cli._commands import COMMANDS

CLI_DIR = Path(cli.__file__).parent


def _loaded_command_modules(code: str) -> set[str]:
    probe = code + textwrap.dedent("""
        import sys
        from gradnca_onnx.cli._commands import COMMANDS
        mods = {"gradnca_onnx.cli." + v.split(":")[0] for v in COMMANDS.values()}
        print("loaded:" + ",".join(sorted(m for m in mods if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("loaded:")][-1]
    return set(filter(None, line[len("loaded:"):].split(",")))


def test_importing_the_cli_loads_no_command() -> None:
    assert _loaded_command_modules("import gradnca_onnx.cli\n") == set()


def test_a_command_loads_its_own_module_only() -> None:
    code = textwrap.dedent("""
        from click.testing import CliRunner
        from gradnca_onnx.cli import main
        assert CliRunner().invoke(main, ["rank", "--help"]).exit_code == 0
        assert CliRunner().invoke(main, ["cache", "ls", "--help"]).exit_code == 0
    """)
    assert _loaded_command_modules(code) == {"gradnca_onnx.cli.rank", "gradnca_onnx.cli.cache"}


def test_help_lists_every_command() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    listed = [line.split()[0] for line in res.output.split("Commands:")[1].splitlines()
              if line.strip()]
    assert listed == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert isinstance(command, click.Command) and command.name == name


def test_no_command_module_imports_the_cli_package() -> None:
    """``from . import main`` (or anything else of ``gradnca_onnx.cli``'s own namespace)
    in a command module would make the circle again."""
    for module in sorted({v.split(":")[0] for v in COMMANDS.values()}):
        tree = ast.parse((CLI_DIR / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module is not None, f"{module}.py imports from the cli package"
