"""The I/O base (gradnca_onnx.io): atomic writes that respect the umask, sha256 of a file,
the ONNX external-data scan, onnxruntime sessions, and what importing the low layers loads."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gradnca_onnx.errors import InputError, ZooError
from gradnca_onnx.io.atomic import atomic_savez, atomic_write_bytes, atomic_write_text
from gradnca_onnx.io.hashing import sha256_file
from gradnca_onnx.io.onnx_files import external_data, external_data_locations, read_onnx
from gradnca_onnx.io.sessions import cpu_session, run_session, session_options


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("writer", ["bytes", "text", "npz"])
def test_new_files_get_the_mode_open_gives_them(tmp_path, umask, mask, writer) -> None:
    umask(mask)
    path = tmp_path / "out.bin"
    if writer == "bytes":
        atomic_write_bytes(path, b"x")
    elif writer == "text":
        atomic_write_text(path, "x")
    else:  # mkstemp alone would leave the npz at 0600 whatever the umask
        atomic_savez(path, {"a": np.arange(3)})
    assert _mode(path) == 0o666 & ~mask
    with open(tmp_path / "reference", "w"):
        pass
    assert _mode(path) == _mode(tmp_path / "reference")


def test_npz_is_written_whole_under_the_given_name(tmp_path) -> None:
    out = atomic_savez(tmp_path / "sub" / "folds", {"a": np.arange(4), "b": np.eye(2)},
                       compressed=True)
    assert out == tmp_path / "sub" / "folds"  # no ".npz" appended
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["a"], np.arange(4))
        np.testing.assert_array_equal(npz["b"], np.eye(2))
    assert [p.name for p in out.parent.iterdir()] == ["folds"]  # no temporary file left


def test_sha256_of_a_file_spanning_several_chunks(tmp_path) -> None:
    data = os.urandom((1 << 20) * 2 + 17)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_duplicate_images_are_found_by_the_one_file_hash(tmp_path) -> None:
    from gradnca_onnx.data.folders import find_duplicates

    for name, body in (("a", b"same"), ("b", b"other"), ("c", b"same")):
        (tmp_path / name).write_bytes(body)
    groups = find_duplicates([tmp_path / n for n in "abc"])
    assert groups == [[tmp_path / "a", tmp_path / "c"]]


def _external(tensor: TensorProto, location: str) -> TensorProto:
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _model_with_external_data_in_a_subgraph() -> onnx.ModelProto:
    """``y = If(cond, then: Constant (external "then.bin"), else: x)`` plus an initializer in
    "top.bin": external data at the top and inside a control-flow subgraph."""
    const = _external(numpy_helper.from_array(np.ones(2, np.float32), "c"), "then.bin")
    then = helper.make_graph([helper.make_node("Constant", [], ["t"], value=const)], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["w"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    w = _external(numpy_helper.from_array(np.ones(2, np.float32), "w"), "top.bin")
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_external_data_scan_reaches_subgraphs(tmp_path) -> None:
    model = _model_with_external_data_in_a_subgraph()
    assert external_data_locations(model) == ["top.bin", "then.bin"]
    assert sorted(t.name for t, _ in external_data(model)) == ["c", "w"]
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert external_data_locations(read_onnx(path)) == ["top.bin", "then.bin"]


def test_importer_refuses_external_data_hidden_in_a_subgraph(tmp_path) -> None:
    from gradnca_onnx.importers import check_external_data

    (tmp_path / "top.bin").write_bytes(b"\0" * 8)
    with pytest.raises(InputError, match="'c' stores its data at 'then.bin'.*missing"):
        check_external_data(_model_with_external_data_in_a_subgraph(), tmp_path)


def test_engine_refuses_a_member_graph_with_unlisted_external_data_in_a_subgraph(tmp_path):
    from types import SimpleNamespace

    from gradnca_onnx.engine.runtime import check_graph_file

    (tmp_path / "features.onnx").write_bytes(
        _model_with_external_data_in_a_subgraph().SerializeToString())
    listed = SimpleNamespace(files={"features.onnx": None, "top.bin": None})
    with pytest.raises(InputError, match="external data file 'then.bin' is not listed"):
        check_graph_file(tmp_path, "features.onnx", listed)  # type: ignore[arg-type]


def test_unreadable_onnx_file_is_one_input_error_naming_it(tmp_path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(InputError, match=r"junk\.onnx is not an ONNX model \(.+\); re-export"):
        read_onnx(junk, hint="re-export the model")


def _identity_file(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_cpu_session_runs_with_the_manifest_level(tmp_path) -> None:
    sess = cpu_session(_identity_file(tmp_path), "disable_all", threads=1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(run_session(sess, ["y"], {"x": x}, where="relu.onnx")[0],
                                  [[0.0, 2.0]])
    with pytest.raises(ZooError, match="relu.onnx: onnxruntime cannot run the graph"):
        run_session(sess, ["y"], {"x": np.zeros((1, 3), np.float32)}, where="relu.onnx")


def test_unknown_optimisation_level_is_a_zoo_error() -> None:
    with pytest.raises(ZooError, match="unknown onnxruntime optimisation level 'fast'"):
        session_options("fast")


_LOADED = """
import sys
{setup}
import {module}
mods = sorted(m for m in sys.modules
              if m in ("PIL", "torch", "onnxruntime") or m.startswith("gradnca_onnx.data"))
print(",".join(mods))
"""

#: Makes ``gradnca_onnx.cli`` an empty package, so that what is measured is the error module's
#: own imports, not the sub-commands that the CLI package's ``__init__`` registers.
_BARE_CLI = """
import pathlib, types
import gradnca_onnx
cli = types.ModuleType("gradnca_onnx.cli")
cli.__path__ = [str(pathlib.Path(gradnca_onnx.__file__).parent / "cli")]
sys.modules["gradnca_onnx.cli"] = cli
"""


@pytest.mark.parametrize("module, setup", [("gradnca_onnx.zoo", ""),
                                           ("gradnca_onnx.zoo.publish", ""),
                                           ("gradnca_onnx.io", ""),
                                           ("gradnca_onnx.cli._errors", _BARE_CLI)])
def test_low_layers_load_neither_pillow_nor_the_data_package(module, setup) -> None:
    code = _LOADED.format(module=module, setup=setup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("labels, needle", [
    (np.r_[np.nan, np.arange(5) % 2], r"must be integers; got non-integer values \(e\.g\. NaN\)"),
    (np.r_[0.5, np.arange(5) % 2], r"must be integers; got non-integer values \(e\.g\. 0\.5\)"),
    (np.zeros(6), r"only 1 class \(\[0\.0\]\); at least 2 distinct classes"),
    (np.arange(5) % 2, r"has 5 entries but there are 6 "),
])
def test_the_api_and_the_targets_check_labels_alike(labels, needle) -> None:
    from gradnca_onnx.data import from_arrays
    from gradnca_onnx.metrics import logme

    features = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(InputError, match=needle):
        logme(features, labels)
    with pytest.raises(InputError, match=needle):
        from_arrays(np.zeros((6, 4, 4), np.uint8), labels)


def test_label_values_are_coded_in_sorted_order() -> None:
    from gradnca_onnx._validation import check_labels

    codes, classes = check_labels(np.array([["b"], ["a"], ["c"], ["a"]]), 4)
    assert codes.tolist() == [1, 0, 2, 0] and classes.tolist() == ["a", "b", "c"]


@pytest.mark.parametrize("labels, needle", [
    (np.r_[1e12, np.arange(5) % 2], "too large"),
    (np.r_[-1, np.arange(5) % 2], "class codes 0..C-1; got -1"),
    (np.array([["a"], ["b"]] * 3), "must be integers; got dtype <U1"),
    (np.full((6, 3), 2), r"multi-label labels \(N, 3\) must be 0/1"),
])
def test_stored_label_codes_are_refused_with_the_reason(labels, needle) -> None:
    from gradnca_onnx._validation import check_label_codes

    with pytest.raises(InputError, match=needle):
        check_label_codes(labels, 6, name="t.npz train labels")
    ok = check_label_codes(np.array([[0], [2], [2], [0], [2], [0]]), 6)
    assert ok.dtype == np.int64 and ok.tolist() == [0, 2, 2, 0, 2, 0]  # codes kept, not recoded
