"""Hugging Face encoders as their library defines them: a headless ``Dinov2Model``, ``ViTModel``,
``CLIPVisionModel``, ``CLIPModel`` or ``SwinModel`` exports the embedding the library defines
(never a random head, so no logits), with the directory's ``preprocessor_config.json``
normalisation, and no S_FU layer is an embedding table."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.engine.batching import open_session  # noqa: E402
from gradnca_onnx.sources import create_model  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

from _support import member_parity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: CLIP's published normalisation, which is not ImageNet's: the test can tell them apart.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=32, patch_size=8)


def _models():
    T = transformers
    return {
        "dinov2": (lambda: T.Dinov2Model(T.Dinov2Config(**TINY)), "cls"),
        "vit": (lambda: T.ViTModel(T.ViTConfig(**TINY)), "cls"),
        "clip-vision": (lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**TINY)), "pooler"),
        "clip": (lambda: T.CLIPModel(T.CLIPConfig(
            vision_config=TINY, text_config=dict(hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64),
            projection_dim=16)), "clip-image-embeds"),
        "swin": (lambda: T.SwinModel(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16,
                                                  depths=[1, 1], num_heads=[2, 2],
                                                  window_size=4)), "pooler"),
    }


def _library_embedding(model, how: str, x):
    """The embedding as the library computes it, written independently of the source."""
    with torch.no_grad():
        if how == "clip-image-embeds":
            out = model.get_image_features(pixel_values=x)
            return getattr(out, "pooler_output", out)  # transformers 5: a model output
        out = model(pixel_values=x)
        return out.pooler_output if how == "pooler" else out.last_hidden_state[:, 0]


def _save(kind: str, directory, *, preprocessor: dict | None = None):
    build, how = _models()[kind]
    torch.manual_seed(0)
    model = build().eval()
    model.save_pretrained(directory)
    if preprocessor is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model, how


@pytest.mark.parametrize("kind", [
    "dinov2", "clip", "swin",
    # the same class-token / pooler routes as dinov2 and clip: in the slow suite
    pytest.param("vit", marks=pytest.mark.slow), pytest.param("clip-vision",
                                                           marks=pytest.mark.slow)])
def test_headless_encoders_export_their_librarys_embedding(kind, tmp_path):
    d = tmp_path / kind
    model, how = _save(kind, d, preprocessor={"image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                                              "size": {"height": 32, "width": 32},
                                              "resample": 3})
    res = CliRunner().invoke(main, ["export", "--arch", f"hf:{d}", "--input-size", "32",
                                    "--out", str(tmp_path / "zoo"), "--name", kind])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / kind)
    assert m.num_classes is None and m.layers.features == ""   # no head, no random logits
    assert m.source.options["embedding"] == how
    assert list(m.input.mean) == CLIP_MEAN and list(m.input.std) == CLIP_STD
    assert m.source.options["normalisation_from"] == "preprocessor_config.json"
    assert m.source.options["preprocessing"]["resample"] == 3
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want = _library_embedding(model, how, x).numpy()
    (got,) = open_session(tmp_path / "zoo" / kind, "features", manifest=m, threads=1).run(
        None, {"images": x.numpy()})
    assert got.shape == want.shape == (3, m.feature_dim)
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
    assert m.has_grads
    for layer in (m.layers.conv1, m.layers.conv2):
        assert "embedding." not in f"{layer}." or "patch" in layer, layer
        assert not layer.endswith("position_embedding"), layer
    # S_FU against float64 autograd on the same weights (the directory, loaded again).
    err = member_parity(create_model(f"hf:{d}").module, tmp_path / "zoo" / kind)
    print(f"hf {kind}: features {err['features']:.1e}, S_FU ratio {err['ratio']:.1e} "
          f"(torch fp32 {err['floor']:.1e})")
    assert err["features"] <= 1e-5 and err["ratio"] <= max(1e-4, 3 * err["floor"])


def test_clips_s_fu_layers_are_layers_not_the_position_table(tmp_path):
    d = tmp_path / "clip"
    _save("clip", d)
    loaded = create_model(f"hf:{d}")
    from gradnca_onnx.exporters import export_model

    out = export_model(loaded, tmp_path / "zoo", input_size=32, grads_batch=2, name="clip")
    m = load_manifest(out)
    assert m.layers.conv1 == "model.vision_model.embeddings.patch_embedding"
    assert "position_embedding" not in m.layers.conv2
    assert m.layers.rule == "first-two-weight-layers"


def test_an_explicit_norm_wins_and_a_missing_config_is_a_stated_guess(tmp_path):
    d = tmp_path / "vit"
    _save("vit", d, preprocessor={"image_mean": CLIP_MEAN, "image_std": CLIP_STD})
    res = CliRunner().invoke(main, ["export", "--arch", f"hf:{d}", "--input-size", "32",
                                    "--norm", "half", "--features-only",
                                    "--out", str(tmp_path / "zoo"), "--name", "a"])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "a")
    assert m.input.mean == (0.5, 0.5, 0.5) and m.source.options["normalisation_from"] == "--norm"
    (d / "preprocessor_config.json").unlink()
    res = CliRunner().invoke(main, ["export", "--arch", f"hf:{d}", "--input-size", "32",
                                    "--features-only", "--out", str(tmp_path / "zoo"),
                                    "--name", "b"])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "b")
    assert m.source.options["normalisation_from"].startswith("guessed from --pretrained-on")


def test_a_classifier_directory_keeps_its_head(tmp_path):
    d = tmp_path / "cls"
    torch.manual_seed(0)
    transformers.ViTForImageClassification(transformers.ViTConfig(**TINY, num_labels=3)) \
        .save_pretrained(d)
    loaded = create_model(f"hf:{d}")
    assert loaded.head is None and "embedding" not in loaded.options
