"""Every model source through one registry: a zoo member of any rebuildable source (timm,
Hugging Face, MONAI, a plugin's) is fine-tuned from its directory, through the CLI and the
Python API, with the weights it was exported with; sources that cannot be rebuilt say why;
other packages add sources through the ``gradnca_onnx.sources`` entry points."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("monai")
from click.testing import CliRunner  # noqa: E402

from gradnca_onnx import sources, training  # noqa: E402
from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.errors import GradncaWarning, SourceError  # noqa: E402
from gradnca_onnx.exporters import ExportOptions, export_model  # noqa: E402
from gradnca_onnx.training.grid import grid_from_mapping  # noqa: E402
from gradnca_onnx.training.store import RunStore  # noqa: E402
from gradnca_onnx.zoo import read_manifest  # noqa: E402

from _support import tiny_training_target  # noqa: E402

#: The members: name -> (--arch, constructor keyword arguments), all at 32 px, random init.
TIMM = ("timm:vit_tiny_patch16_224", {"img_size": 32, "depth": 2})
MONAI = ("monai:DenseNet121", {"init_features": 8, "growth_rate": 4})
#: The MONAI member's random-init seed (not the default 0: the rebuild must use the recorded one).
SEED = 5
#: One tiny epoch, one configuration, batches of 4 (the tiny target is outside Table 1).
GRID = {"base": "quick", "lr": [0.01], "weight_decay": [0.0], "momentum": [0.9],
        "max_epochs": 1, "patience": 1, "image_size": 32}


# Tiny tensors on a shared 2-core machine: one thread is fastest and keeps runs deterministic.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hf_vit(directory: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    ViTForImageClassification(cfg).eval().save_pretrained(str(directory))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A zoo of a timm ViT, a Hugging Face ViT (save_pretrained, beside the zoo) and a MONAI
    DenseNet121, each exported features-only at 32 px; and the weights sha256 of each model
    as it was exported."""
    root = tmp_path_factory.mktemp("sources")
    _hf_vit(root / "hfvit")
    members = {"timm-vit": sources.create_model(TIMM[0], arch_kwargs=TIMM[1]),
               "hf-vit": sources.create_model(f"hf:{root / 'hfvit'}"),
               "monai-dn": sources.create_model(MONAI[0], arch_kwargs=MONAI[1], seed=SEED)}
    exported = {}
    for name, loaded in members.items():
        export_model(loaded, root / "zoo", ExportOptions(name=name, input_size=32,
                                                         features_only=True))
        exported[name] = training.weights_sha256(loaded.module)
    return root, exported


MEMBERS = ["timm-vit", "hf-vit", "monai-dn"]


@pytest.mark.parametrize("name", MEMBERS)
def test_member_is_rebuilt_with_the_weights_it_was_exported_with(zoo, name):
    root, exported = zoo
    loaded, member = sources.rebuild(root / "zoo" / name)
    assert loaded.kind == member.manifest.source.kind
    assert training.weights_sha256(loaded.module) == exported[name]
    src = training.load_source(root / "zoo" / name)
    assert src.name == name and src.identity["weights_sha256"] == exported[name]
    assert src.input_size == 32 and src.identity["kind"] == loaded.kind


@pytest.mark.parametrize("name", MEMBERS)
def test_member_is_fine_tuned_through_the_cli_and_the_python_api(zoo, name, tmp_path):
    root, exported = zoo
    target = tiny_training_target(tmp_path / "tiny.npz")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID))
    member = root / "zoo" / name
    api = training.run_grid(member, training.load_target_splits(target, fold=None),
                            grid_from_mapping(GRID), tmp_path / "api.sqlite",
                            batch_sizes=(4,), stop_on_error=True)
    assert (api.total, api.finished, api.failed) == (1, 1, 0)
    res = CliRunner().invoke(main, [
        "finetune", "--source", str(member), "--target", str(target), "--fold", "0",
        "--store", str(tmp_path / "cli.sqlite"), "--preset", str(grid), "--batch-size", "4",
        "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1 runs: 1 done now" in res.stdout
    rows = []
    for store in ("api.sqlite", "cli.sqlite"):
        with RunStore(tmp_path / store) as st:
            [row] = st.runs(status="finished")
        rows.append(row)
    # The same rebuilt weights, target and configuration: the same run, by either route.
    assert rows[0]["run_key"] == rows[1]["run_key"]
    assert all(r["source"] == name and r["source_sha256"] == exported[name] for r in rows)
    assert all(np.isfinite(r["test_auc"]) for r in rows)


def test_finetune_names_sources_as_export_does(zoo, tmp_path):
    root, exported = zoo
    # timm:NAME is the timm source (not a factory), with the same keyword arguments and seed:
    # the same weights as the member exported from it.
    timm_src = training.load_source(TIMM[0], arch_kwargs=TIMM[1])
    assert timm_src.identity["kind"] == "timm"
    assert timm_src.identity["weights_sha256"] == exported["timm-vit"]
    hf_src = training.load_source(f"hf:{root / 'hfvit'}")
    assert hf_src.identity["weights_sha256"] == exported["hf-vit"]
    monai_src = training.load_source(MONAI[0], arch_kwargs=MONAI[1], seed=SEED)
    assert monai_src.identity["weights_sha256"] == exported["monai-dn"]
    # A checkpoint file with --arch in the same language.
    ckpt = tmp_path / "monai.pt"
    torch.save(monai_src.module.state_dict(), ckpt)
    again = training.load_source(str(ckpt), arch=MONAI[0], arch_kwargs=MONAI[1])
    assert again.identity["weights_sha256"] == exported["monai-dn"]
    assert again.identity["checkpoint_sha256"] is not None
    # Through the CLI: an unknown timm name is the timm source's error, not a factory's.
    res = CliRunner().invoke(main, ["finetune", "--source", "timm:no_such_model_x", "--target",
                                    str(tiny_training_target(tmp_path / "t.npz")), "--store",
                                    str(tmp_path / "s.sqlite")])
    assert res.exit_code == 2 and "unknown timm model" in res.stderr, res.output


def test_hf_member_finds_its_directory_or_is_given_it(zoo, tmp_path):
    root, exported = zoo
    member = root / "zoo" / "hf-vit"
    assert read_manifest(member).source.checkpoint == "model.safetensors"
    moved = tmp_path / "elsewhere"
    (root / "hfvit").rename(moved)
    try:
        with pytest.raises(SourceError, match="not found next to it: pass it with --checkpoint"):
            sources.rebuild(member)
        loaded, _ = sources.rebuild(member, checkpoint=moved / "model.safetensors")
        assert training.weights_sha256(loaded.module) == exported["hf-vit"]
        # Other weights of the same name are refused by their sha256.
        _hf_vit(tmp_path / "other")
        torch.manual_seed(1)
        from transformers import ViTForImageClassification

        other = ViTForImageClassification.from_pretrained(str(tmp_path / "other"))
        for p in other.parameters():
            p.data.normal_()
        other.save_pretrained(str(tmp_path / "other"))
        with pytest.raises(SourceError, match="does not match the sha256"):
            sources.rebuild(member, checkpoint=tmp_path / "other" / "model.safetensors")
    finally:
        moved.rename(root / "hfvit")


def _edit_manifest(member: Path, copy_to: Path, edit) -> Path:
    import shutil

    shutil.copytree(member, copy_to)
    data = json.loads((copy_to / "manifest.json").read_text())
    edit(data)
    (copy_to / "manifest.json").write_text(json.dumps(data))
    return copy_to


def test_kinds_the_registry_does_not_provide_are_refused_on_rebuild(zoo, tmp_path):
    root, _ = zoo
    member = root / "zoo" / "timm-vit"
    unknown = _edit_manifest(member, tmp_path / "z1" / "m",
                             lambda d: d["source"].update(kind="mylib"))
    assert read_manifest(unknown).source.kind == "mylib"  # the format takes it (scoring)...
    with pytest.raises(SourceError, match="no installed model source provides kind 'mylib'"):
        sources.rebuild(unknown)  # ...the registry does not know it
    # A kind newer than the manifest's schema (timm came with schema 3).

    def schema_2(d: dict) -> None:  # what a schema-2 manifest has (no rule, split, count)
        d.update(schema_version=2)
        d["layers"].pop("rule")
        d.pop("split")
        d.pop("source_images")

    old = _edit_manifest(member, tmp_path / "z2" / "m", schema_2)
    with pytest.raises(SourceError, match="'source.kind' 'timm' needs schema_version 3"):
        sources.rebuild(old)
    # A rebuilt model of another architecture than the manifest says.
    other = _edit_manifest(member, tmp_path / "z3" / "m",
                           lambda d: d["source"].update(reference="vit_small_patch16_224"))
    with pytest.raises(SourceError, match="the rebuilt model is a timm:vit_small"):
        sources.rebuild(other)


def test_sources_that_cannot_be_rebuilt_say_why(tmp_path):
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    member = export_model(sources.from_module(net, name="net"), tmp_path / "zoo",
                          name="net", input_size=16, features_only=True)
    with pytest.raises(SourceError, match="module source .* cannot be rebuilt for training"):
        sources.rebuild(member)
    scripted = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(scripted))
    with pytest.raises(SourceError, match="TorchScript file; its head cannot be replaced"):
        training.load_source(str(scripted))
    with pytest.raises(SourceError, match="not built from a name"):
        sources.get("module").load("net")


def test_the_registry_imports_torch_only_for_torch_sources():
    code = textwrap.dedent("""
        import sys
        from gradnca_onnx import sources
        sources.get("onnx")
        assert "torch" not in sys.modules, "importing the registry imported torch"
        sources.get("timm")
        assert "torch" in sys.modules
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- plugins

PLUGIN = '''
import torch
from torch import nn

from gradnca_onnx.sources import ConstructorSource, LoadedModel


class ToySource(ConstructorSource):
    """--arch toy:WIDTH: a two-conv CNN of that width."""

    kind = "toy"
    addressable = True
    summary = "a toy CNN, toy:WIDTH"

    def load(self, reference, checkpoint=None, *, kwargs=None, channels=None,
             trust_pickle=False, seed=0):
        torch.manual_seed(seed)
        width = int(reference)
        net = nn.Sequential(nn.Conv2d(channels or 3, width, 3), nn.ReLU(),
                            nn.Conv2d(width, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(width, 2))
        return LoadedModel(module=net.eval(), kind="toy", reference=reference,
                           architecture=f"toy:{width}", options={"seed": seed})


class FakeTimm(ToySource):
    kind = "timm"


class NotASource:
    kind = "bad"
'''


@pytest.fixture
def toy_distribution(tmp_path):
    """A fake installed distribution (a ``.dist-info`` on ``sys.path``) whose entry point in
    the ``gradnca_onnx.sources`` group registers the ``toy`` source."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_source_plugin.py").write_text(PLUGIN)
    info = site / "toy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{sources.ENTRY_POINT_GROUP}]\ntoy = toy_source_plugin:ToySource\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    sources.load_plugins(reload=True)
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("toy_source_plugin", None)
    importlib.invalidate_caches()
    sources.load_plugins(reload=True)


def test_a_plugin_source_exports_and_is_fine_tuned_from_its_member(toy_distribution, tmp_path):
    assert "toy" in sources.kinds() and "toy" in sources.addressable()
    res = CliRunner().invoke(main, ["export", "--arch", "toy:6", "--input-size", "16",
                                    "--grads-batch", "2", "--out", str(tmp_path / "zoo"),
                                    "--name", "toy6"])
    assert res.exit_code == 0, res.output
    member = tmp_path / "zoo" / "toy6"
    assert read_manifest(member).source.kind == "toy"
    src = training.load_source(member)
    assert src.identity["weights_sha256"] == training.weights_sha256(
        sources.create_model("toy:6").module)
    assert training.load_source("toy:6").identity == src.identity


def test_plugins_that_cannot_be_used_are_left_out_with_a_warning(monkeypatch, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_source_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    ep = importlib.metadata.EntryPoint
    group = sources.ENTRY_POINT_GROUP
    fake = [ep("missing", "no_such_module_xyz:Source", group),
            ep("bad", "toy_source_plugin:NotASource", group),
            ep("timm", "toy_source_plugin:FakeTimm", group),    # a built-in kind
            ep("other", "toy_source_plugin:ToySource", group)]  # defines kind toy
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [e for e in fake if e.group == group])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sources.load_plugins(reload=True)
        messages = [str(w.message) for w in caught if issubclass(w.category, GradncaWarning)]
        assert len(messages) == 4, messages
        with pytest.raises(SourceError, match="plugin that could not be loaded: .*"
                                              "ModuleNotFoundError"):
            sources.get("missing")
        with pytest.raises(SourceError, match="must be a gradnca_onnx.sources.ModelSource"):
            sources.get("bad")
        assert type(sources.get("timm")).__name__ == "TimmSource"  # the built-in one stays
        assert "toy" not in sources.kinds()
        import toy_source_plugin

        with pytest.raises(SourceError, match="'timm' is built in"):
            sources.register(toy_source_plugin.FakeTimm)  # nor by the Python API
    finally:
        monkeypatch.undo()
        sys.modules.pop("toy_source_plugin", None)
        sources.load_plugins(reload=True)


def test_headless_encoders_get_a_new_head_on_their_embedding(tmp_path):
    """A headless member (timm num_classes=0, a Hugging Face Dinov2Model) exports its library's
    embedding and no logits; fine-tuning adds the new head on that embedding, not on an inner
    Linear of the encoder."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, image_size=32, patch_size=8)
                ).save_pretrained(tmp_path / "dinov2")
    members = {"timm-headless": sources.create_model(
        TIMM[0], arch_kwargs={**TIMM[1], "num_classes": 0}),
        "hf-dinov2": sources.create_model(f"hf:{tmp_path / 'dinov2'}")}
    target = tiny_training_target(tmp_path / "tiny.npz")
    for name, loaded in members.items():
        assert loaded.head == ""
        member = export_model(loaded, tmp_path / "zoo", ExportOptions(
            name=name, input_size=32, features_only=True))
        assert read_manifest(member).num_classes is None
        src = training.load_source(member)
        assert src.head == "head" and isinstance(src.module, training.head.WithHead)
        res = training.run_grid(member, training.load_target_splits(target, fold=None),
                                grid_from_mapping(GRID), tmp_path / f"{name}.sqlite",
                                batch_sizes=(4,), stop_on_error=True)
        assert (res.total, res.finished, res.failed) == (1, 1, 0), name
        with RunStore(tmp_path / f"{name}.sqlite") as st:
            [row] = st.runs(status="finished")
        assert np.isfinite(row["test_auc"])
