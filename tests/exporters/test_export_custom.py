"""Exporting models that are not in the paper's table: own stems, BatchNorm, grouped and
depthwise convolutions, odd sizes, heads with other names; factories, TorchScript, checkpoints.

Every number is compared with torch in the test: features against torch's fp32 forward
(relative L2 error <= 1e-5: an fp32 forward of a few layers reorders sums at the 1e-7 level),
gradients and their norm ratio against a float64 torch autograd reference (<= 1e-4: fp32
backward through a few layers; these small smooth-ish models have no activation within fp32
rounding of a kink at these seeds, so the gradients themselves are held to the same bound).
"""

from __future__ import annotations

import copy
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from gradnca_onnx.engine.batching import open_session, run_grads
from gradnca_onnx.exporters import FeatureModel, export_model
from gradnca_onnx.sources import (
    from_module,
    load_factory,
    load_torchscript,
    load_torchvision,
    read_checkpoint,
)
from gradnca_onnx.zoo import load_manifest

FEAT_TOL = 1e-5
GRAD_TOL = 1e-4


# Torch single-threaded for these modules (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- models

MODELS_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    def _random_bn(bn, seed):
        # non-trivial running statistics, so that eval-mode BatchNorm is not an identity
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
            bn.weight.copy_(1 + 0.1 * torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g))
        return bn


    class StemBNNet(nn.Module):
        """Own conv stem, BatchNorm, ceil-mode average pool, dilation, non-global adaptive pool;
        the head is called 'scorer' and follows another Linear."""

        def __init__(self, num_classes=5):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False),
                                      _random_bn(nn.BatchNorm2d(8), 1), nn.ReLU())
            self.body = nn.Sequential(
                nn.Conv2d(8, 16, 3, stride=2, padding=1), _random_bn(nn.BatchNorm2d(16), 2),
                nn.ReLU6(),
                nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.GELU(),
                nn.AdaptiveAvgPool2d((3, 2)))
            self.embedding = nn.Linear(96, 24)
            self.act = nn.Tanh()
            self.scorer = nn.Linear(24, num_classes)

        def forward(self, x):
            x = torch.flatten(self.body(self.stem(x)), 1)
            return self.scorer(self.act(self.embedding(x)))


    class GroupedNet(nn.Module):
        """One input channel; depthwise and grouped convs; global pool; head 'logit_layer'."""

        def __init__(self, num_classes=4):
            super().__init__()
            self.c1 = nn.Conv2d(1, 12, 3, stride=2, padding=1)
            self.dw = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12)
            self.grouped = nn.Conv2d(12, 24, (3, 1), stride=(1, 2), padding=(1, 0), groups=3)
            self.bn = _random_bn(nn.BatchNorm2d(24), 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.logit_layer = nn.Linear(24, num_classes)

        def forward(self, x):
            x = nn.functional.silu(self.c1(x))
            x = nn.functional.silu(self.dw(x))
            x = nn.functional.silu(self.bn(self.grouped(x)))
            return self.logit_layer(torch.flatten(self.pool(x), 1))


    class OneConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))


    def not_a_model():
        return 3


    def stem_bn_net(num_classes=5):
        torch.manual_seed(0)
        return StemBNNet(num_classes)
''')


@pytest.fixture(scope="module")
def models_module(tmp_path_factory):
    """The models above as an importable module (``factory`` loading imports by name)."""
    root = tmp_path_factory.mktemp("factory")
    (root / "export_test_models.py").write_text(MODELS_SOURCE)
    sys.path.insert(0, str(root))
    import export_test_models

    yield export_test_models
    sys.path.remove(str(root))
    sys.modules.pop("export_test_models", None)


# --------------------------------------------------------------------------- helpers


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def reference(model: nn.Module, head: str, conv1: str, conv2: str, x: torch.Tensor,
              c: torch.Tensor, *, with_logits: bool = True):
    """torch fp32 features/logits and float64 autograd gradients of <features, c>."""
    with torch.no_grad():
        outs32 = FeatureModel(model, head, with_logits=with_logits)(x)
    m64 = copy.deepcopy(model).double()
    (f64,) = FeatureModel(m64, head, with_logits=False)(x.double())
    w1, w2 = m64.get_submodule(conv1).weight, m64.get_submodule(conv2).weight
    g1, g2 = torch.autograd.grad(f64, [w1, w2], c.double())
    return [o.numpy() for o in outs32], g1.numpy(), g2.numpy()


def check_parity(model_dir: Path, model: nn.Module, n: int = 5, seed: int = 1):
    """Run both graphs of ``model_dir`` (batch ``n``, via the batch policy) against torch."""
    m = load_manifest(model_dir)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m.input.channels, m.input.height, m.input.width, generator=g)
    c = torch.randn(n, m.feature_dim, generator=g)
    outs, G1, G2 = reference(model, m.layers.features, m.layers.conv1, m.layers.conv2, x, c,
                             with_logits=m.num_classes is not None)
    sess = open_session(model_dir, "features", manifest=m, threads=1)
    got = sess.run(None, {"images": x.numpy()})
    assert len(got) == len(outs) == (2 if m.num_classes else 1)
    for a, b in zip(got, outs):
        assert a.shape == b.shape
        assert rel(a, b) <= FEAT_TOL
    sess = open_session(model_dir, "grads", manifest=m, threads=1)
    feats, g1, g2 = run_grads(sess, x.numpy(), c.numpy())
    assert rel(feats, outs[0]) <= FEAT_TOL
    assert g1.shape == G1.shape and g2.shape == G2.shape
    assert rel(g1, G1) <= GRAD_TOL and rel(g2, G2) <= GRAD_TOL
    ratio = np.linalg.norm(g2) / np.linalg.norm(g1)
    ratio_ref = np.linalg.norm(G2) / np.linalg.norm(G1)
    assert abs(ratio / ratio_ref - 1) <= GRAD_TOL
    return m


# --------------------------------------------------------------------------- tests


def test_custom_stem_batchnorm_pools_and_named_head(models_module, tmp_path):
    model = models_module.stem_bn_net().eval()
    out = export_model(from_module(model, name="stembn"), tmp_path, input_size=37, grads_batch=3)
    m = check_parity(out, model, n=7)
    assert (m.layers.features, m.layers.conv1, m.layers.conv2) == ("scorer", "stem.0", "body.0")
    assert (m.feature_dim, m.num_classes) == (24, 5)
    assert m.layers.conv1_weight_shape == (8, 3, 5, 5)
    assert (m.input.height, m.input.width, m.input.channels) == (37, 37, 3)
    for f in ("features.onnx", "grads.onnx"):
        onnx.checker.check_model(str(out / f), full_check=True)
    grads = onnx.load(str(out / "grads.onnx"), load_external_data=False)
    assert [d.dim_value for d in grads.graph.input[0].type.tensor_type.shape.dim] == [3, 3, 37, 37]
    feats = onnx.load(str(out / "features.onnx"), load_external_data=False)
    assert feats.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_grouped_depthwise_one_channel_and_layer_override(models_module, tmp_path):
    model = models_module.GroupedNet().eval()
    loaded = from_module(model, name="grouped")
    out = export_model(loaded, tmp_path, input_size=(20, 26), grads_batch=4)
    m = check_parity(out, model, n=4)
    assert (m.layers.conv1, m.layers.conv2, m.layers.features) == ("c1", "dw", "logit_layer")
    assert m.input.channels == 1 and m.input.mean == (0.5,)
    # grouped weight gradient (groups=3, rectangular kernel and stride) through the override
    out2 = export_model(loaded, tmp_path, name="grouped2", input_size=(20, 26), grads_batch=2,
                        convs=["dw", "grouped"], norm="0.2,0.3")
    m2 = check_parity(out2, model, n=3)
    assert (m2.layers.conv1, m2.layers.conv2) == ("dw", "grouped")
    assert m2.input.mean == (0.2,) and m2.input.std == (0.3,)


def test_head_override_and_model_output_as_features(models_module, tmp_path):
    model = models_module.stem_bn_net().eval()
    out = export_model(from_module(model), tmp_path, name="emb", input_size=32, grads_batch=2,
                       head="embedding")
    m = check_parity(out, model, n=2)
    assert (m.layers.features, m.feature_dim, m.num_classes) == ("embedding", 96, 24)
    out = export_model(from_module(model), tmp_path, name="whole", input_size=32, grads_batch=2,
                       head="")
    m = check_parity(out, model, n=2)
    assert (m.layers.features, m.feature_dim, m.num_classes) == ("", 5, None)
    # a feature layer whose output is not (batch, classes) gives features and no logits
    out = export_model(from_module(model), tmp_path, name="mid", input_size=32, grads_batch=2,
                       head="body.4")
    m = check_parity(out, model, n=2)
    assert (m.layers.features, m.feature_dim, m.num_classes) == ("body.4", 16 * 5 * 5, None)  # ceil-mode pool: 8 -> 5


def test_fewer_than_two_convs_is_refused(models_module, tmp_path):
    with pytest.raises(ValueError,
                       match=r"depend on 1 weight-bearing layer\(s\) \(conv\) and S_FU compares"):
        export_model(from_module(models_module.OneConvNet()), tmp_path, input_size=8)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unknown_layer_paths_are_refused(models_module, tmp_path):
    model = from_module(models_module.GroupedNet())
    with pytest.raises(ValueError, match=r"'c2' is not a module path .*close: c1"):
        export_model(model, tmp_path, input_size=16, convs=["c1", "c2"])
    with pytest.raises(ValueError, match="S_FU layer 'bn' has a 1-D weight"):
        export_model(model, tmp_path, input_size=16, convs=["c1", "bn"])
    with pytest.raises(ValueError, match="feature layer"):
        export_model(model, tmp_path, input_size=16, head="nope")


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("layout", ["plain", "net", "state_dict", "module_prefix"])
def test_factory_with_checkpoint_layouts(models_module, tmp_path, layout):
    trained = models_module.StemBNNet(num_classes=7)
    torch.manual_seed(5)
    for p in trained.parameters():  # weights unlike any fresh initialisation
        p.data.normal_(0, 0.2)
    sd = trained.state_dict()
    obj = {"plain": sd, "net": {"net": sd, "epoch": 3},
           "state_dict": {"state_dict": sd, "optimizer": {"lr": 0.1}},
           "module_prefix": {f"module.{k}": v for k, v in sd.items()}}[layout]
    ckpt = tmp_path / "w.pt"
    torch.save(obj, ckpt)
    loaded = load_factory("export_test_models:stem_bn_net", ckpt)
    assert loaded.options["factory_kwargs"] == {"num_classes": 7}  # read from the checkpoint
    for k, v in loaded.module.state_dict().items():
        assert torch.equal(v, sd[k]), k
    if layout == "plain":
        out = export_model(loaded, tmp_path / "zoo", input_size=24, grads_batch=2,
                           pretrained_on="ImageNet (ours)")
        m = check_parity(out, trained.eval(), n=2)
        assert m.num_classes == 7 and m.source.kind == "factory"
        assert m.source.checkpoint == "w.pt" and len(m.source.checkpoint_sha256) == 64
        assert m.input.mean == (0.485, 0.456, 0.406)  # ImageNet source -> ImageNet statistics
        assert m.name == "StemBNNet-w"


def test_factory_checkpoint_that_does_not_fit(models_module, tmp_path):
    sd = models_module.GroupedNet().state_dict()
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(ValueError) as exc:
        load_factory("export_test_models:stem_bn_net", tmp_path / "w.pt")
    msg = str(exc.value)
    assert "does not fit" in msg and "missing keys: stem.0.weight" in msg
    assert "unexpected keys: c1.weight" in msg


def test_pickled_module_needs_trust(models_module, tmp_path):
    model = models_module.GroupedNet().eval()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="pass --trust-pickle"):
        read_checkpoint(tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_torchvision("resnet18", tmp_path / "whole.pt")
    trusted = read_checkpoint(tmp_path / "whole.pt", trust_pickle=True)
    assert isinstance(trusted, models_module.GroupedNet)


def test_factory_errors(models_module):
    with pytest.raises(ValueError, match="must look like package.module:callable"):
        load_factory("export_test_models.stem_bn_net")
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        load_factory("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="'missing' is not a callable"):
        load_factory("export_test_models:missing")
    with pytest.raises(ValueError, match="returned a int, not a torch.nn.Module"):
        load_factory("export_test_models:not_a_model")


def test_torchscript_model(models_module, tmp_path):
    model = models_module.stem_bn_net().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = load_torchscript(path)
    out = export_model(loaded, tmp_path / "zoo", input_size=33, grads_batch=2)
    m = check_parity(out, model, n=3)
    assert m.source.kind == "torchscript" and m.name == "scripted"
    assert (m.layers.features, m.layers.conv1, m.layers.conv2) == ("scorer", "stem.0", "body.0")
    assert (m.feature_dim, m.num_classes) == (24, 5)
    with pytest.raises(ValueError, match="is a TorchScript file: load it with --torchscript"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="is not a TorchScript file"):
        torch.save(model.state_dict(), tmp_path / "sd.pt")
        load_torchscript(tmp_path / "sd.pt")


def test_torchvision_checkpoint_head_channels_and_prefix(tmp_path):
    torch.manual_seed(3)
    src = load_torchvision("resnet18", arch_kwargs={"num_classes": 3}, channels=1, seed=7).module
    assert src.conv1.weight.shape == (64, 1, 7, 7)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "r18.pth")
    loaded = load_torchvision("resnet18", tmp_path / "r18.pth")
    assert loaded.options["arch_kwargs"] == {"num_classes": 3}
    assert loaded.module.conv1.weight.shape == (64, 1, 7, 7)
    for k, v in loaded.module.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    with pytest.raises(ValueError, match="--channels 3 but the checkpoint's first conv"):
        load_torchvision("resnet18", tmp_path / "r18.pth", channels=3)
    with pytest.raises(ValueError) as exc:
        load_torchvision("resnet34", tmp_path / "r18.pth")
    assert "missing keys: layer1.2" in str(exc.value) and "does not fit" in str(exc.value)


def test_unknown_architecture():
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet81' \(did you mean"):
        load_torchvision("resnet81")


# --------------------------------------------------------------------------- batch policy


def test_batch_policy_on_a_real_graph_and_zero_cotangent_rows(models_module, tmp_path):
    """Padding (zero cotangent rows) and chunking reproduce the whole batch's gradient, and
    zero cotangent rows add nothing whatever the images (eval-mode BatchNorm)."""
    model = models_module.stem_bn_net().eval()
    out = export_model(from_module(model), tmp_path, input_size=24, grads_batch=4)
    sess = open_session(out, "grads", threads=1)
    g = torch.Generator().manual_seed(4)
    x, c = torch.randn(9, 3, 24, 24, generator=g), torch.randn(9, 24, generator=g)
    _, G1, G2 = reference(model, "scorer", "stem.0", "body.0", x, c)
    for n in (1, 3, 4, 9):  # padded, padded, exact, two chunks + padded
        _, H1, H2 = reference(model, "scorer", "stem.0", "body.0", x[:n], c[:n])
        _, g1, g2 = run_grads(sess, x[:n].numpy(), c[:n].numpy())
        assert rel(g1, H1) <= GRAD_TOL and rel(g2, H2) <= GRAD_TOL
    # in torch itself: random images with zero cotangent change nothing
    c0 = c.clone()
    c0[5:] = 0
    _, Z1, Z2 = reference(model, "scorer", "stem.0", "body.0", x, c0)
    _, P1, P2 = reference(model, "scorer", "stem.0", "body.0", x[:5], c[:5])
    assert rel(Z1, P1) <= 1e-12 and rel(Z2, P2) <= 1e-12
    # and the ONNX graph agrees when fed those random padding images directly
    f, a1, a2 = sess.run(None, {"images": x[:4].numpy(),
                                "cotangent": torch.cat([c[:2], torch.zeros(2, 24)]).numpy()})
    _, Q1, Q2 = reference(model, "scorer", "stem.0", "body.0", x[:2], c[:2])
    assert rel(a1, Q1) <= GRAD_TOL and rel(a2, Q2) <= GRAD_TOL
    assert G1.shape == a1.shape


# --------------------------------------------------------------------------- torch-free run


def test_graphs_run_in_a_process_without_torch(models_module, tmp_path, run_without_torch):
    model = models_module.stem_bn_net().eval()
    out = export_model(from_module(model), tmp_path / "zoo", input_size=24, grads_batch=2)
    g = torch.Generator().manual_seed(6)
    x, c = torch.randn(3, 3, 24, 24, generator=g), torch.randn(3, 24, generator=g)
    np.savez(tmp_path / "in.npz", x=x.numpy(), c=c.numpy())
    res = run_without_torch(f"""
        import sys
        import numpy as np
        from gradnca_onnx.engine.batching import open_session, run_grads
        from gradnca_onnx.zoo import load_manifest
        d = np.load({str(tmp_path / 'in.npz')!r})
        m = load_manifest({str(out)!r})
        sess = open_session({str(out)!r}, "features", manifest=m)
        f, logits = sess.run(None, {{"images": d["x"]}})
        gf, g1, g2 = run_grads(open_session({str(out)!r}, "grads", manifest=m), d["x"], d["c"])
        np.savez({str(tmp_path / 'out.npz')!r}, f=f, logits=logits, gf=gf, g1=g1, g2=g2)
        print(sorted(k for k in sys.modules if k.split(".")[0] == "torch"))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    got = np.load(tmp_path / "out.npz")
    outs, G1, G2 = reference(model, "scorer", "stem.0", "body.0", x, c)
    assert rel(got["f"], outs[0]) <= FEAT_TOL and rel(got["logits"], outs[1]) <= FEAT_TOL
    assert rel(got["gf"], outs[0]) <= FEAT_TOL
    assert rel(got["g1"], G1) <= GRAD_TOL and rel(got["g2"], G2) <= GRAD_TOL
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch_policy"]["grads_batch"] == 2


def test_googlenet_checkpoint_with_aux_heads(tmp_path):
    import torchvision

    src = torchvision.models.googlenet(aux_logits=True, init_weights=False, num_classes=6)
    with torch.no_grad():
        src.fc.bias.fill_(0.25)
    torch.save({"model_state_dict": src.state_dict()}, tmp_path / "g.pt")
    loaded = load_torchvision("googlenet", tmp_path / "g.pt")
    assert loaded.options["arch_kwargs"] == {"aux_logits": True, "init_weights": False,
                                             "num_classes": 6}
    assert torch.equal(loaded.module.fc.bias, src.fc.bias)
    assert loaded.spec is not None and loaded.spec.head == "fc"
