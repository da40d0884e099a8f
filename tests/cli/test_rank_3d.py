"""Ranking 3-D members on volume targets (issue 29): a zoo of 2-D and 3-D members, the
baselines and uncertainty on a 3-D zoo, and the Done-when zoo of five 3-D members from three
source kinds on AdrenalMNIST3D at 64^3 from the CLI and the Python API."""

from __future__ import annotations

import json

import pytest
import torch
from _support import ADRENAL3D, BREAST, MEDICAL, needs_data, write_nifti_volumes
from click.testing import CliRunner
from torch import nn

import gradnca_onnx
from gradnca_onnx import sources
from gradnca_onnx.cli import main
from gradnca_onnx.exporters import export_model

pytest.importorskip("onnxscript")


class Tiny3d(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm3d(width)
        self.pool = nn.MaxPool3d(2)
        self.conv2 = nn.Conv3d(width, 2 * width, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2 * width, 2)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        return self.fc(torch.flatten(self.gap(torch.relu(self.conv2(x))), 1))


class Tiny2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory):
    zoo = tmp_path_factory.mktemp("zoo3d")
    for seed, width in ((0, 4), (1, 6)):
        torch.manual_seed(seed)
        export_model(sources.from_module(Tiny3d(width).eval(), name=f"tiny3d-{width}"), zoo,
                     input_size=16, depth=16, grads_batch=8)
    torch.manual_seed(2)
    export_model(sources.from_module(Tiny2d().eval(), name="tiny2d"), zoo, input_size=28,
                 grads_batch=8)
    return zoo


def test_each_member_gets_the_data_it_can_take(mixed_zoo):
    r = gradnca_onnx.rank(mixed_zoo, ADRENAL3D, split="val")
    by = {m.name: m for m in r.models}
    assert by["tiny3d-4"].error is None and by["tiny3d-6"].error is None
    assert by["tiny3d-4"].fu is not None and 0 <= by["tiny3d-4"].lp <= 1
    assert any("volumes resized 28x28x28 -> 16x16x16 (trilinear)" in n
               for n in by["tiny3d-4"].notes)
    assert "is a 2-D model" in by["tiny2d"].error and "\n" not in by["tiny2d"].error
    flat = gradnca_onnx.rank(mixed_zoo, BREAST, split="val")
    by = {m.name: m for m in flat.models}
    assert by["tiny2d"].error is None
    assert "is a 3-D model" in by["tiny3d-4"].error


def test_baselines_resamples_and_folds_on_a_3d_zoo(mixed_zoo, tmp_path):
    runner = CliRunner()
    base = ["rank", "--zoo", str(mixed_zoo), "--target", str(ADRENAL3D), "--models",
            "tiny3d-4,tiny3d-6", "--format", "json"]
    res = runner.invoke(main, base + ["--split", "val", "--metrics", "all", "--resamples", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["models"]) == 2
    metrics = out["models"][0]["metrics"]
    assert {"logme", "leep", "nleep", "parc", "sfda"} <= set(metrics)
    assert out["resampling"]["n_resamples"] == 3
    res = runner.invoke(main, base + ["--folds"])
    assert res.exit_code == 0, res.output
    folds = json.loads(res.stdout)["folds"]
    assert folds["n_folds"] == 5 and len(folds["n_samples"]) == 5


@pytest.mark.slow
def test_done_when_five_3d_members_from_three_kinds(tmp_path):
    """The issue's Done-when: MONAI (resnet10, resnet18), torchvision video (r3d_18,
    mc3_18) and an inflated 2-D resnet18, exported from the CLI and ranked on
    AdrenalMNIST3D at 64^3 (its validation split) from the CLI and the Python API."""
    target = needs_data(MEDICAL / "adrenalmnist3d" / "adrenalmnist3d_64.npz")
    runner = CliRunner()
    zoo = tmp_path / "zoo"
    common = ["--input-size", "16", "--grads-batch", "8", "--out", str(zoo)]
    for args in (["--arch", "monai:resnet10", "--arch-kwarg", "spatial_dims=3", "--channels",
                  "1", "--depth", "16"],
                 ["--arch", "monai:resnet18", "--arch-kwarg", "spatial_dims=3", "--channels",
                  "1", "--depth", "16"],
                 ["--arch", "r3d_18", "--depth", "16"],
                 ["--arch", "mc3_18", "--depth", "16"],
                 ["--arch", "resnet18", "--inflate-3d", "16"]):
        res = runner.invoke(main, ["export", *args, *common])
        assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target), "--split",
                               "val", "--format", "json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)
    assert len(cli["models"]) == 5 and all(m.get("error") is None for m in cli["models"])
    api = gradnca_onnx.rank(zoo, target, split="val")
    assert [(m.name, m.rank) for m in api.models] == [(m["model"], m["rank"])
                                                      for m in cli["models"]]
    assert {m["model"] for m in cli["models"]} == {
        "monai-resnet10", "monai-resnet18", "r3d_18", "mc3_18", "resnet18-inflated3d"}
    assert all(m["layers"]["family"] == "conv3d+conv3d" for m in cli["models"])


def _volume_npz(path, n=(24, 12, 12)):
    """A small 3-D MedMNIST-style npz from the bundled AdrenalMNIST3D volumes (both classes
    in every split)."""
    import numpy as np

    with np.load(ADRENAL3D) as f:
        x, y = f["train_images"], f["train_labels"][:, 0]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    arrays, start = {}, 0
    for split, k in zip(("train", "val", "test"), n):
        idx = np.concatenate([pos[start:start + k // 2], neg[start:start + k // 2]])
        start += k // 2
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x[idx], y[idx].reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def test_3d_member_is_fine_tuned_and_resumes(mixed_zoo, tmp_path):
    """Ground truth for 3-D: a 3-D member fine-tuned on a volume target (the paper's loop,
    flips as augmentation), resumable; a 2-D member on volumes is one line, nothing written."""
    import numpy as np

    from gradnca_onnx.training.store import RunStore

    target = _volume_npz(tmp_path / "vol3d.npz")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"base": "quick", "lr": [0.01], "weight_decay": [0.0],
                                "momentum": [0.9], "max_epochs": 2, "patience": 2,
                                "image_size": 16}))
    args = ["finetune", "--source", "monai:resnet10", "--target", str(target),
            "--fold", "0", "--store", str(tmp_path / "runs.sqlite"), "--preset", str(grid),
            "--batch-size", "4", "--threads", "1", "--no-progress", "--arch-kwarg",
            "spatial_dims=3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "1 runs: 1 done now" in res.stdout
    with RunStore(tmp_path / "runs.sqlite") as st:
        [row] = st.runs(status="finished")
    assert np.isfinite(row["test_auc"]) and row["image_size"] == 16
    again = CliRunner().invoke(main, args)  # resumes: the finished run is not done again
    assert again.exit_code == 0 and "0 done now, 1 already in" in again.stdout, again.output
    store = tmp_path / "flat.sqlite"
    flat = ["finetune", "--source", "resnet18", "--target", str(target), "--fold", "0",
            "--store", str(store), "--preset", str(grid), "--batch-size", "4"]
    res = CliRunner().invoke(main, flat)
    assert res.exit_code == 2 and "the source is a 2-D model" in res.output, res.output
    assert not store.exists()


def test_hu_volumes_through_a_windowed_3d_member_and_the_cache(tmp_path):
    """A 3-D member exported with an intensity window reads the target's HU volumes through
    it (window, trilinear resampling, normalisation, in that order), and a second rank reads
    the cache."""
    import numpy as np

    from gradnca_onnx.data import TargetData
    from gradnca_onnx.data.volumes import resize_volumes
    from gradnca_onnx.engine.scoring import _prepare
    from gradnca_onnx.zoo import load_manifest

    torch.manual_seed(0)
    out = export_model(sources.from_module(Tiny3d().eval(), name="ct3d"), tmp_path / "zoo",
                       input_size=12, depth=10, grads_batch=6, norm="0.5,0.25",
                       intensity="window:-200,300:HU")
    g = np.random.default_rng(0)
    hu = g.normal(0, 400, (24, 14, 16, 16)).astype(np.float32)
    shown = np.clip((hu + 1000) / 2000 * 255, 0, 255).astype(np.uint8)
    target = TargetData(shown, np.arange(24) % 2, "ct", 2, physical=hu, unit="HU",
                        modality="CT")
    x = _prepare(target, load_manifest(out, verify=False))
    windowed = np.clip((hu + 200) / 500, 0, 1)
    ref = (resize_volumes(windowed, (10, 12, 12)) - 0.5) / 0.25
    np.testing.assert_allclose(x[:, 0], ref, rtol=0, atol=1e-5)
    first = gradnca_onnx.rank(tmp_path / "zoo", target, cache=tmp_path / "cache")
    assert any("intensity window" in n for n in first.models[0].notes)
    again = gradnca_onnx.rank(tmp_path / "zoo", target, cache=tmp_path / "cache")
    assert again.models[0].cached and again.models[0].lp == first.models[0].lp
    assert again.models[0].fu == first.models[0].fu


def test_a_nifti_volume_table_ranks(mixed_zoo, tmp_path):
    """The Done-when's NIfTI case: 24 NIfTI volumes (real AdrenalMNIST3D shapes, int16 with
    scl_slope) named by a label table, ranked from the CLI by the 3-D members."""
    pytest.importorskip("nibabel")
    table, _ = write_nifti_volumes(tmp_path, 12)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(mixed_zoo), "--target", str(table),
                                    "--models", "tiny3d-4,tiny3d-6", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["target"]["n_samples"] == 24 and len(out["models"]) == 2
    assert all(m["error"] is None and m["fu"] is not None for m in out["models"])
    assert "NIfTI physical values" in res.stderr


def test_an_input_that_cannot_fit_is_a_member_note(mixed_zoo, monkeypatch):
    """A member whose float32 input of the whole target would exceed the memory available is
    refused in one line (the others ranked), never left to the OOM killer."""
    import gradnca_onnx._memory as mem

    monkeypatch.setattr(mem, "available_memory", lambda: 4 << 20)  # 4 MiB free
    r = gradnca_onnx.rank(mixed_zoo, ADRENAL3D, split="val", models="tiny3d-4,tiny3d-6")
    for m in r.models:
        assert m.error is not None and "GiB are available" in m.error and "\n" not in m.error
