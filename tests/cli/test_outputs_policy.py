"""Outputs replace nothing but a regular file that is
not an input, zoo-supplied strings are escaped on the terminal, and a closed output pipe
(``| head``) ends quietly.

Every refusal: exit 2, one ``Error:`` line naming the option, and nothing changed on disk
(the path refused, the zoo, the cache and the run store byte-identical afterwards).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from _support import TRUTH, copy_zoo, edit_manifest, snapshot
from gradnca_onnx.cli import main
from gradnca_onnx.io.atomic import atomic_write_bytes

# ------------------------------------------------------------------------------ helpers


def _refused(argv: list[str], needle: str, *roots: Path) -> str:
    """Run ``argv``; assert exit 2, one Error line holding ``needle``, ``roots`` unchanged."""
    before = snapshot(*roots)
    res = CliRunner().invoke(main, argv)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 2, f"exit {res.exit_code}\n{res.output}\n{res.exc_info}"
    assert len(errors) == 1, res.output
    assert needle.lower() in errors[0].lower(), f"{errors[0]!r} lacks {needle!r}"
    assert snapshot(*roots) == before
    return errors[0]


def _rank(state, *args: str) -> list[str]:
    return ["rank", "--quiet", "--zoo", str(state["zoo"]), "--cache", str(state["cache"]),
            "--target", str(state["target"]), *args]


def _kind(path: Path) -> tuple[int, int, int]:
    """File type, device number and link target identity of ``path`` (without following)."""
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino


def _null_device(path: Path) -> Path:
    """A copy of /dev/null (as the issue's `cp -a /dev/null`)."""
    if not hasattr(os, "mknod") or os.geteuid() != 0:
        pytest.skip("making a character device needs root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def _fifo(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("os.mkfifo is not available on this platform (no FIFOs to refuse)")
    os.mkfifo(path)
    return path


def _link_to_file(path: Path) -> Path:
    (path.parent / "real.csv").write_text("keep me\n")
    path.symlink_to(path.parent / "real.csv")
    return path


def _link_to_stdout(path: Path) -> Path:
    path.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    return path


# -------------------------------------------- item 1: only a new or regular file is replaced


@pytest.mark.parametrize("make, kind", [
    (_null_device, "a character device"),
    (_fifo, "a FIFO"),
    (_link_to_file, "a symbolic link"),
    (_link_to_stdout, "a symbolic link"),
], ids=["char-device", "fifo", "link-to-file", "link-to-stdout"])
def test_rank_out_refuses_what_is_not_a_regular_file(state, tmp_path, make, kind) -> None:
    """Before the fix the temporary file was renamed over it: the device, FIFO or link was
    gone (a FIFO's reader never got data). The check refuses before opening anything, so a
    FIFO cannot block the test."""
    out = make(tmp_path / "out.csv")
    was = _kind(out)
    line = _refused(_rank(state, "--format", "csv", "--out", str(out)), kind,
                    state["zoo"], state["cache"], tmp_path)
    assert "--out" in line and "leave --out out" in line
    assert _kind(out) == was


def test_summarize_out_refuses_a_fifo(state, tmp_path) -> None:
    out = _fifo(tmp_path / "truth.csv")
    _refused(["finetune", "summarize", "--store", str(state["store"]), "--out", str(out)],
             "a FIFO", state["store"], tmp_path)
    assert stat.S_ISFIFO(os.lstat(out).st_mode)


def test_finetune_store_that_is_a_device_is_refused(state, tmp_path) -> None:
    """SQLite took a copy of /dev/null for an empty store: runs written into it were lost,
    and it left a journal file beside it. Refused before SQLite opens it."""
    pytest.importorskip("torch")
    store = _null_device(tmp_path / "runs.sqlite")
    argv = ["finetune", "--source", "resnet18", "--target", str(state["target"]), "--store",
            str(store), "--batch-size", "8"]
    line = _refused(argv, "a character device", tmp_path)
    assert "--store" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_evaluate_plot_file_that_is_a_link_is_refused(tmp_path) -> None:
    """``evaluate --plot DIR``: matplotlib wrote through a link in DIR (here onto the truth
    file itself); each file the plot writes is checked first."""
    pytest.importorskip("matplotlib")
    truth = tmp_path / "truth.csv"
    truth.write_text(TRUTH)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "scatter_grid.png").symlink_to(truth)
    line = _refused(["evaluate", "--truth", str(truth), "--scores", f"m={truth}", "--plot",
                     str(plots)], "a symbolic link", tmp_path)
    assert "--plot" in line and "scatter_grid.png" in line


@pytest.mark.parametrize("make", [_fifo, _link_to_file], ids=["fifo", "link"])
def test_atomic_writer_refuses_a_non_regular_file(tmp_path, make) -> None:
    target = make(tmp_path / "out.bin")
    was, names = _kind(target), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_bytes(target, b"data")
    assert _kind(target) == was
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary file left


def test_atomic_writer_rechecks_right_before_the_rename(tmp_path, monkeypatch) -> None:
    """A FIFO that appears while the data is written is not replaced either (the check at
    the start alone would miss it)."""
    target = tmp_path / "out.bin"
    real_fsync = os.fsync

    def fsync_then_fifo(fd: int) -> None:
        real_fsync(fd)
        os.mkfifo(target)

    monkeypatch.setattr(os, "fsync", fsync_then_fifo)
    with pytest.raises(OSError, match="a FIFO"):
        atomic_write_bytes(target, b"data")
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary file left


def test_atomic_writer_still_replaces_a_regular_file(tmp_path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


# ------------------------------------------------- item 2: an output is never one of the inputs


def test_rank_out_is_the_target(state, tmp_path) -> None:
    target = tmp_path / "t.npz"
    shutil.copy(state["target"], target)
    argv = ["rank", "--quiet", "--zoo", str(state["zoo"]), "--cache", str(state["cache"]),
            "--target", str(target), "--format", "csv", "--out", str(target)]
    line = _refused(argv, "is the --target input", state["zoo"], state["cache"], tmp_path)
    assert str(target) in line


def test_rank_out_is_the_target_through_a_hard_link(state, tmp_path) -> None:
    target = tmp_path / "t.npz"
    shutil.copy(state["target"], target)
    os.link(target, tmp_path / "same.npz")
    argv = ["rank", "--quiet", "--zoo", str(state["zoo"]), "--cache", str(state["cache"]),
            "--target", str(target), "--out", str(tmp_path / "same.npz")]
    _refused(argv, "is the --target input", state["zoo"], state["cache"], tmp_path)


def test_rank_out_inside_the_zoo(state) -> None:
    manifest = state["zoo"] / "adrenal" / "manifest.json"
    line = _refused(_rank(state, "--format", "json", "--out", str(manifest)),
                    "inside the --zoo directory", state["zoo"], state["cache"])
    assert str(manifest) in line


def test_rank_out_inside_the_cache(state) -> None:
    _refused(_rank(state, "--out", str(state["cache"] / "r.csv")),
             "inside the --cache directory", state["zoo"], state["cache"])


def test_rank_cache_inside_the_zoo(state, tmp_path) -> None:
    zoo = copy_zoo(tmp_path / "zoo")
    argv = ["rank", "--quiet", "--zoo", str(zoo), "--target", str(state["target"]),
            "--cache", str(zoo / "cache")]
    _refused(argv, "--cache", tmp_path)
    assert not (zoo / "cache").exists()


def test_rank_plot_inside_the_zoo(state) -> None:
    _refused(_rank(state, "--resamples", "5", "--plot", str(state["zoo"] / "plots")),
             "inside the --zoo directory", state["zoo"], state["cache"])
    assert not (state["zoo"] / "plots").exists()


def test_summarize_out_is_the_store(state) -> None:
    """Before the fix the SQLite run store was overwritten by the CSV (every run lost)."""
    store = state["store"]
    _refused(["finetune", "summarize", "--store", str(store), "--out", str(store)],
             "is the --store input", store)


def test_evaluate_plot_file_is_an_input(tmp_path) -> None:
    """A truth file whose name is one the plot writes, in the --plot directory."""
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    plots.mkdir()
    truth = plots / "tau_heatmap.png"
    truth.write_text(TRUTH)
    _refused(["evaluate", "--truth", str(truth), "--scores", f"m={truth}", "--plot",
              str(plots)], "is the --truth input", tmp_path)


def test_import_force_cannot_delete_its_own_input(state, tmp_path) -> None:
    """``import ZOO/m/x.onnx --name m --force`` replaced ZOO/m whole, the model file with it."""
    pytest.importorskip("torch")
    zoo = copy_zoo(tmp_path / "zoo", ("adrenal",))
    model = zoo / "adrenal" / "features.onnx"
    _refused(["import", str(model), "--name", "adrenal", "--out", str(zoo), "--force"],
             "which --force replaces", tmp_path)


def test_import_out_inside_the_feature_cache(state, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADNCA_CACHE", str(state["cache"]))
    model = state["zoo"] / "adrenal" / "features.onnx"
    _refused(["import", str(model), "--name", "m", "--out", str(state["cache"] / "zoo")],
             "inside the feature cache directory", state["zoo"], state["cache"])
    assert not (state["cache"] / "zoo").exists()


# ------------------------------------------------------- item 15: zoo strings on the terminal

HOSTILE = "x\x1b[2Jy\rz\u202ew"
RAW = ("\x1b", "\r", "\u202e")


@pytest.fixture(scope="module")
def hostile_zoo(tmp_path_factory) -> Path:
    """A zoo whose member directory name and ``pretrained_on`` hold ESC, CR and RLO."""
    zoo = copy_zoo(tmp_path_factory.mktemp("hostile") / "zoo")
    edit_manifest(zoo / "retina", lambda d: d.update(pretrained_on=HOSTILE))
    (zoo / "adrenal").rename(zoo / f"adr{HOSTILE}")
    return zoo


def _assert_escaped(text: str) -> None:
    assert not any(c in text for c in RAW), repr(text)
    assert "x\\x1b[2Jy\\x0dz\\u202ew" in text, text


def test_rank_table_escapes_zoo_strings(state, hostile_zoo) -> None:
    res = CliRunner().invoke(main, ["rank", "--quiet", "--zoo", str(hostile_zoo), "--cache",
                                    str(state["cache"]), "--target", str(state["target"])])
    assert res.exit_code == 0, res.output
    _assert_escaped(res.stdout)  # the pre-trained on cell and the failed member's row
    assert "adrx\\x1b[2J" in res.stdout
    _assert_escaped(res.stderr)  # the Warning line naming the member that was not scored


def test_zoo_ls_escapes_zoo_strings(hostile_zoo) -> None:
    res = CliRunner().invoke(main, ["zoo", "ls", str(hostile_zoo)])
    assert res.exit_code == 1, res.output  # one broken member
    _assert_escaped(res.output)


def test_printable_escapes_controls_and_bidi_only() -> None:
    from gradnca_onnx.results.text import printable

    assert printable("a\tb\nc\x7f\x9b\u200f\u2066d") == "a\\x09b\\x0ac\\x7f\\x9b\\u200f\\u2066d"
    assert printable("Grüße 日本 C:\\zoo") == "Grüße 日本 C:\\zoo"


# --------------------------------------------------- item 19 (part): `cache ls | head` is quiet


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gradnca_onnx.cli import main; main()", *args]


@pytest.mark.parametrize("command", ["cache-ls", "rank-csv"])
def test_closed_stdout_pipe_ends_quietly(state, command) -> None:
    """The reader is gone before the first write (deterministic, unlike a race with head):
    no Error line, no Python complaint at exit, the status a shell gives ``ls | head``."""
    args = (["cache", "ls", "--cache", str(state["cache"])] if command == "cache-ls" else
            _rank(state, "--format", "csv"))
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Error" not in err and "Exception" not in err and "Traceback" not in err, err


def test_cache_ls_into_head(state, tmp_path) -> None:
    """The user's pipe, ``cache ls | head -n 1``, on a cache whose listing (~110 KB) is more
    than a pipe holds, so the listing cannot finish before head has gone (no race)."""
    if shutil.which("head") is None:
        pytest.skip("the head command is not installed: this test pipes the listing into it")
    entry = next(p for p in state["cache"].rglob("*.npz"))
    for i in range(1000):
        key = f"{i:064x}"
        (tmp_path / key[:2]).mkdir(exist_ok=True)
        shutil.copyfile(entry, tmp_path / key[:2] / f"{key}.npz")
    cmd = " ".join(f"'{a}'" for a in _cli("cache", "ls", "--cache", str(tmp_path)))
    res = subprocess.run(f"{cmd} | head -n 1", shell=True, capture_output=True, text=True,
                         timeout=120)
    assert len(res.stdout.splitlines()) == 1
    assert "Error" not in res.stderr and "Exception" not in res.stderr, res.stderr
