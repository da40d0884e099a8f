"""``--features``: an explicit choice of embedding (timm ``pre-logits``/``cls``/``mean``,
Hugging Face ``cls``/``mean``/``pooler``/``image-embeds``, any model's ``module:PATH``),
computed as the library computes it, recorded in the manifest and applied again when the member
is rebuilt; a choice a model cannot give is one line. Hugging Face Hub ids (``hf:ORG/NAME``)
are read offline from the local cache."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from gradnca_onnx import sources, training  # noqa: E402
from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.engine.batching import open_session  # noqa: E402
from gradnca_onnx.errors import SourceError  # noqa: E402
from gradnca_onnx.exporters import export_model  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

from _support import assert_one_line_error, hub_snapshot, member_parity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2}
HF_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               image_size=32, patch_size=8)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def onnx_features(model_dir, x):
    (got,) = open_session(model_dir, "features", threads=1).run(["features"],
                                                                  {"images": x.numpy()})
    return got


def x32(n: int = 3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def timm_tokens(model, x):
    with torch.no_grad():
        return model.forward_features(x)


# --------------------------------------------------------------------------- timm


def test_timm_choices_are_the_librarys_tensors_and_are_recorded(tmp_path):
    loaded = sources.create_model("timm:vit_tiny_patch16_224", arch_kwargs=VIT, seed=2)
    model = loaded.module
    x = x32()
    tokens = timm_tokens(model, x)
    want = {"cls": tokens[:, 0], "mean": tokens[:, model.num_prefix_tokens:].mean(1)}
    for choice, ref in want.items():
        chosen = sources.choose_features(loaded, choice)
        out = export_model(chosen, tmp_path, name=choice, input_size=32, features_only=True)
        m = load_manifest(out)
        assert m.source.options["features"] == choice and m.num_classes is None
        assert rel(onnx_features(out, x), ref) <= 1e-5
        rebuilt, _ = sources.rebuild(out)  # the recorded choice applied again
        assert rebuilt.options["features"] == choice and rebuilt.head == ""
        with torch.no_grad():
            assert rel(rebuilt.module(x), ref) <= 1e-6
    # pre-logits of a classifier is its classifier's input: the member keeps its logits.
    same = sources.choose_features(loaded, "pre-logits")
    assert same.module is loaded.module and same.head is None


@pytest.mark.slow  # the same tracer as the headless families' parity tests, which run always
def test_a_chosen_embedding_has_s_fu_parity_with_float64_autograd(tmp_path):
    loaded = sources.create_model("timm:vit_tiny_patch16_224", features="mean",
                                  arch_kwargs={**VIT, "num_classes": 0})
    out = export_model(loaded, tmp_path, name="mean", input_size=32, grads_batch=2)
    m = load_manifest(out)
    assert m.layers.conv1 == "model.patch_embed.proj" and m.layers.conv2.endswith("attn.qkv")
    err = member_parity(loaded.module, out)
    print(f"timm mean: features {err['features']:.1e}, S_FU ratio {err['ratio']:.1e} "
          f"(torch fp32 {err['floor']:.1e})")
    assert err["features"] <= 1e-5 and err["ratio"] <= max(1e-4, 3 * err["floor"])


def test_module_path_is_that_modules_output(tmp_path):
    loaded = sources.create_model("resnet18", seed=1)
    chosen = sources.choose_features(loaded, "module:avgpool")
    out = export_model(chosen, tmp_path, name="pool", input_size=32, features_only=True)
    m = load_manifest(out)
    assert m.feature_dim == 512 and m.source.options["features"] == "module:avgpool"
    x = x32()
    seen = []
    hook = loaded.module.avgpool.register_forward_hook(lambda _m, _a, o: seen.append(o))
    with torch.no_grad():
        loaded.module(x)
    hook.remove()
    assert rel(onnx_features(out, x), seen[0].flatten(1)) <= 1e-5
    with pytest.raises(SourceError, match="no module 'avgpol'.*close: avgpool"):
        sources.choose_features(loaded, "module:avgpol")


def test_choices_a_model_cannot_give_are_one_line(tmp_path):
    d = tmp_path / "swin"
    transformers.SwinModel(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
        window_size=4)).save_pretrained(d)
    zoo = tmp_path / "zoo"
    cases = [(["--arch", f"hf:{d}", "--features", "cls"], "has no class token"),
             (["--arch", f"hf:{d}", "--features", "image-embeds"], "CLIP's projected"),
             (["--arch", f"hf:{d}", "--features", "bogus"], "use one of cls, mean, pooler"),
             (["--arch", "resnet18", "--features", "cls"], "use one of module:PATH"),
             (["--arch", "resnet18", "--features", "module:layer1", "--head", "fc"],
              "give one"),
             (["--arch", "timm:vit_tiny_patch16_224", "--arch-kwarg", "img_size=32",
               "--features", "module:norm"], "not one vector per image"),
             # the model's own failure (timm's fixed input size): one line, not a traceback
             (["--arch", "timm:vit_tiny_patch16_224", "--features", "cls"],
              "Input height (32) doesn't match")]
    for args, fragment in cases:
        res = CliRunner().invoke(main, ["export", *args, "--input-size", "32",
                                        "--features-only", "--out", str(zoo)])
        assert_one_line_error(res, fragment)
    assert not zoo.exists()


def test_hf_choices_and_a_classifiers_encoder(tmp_path):
    d = tmp_path / "dino"
    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**HF_TINY)).eval()
    model.save_pretrained(d)
    x = x32()
    with torch.no_grad():
        hidden = model(pixel_values=x).last_hidden_state
    res = CliRunner().invoke(main, ["export", "--arch", f"hf:{d}", "--features", "mean",
                                    "--input-size", "32", "--features-only",
                                    "--out", str(tmp_path / "zoo"), "--name", "mean"])
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "zoo" / "mean")
    assert m.source.options["features"] == "mean" and m.source.options["embedding"] == "mean"
    assert rel(onnx_features(tmp_path / "zoo" / "mean", x), hidden[:, 1:].mean(1)) <= 1e-5
    # A classifier's encoder: cls of ViTForImageClassification is what its head reads.
    c = tmp_path / "vitcls"
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(**HF_TINY,
                                                                        num_labels=3)).eval()
    vit.save_pretrained(c)
    chosen = sources.create_model(f"hf:{c}", features="cls")
    assert chosen.head == ""
    with torch.no_grad():
        want = vit.vit(pixel_values=x).last_hidden_state[:, 0]
        assert rel(chosen.module(x), want) <= 1e-6


# --------------------------------------------------------------------------- Hub ids


def _hf_cache(cache, repo: str):
    torch.manual_seed(5)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**HF_TINY)).eval()
    model.save_pretrained(hub_snapshot(cache, repo))
    return model


def test_hf_hub_id_is_read_offline_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    model = _hf_cache(tmp_path / "cache", "microsoft/rad-dino-tiny")
    res = CliRunner().invoke(main, ["export", "--arch", "hf:microsoft/rad-dino-tiny",
                                    "--input-size", "32", "--features-only",
                                    "--out", str(tmp_path / "zoo"), "--name", "rad"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "zoo" / "rad"
    m = load_manifest(out)
    assert m.source.reference == "microsoft/rad-dino-tiny" and m.source.checkpoint_sha256
    x = x32()
    with torch.no_grad():
        want = model(pixel_values=x).last_hidden_state[:, 0]
    assert rel(onnx_features(out, x), want) <= 1e-5
    rebuilt, _ = sources.rebuild(out)  # from the same cache, the weights' sha256 checked
    assert training.weights_sha256(rebuilt.module.model) == training.weights_sha256(model)
    res = CliRunner().invoke(main, ["export", "--arch", "hf:microsoft/not-cached",
                                    "--out", str(tmp_path / "zoo2")])
    assert_one_line_error(res, "not in the local Hugging Face cache")
    assert not (tmp_path / "zoo2").exists()
