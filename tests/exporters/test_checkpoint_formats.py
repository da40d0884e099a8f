"""Checkpoints as training code saves them: Lightning's ``{'state_dict': {'model.…'}}``,
DDP's ``module.`` prefix (stripped only when the stripped keys are the model's, and stated in
the manifest), and a whole pickled model exported without ``--arch`` (``--trust-pickle``)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402
from torch import nn  # noqa: E402

from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.engine.batching import open_session  # noqa: E402
from gradnca_onnx.errors import SourceError  # noqa: E402
from gradnca_onnx.sources import create_model  # noqa: E402
from gradnca_onnx.sources.checkpoints import match_prefix  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMM = ("timm:resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]})


def _trained(classes: int = 4) -> nn.Module:
    """The tiny timm ResNet with other weights and ``classes`` outputs, as after training."""
    model = create_model(TIMM[0], arch_kwargs={**TIMM[1], "num_classes": classes},
                         seed=5).module
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _export(args: list[str], out) -> None:
    res = CliRunner().invoke(main, ["export", *args, "--input-size", "32", "--features-only",
                                    "--out", str(out), "--name", "m", "--force"])
    assert res.exit_code == 0, res.output


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[k]), k


@pytest.mark.parametrize("layout,prefix", [("lightning", "model."), ("ddp", "module."),
                                           ("lightning+ddp", "model.module.")])
def test_wrapper_prefix_is_stripped_and_stated(tmp_path, layout, prefix):
    trained = _trained()
    state = {f"{prefix}{k}": v for k, v in trained.state_dict().items()}
    if layout.startswith("lightning"):
        # What Lightning saves: the LightningModule's state (its loss weights too) and more.
        state["criterion.weight"] = torch.ones(4)
        obj = {"epoch": 3, "global_step": 12, "state_dict": state,
               "optimizer_states": [], "hyper_parameters": {"lr": 0.1}}
    else:
        obj = state
    torch.save(obj, tmp_path / "ckpt.ckpt")
    loaded = create_model(TIMM[0], tmp_path / "ckpt.ckpt", arch_kwargs=TIMM[1])
    _same_weights(loaded.module, trained)
    _export(["--arch", TIMM[0], "--arch-kwarg", "layers=[1,1,1,1]", "--arch-kwarg",
             "channels=[8,16,32,64]", "--checkpoint", str(tmp_path / "ckpt.ckpt")], tmp_path)
    m = load_manifest(tmp_path / "m")
    assert m.num_classes == 4
    assert m.source.options["checkpoint_prefix_stripped"] == prefix
    left = m.source.options.get("checkpoint_keys_left_out")
    assert left == (["criterion.weight"] if layout.startswith("lightning") else None)


class _Holder(nn.Module):
    """A model whose own keys start with ``model.``: they must stay as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.fc = nn.Linear(4, 2)


def test_prefix_is_kept_when_the_raw_keys_fit_and_two_copies_are_refused():
    holder = _Holder()
    state = holder.state_dict()
    notes: dict = {}
    assert match_prefix(holder, state, notes) is state and notes == {}
    # A checkpoint holding the model twice (student and teacher): which one is not guessed.
    inner = nn.Sequential(nn.Conv2d(3, 4, 3))
    twice = {f"{p}.{k}": v for p in ("student", "teacher")
             for k, v in inner.state_dict().items()}
    with pytest.raises(SourceError, match="2 copies of the model's weights"):
        match_prefix(inner, twice, {})
    # A prefix whose keys do not fit is not stripped silently: the load is refused.
    partial = {f"model.{k}": v for k, v in list(inner.state_dict().items())[:1]}
    assert match_prefix(inner, partial, notes) is not partial and notes == {}


def test_whole_pickled_model_exports_without_arch(tmp_path):
    trained = _trained(classes=3)
    torch.save(trained, tmp_path / "whole.pt")
    res = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path / "whole.pt"),
                                    "--input-size", "32", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--trust-pickle" in res.output, res.output
    _export(["--checkpoint", str(tmp_path / "whole.pt"), "--trust-pickle"], tmp_path)
    m = load_manifest(tmp_path / "m")
    assert m.num_classes == 3 and m.source.options["pickled_module"] is True
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = open_session(tmp_path / "m", "features", threads=1).run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = trained.forward_head(trained.forward_features(x), pre_logits=True).numpy()
    assert float(np.linalg.norm(got[0] - want) / np.linalg.norm(want)) <= 1e-5
    # Weights only: the architecture is needed, said in one line.
    torch.save(trained.state_dict(), tmp_path / "sd.pt")
    res = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path / "sd.pt"),
                                    "--trust-pickle", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "holds weights only" in res.output, res.output
