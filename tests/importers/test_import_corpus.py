"""``gradnca-onnx import`` on ONNX files from the common exporters (issue 14, part 4).

The corpus is built here, from random-init (seeded) torch models: torchvision resnet18,
mobilenet_v3_small, efficientnet_b0, densenet121 and a small ViT, and timm models, each
exported by torch's legacy TorchScript exporter (``dynamo=False``, opsets 13-20) and by the
dynamo exporter (``dynamo=True``, opsets 18+). Every member is imported (the graph simplified
first: constants folded, Identity-fed weights become initializers) and checked against the
torch model the file represents:

- features of ``features.onnx`` against that model in fp32 (relative L2 <= 1e-5), logits
  against onnxruntime on the original file;
- the S_FU ratio ||grad W2|| / ||grad W1|| of ``grads.onnx`` against float64 autograd
  (<= 1e-4 relative), the weights found in the torch model by value.

Both exporters fold each BatchNorm into the convolution before it: the legacy one in its
eval-mode peephole pass (``w * (gamma / sqrt(var + eps))`` in torch), the dynamo one in the
onnxscript optimisation it runs by default (the same formula in NumPy). Such a file represents
the folded model: ``torch.fx.experimental.optimization.fuse`` finds the same conv/BatchNorm
pairs, and with each exporter's arithmetic substituted for its ``rsqrt`` (which rounds a few
ulp differently) reproduces the folded weights bit for bit (checked: the imported S_FU weights
are found in it exactly).

The default suite runs a representative subset; ``-m slow`` runs the whole grid.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from gradnca_onnx.engine.batching import open_session, run_grads
from gradnca_onnx.importers import build_module, import_onnx
from gradnca_onnx.zoo import load_manifest

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
FEAT_TOL = 1e-5
RATIO_TOL = 1e-4
TORCHVISION = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "vit")
TIMM = ("timm:resnet18", "timm:convnext_atto", "timm:vit_tiny_patch16_224")
LEGACY_OPSETS = tuple(range(13, 21))
DYNAMO_OPSETS = (18, 19, 20)


def build(name: str) -> nn.Module:
    """A seeded random-init model of the corpus, in eval mode."""
    torch.manual_seed(0)
    if name == "vit":
        model = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2,
                                                     num_heads=2, hidden_dim=32, mlp_dim=64)
        nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision initialises it to 0
    elif name.startswith("timm:"):
        timm = pytest.importorskip("timm")
        arch = name.split(":", 1)[1]
        kwargs = {"img_size": SIZE} if "vit" in arch else {}
        model = timm.create_model(arch, pretrained=False, **kwargs)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    model.eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them changes weights
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return model


def export(model: nn.Module, path: Path, *, dynamo: bool, opset: int) -> None:
    """``torch.onnx.export`` as a user would call it, with a dynamic batch (an example batch
    of 2: torch.export specialises a dimension of size 1, and the file then holds batch-1
    reshapes)."""
    x = torch.randn(2, 3, SIZE, SIZE)
    kwargs: dict = {"input_names": ["x"], "output_names": ["y"]}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kwargs["dynamic_axes"] = {"x": {0: "batch"}, "y": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, opset_version=opset, **kwargs)


def _legacy_fold(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """The legacy exporter's BatchNorm folding (``eval_peephole``: ``w * (gamma / sqrt(var +
    eps))``), where ``torch.nn.utils.fusion`` multiplies by ``rsqrt``: one rounding apart."""
    scale = (bn_w if bn_w is not None else torch.ones_like(bn_rm)) / torch.sqrt(bn_rv + bn_eps)
    conv_b = conv_b if conv_b is not None else torch.zeros_like(bn_rm)
    bn_b = bn_b if bn_b is not None else torch.zeros_like(bn_rm)
    shape = [-1, 1] + [1] * (conv_w.ndim - 2)
    return (nn.Parameter(conv_w * scale.reshape(shape), conv_w.requires_grad),
            nn.Parameter((conv_b - bn_rm) * scale + bn_b, conv_w.requires_grad))


def _dynamo_fold(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """The dynamo exporter's folding (onnxscript's ``FuseBatchNormIntoConv`` rewrite, run by
    ``torch.onnx.export(..., optimize=True)``, the default), in NumPy float32 as it does."""
    def arr(t):
        return t.detach().numpy()
    scale = arr(bn_w) / np.sqrt(arr(bn_rv) + bn_eps)
    bias = arr(conv_b) if conv_b is not None else np.zeros_like(arr(bn_rm))
    shape = [-1, 1] + [1] * (conv_w.ndim - 2)
    return (nn.Parameter(torch.from_numpy(arr(conv_w) * scale.reshape(shape))),
            nn.Parameter(torch.from_numpy((bias - arr(bn_rm)) * scale + arr(bn_b))))


def represented(model: nn.Module, dynamo: bool, *, exact: bool = True) -> nn.Module:
    """The torch model an exported file represents. Both exporters fold each BatchNorm into
    the conv before it (the legacy one in its eval-mode peephole pass, the dynamo one in its
    default onnxscript optimisation): ``fx...fuse``'s graph rewrite, with the exporter's
    arithmetic when ``exact``."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    from unittest import mock

    from torch.fx.experimental.optimization import fuse

    if not exact:
        return fuse(copy.deepcopy(model))
    with mock.patch("torch.nn.utils.fusion.fuse_conv_bn_weights",
                    _dynamo_fold if dynamo else _legacy_fold):
        return fuse(copy.deepcopy(model))


def _head_input(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of the last Linear the forward pass calls, flattened; the model's output)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a: seen.__setitem__("f", a[0]))
             for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen["f"].flatten(1), out


def _find(model: nn.Module, weight: torch.Tensor) -> tuple[str, tuple[int, int] | None]:
    """The parameter of ``model`` whose value the imported weight holds (exactly), itself or
    transposed, or a block of its rows (an attention's fused in-projection split by the
    exporter); returns (name, row range or None)."""
    w = weight.detach()
    for name, p in model.named_parameters():
        p = p.detach()
        for cand in (w, w.t() if w.ndim == 2 else None):
            if cand is None or cand.ndim != p.ndim or cand.shape[1:] != p.shape[1:]:
                continue
            if cand.shape == p.shape and torch.equal(cand, p):
                return name, None
            n = cand.shape[0]
            if p.shape[0] % n == 0:
                for k in range(p.shape[0] // n):
                    if torch.equal(cand, p[k * n:(k + 1) * n]):
                        return name, (k * n, (k + 1) * n)
    raise AssertionError(f"no parameter of the torch model holds the imported weight "
                         f"{tuple(w.shape)} exactly")


def torch_ratio(model: nn.Module, where, x: torch.Tensor, c: torch.Tensor) -> float:
    """||grad W2|| / ||grad W1|| of <features, c> by autograd, in the model's dtype."""
    params = dict(model.named_parameters())
    f, _ = _head_input(model, x)
    grads = torch.autograd.grad((f * c).sum(), [params[n] for n, _ in where])
    norms = [g[rows[0]:rows[1]].norm() if rows else g.norm() for g, (_, rows) in zip(grads, where)]
    return float(norms[1] / norms[0])


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check(name: str, dynamo: bool, opset: int, tmp_path: Path) -> dict:
    """Export, import and compare one corpus member; returns what was measured."""
    model = build(name)
    path = tmp_path / f"{name.replace(':', '_')}.onnx"
    try:
        export(model, path, dynamo=dynamo, opset=opset)
    except torch.onnx.errors.UnsupportedOperatorError as exc:  # the exporter's limit, not ours
        pytest.skip(f"the {'dynamo' if dynamo else 'legacy'} exporter cannot write {name} at "
                    f"opset {opset}: {str(exc).splitlines()[0][:200]}")
    out = import_onnx(path, tmp_path / "zoo", name="m", grads_batch=2, force=True)
    m = load_manifest(out)
    assert m.has_grads, m.features_only
    ref = represented(model, dynamo)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE, generator=g)
    c = torch.randn(2, m.feature_dim, generator=g)
    with torch.no_grad():
        f32, _ = _head_input(ref, x)
    f_onnx, logits_onnx = open_session(out, "features", manifest=m, threads=1).run(
        None, {"images": x.numpy()})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    want_logits = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()})[0]
    feat_err, logit_err = _rel(f_onnx, f32.numpy()), _rel(logits_onnx, want_logits)

    # The two S_FU weights, as the importer holds them, found by value in the torch model.
    net, _, _ = build_module(path)
    where = [_find(ref, net.get_submodule(layer).weight) for layer in (m.layers.conv1,
                                                                       m.layers.conv2)]
    ratio_ref = torch_ratio(copy.deepcopy(ref).double(), where, x.double(), c.double())
    floor = abs(torch_ratio(ref, where, x, c) / ratio_ref - 1)
    _, g1, g2 = run_grads(open_session(out, "grads", manifest=m, threads=1), x.numpy(),
                          c.numpy())
    ratio_err = abs(float(np.linalg.norm(g2) / np.linalg.norm(g1)) / ratio_ref - 1)
    result = {"rule": m.layers.rule, "layers": (m.layers.conv1, m.layers.conv2),
              "torch": [w[0] for w in where], "features": feat_err, "logits": logit_err,
              "ratio": ratio_err, "floor": floor}
    print(f"{name} {'dynamo' if dynamo else 'legacy'} opset {opset}: {result}")
    assert feat_err <= FEAT_TOL and logit_err <= FEAT_TOL, result
    assert ratio_err <= RATIO_TOL, result
    return result


# --------------------------------------------------------------------------- default suite


def test_legacy_folding_is_fx_fuse(tmp_path):
    """The legacy exporter folds BatchNorm into the convs: ``fx...fuse`` finds the same pairs,
    its ``rsqrt`` arithmetic rounds differently (a few ulp); with the exporter's formula the
    folded weights and biases are those of the file bit for bit."""
    import onnx
    from onnx import numpy_helper

    model = build("resnet18")
    path = tmp_path / "r.onnx"
    export(model, path, dynamo=False, opset=17)
    graph = onnx.load(str(path)).graph
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)
    consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
              for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    exact = represented(model, False)
    fx = dict(represented(model, False, exact=False).named_parameters())
    for node in convs:
        w, b = consts[node.input[1]], consts[node.input[2]]
        name, _ = _find(exact, w)
        mod = name.rsplit(".", 1)[0]
        assert torch.equal(exact.get_submodule(mod).bias, b)
        assert torch.allclose(fx[name], w, rtol=1e-6, atol=0)
    assert name == "fc.weight" or len({_find(exact, consts[n.input[1]])[0] for n in convs}) == 20
    assert not torch.equal(exact.conv1.weight, model.conv1.weight)


#: The default suite (6-15 s a member on 2 cores): the issue's mobilenet_v3_small file from
#: the legacy exporter at the oldest opset (Identity-fed shared biases), a ResNet from dynamo
#: (BatchNorm folded by its optimiser), and the ViT from both exporters (the weight-layer
#: rule). densenet121 (60-190 s a file), efficientnet_b0, the timm models and the rest of the
#: grid run with ``-m slow`` (the default suite must stay under 15 minutes on 2 cores).
DEFAULT = [("mobilenet_v3_small", False, 13), ("resnet18", True, 18), ("vit", False, 17),
           ("vit", True, 18)]


@pytest.mark.parametrize("name,dynamo,opset", DEFAULT,
                         ids=[f"{n}-{'dynamo' if d else 'legacy'}-{o}" for n, d, o in DEFAULT])
def test_corpus(name, dynamo, opset, tmp_path):
    result = check(name, dynamo, opset, tmp_path)
    if name == "vit":
        assert result["rule"] == "first-two-weight-layers"
        assert result["torch"] == ["conv_proj.weight",
                                   "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"]
    else:
        assert result["rule"] == "first-two-convs"


# --------------------------------------------------------------------------- the full grid

FULL = ([(n, False, o) for n in TORCHVISION + TIMM for o in LEGACY_OPSETS]
        + [(n, True, o) for n in TORCHVISION + TIMM for o in DYNAMO_OPSETS])
FULL = [p for p in FULL if p not in DEFAULT]


@pytest.mark.slow
@pytest.mark.parametrize("name,dynamo,opset", FULL,
                         ids=[f"{n}-{'dynamo' if d else 'legacy'}-{o}" for n, d, o in FULL])
def test_corpus_grid(name, dynamo, opset, tmp_path):
    check(name, dynamo, opset, tmp_path)


# --------------------------------------------------------------------------- onnx2torch

O2T = [(n, d, o) for n in TORCHVISION + ("timm:convnext_atto", "timm:vit_tiny_patch16_224")
       for d, o in ((False, 17), (True, 18))]


@pytest.mark.slow
def test_onnx2torch_comparison(tmp_path):
    """The hand-written interpreter against ``onnx2torch.convert`` on the corpus (outputs
    against onnxruntime on the file; both given the simplified graph). Prints the table the
    README's import section summarises; asserts only that ours handles every member.
    Measured with onnx2torch 1.5: every dynamo file fails (``ReduceMean`` opset 18 and
    ``Reshape(allowzero=1)`` not implemented), densenet121 from the legacy exporter converts
    but computes wrong outputs (relative error 0.95), and without the simplifier the legacy
    mobilenet_v3_small / efficientnet_b0 / convnext_atto files fail (``KeyError`` on their
    Identity-fed shared biases)."""
    onnx2torch = pytest.importorskip("onnx2torch")
    from gradnca_onnx.importers import load_onnx, simplify

    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    rows, ours_ok = [], True
    for name, dynamo, opset in O2T:
        path = tmp_path / f"{name.replace(':', '_')}_{int(dynamo)}.onnx"
        export(build(name), path, dynamo=dynamo, opset=opset)
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0]
        net, _, _ = build_module(path)
        with torch.no_grad():
            ours = _rel(net(torch.from_numpy(x)).numpy(), want)
        ours_ok &= ours <= FEAT_TOL
        try:
            theirs_net = onnx2torch.convert(simplify(load_onnx(path)))
            with torch.no_grad():
                theirs = f"{_rel(theirs_net(torch.from_numpy(x)).numpy(), want):.1e}"
        except Exception as exc:  # noqa: BLE001 - whatever the library raises is the result
            theirs = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
        rows.append(f"{name} {'dynamo' if dynamo else 'legacy'} {opset}: ours {ours:.1e}, "
                    f"onnx2torch {theirs}")
    print("\n".join(rows))
    assert ours_ok, rows
