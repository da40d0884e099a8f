"""``gradnca-onnx export`` and ``gradnca-onnx zoo ls``: results, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gradnca_onnx.cli import main
from gradnca_onnx.engine.batching import open_session
from gradnca_onnx.zoo import load_manifest

FACTORY_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    def tiny(num_classes=3):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                             nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, num_classes))


    def one_conv():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 2))
''')


# Torch single-threaded for these modules (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "cli_test_models.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_test_models"
    sys.modules.pop("cli_test_models", None)


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_export_and_list(factory_module, tmp_path):
    zoo = tmp_path / "zoo"
    res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 20, "--name", "t1",
              "--grads-batch", 3, "--pretrained-on", "ImageNet-1k", "--out", zoo)
    assert res.exit_code == 0, res.output
    assert "exported t1" in res.output and "D=8, K=3" in res.output
    m = load_manifest(zoo / "t1")
    assert (m.layers.conv1, m.layers.conv2, m.layers.features) == ("0", "3", "7")
    assert m.input.mean == (0.485, 0.456, 0.406) and m.batch_policy.grads_batch == 3
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 20)).astype(np.float32)
    model = __import__(factory_module).tiny().eval()
    with torch.no_grad():
        want = model[:-1](torch.from_numpy(x)).numpy()
    got = open_session(zoo / "t1", "features", threads=1).run(["features"], {"images": x})[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-5

    res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 16, "--name", "t2",
              "--norm", "0.4,0.2", "--layers", "0,3", "--head", "", "--out", zoo)
    assert res.exit_code == 0, res.output
    m2 = load_manifest(zoo / "t2")
    assert (m2.layers.conv1, m2.layers.conv2, m2.num_classes, m2.feature_dim) == ("0", "3", None, 3)

    res = run("zoo", "ls", zoo)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ARCH", "PRETRAINED"]
    assert lines[1].split()[:5] == ["t1", "Sequential", "ImageNet-1k", "3x20x20", "imagenet"]
    assert lines[2].split()[:5] == ["t2", "Sequential", "unknown", "3x16x16",
                                    "0.4,0.4,0.4/0.2,0.2,0.2"]
    res = run("zoo", "ls", "--json", "--verify", zoo)
    assert res.exit_code == 0
    assert [d["name"] for d in json.loads(res.output)] == ["t1", "t2"]

    # an existing name is refused, then replaced with --force
    res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 20, "--name", "t1",
              "--out", zoo)
    assert_one_line_error(res, "model 't1' already exists", "--force")
    before = (zoo / "t1" / "manifest.json").read_text()
    res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 24, "--name", "t1",
              "--force", "--out", zoo)
    assert res.exit_code == 0, res.output
    assert load_manifest(zoo / "t1").input.height == 24
    assert (zoo / "t1" / "manifest.json").read_text() != before
    assert sorted(p.name for p in zoo.iterdir()) == ["t1", "t2"]  # no staging left behind

    # a broken model shows up in the listing, with exit code 1
    (zoo / "t2" / "grads.onnx").write_bytes(b"0")
    res = run("zoo", "ls", zoo)
    assert res.exit_code == 1 and "BROKEN t2:" in res.output


def test_unknown_architecture(tmp_path):
    res = run("export", "--arch", "resnet81", "--out", tmp_path)
    assert_one_line_error(res, "unknown architecture 'resnet81'", "did you mean")


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    from torchvision.models import resnet18

    torch.save({"net": resnet18(num_classes=4).state_dict()}, tmp_path / "r18.pt")
    res = run("export", "--arch", "resnet34", "--checkpoint", tmp_path / "r18.pt",
              "--out", tmp_path / "zoo")
    assert_one_line_error(res, "does not fit", "missing keys: layer1.2.conv1.weight")
    sd = resnet18(num_classes=4).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(sd, tmp_path / "bad.pt")
    res = run("export", "--arch", "resnet18", "--checkpoint", tmp_path / "bad.pt",
              "--out", tmp_path / "zoo")
    assert_one_line_error(res, "1 unexpected keys: extra.weight",
                          "conv1.weight (64, 3, 5, 5) vs (64, 3, 7, 7)")
    assert not (tmp_path / "zoo").exists() or not any((tmp_path / "zoo").iterdir())


def test_pickled_model_is_refused_without_trust(factory_module, tmp_path):
    model = __import__(factory_module).tiny()
    torch.save(model, tmp_path / "whole.pt")
    res = run("export", "--factory", f"{factory_module}:tiny", "--checkpoint",
              tmp_path / "whole.pt", "--input-size", 16, "--out", tmp_path / "zoo")
    assert_one_line_error(res, "pickles Python objects", "--trust-pickle")
    res = run("export", "--factory", f"{factory_module}:tiny", "--checkpoint",
              tmp_path / "whole.pt", "--trust-pickle", "--input-size", 16, "--name", "w",
              "--out", tmp_path / "zoo")
    assert res.exit_code == 0, res.output
    options = load_manifest(tmp_path / "zoo" / "w").source.options
    assert options == {"pickled_module": True, "normalisation_from": options[
        "normalisation_from"]} and options["normalisation_from"].startswith("guessed from")


def test_fewer_than_two_convs(factory_module, tmp_path):
    res = run("export", "--factory", f"{factory_module}:one_conv", "--input-size", 8,
              "--out", tmp_path)
    assert_one_line_error(res, "depend on 1 weight-bearing layer(s) (0)",
                          "--features-only-fallback")


def test_unwritable_output_directory(factory_module, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 8,
              "--out", blocker / "zoo")
    assert_one_line_error(res, "output directory", "is not writable", "--out")
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 8, "--out", ro)
        assert_one_line_error(res, "is not writable")
    res = run("export", "--factory", f"{factory_module}:tiny", "--input-size", 8, "--out", blocker)
    assert_one_line_error(res, "is not a directory")


@pytest.mark.parametrize("args, fragment", [
    (["--out", "z"], "give exactly one of --arch, --torchscript or --factory"),
    (["--arch", "resnet18", "--factory", "a:b", "--out", "z"], "got --arch and --factory"),
    (["--arch", "resnet18", "--layers", "conv1", "--out", "z"], "must name two layers"),
    (["--arch", "resnet18", "--arch-kwarg", "x", "--out", "z"], "must look like KEY=VALUE"),
    (["--arch", "resnet18", "--norm", "imagenet", "--channels", "1", "--out", "z"],
     "has 3 channels but the model takes 1"),
    (["--arch", "resnet18", "--name", "a/b", "--out", "z"], "model name 'a/b' is not allowed"),
    (["--torchscript", "missing.pt", "--out", "z"], "TorchScript file missing.pt not found"),
    (["--arch", "resnet18", "--checkpoint", "missing.pt", "--out", "z"],
     "checkpoint missing.pt not found"),
])
def test_bad_arguments(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run("export", *args), fragment)
    assert not (tmp_path / "z").exists() or not any((tmp_path / "z").iterdir())


def test_zoo_ls_missing_directory(tmp_path):
    assert_one_line_error(run("zoo", "ls", tmp_path / "nope"), "does not exist")


def test_export_without_torch_says_how_to_install(tmp_path, run_without_torch):
    res = run_without_torch(f"""
        import sys
        from gradnca_onnx.cli import main
        main(["--help"], standalone_mode=False)
        main(["export", "--arch", "resnet18", "--out", {str(tmp_path)!r}])
    """, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "export" in res.stdout  # --help worked without torch
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "needs the torch package" in lines[0] and "pip install 'gradnca-onnx[torch]'" in lines[0]


def test_plain_dict_checkpoint_without_module_versions_loads(tmp_path):
    """MNASNet refuses a state dict without torch's per-module ``_metadata`` (versions); a plain
    dict (converted or re-packed checkpoints) must still load, with every tensor intact."""
    import torch
    import torchvision

    from gradnca_onnx.sources import load_torchvision

    torch.manual_seed(3)
    model = torchvision.models.mnasnet0_5(num_classes=3)
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    assert getattr(plain, "_metadata", None) is None
    ckpt = tmp_path / "mnas.pt"
    torch.save(plain, ckpt)
    with pytest.raises(ValueError, match="version"):  # what torch itself does with it
        torchvision.models.mnasnet0_5(num_classes=3).load_state_dict(torch.load(ckpt))
    loaded = load_torchvision("mnasnet0_5", ckpt)
    got = loaded.module.state_dict()
    assert set(got) == set(plain)
    for k, v in plain.items():
        assert torch.equal(got[k], v), k


def test_features_verification_catches_a_wrong_graph(tmp_path, one_torch_thread):
    """The pre-publish check tolerates float32 noise only: a graph of other weights fails."""
    from torch import nn

    from gradnca_onnx.exporters.api import _verify_features, export_model
    from gradnca_onnx.sources import from_module

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()

    a, b = net(0), net(1)
    d = export_model(from_module(a), tmp_path, name="a", input_size=16, grads_batch=4, verify=False)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fa, fb = a[:-1](x), b[:-1](x)
    _verify_features(d / "features.onnx", x, fa, a(x).detach(), _TupleOut(a))
    with pytest.raises(ValueError, match="disagrees with torch"):
        _verify_features(d / "features.onnx", x, fb, b(x).detach(), _TupleOut(b))


class _TupleOut(torch.nn.Module):
    """(features, logits) like the exporter's feature model."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m[:-1](x), self.m(x)


@pytest.mark.parametrize("content, fragment", [
    (b"", "is empty (0 bytes)"),
    (bytes(range(7, 250)) * 4, "is not a PyTorch checkpoint"),
    (b"PK\x03\x04" + b"\x00" * 60, "could not be read by torch.load"),
])
def test_unreadable_checkpoints_are_one_line(factory_module, tmp_path, content, fragment):
    """Issue 15, findings 4 and 9: an empty or garbage file is named as such (no IndexError,
    no advice to unpickle it)."""
    (tmp_path / "w.pt").write_bytes(content)
    res = run("export", "--factory", f"{factory_module}:tiny", "--checkpoint", tmp_path / "w.pt",
              "--input-size", 16, "--out", tmp_path / "zoo")
    assert_one_line_error(res, fragment)
    assert "--trust-pickle" not in res.stderr and not (tmp_path / "zoo").exists()


def test_checkpoint_with_nan_weights_is_one_line(factory_module, tmp_path):
    """Issue 15, finding 4: NaN weights were a RuntimeError traceback at the features check."""
    state = __import__(factory_module).tiny().state_dict()
    state["3.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    res = run("export", "--factory", f"{factory_module}:tiny", "--checkpoint",
              tmp_path / "nan.pt", "--input-size", 16, "--out", tmp_path / "zoo")
    assert_one_line_error(res, "NaN or infinite values in 1 tensor(s) (3.weight)")


def test_safetensors_checkpoint_loads_without_pickle(factory_module, tmp_path):
    from safetensors.torch import save_file

    model = __import__(factory_module).tiny(num_classes=5)
    save_file(model.state_dict(), str(tmp_path / "w.bin"))  # recognised by content, not name
    res = run("export", "--factory", f"{factory_module}:tiny", "--checkpoint", tmp_path / "w.bin",
              "--input-size", 16, "--name", "st", "--out", tmp_path / "zoo")
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "st")
    assert m.num_classes == 5 and m.source.checkpoint == "w.bin"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = model.eval()[:-1](torch.from_numpy(x)).numpy()
    got = open_session(tmp_path / "zoo" / "st", "features", threads=1).run(
        ["features"], {"images": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
