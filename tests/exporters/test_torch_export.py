"""``torch.export.save`` programs (``.pt2``) as a model source: ``export --torchscript FILE.pt2``
and ``--checkpoint FILE.pt2`` alone, their refusals, and the numbers against the original
module.

Features are held to 1e-5 relative (an fp32 forward of a few layers, against float64), the
S_FU gradient ratio of ``grads.onnx`` and of the split pass to 1e-4 against float64 autograd
on the original ``nn.Module``, whose module paths the manifest's layers name.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from _support import assert_one_line_error, member_parity, small_target
from gradnca_onnx import sources, training
from gradnca_onnx.cli import main
from gradnca_onnx.engine.batching import open_session
from gradnca_onnx.errors import SourceError
from gradnca_onnx.exporters.feature_model import FeatureModel
from gradnca_onnx.sources.checkpoints import (
    is_exported_program_archive,
    is_torchscript_archive,
    read_checkpoint,
)
from gradnca_onnx.sources.custom import load_torchscript
from gradnca_onnx.zoo import load_manifest

FEAT_TOL = 1e-5
GRAD_TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SmallCNN(nn.Module):
    """Two convolutions (BatchNorm with non-trivial statistics between), a pool, a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.bn.running_mean.copy_(0.1 * torch.randn(8, generator=g))
            self.bn.running_var.copy_(0.5 + torch.rand(8, generator=g))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(images)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def save_program(model: nn.Module, path: Path, size: int = 32, *, dynamic: bool = True) -> Path:
    example = torch.randn(2, 3, size, size)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None  # any argument name
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=shapes), path)
    return path


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The model, its program with a dynamic batch, and one with a static batch."""
    root = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    model = SmallCNN().eval()
    return (model, save_program(model, root / "cnn.pt2"),
            save_program(model, root / "static.pt2", dynamic=False))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def export(pt2: Path, zoo: Path, *extra, option: str = "--torchscript"):
    return run("export", option, pt2, "--trust-pickle", "--input-size", 32, "--out", zoo,
               *extra)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def classifier_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``model.fc`` receives (a hook on the original module, not the exporter's cut)."""
    seen = []
    handle = model.fc.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def split_ratio_error(model: nn.Module, model_dir: Path) -> float:
    """The S_FU ratio of forward.onnx + backward.onnx (one full chunk) against float64
    autograd on ``model``."""
    m = load_manifest(model_dir, verify=False)
    b = m.batch_policy.grads_batch
    g = torch.Generator().manual_seed(2)
    x = torch.randn(b, 3, 32, 32, generator=g)
    c = torch.randn(b, m.feature_dim, generator=g)
    names = [f"r{i}" for i in range(m.split.residuals)]
    held = open_session(model_dir, "forward", manifest=m, threads=1).run(
        names, {"images": x.numpy()})
    g1, g2 = open_session(model_dir, "backward", manifest=m, threads=1).run(
        ["grad_w1", "grad_w2"], {"cotangent": c.numpy(), **dict(zip(names, held))})
    m64 = copy.deepcopy(model).double()
    (f,) = FeatureModel(m64, m.layers.features, with_logits=False)(x.double())
    w1, w2 = (m64.get_submodule(p).weight for p in (m.layers.conv1, m.layers.conv2))
    r1, r2 = torch.autograd.grad(f, [w1, w2], c.double())
    got = np.linalg.norm(g2) / np.linalg.norm(g1)
    return abs(float(got / (r2.norm() / r1.norm())) - 1)


def test_export_parity_and_rank(programs, tmp_path):
    model, pt2, _ = programs
    zoo = tmp_path / "zoo"
    res = export(pt2, zoo)
    assert res.exit_code == 0, res.output
    m = load_manifest(zoo / "cnn")
    assert (m.source.kind, m.source.reference, m.architecture) == ("torch_export", "cnn.pt2",
                                                                  "SmallCNN")
    assert m.source.checkpoint_sha256 == hashlib.sha256(pt2.read_bytes()).hexdigest()
    assert (m.layers.features, m.layers.conv1, m.layers.conv2, m.layers.rule) == (
        "fc", "conv1", "conv2", "first-two-convs")
    assert (m.feature_dim, m.num_classes, m.batch_policy.grads_batch) == (16, 5, 32)
    assert m.split is not None

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (feats,) = open_session(zoo / "cnn", "features", manifest=m, threads=1).run(
        ["features"], {"images": x.numpy()})
    assert rel(feats, classifier_input(model, x)) <= FEAT_TOL
    parity = member_parity(model, zoo / "cnn", n=3)
    assert parity["features"] <= FEAT_TOL and parity["ratio"] <= GRAD_TOL, parity
    assert split_ratio_error(model, zoo / "cnn") <= GRAD_TOL

    target = small_target(tmp_path / "t.npz")
    res = run("rank", "--zoo", zoo, "--target", target, "--format", "json", "--no-cache")
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.output[res.output.index("{"):])["models"]
    assert row["model"] == "cnn" and row["error"] is None and np.isfinite(row["fu"])


def test_refusals_are_one_line(programs, tmp_path):
    _, pt2, static = programs
    zoo = tmp_path / "zoo"
    res = run("export", "--torchscript", pt2, "--input-size", 32, "--out", zoo)
    assert_one_line_error(res, "is a torch.export program", "runs code from the file",
                          "--trust-pickle")
    assert_one_line_error(export(static, zoo), "static batch of 2",
                          'dynamic_shapes={"images": {0: torch.export.Dim("batch")}}')
    res = run("export", "--torchscript", pt2, "--trust-pickle", "--input-size", 40,
              "--out", zoo)
    assert_one_line_error(res, "exported for 32x32 images", "--input-size 32")
    assert_one_line_error(export(pt2, zoo, "--channels", 1), "takes 3 input channels",
                          "--channels 3")
    training_mode = save_program(SmallCNN().train(), tmp_path / "train.pt2")
    assert_one_line_error(export(training_mode, zoo), "exported in training mode",
                          "model.eval()")
    assert not zoo.exists() or not any(zoo.iterdir())


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_checkpoint_alone_and_detection(programs, tmp_path):
    model, pt2, _ = programs
    renamed = tmp_path / "weights.bin"  # found by its content, not its suffix
    renamed.write_bytes(pt2.read_bytes())
    res = export(renamed, tmp_path / "zoo", "--features-only", option="--checkpoint")
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "weights")
    assert m.source.kind == "torch_export" and m.features_only

    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.jit.save(torch.jit.script(model), str(tmp_path / "ts.pt"))
    assert is_exported_program_archive(renamed)
    assert not is_exported_program_archive(tmp_path / "sd.pt")
    assert not is_exported_program_archive(tmp_path / "ts.pt")
    assert not is_torchscript_archive(pt2)
    with pytest.raises(SourceError, match="is a torch.export program: load it with "
                                          "--torchscript"):
        read_checkpoint(pt2)
    with pytest.raises(SourceError, match="nor a torch.export program"):
        load_torchscript(tmp_path / "sd.pt")


def test_finetune_cannot_rebuild_it(programs, tmp_path):
    _, pt2, _ = programs
    member = sources.load_exported_program(pt2, trust_pickle=True)
    from gradnca_onnx.exporters import export_model

    out = export_model(member, tmp_path / "zoo", input_size=32, features_only=True)
    why = r"cannot be rebuilt for training \(a torch.export program is a fixed graph\)"
    with pytest.raises(SourceError, match=f"torch_export source .* {why}"):
        sources.rebuild(out)
    with pytest.raises(SourceError, match=f"is a torch.export program, which {why}"):
        training.load_source(str(pt2))


@pytest.mark.slow
def test_resnet18_program(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    pt2 = save_program(model, tmp_path / "r18.pt2")
    res = export(pt2, tmp_path / "zoo", "--grads-batch", 8)
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "r18")
    assert (m.layers.features, m.layers.conv1, m.layers.conv2) == ("fc", "conv1",
                                                                   "layer1.0.conv1")
    parity = member_parity(model, tmp_path / "zoo" / "r18", n=3)
    assert parity["features"] <= FEAT_TOL, parity
    assert parity["ratio"] <= max(GRAD_TOL, 10 * parity["floor"]), parity
