"""``gradnca-onnx import``: plain ONNX classifiers into zoo model directories.

Every number is checked against a reference computed here: features and logits against
onnxruntime on the original ONNX file (relative L2 error <= 1e-5, fp32 both sides), gradients
against a float64 torch autograd reference written independently of the importer, or, for
models first exported by this project, against the original export's grads.onnx (ratio
||grad W2|| / ||grad W1|| within 1e-4 relative).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from gradnca_onnx.cli import main
from gradnca_onnx.engine.batching import open_session, run_grads
from gradnca_onnx.exporters import export_model
from gradnca_onnx.importers import import_onnx, load_onnx
from gradnca_onnx.io.hashing import sha256_file
from gradnca_onnx.sources import from_module
from gradnca_onnx.zoo import load_manifest

FEAT_TOL = 1e-5
GRAD_TOL = 1e-4
K = 5


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _grads(model_dir: Path, x: np.ndarray, c: np.ndarray):
    _, g1, g2 = run_grads(open_session(model_dir, "grads"), x, c)
    return g1, g2, float(np.linalg.norm(g2) / np.linalg.norm(g1))


def _cli(*args) -> "object":
    return CliRunner().invoke(main, [str(a) for a in args])


# Tiny tensors on a shared 2-core machine: one thread is fastest and keeps runs deterministic.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- helper-API models


def _init(rng: np.random.Generator, name: str, shape, scale: float = 0.3) -> TensorProto:
    return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32), name)


def _model(nodes, inits, *, inp, out="probs", opset: int = 13, extra_outputs=(),
           domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "classifier", [inp],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
        + [helper.make_tensor_value_info(n, t, None) for n, t in extra_outputs], inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=ops)


def keras_like(opset: int = 13) -> onnx.ModelProto:
    """NHWC input and its transpose, asymmetric 'SAME' stride-2 pads, BatchNorm, a grouped conv
    with auto_pad, hard-swish as HardSigmoid*x, Clip with input bounds, a Gemm head
    (transB), softmax, and an ArgMax output that nothing upstream of the features needs."""
    rng = np.random.default_rng(7)
    inits = [
        _init(rng, "w1", (8, 3, 3, 3)), _init(rng, "b1", (8,), 0.1),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(8)).astype(np.float32), "bn_s"),
        _init(rng, "bn_b", (8,), 0.1), _init(rng, "bn_m", (8,), 0.1),
        numpy_helper.from_array((0.5 + rng.random(8)).astype(np.float32), "bn_v"),
        _init(rng, "w2", (8, 2, 3, 3), 0.4),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        _init(rng, "w3", (16, 8, 1, 1), 0.4), _init(rng, "b3", (16,), 0.1),
        _init(rng, "wg", (K, 16), 0.5), _init(rng, "bg", (K,), 0.1),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], "to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], "stem", strides=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"],
                         "stem_bn", epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"], "stem_relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "grouped", group=4, auto_pad="SAME_UPPER"),
        helper.make_node("HardSigmoid", ["c2"], ["hs"], "gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["c2", "hs"], ["hsw"], "hswish"),
        helper.make_node("Clip", ["hsw", "lo", "hi"], ["cl"], "relu6"),
        helper.make_node("Conv", ["cl", "w3", "b3"], ["c3"], "pointwise"),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"], "pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"], "dense", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], "softmax", axis=1),
        helper.make_node("ArgMax", ["logits"], ["cls"], "argmax", axis=1),
    ]
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 28, 28, 3])
    return _model(nodes, inits, inp=inp, opset=opset, extra_outputs=[("cls", TensorProto.INT64)])


def keras_like_reference(model: onnx.ModelProto, x_nchw: np.ndarray, c: np.ndarray):
    """Float64 torch replica of :func:`keras_like`: features, and d<features, c>/d(w1, w2)."""
    w = {t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64)
         for t in model.graph.initializer}
    w1 = w["w1"].clone().requires_grad_()
    w2 = w["w2"].clone().requires_grad_()
    x = torch.tensor(x_nchw, dtype=torch.float64)
    h = F.conv2d(F.pad(x, [0, 1, 0, 1]), w1, w["b1"], stride=2)
    h = torch.relu(F.batch_norm(h, w["bn_m"], w["bn_v"], w["bn_s"], w["bn_b"], False, 0.0, 1e-3))
    h = F.conv2d(h, w2, None, padding=1, groups=4)
    h = torch.clamp(h * torch.clamp(h / 6 + 0.5, 0, 1), 0, 6)
    feats = F.conv2d(h, w["w3"], w["b3"]).mean(dim=(2, 3))
    g1, g2 = torch.autograd.grad((feats * torch.tensor(c, dtype=torch.float64)).sum(), [w1, w2])
    return feats.detach().numpy(), g1.numpy(), g2.numpy()


def _ort_outputs(model: onnx.ModelProto, x_nhwc: np.ndarray, names) -> list[np.ndarray]:
    """Run the ORIGINAL graph in onnxruntime, exposing intermediate tensors as outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(list(names), {"image": x_nhwc})


def test_helper_model_nhwc_grouped_gemm_external_data(tmp_path):
    model = keras_like()
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(keras_like(), src / "keras.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="keras.weights", size_threshold=0)
    assert (src / "keras.weights").is_file()
    out = import_onnx(src / "keras.onnx", tmp_path / "zoo", name="keras", grads_batch=8)
    m = load_manifest(out)
    assert (m.input.channels, m.input.height, m.input.width) == (3, 28, 28)
    assert (m.feature_dim, m.num_classes) == (16, K)
    opts = m.source.options
    assert opts["input_layout"] == "NHWC" and opts["dropped_transpose"] == "to_nchw"
    assert opts["onnx_nodes"] == {"features": "dense", "conv1": "stem", "conv2": "grouped"}
    assert m.layers.conv2_weight_shape == (8, 2, 3, 3)

    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 28, 28)).astype(np.float32)
    c = rng.standard_normal((6, 16)).astype(np.float32)
    want_f, want_l = _ort_outputs(model, x.transpose(0, 2, 3, 1).copy(), ["flat", "logits"])
    got_f, got_l = open_session(out, "features").run(None, {"images": x})
    assert _rel(got_f, want_f) <= FEAT_TOL and _rel(got_l, want_l) <= FEAT_TOL
    ref_f, ref_g1, ref_g2 = keras_like_reference(model, x, c)
    assert _rel(got_f, ref_f) <= FEAT_TOL  # the replica itself matches onnxruntime
    g1, g2, ratio = _grads(out, x, c)
    assert _rel(g1, ref_g1) <= GRAD_TOL and _rel(g2, ref_g2) <= GRAD_TOL
    ref_ratio = np.linalg.norm(ref_g2) / np.linalg.norm(ref_g1)
    assert abs(ratio - ref_ratio) / ref_ratio <= GRAD_TOL


def test_features_node_and_named_layers(tmp_path):
    path = tmp_path / "keras.onnx"
    onnx.save(keras_like(opset=17), path)
    res = _cli("import", path, "--name", "k", "--out", tmp_path / "zoo", "--features-node",
               "pool", "--layers", "grouped,pointwise", "--grads-batch", 4, "--norm", "imagenet")
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "k")
    assert m.source.options["onnx_nodes"]["conv1"] == "grouped"
    assert m.source.options["onnx_nodes"]["conv2"] == "pointwise"
    assert (m.feature_dim, m.num_classes) == (16, K)
    assert m.input.mean == (0.485, 0.456, 0.406)
    x = np.random.default_rng(2).standard_normal((3, 3, 28, 28)).astype(np.float32)
    want_gap, want_l = _ort_outputs(keras_like(17), x.transpose(0, 2, 3, 1).copy(),
                                    ["gap", "logits"])
    got_f, got_l = open_session(tmp_path / "zoo" / "k", "features").run(None, {"images": x})
    assert _rel(got_f, want_gap.reshape(3, -1)) <= FEAT_TOL and _rel(got_l, want_l) <= FEAT_TOL


def test_interpreter_keras_dense_and_nhwc_input_used_before_the_transpose():
    """No export (fast): the input is scaled before its NHWC->NCHW transpose, so the importer
    keeps a permute in front instead of dropping the transpose; the dense layer is MatMul +
    Add(bias) and becomes one Linear whose output (bias included) is the logits."""
    rng = np.random.default_rng(5)
    inits = [_init(rng, "w1", (4, 3, 3, 3)), _init(rng, "w2", (6, 4, 3, 3)),
             _init(rng, "wd", (6, K)), _init(rng, "bd", (K,)),
             numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale"),
             numpy_helper.from_array(np.array([-1, 6], np.int64), "shape")]
    nodes = [helper.make_node("Mul", ["image", "scale"], ["scaled"], "rescale"),
             helper.make_node("Transpose", ["scaled"], ["nchw"], "to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w1"], ["a"], "c1", strides=[2, 2],
                              auto_pad="SAME_LOWER"),
             helper.make_node("LeakyRelu", ["a"], ["b"], "act", alpha=0.1),
             helper.make_node("MaxPool", ["b"], ["p"], "mp", kernel_shape=[3, 3],
                              pads=[0, 0, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["c"], "c2", pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["m"], "gap", axes=[2, 3], keepdims=1),
             helper.make_node("Reshape", ["m", "shape"], ["f"], "flat"),
             helper.make_node("MatMul", ["f", "wd"], ["mm"], "dense"),
             helper.make_node("Add", ["mm", "bd"], ["logits"], "dense_bias"),
             helper.make_node("Softmax", ["logits"], ["probs"], "softmax")]
    model = _model(nodes, inits, inp=helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["N", 16, 16, 3]))
    from gradnca_onnx.importers import OnnxNet

    net = OnnxNet(model).eval()
    assert net.plan.layout == "NHWC" and net.plan.dropped_transpose is None
    assert net.plan.head == "dense" and isinstance(net.dense, nn.Linear)
    assert net.plan.convs == ["c1", "c2"]
    x = np.random.default_rng(6).uniform(0, 255, (3, 3, 16, 16)).astype(np.float32)
    want_f, want_l = _ort_outputs(model, x.transpose(0, 2, 3, 1).copy(), ["f", "logits"])
    seen = {}
    net.dense.register_forward_pre_hook(lambda _m, a: seen.setdefault("f", a[0].detach()))
    with torch.no_grad():
        got_l = net(torch.from_numpy(x)).numpy()
    assert _rel(seen["f"].numpy(), want_f) <= FEAT_TOL and _rel(got_l, want_l) <= FEAT_TOL


# --------------------------------------------------------------------------- round trip


class RoundTripNet(nn.Module):
    """Grouped conv, max (ceil mode)/avg pools, hard-swish, GELU, a hidden Linear and a head.

    Its BatchNorm follows the third conv: exporters fold a BatchNorm into the conv before it,
    and an ONNX file with a folded conv1/conv2 only holds the product of the two, whose
    gradient differs from the original weight's (see README, Importing ONNX classifiers).
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.MaxPool2d(2, ceil_mode=True))
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.Hardswish(),
                                  nn.AvgPool2d(2), nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16),
                                  nn.GELU())
        self.hidden = nn.Linear(16, 12)
        self.fc = nn.Linear(12, K)
        with torch.no_grad():
            bn = self.body[4]
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x)).mean(dim=(2, 3), keepdim=True)
        x = x.view(x.size(0), -1)  # exported as shape arithmetic under a dynamic batch
        return self.fc(torch.tanh(self.hidden(x)))


def test_reimport_of_an_export_keeps_the_gradient_ratio(tmp_path):
    zoo = tmp_path / "zoo"
    orig = export_model(from_module(RoundTripNet().eval(), name="rt"), zoo, name="rt",
                        input_size=28, grads_batch=8)
    again = import_onnx(orig / "features.onnx", zoo, name="rt-again", grads_batch=8)
    m0, m1 = load_manifest(orig), load_manifest(again)
    assert (m1.feature_dim, m1.num_classes) == (m0.feature_dim, m0.num_classes) == (12, K)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 28, 28)).astype(np.float32)
    c = rng.standard_normal((8, 12)).astype(np.float32)
    f0 = open_session(orig, "features").run(None, {"images": x})
    f1 = open_session(again, "features").run(None, {"images": x})
    assert all(_rel(a, b) <= FEAT_TOL for a, b in zip(f1, f0))
    g1a, g2a, r0 = _grads(orig, x, c)
    g1b, g2b, r1 = _grads(again, x, c)
    assert abs(r1 - r0) / r0 <= GRAD_TOL
    assert _rel(g1b, g1a) <= GRAD_TOL and _rel(g2b, g2a) <= GRAD_TOL


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_reimport_of_a_torch_classifier_export_opset13(tmp_path):
    """A whole classifier exported by torch's TorchScript-based exporter at opset 13 (dynamic
    batch: its flatten becomes Shape/Gather/Unsqueeze/Concat/Reshape arithmetic)."""
    net = RoundTripNet().eval()
    path = tmp_path / "clf.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 28, 28),), str(path), dynamo=False,
                      opset_version=13, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    zoo = tmp_path / "zoo"
    orig = export_model(from_module(net, name="rt"), zoo, name="rt", input_size=28,
                        grads_batch=8)
    again = import_onnx(path, zoo, name="clf", grads_batch=8)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 3, 28, 28)).astype(np.float32)
    c = rng.standard_normal((8, 12)).astype(np.float32)
    want_logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    _, got_logits = open_session(again, "features").run(None, {"images": x})
    assert _rel(got_logits, want_logits) <= FEAT_TOL
    _, _, r0 = _grads(orig, x, c)
    _, _, r1 = _grads(again, x, c)
    assert abs(r1 - r0) / r0 <= GRAD_TOL


# --------------------------------------------------------------------------- refusals


def small(*, opset: int = 13, mid: str | None = "Relu", domain: str = "",
          convs: int = 2) -> onnx.ModelProto:
    """Conv -> MID -> Conv -> pool -> Gemm; ``mid`` is the operator under test."""
    rng = np.random.default_rng(0)
    inits = [_init(rng, "w1", (4, 3, 3, 3)), _init(rng, "w2", (4, 4, 3, 3)),
             _init(rng, "wg", (4, K))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], "conv_a", pads=[1, 1, 1, 1])]
    nodes.append(helper.make_node(mid, ["a"], ["b"], "middle", domain=domain))
    nodes.append(helper.make_node("Conv", ["b", "w2"], ["c"], "conv_b") if convs == 2
                 else helper.make_node("Relu", ["b"], ["c"], "relu_b"))
    nodes += [helper.make_node("GlobalAveragePool", ["c"], ["p"], "pool"),
              helper.make_node("Flatten", ["p"], ["f"], "flatten"),
              helper.make_node("MatMul", ["f", "wg"], ["probs"], "head")]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 28, 28])
    return _model(nodes, inits, inp=inp, opset=opset, domains=[domain] if domain else [])


def _refused(tmp_path: Path, path: Path, *needles: str, extra=()) -> None:
    res = _cli("import", path, "--name", "m", "--out", tmp_path / "zoo", *extra)
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("Error:") and "\n" not in line and "Traceback" not in line, line
    for n in needles:
        assert n in line, line
    assert not (tmp_path / "zoo" / "m").exists()


def test_unsupported_operator_is_named(tmp_path):
    path = tmp_path / "lrn.onnx"
    onnx.save(small(mid="LRN"), path)
    _refused(tmp_path, path, "LRN", "middle", "not supported", "--features-only-fallback")


def test_custom_domain_is_refused(tmp_path):
    path = tmp_path / "custom.onnx"
    onnx.save(small(mid="FancyAct", domain="com.example"), path)
    _refused(tmp_path, path, "custom-domain", "com.example::FancyAct")


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_directory_is_refused(tmp_path, how):
    src = tmp_path / "models"
    src.mkdir()
    onnx.save_model(small(), src / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    outside = tmp_path / "secret.bin"
    outside.write_bytes((src / "w.bin").read_bytes())
    location = {"parent": "../secret.bin", "absolute": str(outside), "symlink": "link.bin"}[how]
    if how == "symlink":
        os.symlink(outside, src / "link.bin")
    model = onnx.load(str(src / "m.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(model, src / "m.onnx")
    _refused(tmp_path, src / "m.onnx", "refused", "w1")
    with pytest.raises(ValueError, match="refused"):
        load_onnx(src / "m.onnx")


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    _refused(tmp_path, tmp_path / "missing.onnx", "not found")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 definitely not a protobuf model \xff\xfe")
    _refused(tmp_path, junk, "not an ONNX model")
    old = tmp_path / "old.onnx"
    onnx.save(small(opset=12), old)
    _refused(tmp_path, old, "opset 12")
    one = tmp_path / "one.onnx"
    onnx.save(small(convs=1), one)
    _refused(tmp_path, one, "1 Conv node", "conv_a")
    ok = tmp_path / "ok.onnx"
    onnx.save(small(), ok)
    _refused(tmp_path, ok, "no-such-node", extra=("--features-node", "no-such-node"))
    _refused(tmp_path, ok, "conv_x", extra=("--layers", "conv_a,conv_x"))
    _refused(tmp_path, ok, "fixed at 28x28", extra=("--input-size", "32"))


def test_existing_name_needs_force(tmp_path):
    ok = tmp_path / "ok.onnx"
    onnx.save(small(), ok)
    assert _cli("import", ok, "--name", "m", "--out", tmp_path / "zoo",
                "--grads-batch", 2).exit_code == 0
    m = load_manifest(tmp_path / "zoo" / "m")
    # MatMul head with a constant weight: features are its input, its output the logits.
    assert (m.feature_dim, m.num_classes) == (4, K)
    # Recorded as what it is: an ONNX file, by name and hash.
    assert (m.source.kind, m.source.reference, m.source.checkpoint) == ("onnx", "ok.onnx",
                                                                       "ok.onnx")
    assert m.source.checkpoint_sha256 == sha256_file(ok) and m.has_grads
    assert json.loads((tmp_path / "zoo" / "m" / "manifest.json").read_text())["source"][
        "options"]["onnx_nodes"] == {"features": "head", "conv1": "conv_a", "conv2": "conv_b"}
    res = _cli("import", ok, "--name", "m", "--out", tmp_path / "zoo")
    assert res.exit_code == 2 and "already exists" in res.output
    assert _cli("import", ok, "--name", "m", "--out", tmp_path / "zoo", "--force",
                "--grads-batch", 2).exit_code == 0


def test_identity_fed_weights_and_the_weight_layer_rule(tmp_path):
    """The legacy torch exporter feeds shared conv biases through Identity nodes (refused
    before simplification: "computes its weights at run time"); with one Conv on the feature
    path the S_FU layers are the first two weight-bearing nodes (Conv, then a MatMul with a
    constant weight), rule "first-two-weight-layers"; --layers gives rule "user"."""
    rng = np.random.default_rng(8)
    inits = [_init(rng, "w1", (4, 3, 3, 3)), _init(rng, "shared_b", (4,), 0.1),
             _init(rng, "wh", (4, 6)), _init(rng, "wh2", (6, 6)), _init(rng, "wg", (6, K))]
    nodes = [helper.make_node("Identity", ["shared_b"], ["b1"], "bias_alias"),
             helper.make_node("Conv", ["x", "w1", "b1"], ["a"], "conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], "relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], "pool"),
             helper.make_node("Flatten", ["p"], ["f"], "flatten"),
             helper.make_node("MatMul", ["f", "wh"], ["h"], "hidden"),
             helper.make_node("Tanh", ["h"], ["t"], "tanh"),
             helper.make_node("MatMul", ["t", "wh2"], ["h2"], "hidden2"),
             helper.make_node("MatMul", ["h2", "wg"], ["probs"], "head")]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    path = tmp_path / "one_conv.onnx"
    onnx.save(_model(nodes, inits, inp=inp), path)
    out = import_onnx(path, tmp_path / "zoo", name="a", grads_batch=2)
    m = load_manifest(out)
    assert m.has_grads and m.layers.rule == "first-two-weight-layers"
    assert m.source.options["onnx_nodes"] == {"features": "head", "conv1": "conv_a",
                                              "conv2": "hidden"}
    assert m.layers.conv2_weight_shape == (6, 4)
    out = import_onnx(path, tmp_path / "zoo", name="b", grads_batch=2,
                      layers=["hidden", "hidden2"])
    m = load_manifest(out)
    assert m.layers.rule == "user" and m.source.options["onnx_nodes"]["conv1"] == "hidden"
    x = np.random.default_rng(9).standard_normal((2, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    _, got = open_session(out, "features").run(None, {"images": x})
    assert _rel(got, want) <= FEAT_TOL


def _two_conv_graph(middle_nodes, middle_inits, middle_out, opset=19):
    """conv1 -> (middle nodes) -> conv2 -> global pool -> MatMul head, as the helper API
    writes it; random constant weights (seeded)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (4, 3, 3, 3)), ("W2", (4, 4, 3, 3)), ("Wf", (4, 2)))]
    nodes = [h.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             *middle_nodes,
             h.make_node("Conv", [middle_out, "W2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             h.make_node("GlobalAveragePool", ["c2"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("MatMul", ["f", "Wf"], ["y"], name="head")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 2])], inits + middle_inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def _issue15_graphs():
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    pads = nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    yield "pad-wrap", _two_conv_graph(
        [h.make_node("Pad", ["c1", "pads"], ["pd"], mode="wrap", name="pad"),
         h.make_node("MaxPool", ["pd"], ["mid"], kernel_shape=[3, 3], name="mp")], [pads], "mid"
    ), "Pad in mode 'wrap' (node 'pad')"
    yield "cast-uint8", _two_conv_graph(
        [h.make_node("Cast", ["c1"], ["u"], to=T.UINT8, name="cast"),
         h.make_node("Cast", ["u"], ["mid"], to=T.FLOAT, name="back")], [], "mid"
    ), "Cast of activations to a non-float type (not differentiable) (node 'cast')"
    yield "cast-uint32", _two_conv_graph(
        [h.make_node("Cast", ["c1"], ["mid"], to=T.UINT32, name="cast32")], [], "mid"
    ), "Cast to ONNX element type 12 (node 'cast32')"


@pytest.mark.parametrize("name", ["pad-wrap", "cast-uint8", "cast-uint32"])
def test_operators_the_importer_cannot_differentiate_fall_back(tmp_path, name):
    """Issue 15, finding 5: an unsupported Pad mode or an integer Cast escaped as KeyError and
    bypassed --features-only-fallback (an integer Cast of activations even imported, with a
    gradient silently cut at the cast)."""
    model, fragment = next((m, f) for n, m, f in _issue15_graphs() if n == name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    res = CliRunner().invoke(main, ["import", str(path), "--name", "m", "--out",
                                    str(tmp_path / "zoo")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and fragment in lines[0] and "--features-only-fallback" in lines[0]
    assert "Traceback" not in res.output
    if name == "cast-uint32":
        return  # onnxruntime has no uint32 Conv input either: nothing to fall back to
    res = CliRunner().invoke(main, ["import", str(path), "--name", "m", "--out",
                                    str(tmp_path / "zoo"), "--features-only-fallback"])
    assert res.exit_code == 0, res.output
    assert not load_manifest(tmp_path / "zoo" / "m").has_grads


def test_all_constant_pow_is_folded(tmp_path):
    """Issue 15, finding 5: a Pow of two constants (StopIteration before) is folded by the
    simplifier into an initializer; the model imports with its gradient graph."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    a = nh.from_array(np.array([2.0], np.float32), "a")
    b = nh.from_array(np.array([0.5], np.float32), "b")
    model = _two_conv_graph(
        [h.make_node("Pow", ["a", "b"], ["pw"], name="pow"),
         h.make_node("Mul", ["c1", "pw"], ["mid"], name="mul")], [a, b], "mid")
    onnx.save(model, str(tmp_path / "pow.onnx"))
    res = CliRunner().invoke(main, ["import", str(tmp_path / "pow.onnx"), "--name", "p",
                                    "--out", str(tmp_path / "zoo")])
    assert res.exit_code == 0, res.output
    assert load_manifest(tmp_path / "zoo" / "p").has_grads


def test_mod_is_imported_as_onnx_defines_it(tmp_path):
    """Issue 27, item 9: ``Mod`` (Hugging Face Swin's window arithmetic) stopped the import. A
    float Mod (fmod=1, C's fmod: the sign of the dividend) between the two convolutions: the
    imported member's features equal onnxruntime's on the original graph, with S_FU."""
    from onnx import helper as h
    from onnx import numpy_helper as nh

    m = nh.from_array(np.array([0.7], np.float32), "m")
    model = _two_conv_graph([h.make_node("Mod", ["c1", "m"], ["mid"], fmod=1, name="mod")],
                            [m], "mid")
    path = tmp_path / "mod.onnx"
    onnx.save(model, str(path))
    out = import_onnx(path, tmp_path / "zoo", name="mod", grads_batch=1)
    manifest = load_manifest(out)
    assert manifest.has_grads
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m2 = onnx.load(str(path))
    m2.graph.output.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, None))
    want = ort.InferenceSession(m2.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(["f"], {"x": x})[0]
    got = open_session(out, "features", manifest=manifest, threads=1).run(None, {"images": x})[0]
    assert sess.run(None, {"x": x})[0].shape == (1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
