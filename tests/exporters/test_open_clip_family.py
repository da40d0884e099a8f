"""open_clip models (``--arch open_clip:NAME``): the image tower's embedding as open_clip's
``encode_image`` computes it, its pooled features before the projection, the preprocessing of
its own config, ``hf-hub:`` names and directories read offline, and members rebuilt for
fine-tuning.

Every model is a tiny random-init CLIP built in the test: open_clip's own VisionTransformer
(width 64, 2 layers, patch 8, 32 px) and a BiomedCLIP-like timm trunk (timm's ``test_vit``)
with a Hugging Face text tower that is never built. The references are open_clip's own models
(``open_clip.create_model("local-dir:...")`` where it works offline); exported features are
compared within 1e-5 (relative), the S_FU ratio against float64 autograd
(:func:`_support.member_parity`).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")
from click.testing import CliRunner  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gradnca_onnx import sources, training  # noqa: E402
from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.engine.batching import open_session  # noqa: E402
from gradnca_onnx.errors import SourceError  # noqa: E402
from gradnca_onnx.exporters import export_model  # noqa: E402
from gradnca_onnx.exporters.layers import default_layers  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _support import hub_snapshot, member_parity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEAT_TOL = 1e-5
RATIO_TOL = 1e-4
#: A tiny text tower: the checkpoint holds one, the source never builds it.
TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
#: open_clip's own ViT, tiny.
VIT = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64,
                                       "head_width": 32, "patch_size": 8}, "text_cfg": TEXT}
#: BiomedCLIP's layout (a timm trunk, its class token through a linear projection, a Hugging
#: Face text tower) with timm's tiny test_vit; its config's 160 px is overridden to 32.
BIOMED = {"embed_dim": 16,
          "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False,
                         "timm_pool": "", "timm_proj": "linear", "image_size": 160},
          "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                       "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                       "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                       "context_length": 256}}
#: The name-built tiny ViT: ViT-B-32's config with --arch-kwarg overrides.
NAMED = {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32,
         "embed_dim": 16}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear",
              "resize_mode": "squash"}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def onnx_features(model_dir: Path, x: torch.Tensor) -> np.ndarray:
    return open_session(model_dir, "features", threads=1).run(None, {"images": x.numpy()})[0]


def encode_image(model, x: torch.Tensor) -> np.ndarray:
    """open_clip's own image embedding (not normalised)."""
    with torch.no_grad():
        return model.encode_image(x).numpy()


def clip_dir(directory: Path, model_cfg: dict, seed: int, text_cfg: dict | None = None):
    """An open_clip directory (config + safetensors) of a random-init CLIP; the model.

    ``text_cfg`` builds the saved model with another text tower than the config names (the
    image tower, all the source reads, is the config's)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS}))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**{**model_cfg, "text_cfg": text_cfg or model_cfg["text_cfg"]})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(directory / "open_clip_model.safetensors"))
    return model.eval()


def hub_cache(cache: Path, repo: str, model_cfg: dict, seed: int, text_cfg: dict | None):
    """``repo`` in a Hugging Face cache (:func:`_support.hub_snapshot`)."""
    return clip_dir(hub_snapshot(cache, repo), model_cfg, seed, text_cfg)


# --------------------------------------------------------------------------- embedding


def test_local_directory_through_the_cli_is_open_clips_image_embedding(tmp_path):
    d = tmp_path / "tinyclip"
    clip_dir(d, VIT, seed=3)
    library = open_clip.create_model(f"local-dir:{d}").eval()  # open_clip reads its weights
    res = CliRunner().invoke(main, ["export", "--arch", f"open_clip:{d}", "--input-size", "32",
                                    "--grads-batch", "2", "--out", str(tmp_path / "zoo"),
                                    "--name", "clip"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "zoo" / "clip"
    m = load_manifest(out)
    assert m.feature_dim == 16 and m.num_classes is None and m.layers.features == ""
    assert m.source.kind == "open_clip" and m.source.options["embedding"] == "image-embeds"
    assert m.source.checkpoint == "open_clip_model.safetensors"
    # The directory by its name only (a zoo names no path outside it), found beside the zoo.
    assert m.source.reference == "local-dir:tinyclip"
    assert sources.rebuild(out)[0].checkpoint == d / "open_clip_model.safetensors"
    x = images()
    err = rel(onnx_features(out, x), encode_image(library, x))
    # The normalisation is the model's own preprocess_cfg, and the manifest says so.
    cfg = library.visual.preprocess_cfg
    assert m.input.mean == tuple(cfg["mean"]) == tuple(PREPROCESS["mean"])
    assert m.input.std == tuple(cfg["std"])
    opts = m.source.options
    assert opts["normalisation_from"] == "open_clip preprocess_cfg"
    assert opts["preprocessing"]["interpolation"] == "bilinear"
    assert opts["preprocessing"]["resize_mode"] == "squash"
    assert opts["preprocessing"]["size"] == [32, 32]
    # S_FU: the patch convolution, then the first block's attention input projection (an
    # nn.MultiheadAttention parameter), never the class/position embeddings.
    assert (m.layers.conv1, m.layers.conv2) == (
        "model.conv1", "model.transformer.resblocks.0.attn.in_proj_weight")
    loaded = sources.create_model(f"open_clip:{d}")
    par = member_parity(loaded.module, out)
    print(f"open_clip ViT: features vs encode_image {err:.1e}, vs float64 "
          f"{par['features']:.1e}; ratio {par['ratio']:.1e} (torch fp32 {par['floor']:.1e})")
    assert err <= FEAT_TOL and par["features"] <= FEAT_TOL
    assert par["floor"] <= 1e-2, "torch's fp32 ratio noise is too large to judge against"
    assert par["ratio"] <= max(RATIO_TOL, 3 * par["floor"])


def test_pooled_features_of_a_named_model_and_its_rebuild(tmp_path):
    loaded = sources.create_model("open_clip:ViT-B-32", arch_kwargs=NAMED, seed=4,
                                  features="pooled")
    assert loaded.options["embedding"] == "pooled" and loaded.head == ""
    # open_clip's own tower without its projection (what prune_intermediate_layers leaves).
    library = copy.deepcopy(loaded.module.model)
    library.proj = None
    x = images()
    with torch.no_grad():
        want = library(x).numpy()
        assert rel(loaded.module(x), want) <= 1e-6
        embeds = loaded.module.model(x)
        assert rel(torch.from_numpy(want) @ loaded.module.model.proj, embeds) <= 1e-6
    out = export_model(loaded, tmp_path, name="pooled", input_size=32, features_only=True)
    m = load_manifest(out)
    assert m.feature_dim == 64 and m.source.options["features"] == "pooled"
    assert m.architecture == "open_clip:ViT-B-32"
    err = rel(onnx_features(out, x), want)
    print(f"open_clip ViT pooled: features vs the tower without proj {err:.1e}")
    assert err <= FEAT_TOL
    # Rebuilt from its options (seed, arch_kwargs) with the same choice of features.
    rebuilt, _ = sources.rebuild(out)
    assert type(rebuilt.module).__name__ == "OpenClipPooled"
    assert training.weights_sha256(rebuilt.module) == training.weights_sha256(loaded.module)
    with torch.no_grad():
        assert rel(rebuilt.module(x), want) <= 1e-6


# --------------------------------------------------------------------------- hf-hub (timm)


def test_biomedclip_layout_is_read_offline_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    repo = "microsoft/BiomedCLIP-tiny-test"
    ref = hub_cache(tmp_path / "cache", repo, BIOMED, seed=5, text_cfg=TEXT)
    ref.visual.set_input_size(32)  # as open_clip.create_model(force_image_size=32) does
    loaded = sources.create_model(f"open_clip:hf-hub:{repo}", arch_kwargs={"image_size": 32})
    assert loaded.options["tower"] == "TimmModel" and loaded.checkpoint.name.startswith(
        "open_clip_model")
    assert not any(n.startswith("text") for n, _ in loaded.module.named_parameters())
    assert loaded.normalisation == (tuple(PREPROCESS["mean"]), tuple(PREPROCESS["std"]),
                                    "open_clip preprocess_cfg")
    x = images()
    with torch.no_grad():
        assert rel(loaded.module(x), encode_image(ref, x)) <= 1e-6
        # pooled: the trunk's class token, before open_clip's linear projection head.
        pooled = sources.choose_features(loaded, "pooled").module(x)
        assert rel(pooled, ref.visual.trunk(x)) <= 1e-6
        assert rel(ref.visual.head(pooled), encode_image(ref, x)) <= 1e-6
    layers, rule = default_layers(loaded.module, x, "")
    assert layers == ["model.trunk.patch_embed.proj", "model.trunk.blocks.0.attn.qkv"], rule
    out = export_model(loaded, tmp_path / "zoo", name="biomed", input_size=32,
                       features_only=True)
    m = load_manifest(out)
    assert m.source.reference == f"hf-hub:{repo}" and m.source.checkpoint_sha256
    err = rel(onnx_features(out, x), encode_image(ref, x))
    print(f"BiomedCLIP-like timm trunk: features vs encode_image {err:.1e}")
    assert err <= FEAT_TOL
    rebuilt, _ = sources.rebuild(out)  # from the same cache, the weights' sha256 checked
    assert training.weights_sha256(rebuilt.module) == training.weights_sha256(loaded.module)
    with pytest.raises(SourceError, match="not in the local Hugging Face cache") as exc:
        sources.create_model("open_clip:hf-hub:microsoft/not-cached")
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- refusals


def test_refusals_are_one_line(tmp_path):
    d = tmp_path / "pickled"
    clip_dir(d, VIT, seed=1)
    state = dict(open_clip.create_model(f"local-dir:{d}").state_dict())
    (d / "open_clip_model.safetensors").unlink()
    torch.save(state, d / "open_clip_pytorch_model.bin")
    cases = [("open_clip:ViT-Q-99", {}, "unknown open_clip model"),
             (f"open_clip:{tmp_path}", {}, "no open_clip_config.json"),
             (f"open_clip:{d}", {}, "--trust-pickle"),
             ("open_clip:ViT-B-32", {"depth": 1}, "not a vision_cfg field")]
    for arch, kw, msg in cases:
        with pytest.raises(SourceError, match=msg) as exc:
            sources.create_model(arch, arch_kwargs=kw)
        assert "\n" not in str(exc.value)
    loaded = sources.create_model(f"open_clip:local-dir:{d}", trust_pickle=True)
    assert loaded.checkpoint.name == "open_clip_pytorch_model.bin"
    with pytest.raises(SourceError, match="--features 'cls' is not a choice"):
        sources.choose_features(loaded, "cls")
    assert sources.choose_features(loaded, "module:ln_post").options["features"] == (
        "module:ln_post")


def test_checkpoint_at_another_size_has_its_position_embedding_resized(tmp_path):
    torch.manual_seed(2)
    big = open_clip.CLIP(**{**VIT, "vision_cfg": {**VIT["vision_cfg"], "image_size": 64}})
    torch.save({"state_dict": big.state_dict()}, tmp_path / "clip64.pt")
    loaded = sources.create_model("open_clip:ViT-B-32", tmp_path / "clip64.pt",
                                  arch_kwargs=NAMED)
    opts = loaded.options
    assert (opts["pos_embed_resized_from"], opts["pos_embed_resized_to"]) == ([8, 8], [4, 4])
    assert opts["checkpoint_tower"] == "visual."
    # open_clip's own loading of the same checkpoint into a 32 px model.
    small = open_clip.CLIP(**VIT).eval()
    open_clip.load_checkpoint(small, str(tmp_path / "clip64.pt"))
    x = images()
    with torch.no_grad():
        assert rel(loaded.module(x), encode_image(small, x)) <= 1e-6
