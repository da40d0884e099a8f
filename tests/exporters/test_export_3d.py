"""3-D members (issue 29): Conv3d/MaxPool3d/AvgPool3d/BatchNorm3d gradient graphs, the 3-D
sources (a factory with Conv3d, torchvision video, MONAI spatial_dims=3, an inflated 2-D CNN)
and their parity with the libraries' own models.

Parity as for 2-D members: features within 1e-5 of float64, the S_FU ratio within
max(1e-4, twice torch float32's own error on the same input) of float64 autograd.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _support import member_parity
from torch import nn

from gradnca_onnx import sources
from gradnca_onnx.errors import InputError, SourceError
from gradnca_onnx.exporters import export_model
from gradnca_onnx.exporters.onnx_export import export_grads
from gradnca_onnx.exporters.vjp_trace import trace_feature_vjp
from gradnca_onnx.sources.inflate import inflate_module
from gradnca_onnx.zoo import read_manifest

pytest.importorskip("onnxscript")


class Pools3d(nn.Module):
    """Every 3-D layer the gradient graph translates: Conv3d, BatchNorm3d, MaxPool3d
    (overlapping windows), AvgPool3d (padding, ceil mode) and a non-global adaptive pool."""

    def __init__(self, avg: dict | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(8)
        self.pool1 = nn.MaxPool3d(3, 2, 1)
        self.conv2 = nn.Conv3d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(16)
        self.pool2 = nn.AvgPool3d(**(avg or {"kernel_size": 3, "stride": 2, "padding": 1}))
        self.conv3 = nn.Conv3d(16, 16, (1, 3, 3), stride=(1, 2, 2))
        self.pool3 = nn.AdaptiveAvgPool3d((2, 1, 2))
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool2(torch.relu(self.bn2(self.conv2(x))))
        x = self.pool3(torch.relu(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics (random-init ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _assert_parity(errors: dict[str, float]) -> None:
    assert errors["features"] < 1e-5, errors
    assert errors["ratio"] <= max(1e-4, 2 * errors["floor"]), errors


@pytest.mark.parametrize("avg", [
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 2, "stride": 2, "ceil_mode": True, "count_include_pad": False},
    {"kernel_size": 3, "stride": 1, "padding": 1},
])
def test_3d_layers_gradient_graph_matches_autograd(avg, tmp_path):
    """The translated 3-D pooling backwards (max-pool indices scattered, average and adaptive
    pools as three constant products) against torch's autograd on a whole member."""
    model = _randomised(Pools3d(avg))
    loaded = sources.from_module(model, name="pools3d")
    out = export_model(loaded, tmp_path, name="p", input_size=12, depth=10, grads_batch=3)
    m = read_manifest(out)
    assert m.input.depth == 10 and m.schema_version == 7 and m.split is not None
    assert m.layers.conv1_weight_shape == (8, 1, 3, 3, 3)
    _assert_parity(member_parity(model, out, n=3))


def test_a_forward_torch_onnx_mistranslates_is_refused(tmp_path):
    """torch.onnx translates AvgPool3d(divisor_override=...) as a plain average: the export's
    own check against torch catches it and refuses the member (never a wrong graph)."""
    model = _randomised(Pools3d({"kernel_size": 3, "stride": 1, "padding": 1,
                                 "divisor_override": 5}))
    with pytest.raises(InputError, match="features.onnx disagrees with torch"):
        export_model(sources.from_module(model, name="p"), tmp_path, name="p", input_size=12,
                     depth=10, grads_batch=2)
    assert not (tmp_path / "p").exists()


def test_split_pass_equals_the_whole_graph_on_volumes(tmp_path):
    """forward.onnx + backward.onnx give grads.onnx's gradients (the split pass on 3-D)."""
    from gradnca_onnx.engine.batching import open_session, run_grads

    model = _randomised(Pools3d())
    out = export_model(sources.from_module(model, name="p"), tmp_path, name="p",
                       input_size=12, depth=10, grads_batch=2)
    m = read_manifest(out)
    g = np.random.default_rng(0)
    x = g.standard_normal((2, 1, 10, 12, 12)).astype(np.float32)
    c = g.standard_normal((2, m.feature_dim)).astype(np.float32)
    whole = run_grads(open_session(out, "grads", manifest=m, threads=1), x, c)
    fwd = open_session(out, "forward", manifest=m, threads=1)
    bwd = open_session(out, "backward", manifest=m, threads=1)
    names = [o.name for o in fwd.get_outputs()]
    outs = dict(zip(names, fwd.run(None, {"images": x})))
    feeds = {i.name: outs[i.name] for i in bwd.get_inputs() if i.name != "cotangent"}
    g1, g2 = bwd.run(None, {"cotangent": c, **feeds})
    np.testing.assert_allclose(outs["features"], whole[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(g1, whole[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g2, whole[2], rtol=1e-5, atol=1e-7)


def test_max_pool3d_backward_adds_shared_argmax():
    """Overlapping windows that pick the same voxel add their gradients there (as ATen)."""
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv3d(1, 2, 1)
            self.b = nn.Conv3d(2, 2, 1)

        def forward(self, x):
            y = nn.functional.max_pool3d(self.a(x), 3, 1, 1)
            return (self.b(y).mean(dim=(2, 3, 4)),)

    model = M().eval()
    x = torch.zeros(1, 1, 4, 4, 4)
    x[0, 0, 1, 1, 1] = 5.0  # the maximum of 27 windows
    c = torch.ones(1, 2)
    traced = trace_feature_vjp(model, "a.weight", "b.weight", x, c)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        export_grads(traced.module(), x, c, Path(d) / "g.onnx")
        got = ort.InferenceSession(str(Path(d) / "g.onnx")).run(
            None, {"images": x.numpy(), "cotangent": c.numpy()})
    (f,) = model(x)
    ref = torch.autograd.grad(f, [model.a.weight, model.b.weight], c)
    for a, b in zip(got[1:3], ref):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_inflation_rule_gives_the_2d_response_on_a_constant_volume():
    """I3D's rule: a kh x kw kernel to kh x kh x kw, repeated along depth and divided by kh,
    so an interior slice of a volume of identical slices gets the 2-D convolution's output."""
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), bias=True)
    model = nn.Sequential(conv, nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
    inflated = inflate_module(model).eval()
    c3 = inflated[0]
    assert isinstance(c3, nn.Conv3d) and c3.kernel_size == (3, 3, 5)
    assert c3.stride == (2, 2, 1) and c3.padding == (1, 1, 2)
    torch.testing.assert_close(c3.weight.sum(dim=2), conv.weight, rtol=1e-6, atol=1e-7)
    assert isinstance(inflated[1], nn.BatchNorm3d) and isinstance(inflated[2], nn.MaxPool3d)
    assert inflated[3].output_size == (1, 1, 1)
    x = torch.rand(2, 3, 16, 16, generator=g)
    vol = x[:, :, None].repeat(1, 1, 9, 1, 1)
    with torch.no_grad():
        y2, y3 = conv(x), c3(vol)
    # Output depth 5 (stride 2): slices 1..3 see no depth padding.
    for d in (1, 2, 3):
        torch.testing.assert_close(y3[:, :, d], y2, rtol=1e-5, atol=1e-6)


def test_inflation_refuses_what_the_rule_does_not_cover():
    with pytest.raises(SourceError, match="no nn.Conv2d"):
        inflate_module(nn.Sequential(nn.Conv3d(1, 2, 3)))
    with pytest.raises(SourceError, match="ConvTranspose2d"):
        inflate_module(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 3)))


def test_an_inflated_network_whose_own_code_is_2d_is_one_line(tmp_path):
    """MNASNet averages with x.mean([2, 3]) in its forward: inflating its layers cannot make
    it take volumes, and the error says so (not the usual --input-size advice)."""
    loaded = sources.inflate_3d(sources.create_model("mnasnet0_5"))
    with pytest.raises(InputError, match="inflated network cannot run on volumes") as exc:
        export_model(loaded, tmp_path, input_size=32, depth=16)
    assert "--input-size" not in str(exc.value) and "\n" not in str(exc.value)
    assert not any(tmp_path.iterdir())


def test_depth_and_model_dimensions_must_agree(tmp_path):
    video = sources.create_model("r3d_18")
    with pytest.raises(InputError, match="give --depth"):
        export_model(video, tmp_path, input_size=16)
    flat = sources.create_model("resnet18")
    with pytest.raises(InputError, match="--inflate-3d 8"):
        export_model(flat, tmp_path, input_size=16, depth=8)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("arch, kwargs, inflate", [
    pytest.param("r3d_18", {}, False, marks=pytest.mark.slow),  # 23 s: the slow suite
    ("monai:resnet10", {"spatial_dims": 3}, False),
    pytest.param("resnet18", {}, True, marks=pytest.mark.slow),  # 19 s
])
def test_3d_sources_parity(arch, kwargs, inflate, tmp_path):
    """One member per 3-D source kind against the library's own model."""
    loaded = sources.create_model(arch, arch_kwargs=kwargs or None,
                                  channels=1 if arch.startswith("monai") else None)
    if inflate:
        loaded = sources.inflate_3d(loaded)
    _randomised(loaded.module)
    out = export_model(loaded, tmp_path, input_size=16, depth=12, grads_batch=2)
    m = read_manifest(out)
    assert m.input.depth == 12 and len(m.layers.conv1_weight_shape) == 5
    if inflate:
        assert m.architecture == "resnet18-inflated3d"
        assert m.source.options["inflate_3d"].startswith("i3d")
    if arch == "r3d_18":  # the weights' own transforms: Kinetics-400's mean and std
        assert m.input.mean == pytest.approx((0.43216, 0.394666, 0.37645))
        assert "R3D_18_Weights" in m.source.options["normalisation_from"]
    _assert_parity(member_parity(loaded.module, out, n=2))


# mc3_18 with random BatchNorm statistics at 32^3: its gradients are ill-conditioned sums
# (torch float32's own errors against float64: 2.9e-4 and 1.7e-4; onnxruntime's, summing in
# another order: 3.9e-3 and 2.2e-3), and where torch's two errors happen to cancel in the
# ratio (8.5e-7) ours do not (1.7e-4, above the 1e-4 bound). Truncated at layer4 the same
# network gives the opposite (torch 4.5e-3, onnxruntime 3.7e-4): summation order, not a wrong
# graph. Kept visible as a strict xfail; with its library's initialisation it passes.
_MC3_RANDOM_BN = pytest.mark.xfail(strict=True, reason="float32 summation order: S_FU ratio "
                                   "error 1.7e-4 where torch's happens to be 8.5e-7")


@pytest.mark.slow
@pytest.mark.parametrize("arch, kwargs, random_bn", [
    pytest.param("mc3_18", {}, True, marks=_MC3_RANDOM_BN), ("mc3_18", {}, False),
    ("r2plus1d_18", {}, True), ("monai:DenseNet121", {"spatial_dims": 3}, True),
    ("monai:resnet18", {"spatial_dims": 3}, True),
])
def test_more_3d_sources_parity(arch, kwargs, random_bn, tmp_path):
    loaded = sources.create_model(arch, arch_kwargs=kwargs or None,
                                  channels=1 if arch.startswith("monai") else None)
    if random_bn:
        _randomised(loaded.module)
    out = export_model(loaded, tmp_path, input_size=32, depth=32, grads_batch=2)
    _assert_parity(member_parity(loaded.module, out, n=2))


def test_inflated_member_rebuilds_inflated(tmp_path):
    """Fine-tuning rebuilds a member from its manifest: an inflated one comes back 3-D, with
    the same weights."""
    loaded = sources.inflate_3d(sources.create_model("resnet18", seed=3))
    out = export_model(loaded, tmp_path, input_size=16, depth=8, grads_batch=2,
                       features_only=True)
    again, _ = sources.rebuild(out)
    assert again.architecture == "resnet18-inflated3d"
    for (n, a), (_, b) in zip(loaded.module.state_dict().items(),
                              again.module.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
