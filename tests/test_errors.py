"""The package's one exception hierarchy, and what the command line does with each kind: errors
of ours and file errors become one line and exit code 2, anything else (a bug) keeps its
traceback."""

from __future__ import annotations

import errno
import sys

import pytest
from click.testing import CliRunner

from gradnca_onnx import errors
from gradnca_onnx.cli import cache as cache_cli
from gradnca_onnx.cli import main


def _run_cache_ls_raising(monkeypatch, tmp_path, exc: BaseException):
    def boom(cache_dir):
        raise exc

    monkeypatch.setattr(cache_cli, "_cache", boom)
    return CliRunner().invoke(main, ["cache", "ls", "--cache", str(tmp_path)])


def test_a_bug_inside_a_command_keeps_its_traceback(monkeypatch, tmp_path):
    bug = ValueError("operands could not be broadcast together with shapes (3,) (4,)")
    result = _run_cache_ls_raising(monkeypatch, tmp_path, bug)
    assert result.exception is bug  # propagated, not turned into "Error: ..."
    assert result.exit_code == 1
    assert "Error:" not in result.output


@pytest.mark.parametrize("exc", [errors.InputError("--target x.npz: no labels; give labels"),
                                 errors.ZooError("zoo/m/manifest.json: field 'x' bad"),
                                 errors.SourceError("unknown timm model 'x'"),
                                 errors.MissingExtraError("plots need matplotlib; install it"),
                                 FileNotFoundError(errno.ENOENT, "No such file", "/no/such")])
def test_errors_of_ours_and_file_errors_are_one_line_and_exit_2(monkeypatch, tmp_path, exc):
    result = _run_cache_ls_raising(monkeypatch, tmp_path, exc)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")


def test_an_os_error_that_names_no_file_is_a_bug(monkeypatch, tmp_path):
    bug = OSError(errno.EBADF, "Bad file descriptor")
    result = _run_cache_ls_raising(monkeypatch, tmp_path, bug)
    assert result.exception is bug and result.exit_code == 1


def test_the_hierarchy_keeps_the_builtin_types_callers_catch():
    assert issubclass(errors.InputError, ValueError)
    assert issubclass(errors.ZooError, errors.InputError)
    assert issubclass(errors.UnsupportedOperatorError, errors.GradientGraphError)
    assert issubclass(errors.GradientGraphError, errors.SourceError)
    assert issubclass(errors.MissingExtraError, ImportError)
    assert issubclass(errors.NotRegularFileError, FileExistsError)
    for w in (errors.DegenerateScoreWarning, errors.ConstantTermWarning,
              errors.MissingValueWarning):
        assert issubclass(w, errors.GradncaWarning) and issubclass(w, UserWarning)


def test_old_import_locations_name_the_same_classes():
    from gradnca_onnx.cli._errors import UserInputError
    from gradnca_onnx.evaluation.correlation import MissingValueWarning
    from gradnca_onnx.exporters.errors import GradientGraphError
    from gradnca_onnx.importers.errors import UnsupportedOperatorError
    from gradnca_onnx.metrics._common import DegenerateScoreWarning
    from gradnca_onnx.scores.combine import ConstantTermWarning

    assert UserInputError is errors.InputError
    assert GradientGraphError is errors.GradientGraphError
    assert UnsupportedOperatorError is errors.UnsupportedOperatorError
    assert (MissingValueWarning, DegenerateScoreWarning, ConstantTermWarning) == (
        errors.MissingValueWarning, errors.DegenerateScoreWarning, errors.ConstantTermWarning)


def test_first_line_and_one_line():
    assert errors.first_line(RuntimeError("\n  first  \nsecond")) == "first"
    assert errors.first_line(RuntimeError("x" * 500), 10) == "x" * 10
    assert errors.first_line(KeyError()) == "KeyError"
    assert errors.one_line(errors.InputError("bad\n input")) == "bad input"
    assert errors.one_line(ZeroDivisionError("division by zero")) == \
        "ZeroDivisionError: division by zero"


def test_optional_import_names_the_extra(monkeypatch):
    # import fails as when not installed, whether or not an earlier test imported pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(errors.MissingExtraError, match=r"plots needs the matplotlib package.*"
                                                       r"gradnca-onnx\[plot\]"):
        errors.optional_import("matplotlib.pyplot", "plot", "plots")
    assert errors.optional_import("json", "plot", "x").__name__ == "json"
