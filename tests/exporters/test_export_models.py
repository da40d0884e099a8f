"""The paper's nine torchvision architectures (random init): ONNX graphs against torch.

Default suite: 64 px for six of the nine; ``-m slow``: the other three at 64 px, all nine at
224 px, and TorchScript copies of two architectures.

Tolerances. Features: relative L2 error <= 1e-5 against torch's fp32 forward (measured
1e-7 to 2e-6: fp32 sums in another order through up to ~120 layers). Gradients: the ratio
||grad W2|| / ||grad W1|| within 1e-4 (relative) of a float64 torch autograd reference. The
reference is float64 because torch's own fp32 CPU gradients are not a reliable oracle: any fp32
implementation, torch's or onnxruntime's, now and then puts a ReLU whose pre-activation lies
within rounding of zero on the other side of the kink, and for some randomly initialised models
the weight gradients cancel so much that this moves the ratio by more than 1e-4 (googlenet at
224 px: torch's fp32 autograd itself is off by 4e-5 with oneDNN and 2e-4 without). So the test
also measures that fp32 noise floor on the same batch, as the larger deviation of torch's two
fp32 CPU paths (oneDNN on and off) from float64, and holds onnxruntime to
max(1e-4, 3 x floor): a wrong graph is off by orders of magnitude more. The same bounds hold
for both gradient passes: ``grads.onnx`` and the split pass (``forward.onnx`` then
``backward.onnx``).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from gradnca_onnx.engine.batching import open_session, run_grads
from gradnca_onnx.exporters import FeatureModel, export_model
from gradnca_onnx.sources import PAPER_ARCHITECTURES, load_torchscript, load_torchvision
from gradnca_onnx.zoo import load_manifest

FEAT_TOL = 1e-5
RATIO_TOL = 1e-4
ARCHS = list(PAPER_ARCHITECTURES)
#: Under ``-m slow`` with the 224 px run of all nine, to keep the default suite within its
#: 15-minute budget on 2 cores: the three whose 64 px export takes 40-135 s here (graph size,
#: not image size), and three of 20-25 s; ResNet-18, MobileNetV3 and MNASNet (plain, depthwise
#: and inverted-residual convolutions) stay in the default suite.
LONG = ("densenet121", "efficientnet_v2_s", "vgg11", "convnext_tiny", "googlenet",
        "shufflenet_v2_x0_5")
ARCHS_64 = [pytest.param(a, marks=pytest.mark.slow) if a in LONG else a for a in ARCHS]


# Torch single-threaded for these modules (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def torch_ratio(model, head: str, conv1: str, conv2: str, x, c) -> float:
    """||grad W2|| / ||grad W1|| of <features, c> by torch autograd, in the model's dtype."""
    (f,) = FeatureModel(model, head, with_logits=False)(x)
    w1, w2 = model.get_submodule(conv1).weight, model.get_submodule(conv2).weight
    g1, g2 = torch.autograd.grad(f, [w1, w2], c)
    return float(g2.norm() / g1.norm())


def parity(model, model_dir, *, n_features: int = 3, n_grads: int = 2, seed: int = 1
           ) -> tuple[float, float, float, float]:
    """Features, logits and ratio errors of a model directory against torch, and the fp32
    noise floor of the ratio (torch fp32 against float64)."""
    m = load_manifest(model_dir, verify=False)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(max(n_features, n_grads), m.input.channels, m.input.height, m.input.width,
                    generator=g)
    c = torch.randn(n_grads, m.feature_dim, generator=g)
    with torch.no_grad():
        f32, logits32 = FeatureModel(model, m.layers.features)(x[:n_features])
    f_onnx, logits_onnx = open_session(model_dir, "features", manifest=m, threads=1).run(
        None, {"images": x[:n_features].numpy()})
    layers = (m.layers.features, m.layers.conv1, m.layers.conv2)
    xg = x[:n_grads]
    ratio_ref = torch_ratio(copy.deepcopy(model).double(), *layers, xg.double(), c.double())
    floor = abs(torch_ratio(model, *layers, xg, c) / ratio_ref - 1)
    with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
        warnings.simplefilter("ignore")  # a note about TF32 on Intel GPUs, irrelevant here
        floor = max(floor, abs(torch_ratio(model, *layers, xg, c) / ratio_ref - 1))
    sess = open_session(model_dir, "grads", manifest=m, threads=1)
    feats, g1, g2 = run_grads(sess, xg.numpy(), c.numpy())
    assert rel(feats, f32[:n_grads].numpy()) <= FEAT_TOL
    ratio = np.linalg.norm(g2) / np.linalg.norm(g1)
    ratio_err = abs(ratio / ratio_ref - 1)
    if m.split is not None:  # the split pass: forward.onnx, then backward.onnx
        split_feats, split_logits, s1, s2 = split_pass(model_dir, m, xg.numpy(), c.numpy())
        assert rel(split_feats, f32[:n_grads].numpy()) <= FEAT_TOL
        assert rel(split_logits, logits32[:n_grads].numpy()) <= FEAT_TOL
        ratio_err = max(ratio_err, abs(np.linalg.norm(s2) / np.linalg.norm(s1) / ratio_ref - 1))
    return (rel(f_onnx, f32.numpy()), rel(logits_onnx, logits32.numpy()), ratio_err, floor)


def split_pass(model_dir, m, x, c):
    """Features, logits and the two weight gradients by forward.onnx and backward.onnx."""
    names = [f"r{i}" for i in range(m.split.residuals)]
    fw = open_session(model_dir, "forward", manifest=m, threads=1)
    out = fw.run(["features", "logits", *names], {"images": x})
    bw = open_session(model_dir, "backward", manifest=m, threads=1)
    g1, g2 = bw.run(["grad_w1", "grad_w2"], {"cotangent": c, **dict(zip(names, out[2:]))})
    return out[0], out[1], g1, g2


def check_architecture(arch: str, size: int, zoo) -> None:
    spec = PAPER_ARCHITECTURES[arch]
    loaded = load_torchvision(arch, seed=0)
    out = export_model(loaded, zoo, input_size=size, grads_batch=2, pretrained_on="random init")
    m = load_manifest(out)
    assert (m.layers.features, m.layers.conv1, m.layers.conv2) == (spec.head, spec.conv1,
                                                                    spec.conv2)
    assert m.split is not None  # every paper architecture gets the split gradient pass
    assert (m.feature_dim, m.num_classes) == (spec.feature_dim, 1000)
    assert m.input.mean == (0.5, 0.5, 0.5)  # not an ImageNet source
    feat_err, logit_err, ratio_err, floor = parity(loaded.module, out)
    print(f"{arch} {size}px: features {feat_err:.1e}, logits {logit_err:.1e}, "
          f"ratio {ratio_err:.1e} (torch fp32: {floor:.1e})")
    assert feat_err <= FEAT_TOL and logit_err <= FEAT_TOL
    assert floor <= 1e-2, "torch's fp32 ratio noise is too large to judge against"
    assert ratio_err <= max(RATIO_TOL, 3 * floor)


@pytest.mark.parametrize("arch", ARCHS_64)
def test_paper_architecture_64px(arch, tmp_path):
    check_architecture(arch, 64, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_paper_architecture_224px(arch, tmp_path):
    check_architecture(arch, 224, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["googlenet", "convnext_tiny"])
def test_torchscript_copy_of_paper_architecture(arch, tmp_path):
    """A scripted torchvision model exports to the same layers and numbers as the eager one."""
    spec = PAPER_ARCHITECTURES[arch]
    eager = load_torchvision(arch, seed=0).module
    torch.jit.save(torch.jit.script(eager), str(tmp_path / f"{arch}.pt"))
    out = export_model(load_torchscript(tmp_path / f"{arch}.pt"), tmp_path / "zoo",
                       input_size=64, grads_batch=2, head=spec.head)
    m = load_manifest(out)
    assert (m.layers.conv1, m.layers.conv2) == (spec.conv1, spec.conv2)
    feat_err, logit_err, ratio_err, floor = parity(eager, out)
    assert feat_err <= FEAT_TOL and logit_err <= FEAT_TOL
    assert floor <= 1e-2, "torch's fp32 ratio noise is too large to judge against"
    assert ratio_err <= max(RATIO_TOL, 3 * floor)
