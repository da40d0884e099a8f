"""The zoo a medical team has in 2026, end to end through the command line: a headless timm
DINOv2, a Hugging Face ``Dinov2Model`` (what RAD-DINO is), CLIP vision towers from Hugging Face
and open_clip, a timm ViT with LayerScale (``init_values``), a Hugging Face Swin, MONAI ResNet
and EfficientNetBN, a Lightning checkpoint and a ``torch.export`` program, all random-init
models built here. Each exports with its library's embedding and preprocessing; the zoo ranks
with every member's S_FU layers shown and the note that S_FU is compared across layer families,
and ranks each family on its own with ``--within-family``."""

from __future__ import annotations

import csv
import io
import json

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("monai")
open_clip = pytest.importorskip("open_clip")

from click.testing import CliRunner  # noqa: E402

from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

from _support import small_target  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HF_TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               image_size=32, patch_size=8)


#: Where each member's input mean/std come from: its library's own config, else the stated
#: guess (no preprocessor_config.json beside the Swin; torchvision and MONAI define none).
NORM_FROM = {"timm-dinov2": "timm pretrained_cfg", "timm-vit-layerscale": "timm pretrained_cfg",
             "hf-dinov2": "preprocessor_config.json",
             "hf-clip-vision": "preprocessor_config.json",
             "open-clip": "open_clip preprocess_cfg"}


def _kw(**kw) -> list[str]:
    return sum((["--arch-kwarg", f"{k}={json.dumps(v)}"] for k, v in kw.items()), [])


def _hf_dir(d, model, preprocessor=None):
    model.eval().save_pretrained(d)
    if preprocessor:
        (d / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return ["--arch", f"hf:{d}"]


def _lightning(d):
    """A torchvision ResNet-18 as Lightning saves it: ``state_dict`` under ``model.``, plus a
    loss weight outside the model."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    ckpt = {"epoch": 3, "state_dict": {**{f"model.{k}": v for k, v in state.items()},
                                       "criterion.weight": torch.ones(3)}}
    torch.save(ckpt, d / "epoch=3.ckpt")
    return ["--arch", "resnet18", "--checkpoint", str(d / "epoch=3.ckpt")]


def _program(d):
    """A small CNN saved by ``torch.export`` with a dynamic batch."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, 4)).eval()
    x = torch.randn(2, 3, 32, 32)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, d / "cnn.pt2")
    return ["--torchscript", str(d / "cnn.pt2"), "--trust-pickle"]


def _members(d):
    T = transformers
    (d / "src").mkdir()
    src = d / "src"
    return {
        "timm-dinov2": (["--arch", "timm:vit_small_patch14_dinov2", *_kw(
            num_classes=0, img_size=28, depth=1, embed_dim=24, num_heads=2)], 28),
        "hf-dinov2": (_hf_dir(src / "dino", T.Dinov2Model(T.Dinov2Config(**HF_TINY)), {
            "image_mean": [0.5307, 0.5307, 0.5307], "image_std": [0.2583, 0.2583, 0.2583]}),
            32),
        "hf-clip-vision": (_hf_dir(src / "clipv", T.CLIPVisionModel(
            T.CLIPVisionConfig(**HF_TINY)), {"image_mean": CLIP_MEAN, "image_std": CLIP_STD}),
            32),
        "open-clip": (["--arch", "open_clip:ViT-B-32", *_kw(
            layers=1, width=32, head_width=16, patch_size=8, image_size=32, embed_dim=8)], 32),
        "timm-vit-layerscale": (["--arch", "timm:vit_tiny_patch16_224", *_kw(
            init_values=1e-5, img_size=32, depth=1, embed_dim=24, num_heads=2)], 32),
        "hf-swin": (_hf_dir(src / "swin", T.SwinModel(T.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
            window_size=4))), 32),
        "monai-resnet": (["--arch", "monai:ResNet", *_kw(
            block="basic", layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64])], 32),
        "monai-efficientnet": (["--arch", "monai:EfficientNetBN",
                                *_kw(model_name="efficientnet-b0")], 32),
        "lightning": (_lightning(src), 32),
        "pt2": (_program(src), 32),
    }


def test_a_2026_foundation_zoo_exports_ranks_and_ranks_within_families(tmp_path):
    zoo = tmp_path / "zoo"
    for name, (args, size) in _members(tmp_path).items():
        res = CliRunner().invoke(main, ["export", *args, "--input-size", str(size),
                                        "--grads-batch", "4", "--name", name,
                                        "--out", str(zoo)])
        assert res.exit_code == 0, f"{name}: {res.output}"
        m = load_manifest(zoo / name)
        assert m.has_grads, name
        for layer in (m.layers.conv1, m.layers.conv2):  # never an embedding table
            assert "position" not in layer and not layer.endswith(("cls_token", "pos_embed"))
        assert m.source.options["normalisation_from"].startswith(
            NORM_FROM.get(name, "guessed from --pretrained-on")), name
    target = small_target(tmp_path / "target.npz")
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target),
                                    "--format", "csv", "--quiet", "--no-cache"])
    assert res.exit_code == 0, res.output
    header, *rows = csv.reader(io.StringIO(res.output))
    assert len(rows) == 10
    col = {h: i for i, h in enumerate(header)}
    families = {r[col["model"]]: r[col["fu_family"]] for r in rows}
    assert families["monai-resnet"] == families["lightning"] == "conv+conv"
    assert families["hf-dinov2"] == families["timm-dinov2"] == "conv+linear"
    assert all(r[col["fu_layer1"]] and r[col["fu_layer2"]] for r in rows)
    assert all("S_FU is compared across layer families" in r[col["notes"]] for r in rows)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target),
                                    "--format", "json", "--quiet", "--no-cache",
                                    "--within-family"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["within_family"] is True
    assert not any(n.startswith("S_FU is compared across") for n in doc.get("notes", []))
    by_family: dict[str, list[int]] = {}
    for m in doc["models"]:
        by_family.setdefault(m["layers"]["family"], []).append(m["rank"])
    # Each family ranked on its own from 1 (members min-max puts at S = 0 together tie).
    assert all(min(r) == 1 and max(r) <= len(r) for r in by_family.values()), by_family
    print({f: sorted(r) for f, r in by_family.items()})
