"""timm models as timm defines them: the embedding of a headless model (``pre_logits``), the
preprocessing of its ``pretrained_cfg``, ``hf-hub:`` names and directories read offline,
position embeddings resampled for another image size, and each rebuilt for fine-tuning.

Every model is a tiny random-init timm model built in the test (depth 1-2, small widths,
32 px); the exported features are compared with timm's own computation within 1e-5 (relative).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from click.testing import CliRunner  # noqa: E402

from gradnca_onnx import sources, training  # noqa: E402
from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.engine.batching import open_session  # noqa: E402
from gradnca_onnx.errors import SourceError  # noqa: E402
from gradnca_onnx.exporters import export_model  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

from _support import hub_snapshot, member_parity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEAT_TOL = 1e-5
#: A DINOv2-style ViT (patch 14, class token) small enough to export in seconds.
DINO = ("vit_small_patch14_dinov2", {"img_size": 28, "depth": 1, "embed_dim": 24,
                                     "num_heads": 2})
VIT = ("vit_tiny_patch16_224", {"img_size": 32, "depth": 1, "embed_dim": 24, "num_heads": 2})


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def images(model_dir: Path, n: int = 2) -> torch.Tensor:
    m = load_manifest(model_dir)
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, m.input.channels, m.input.height, m.input.width, generator=g)


def onnx_features(model_dir: Path, x: torch.Tensor) -> np.ndarray:
    sess = open_session(model_dir, "features", threads=1)
    return sess.run(None, {"images": x.numpy()})[0]


def pre_logits(model, x: torch.Tensor) -> np.ndarray:
    """timm's own embedding of ``x``."""
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


def assert_sfu_parity(loaded, out: Path, what: str) -> None:
    """The member's features and S_FU ratio against float64 autograd on ``loaded.module``
    (rebuilt with the export's seed: the same weights): the ratio within 1e-4, or 3x torch
    float32's own error when that is larger."""
    err = member_parity(loaded.module, out)
    print(f"{what}: features {err['features']:.1e}, S_FU ratio {err['ratio']:.1e} "
          f"(torch fp32 {err['floor']:.1e})")
    assert err["features"] <= FEAT_TOL
    assert err["ratio"] <= max(1e-4, 3 * err["floor"])


def timm_model(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


# --------------------------------------------------------------------------- embedding


def test_headless_vit_exports_timms_pooled_embedding(tmp_path):
    name, kw = DINO
    res = CliRunner().invoke(main, [
        "export", "--arch", f"timm:{name}", *sum((["--arch-kwarg", f"{k}={v}"]
                                                  for k, v in kw.items()), []),
        "--arch-kwarg", "num_classes=0", "--input-size", "28", "--grads-batch", "2",
        "--out", str(tmp_path), "--name", "dino"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "dino"
    m = load_manifest(out)
    # The class token (global_pool='token'), D = embed_dim: not 26,112 flattened tokens.
    assert m.feature_dim == 24 and m.num_classes is None and m.layers.features == ""
    assert m.source.options["embedding"] == "pre-logits" and m.has_grads
    x = images(out)
    ref = pre_logits(timm_model(name, num_classes=0, **kw), x)
    err = rel(onnx_features(out, x), ref)
    print(f"headless dinov2: features vs timm pre_logits {err:.1e}")
    assert err <= FEAT_TOL
    assert_sfu_parity(sources.create_model(f"timm:{name}", arch_kwargs={**kw, "num_classes": 0}),
                      out, "headless dinov2")
    # An explicit --head still wins over the source's choice.
    loaded = sources.create_model(f"timm:{name}", arch_kwargs={**kw, "num_classes": 0})
    again = export_model(loaded, tmp_path, name="blk", input_size=28, features_only=True,
                         head="model.blocks.0.mlp.fc2")
    assert load_manifest(again).feature_dim == 24 * (4 + 1) * 4  # fc2's input: tokens x 4D


def test_headless_member_is_rebuilt_as_the_same_embedding(tmp_path):
    name, kw = DINO
    loaded = sources.create_model(f"timm:{name}", arch_kwargs={**kw, "num_classes": 0},
                                  seed=3)
    out = export_model(loaded, tmp_path, name="dino", input_size=28, features_only=True)
    rebuilt, _ = sources.rebuild(out)
    assert type(rebuilt.module).__name__ == "TimmEmbedding" and rebuilt.head == ""
    assert training.weights_sha256(rebuilt.module) == training.weights_sha256(loaded.module)
    x = images(out)
    with torch.no_grad():
        assert rel(rebuilt.module(x), onnx_features(out, x)) <= FEAT_TOL


@pytest.mark.parametrize("name,kw", [
    VIT, ("convnext_atto", {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]})],
    ids=["vit", "convnext"])
def test_model_with_a_head_keeps_its_classifier_input_which_is_pre_logits(tmp_path, name, kw):
    loaded = sources.create_model(f"timm:{name}", arch_kwargs=kw)
    assert loaded.head is None and "embedding" not in loaded.options
    out = export_model(loaded, tmp_path, name="m", input_size=32, features_only=True)
    assert load_manifest(out).num_classes == 1000
    x = images(out)
    err = rel(onnx_features(out, x), pre_logits(timm_model(name, **kw), x))
    print(f"{name}: classifier input vs timm pre_logits {err:.1e}")
    assert err <= FEAT_TOL


# --------------------------------------------------------------------------- preprocessing


def test_normalisation_is_the_models_pretrained_cfg_unless_norm_is_given(tmp_path):
    name = "vit_base_patch16_clip_224"  # CLIP's mean/std, not ImageNet's
    kw = {"img_size": 32, "depth": 1, "embed_dim": 24, "num_heads": 2}
    cfg = timm.data.resolve_model_data_config(timm_model(name, **kw))
    assert cfg["mean"] != (0.485, 0.456, 0.406)
    loaded = sources.create_model(f"timm:{name}", arch_kwargs=kw)
    out = export_model(loaded, tmp_path, name="clip", input_size=32, features_only=True,
                       pretrained_on="ImageNet")
    m = load_manifest(out)
    assert m.input.mean == tuple(cfg["mean"]) and m.input.std == tuple(cfg["std"])
    opts = m.source.options
    assert opts["normalisation_from"] == "timm pretrained_cfg"
    assert opts["preprocessing"] == {"input_size": list(cfg["input_size"]),
                                     "interpolation": cfg["interpolation"],
                                     "crop_pct": cfg["crop_pct"], "crop_mode": cfg["crop_mode"]}
    out = export_model(loaded, tmp_path, name="norm", input_size=32, features_only=True,
                       norm="imagenet")
    m = load_manifest(out)
    assert m.input.mean == (0.485, 0.456, 0.406) and m.source.options[
        "normalisation_from"] == "--norm"


# --------------------------------------------------------------------------- hf-hub, dirs


def _save_for_hf(directory: Path, seed: int) -> torch.nn.Module:
    name, kw = VIT
    model = timm_model(name, seed=seed, num_classes=5, **kw)
    timm.models.save_for_hf(model, str(directory), safe_serialization=True)
    return model


def _hub_cache(cache: Path, repo: str, seed: int) -> torch.nn.Module:
    """``repo`` in a Hugging Face cache (:func:`_support.hub_snapshot`)."""
    return _save_for_hf(hub_snapshot(cache, repo), seed)


def test_hf_hub_name_is_read_offline_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    model = _hub_cache(tmp_path / "cache", "timm/vit_tiny_test.aug", seed=7)
    ref = "hf-hub:timm/vit_tiny_test.aug"
    loaded = sources.create_model(f"timm:{ref}")
    assert loaded.architecture == "timm:vit_tiny_patch16_224"
    assert loaded.checkpoint.name == "model.safetensors"
    out = export_model(loaded, tmp_path / "zoo", name="hub", input_size=32, features_only=True)
    m = load_manifest(out)
    assert m.source.reference == ref and m.num_classes == 5
    assert m.source.checkpoint_sha256 is not None
    x = images(out)
    assert rel(onnx_features(out, x), pre_logits(model, x)) <= FEAT_TOL
    # Rebuilt for fine-tuning from the same cache, the weights' sha256 checked.
    rebuilt, _ = sources.rebuild(out)
    assert training.weights_sha256(rebuilt.module) == training.weights_sha256(loaded.module)
    # Not in the cache: one line, no download.
    with pytest.raises(SourceError, match="not in the local Hugging Face cache"):
        sources.create_model("timm:hf-hub:timm/not_cached_model")


def test_local_directory_and_its_refusals(tmp_path):
    model = _save_for_hf(tmp_path / "vitdir", seed=8)
    res = CliRunner().invoke(main, ["export", "--arch", f"timm:{tmp_path / 'vitdir'}",
                                    "--input-size", "32", "--features-only",
                                    "--out", str(tmp_path / "zoo"), "--name", "dir"])
    assert res.exit_code == 0, res.output
    x = images(tmp_path / "zoo" / "dir")
    assert rel(onnx_features(tmp_path / "zoo" / "dir", x), pre_logits(model, x)) <= FEAT_TOL
    # The directory by its name only (a zoo names no path outside it), found beside the zoo.
    assert load_manifest(tmp_path / "zoo" / "dir").source.reference == "local-dir:vitdir"
    rebuilt, _ = sources.rebuild(tmp_path / "zoo" / "dir")
    assert rebuilt.checkpoint == tmp_path / "vitdir" / "model.safetensors"
    (tmp_path / "empty").mkdir()
    shutil.copy(tmp_path / "vitdir" / "config.json", tmp_path / "empty")
    for d, msg in ((tmp_path / "empty", "no weights"), (tmp_path / "zoo", "no config.json")):
        res = CliRunner().invoke(main, ["export", "--arch", f"timm:{d}", "--out",
                                        str(tmp_path / "zoo2")])
        assert res.exit_code == 2 and msg in res.output, res.output
    cfg = json.loads((tmp_path / "vitdir" / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224"


# --------------------------------------------------------------------------- pos_embed


def test_checkpoint_saved_at_another_size_has_its_pos_embed_resampled(tmp_path):
    name, kw = VIT
    big = timm_model(name, seed=2, **{**kw, "img_size": 64})
    torch.save(big.state_dict(), tmp_path / "vit64.pt")
    loaded = sources.create_model(f"timm:{name}", tmp_path / "vit64.pt", arch_kwargs=kw)
    assert loaded.options["pos_embed_resized_from"] == [4, 4]
    assert loaded.options["pos_embed_resized_to"] == [2, 2]
    out = export_model(loaded, tmp_path, name="vit", input_size=32, grads_batch=2)
    # timm's own model at 32 px with the state dict resampled as timm does it.
    from timm.layers import resample_abs_pos_embed

    state = dict(big.state_dict())
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [2, 2], num_prefix_tokens=1)
    small = timm_model(name, **kw)
    small.load_state_dict(state)
    x = images(out)
    err = rel(onnx_features(out, x), pre_logits(small, x))
    print(f"pos_embed 4x4 -> 2x2: features vs timm {err:.1e}")
    assert err <= FEAT_TOL
    assert load_manifest(out).source.options["pos_embed_resized_from"] == [4, 4]
