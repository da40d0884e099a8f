"""One copy of the weights per member: the graphs share ``weights.bin`` (ONNX external data).

The numbers the graphs compute are checked elsewhere against torch (every export test loads
the shared file); here: each weight is stored once, the graphs run as before, the manifest's
sha256 covers the shared file, and a member costs about its checkpoint on disk.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from gradnca_onnx.errors import InputError
from gradnca_onnx.exporters.api import export_model
from gradnca_onnx.exporters.weights import INLINE_BYTES, share_weights
from gradnca_onnx.sources import from_module
from gradnca_onnx.zoo import WEIGHTS_FILE, load_manifest


from _support import small_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _matmul_graph(weight: np.ndarray, extra: np.ndarray | None = None,
                  typed: bool = False) -> onnx.ModelProto:
    """``y = x @ weight (+ extra)``: one big initializer, maybe a second, and a small one."""
    w = numpy_helper.from_array(weight, "w")
    if typed:  # stored in float_data, not raw_data, as some writers do
        w = helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel().tolist())
    inits = [w, numpy_helper.from_array(np.array([2], np.int64), "small")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"])]
    if extra is not None:
        inits.append(numpy_helper.from_array(extra, "b"))
        nodes.append(helper.make_node("Add", ["y0", "b"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["y0"], ["y"]))
    n = weight.shape[0]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def test_each_distinct_tensor_is_stored_once(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)           # 8 KiB, in both graphs
    b = rng.standard_normal((1, 32)).astype(np.float32)             # 128 B: stays inline
    onnx.save(_matmul_graph(w), tmp_path / "a.onnx")
    onnx.save(_matmul_graph(w, b, typed=True), tmp_path / "b.onnx")
    x = rng.standard_normal((1, 64)).astype(np.float32)
    before = [_run(tmp_path / n, x) for n in ("a.onnx", "b.onnx")]

    size = share_weights(tmp_path, ["a.onnx", "b.onnx"])
    assert size == w.nbytes == (tmp_path / WEIGHTS_FILE).stat().st_size
    for name, want in zip(("a.onnx", "b.onnx"), before):
        np.testing.assert_array_equal(_run(tmp_path / name, x), want)  # the same bytes
        model = onnx.load(tmp_path / name, load_external_data=False)
        by_name = {t.name: t for t in model.graph.initializer}
        assert by_name["w"].data_location == TensorProto.EXTERNAL
        assert by_name["small"].data_location == TensorProto.DEFAULT
        if "b" in by_name:
            assert by_name["b"].data_location == TensorProto.DEFAULT  # under INLINE_BYTES
    assert b.nbytes < INLINE_BYTES <= w.nbytes


def test_a_graph_with_its_own_side_file_joins_the_shared_file(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    onnx.save_model(_matmul_graph(w), tmp_path / "big.onnx", save_as_external_data=True,
                    location="big.onnx.data", size_threshold=0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    want = _run(tmp_path / "big.onnx", x)
    share_weights(tmp_path, ["big.onnx"])
    assert not (tmp_path / "big.onnx.data").exists()
    np.testing.assert_array_equal(_run(tmp_path / "big.onnx", x), want)


def test_graphs_without_large_tensors_get_no_side_file(tmp_path):
    onnx.save(_matmul_graph(np.ones((4, 4), np.float32)), tmp_path / "tiny.onnx")
    assert share_weights(tmp_path, ["tiny.onnx"]) == 0
    assert not (tmp_path / WEIGHTS_FILE).exists()


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return export_model(from_module(small_cnn(), name="cnn"), root, input_size=28,
                        norm="half", grads_batch=4)


def _checkpoint_bytes(module: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def test_an_exported_member_stores_its_weights_once(member):
    m = load_manifest(member)
    graphs = sorted(p.name for p in member.glob("*.onnx"))
    assert graphs == ["backward.onnx", "features.onnx", "forward.onnx", "grads.onnx"]
    assert WEIGHTS_FILE in m.files  # listed, so hashed and verified like the graphs
    digest = hashlib.sha256((member / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert m.files[WEIGHTS_FILE].sha256 == digest
    params = {p.detach().numpy().tobytes() for p in small_cnn().parameters()
              if p.numel() * 4 >= INLINE_BYTES}
    shared = (member / WEIGHTS_FILE).read_bytes()
    for raw in params:  # every checkpoint weight is in the shared file, once
        assert shared.count(raw) == 1
    for g in graphs:
        model = onnx.load(member / g, load_external_data=False)
        for t in model.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                assert info["location"] == WEIGHTS_FILE
    on_disk = sum(p.stat().st_size for p in member.iterdir())
    # The graphs' own protobuf (nodes, small constants) is the rest; at 28 px no small-map
    # matrix (exporters.vjp_trace.small_map_convs) is made for this net.
    assert on_disk <= 1.2 * _checkpoint_bytes(small_cnn()) + 200_000, on_disk


def test_the_shared_file_is_verified(member, tmp_path):
    import shutil

    from gradnca_onnx.zoo import verify_files

    copy = tmp_path / "cnn"
    shutil.copytree(member, copy)
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[100] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises((InputError, ValueError), match="sha256"):
        verify_files(copy, load_manifest(copy, verify=False).files)
