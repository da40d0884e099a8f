"""Model import and export: what is given is taken exactly, or refused in one line.

Integer pixel inputs, the S_FU layer order, impossible input sizes and torch's allocator
errors, ``--channels 5``, an empty ``--name``, NaN weights, out-of-memory advice, invalid JSON
in ``--arch-kwarg``, ``num_classes=0``, a shared ``--head``, fine-tuning an imported member. Every model is tiny (28 px or less);
one module-scoped zoo of imported pixel-input members serves several tests.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from _support import snapshot  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.data.preprocess import preprocess  # noqa: E402
from gradnca_onnx.engine.batching import open_session, run_grads  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEAT_TOL = 1e-5
GRAD_TOL = 1e-4
SIZE = 28


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res, *needles: str) -> str:
    """The single ``Error:`` line of a refused command (exit 2), holding every needle."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- ONNX models


def pixel_classifier(elem: int = TensorProto.UINT8, *, channels: int = 3,
                     integer_math: bool = False) -> onnx.ModelProto:
    """A classifier taking integer pixels 0..255 that casts and normalises them itself:
    Cast -> /255 -> -0.5 -> Conv -> Relu -> Conv -> GAP -> Gemm. With ``integer_math`` the
    input is shifted by an integer Sub before its Cast (integer arithmetic on the pixels)."""
    rng = np.random.default_rng(0)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32),
                                       name)

    inits = [init("w1", (4, channels, 3, 3)), init("b1", (4,), 0.1), init("w2", (6, 4, 3, 3)),
             init("wg", (5, 6)), init("bg", (5,)),
             numpy_helper.from_array(np.array(255, np.float32), "s255"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    first = "image"
    nodes = []
    if integer_math:
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        inits.append(numpy_helper.from_array(np.array(1, dtype), "one"))
        nodes.append(helper.make_node("Sub", ["image", "one"], ["shifted"], "int_shift"))
        first = "shifted"
    nodes += [helper.make_node("Cast", [first], ["xf"], "cast", to=TensorProto.FLOAT),
              helper.make_node("Div", ["xf", "s255"], ["x01"], "scale"),
              helper.make_node("Sub", ["x01", "half"], ["xc"], "center"),
              helper.make_node("Conv", ["xc", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c1"], ["r1"], "relu"),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", pads=[1, 1, 1, 1],
                               strides=[2, 2]),
              helper.make_node("GlobalAveragePool", ["c2"], ["gap"], "gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], "flat"),
              helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"], "fc", transB=1)]
    inp = helper.make_tensor_value_info("image", elem, ["N", channels, SIZE, SIZE])
    graph = helper.make_graph(nodes, "pixels", [inp],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def original_outputs(model: onnx.ModelProto, pixels: np.ndarray) -> list[np.ndarray]:
    """Features (``flat``) and logits of the ORIGINAL graph in onnxruntime on ``pixels``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["flat", "logits"], {"image": pixels})


def reference_grads(model: onnx.ModelProto, pixels: np.ndarray, c: np.ndarray):
    """Float64 torch replica of :func:`pixel_classifier`: d<features, c>/d(w1, w2)."""
    import torch.nn.functional as F

    w = {t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64)
         for t in model.graph.initializer}
    w1, w2 = w["w1"].clone().requires_grad_(), w["w2"].clone().requires_grad_()
    x = torch.tensor(pixels, dtype=torch.float64) / 255 - 0.5
    h = F.conv2d(torch.relu(F.conv2d(x, w1, w["b1"], padding=1)), w2, padding=1, stride=2)
    feats = h.mean(dim=(2, 3))
    return torch.autograd.grad((feats * torch.tensor(c, dtype=torch.float64)).sum(), [w1, w2])


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


PIXEL_TYPES = {"uint8": (TensorProto.UINT8, np.uint8), "int64": (TensorProto.INT64, np.int64)}


@pytest.fixture(scope="module")
def pixel_imports(tmp_path_factory) -> tuple[Path, dict[str, object]]:
    """Full and features-only imports of the uint8 and int64 pixel classifiers: the zoo, and
    each member's ``import`` result (checked by the tests that use the member)."""
    base = tmp_path_factory.mktemp("pixels")
    zoo, lines = base / "zoo", {}
    for kind, (elem, _) in PIXEL_TYPES.items():
        onnx.save(pixel_classifier(elem), base / f"{kind}.onnx")
        for name, extra in ((kind, ("--grads-batch", 4)), (f"{kind}-fo", ("--features-only",))):
            lines[name] = run("import", base / f"{kind}.onnx", "--name", name, "--out", zoo,
                              *extra)
    return zoo, lines


@pytest.fixture(scope="module")
def pixel_zoo(pixel_imports) -> Path:
    return pixel_imports[0]


# --------------------------------------------------------------------------- item 5


@pytest.mark.parametrize("member", ["uint8", "int64", "uint8-fo", "int64-fo"])
def test_integer_pixel_input_computes_what_the_original_graph_computes(pixel_imports, member):
    """The member, fed by the package's own pipeline, gives the original graph's features and
    logits on the same uint8 images (within 1e-5), and exact gradients where it has them.
    Before the fix the Cast was fed 'half'-normalised floats: features 63.1 vs 0.06."""
    pixel_zoo, results = pixel_imports
    assert results[member].exit_code == 0, results[member].output
    kind = member.split("-")[0]
    elem, dtype = PIXEL_TYPES[kind]
    images = np.random.default_rng(3).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    pixels = images.transpose(0, 3, 1, 2).astype(dtype)
    want_f, want_l = original_outputs(pixel_classifier(elem), pixels)

    m = load_manifest(pixel_zoo / member)
    x = preprocess(images, mean=m.input.mean, std=m.input.std, channels=3, size=(SIZE, SIZE))
    got_f, got_l = open_session(pixel_zoo / member, "features", threads=1).run(
        None, {"images": x})
    assert rel(got_f, want_f) <= FEAT_TOL and rel(got_l, want_l) <= FEAT_TOL
    # The convention is recorded and said.
    assert m.source.options["input_dtype"] == kind
    assert f"({kind} pixels 0..255)" in results[member].output
    if m.has_grads:
        c = np.random.default_rng(4).standard_normal((6, 6)).astype(np.float32)
        _, g1, g2 = run_grads(open_session(pixel_zoo / member, "grads", threads=1), x, c)
        r1, r2 = reference_grads(pixel_classifier(elem), pixels, c)
        assert rel(g1, r1.numpy()) <= GRAD_TOL and rel(g2, r2.numpy()) <= GRAD_TOL


def test_pixel_input_refuses_norm_and_integer_arithmetic(tmp_path):
    onnx.save(pixel_classifier(), tmp_path / "u8.onnx")
    math = pixel_classifier(TensorProto.INT64, integer_math=True)  # Sub-13 takes no uint8
    onnx.save(math, tmp_path / "math.onnx")
    zoo = tmp_path / "zoo"
    one_error_line(run("import", tmp_path / "u8.onnx", "--name", "a", "--out", zoo, "--norm",
                       "half"), "--norm half", "uint8", "drop --norm")
    one_error_line(run("import", tmp_path / "math.onnx", "--name", "b", "--out", zoo),
                   "'int_shift'", "(Sub)", "int64 input", "float input",
                   "--features-only-fallback")
    assert not zoo.exists()
    # Features-only, the original graph computes the integer arithmetic itself: exact.
    res = run("import", tmp_path / "math.onnx", "--name", "b", "--out", zoo,
              "--features-only-fallback")
    assert res.exit_code == 0, res.output
    images = np.random.default_rng(5).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    want_f, _ = original_outputs(math, images.transpose(0, 3, 1, 2).astype(np.int64))
    m = load_manifest(zoo / "b")
    x = preprocess(images, mean=m.input.mean, std=m.input.std, channels=3, size=(SIZE, SIZE))
    got_f = open_session(zoo / "b", "features", threads=1).run(["features"], {"images": x})[0]
    assert m.features_only and rel(got_f, want_f) <= FEAT_TOL


# --------------------------------------------------------------------------- item 6


def test_import_layers_out_of_order_or_twice_are_refused(pixel_zoo, tmp_path):
    onnx.save(pixel_classifier(), tmp_path / "u8.onnx")
    before = snapshot(pixel_zoo)
    line = one_error_line(run("import", tmp_path / "u8.onnx", "--name", "x", "--out", pixel_zoo,
                              "--layers", "conv2,conv1"),
                          "--layers conv2,conv1", "'conv1' runs before 'conv2'",
                          "give --layers conv1,conv2")
    assert "reciprocal" in line
    one_error_line(run("import", tmp_path / "u8.onnx", "--name", "x", "--out", pixel_zoo,
                       "--layers", "conv1,conv1"), "--layers conv1,conv1", "same layer twice")
    assert snapshot(pixel_zoo) == before


FACTORY_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    def tiny(num_classes=3):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes))


    def nan_tiny():
        model = tiny()
        with torch.no_grad():
            model[2].weight[0, 0, 0, 0] = float("nan")
        return model


    class SharedHead(nn.Module):
        """Its head is called twice: on the mean and on the max of the feature map."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 6, 3, padding=1)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            h = self.c2(torch.relu(self.c1(x)))
            return self.fc(h.mean((2, 3))) + self.fc(h.amax((2, 3)))
''')


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    """An importable module of tiny models (``issue24_models:tiny``, ...)."""
    d = tmp_path_factory.mktemp("factory")
    (d / "issue24_models.py").write_text(FACTORY_SOURCE)
    sys.path.insert(0, str(d))
    yield "issue24_models"
    sys.path.remove(str(d))
    sys.modules.pop("issue24_models", None)


def export(factory, tmp_path, *args, fn="tiny"):
    return run("export", "--factory", f"{factory}:{fn}", "--input-size", 16, "--grads-batch",
               2, "--out", tmp_path / "zoo", *args)


def test_export_layers_out_of_order_or_twice_are_refused(factory, tmp_path):
    one_error_line(export(factory, tmp_path, "--layers", "2,0"), "--layers 2,0",
                   "'0' runs before '2' in the forward pass", "give --layers 0,2")
    one_error_line(export(factory, tmp_path, "--layers", "0,0.weight"), "same layer twice")
    assert not (tmp_path / "zoo").exists()


# --------------------------------------------------------------------------- items 12, 14


def test_impossible_input_size_is_refused_at_once(factory, tmp_path):
    start = time.perf_counter()
    one_error_line(export(factory, tmp_path, "--input-size", 100000), "--input-size 100000",
                   "GiB", "smaller --input-size or --grads-batch")
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "zoo").exists()


ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough "
             "memory: you tried to allocate 257698037760 bytes.")


def _allocator_fails(*_a, **_k):
    raise RuntimeError(ALLOCATOR)


def test_allocator_error_is_the_out_of_memory_line(factory, tmp_path, monkeypatch):
    """Export and import: torch's allocator RuntimeError is one out-of-memory line with the
    size asked for and what helps, not --features-only-fallback (nor a traceback)."""
    import gradnca_onnx.exporters.api as api

    monkeypatch.setattr(api, "trace_feature_vjp", _allocator_fails)
    for res in (export(factory, tmp_path, "--features-only-fallback"),
                run("import", _saved(tmp_path, pixel_classifier()), "--name", "m", "--out",
                    tmp_path / "zoo", "--grads-batch", 2)):
        line = one_error_line(res, "out of memory", "240.0 GiB", "--grads-batch")
        assert "--features-only-fallback" not in line
    assert not (tmp_path / "zoo" / "m").exists() and not (tmp_path / "zoo" / "Sequential").exists()


def _saved(tmp_path: Path, model: onnx.ModelProto, name: str = "m.onnx") -> Path:
    onnx.save(model, tmp_path / name)
    return tmp_path / name


def test_channels_other_than_1_or_3_are_refused(factory, tmp_path):
    one_error_line(export(factory, tmp_path, "--channels", 5), "--channels 5", "1 or 3")
    one_error_line(run("import", _saved(tmp_path, pixel_classifier(channels=5)), "--name", "c5",
                       "--out", tmp_path / "zoo"), "takes 5 channels", "1 or 3")
    assert not (tmp_path / "zoo").exists()


def test_empty_name_is_refused(factory, tmp_path):
    for res in (run("import", _saved(tmp_path, pixel_classifier()), "--name", "", "--out",
                    tmp_path / "zoo"), export(factory, tmp_path, "--name", " ")):
        one_error_line(res, "--name", "not allowed")
    assert not (tmp_path / "zoo").exists()


# --------------------------------------------------------------------------- item 19


def test_nan_initializer_is_named(tmp_path):
    model = pixel_classifier()
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    arr = numpy_helper.to_array(w2).copy()
    arr[0, 0, 0, 0] = np.nan
    w2.CopyFrom(numpy_helper.from_array(arr, "w2"))
    path = _saved(tmp_path, model, "nan.onnx")
    for extra in ((), ("--features-only",)):
        line = one_error_line(run("import", path, "--name", "n", "--out", tmp_path / "zoo",
                                  *extra), "initializer 'w2' of nan.onnx holds NaN",
                              "fix the model")
        assert "report" not in line
    assert not (tmp_path / "zoo").exists()


def test_nan_parameter_of_a_built_model_is_named(factory, tmp_path):
    line = one_error_line(export(factory, tmp_path, fn="nan_tiny"), "parameter '2.weight'",
                          "NaN")
    assert "report" not in line


def test_invalid_json_arch_kwarg_is_refused_and_plain_strings_stay(tmp_path):
    for value in ("x={bad json", "x=[1,", 'x="open'):
        one_error_line(run("export", "--arch", "resnet18", "--arch-kwarg", value, "--out",
                           tmp_path / "zoo"), "--arch-kwarg x", "not valid JSON")
    from gradnca_onnx.cli.export import parse_pairs as _pairs

    assert _pairs(("a=hello", "b=3", "c=[1, 2]", 'd="{x"'), "--arch-kwarg") == {
        "a": "hello", "b": 3, "c": [1, 2], "d": "{x"}
    assert not (tmp_path / "zoo").exists()


def test_num_classes_0_is_refused_before_any_tracing(tmp_path, monkeypatch):
    import gradnca_onnx.exporters as exporters

    def never(*_a, **_k):
        raise AssertionError("export_model (tracing) ran for a model with no classes")

    monkeypatch.setattr(exporters, "export_model", never)
    start = time.perf_counter()
    res = run("export", "--arch", "resnet18", "--arch-kwarg", "num_classes=0", "--out",
              tmp_path / "zoo")
    one_error_line(res, "'fc.weight'", "(0, 512)", "num_classes >= 1")
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "zoo").exists()


def test_shared_head_module_is_one_line(factory, tmp_path):
    one_error_line(export(factory, tmp_path, "--head", "fc", fn="SharedHead"),
                   "'fc' is called 2 times", "--head")
    assert not (tmp_path / "zoo").exists()


def test_finetune_of_an_imported_member_says_it_cannot_be(pixel_zoo, tmp_path):
    """The same advice with and without --checkpoint (before: first 'pass it with
    --checkpoint', then a refusal of it)."""
    from gradnca_onnx.training.source import load_source

    for ckpt in (None, _saved(tmp_path, pixel_classifier(), "uint8.onnx")):
        with pytest.raises(ValueError) as exc:
            load_source(pixel_zoo / "uint8", checkpoint=ckpt)
        assert "ONNX graph cannot be fine-tuned" in str(exc.value)
        assert "pass it with --checkpoint" not in str(exc.value)
