"""An open_clip zoo member is fine-tuned from its directory: rebuilt from its manifest (the
image tower, the weights it was exported with) with a new head on its image embedding."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from gradnca_onnx import sources, training  # noqa: E402
from gradnca_onnx.exporters import ExportOptions, export_model  # noqa: E402
from gradnca_onnx.training.grid import grid_from_mapping  # noqa: E402
from gradnca_onnx.training.store import RunStore  # noqa: E402
from gradnca_onnx.zoo import read_manifest  # noqa: E402

from _support import tiny_training_target  # noqa: E402

#: ViT-B-32's config made tiny (--arch-kwarg), random init with a seed other than 0.
TINY = {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32,
        "embed_dim": 8}
SEED = 6
#: One tiny epoch, one configuration, batches of 4.
GRID = {"base": "quick", "lr": [0.01], "weight_decay": [0.0], "momentum": [0.9],
        "max_epochs": 1, "patience": 1, "image_size": 32}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_open_clip_member_is_fine_tuned_with_a_head_on_its_image_embedding(tmp_path):
    loaded = sources.create_model("open_clip:ViT-B-32", arch_kwargs=TINY, seed=SEED)
    member = export_model(loaded, tmp_path / "zoo", ExportOptions(
        name="oclip", input_size=32, features_only=True))
    assert read_manifest(member).num_classes is None
    rebuilt, _ = sources.rebuild(member)
    assert type(rebuilt.module).__name__ == "OpenClipImageEmbeds" and rebuilt.head == ""
    assert training.weights_sha256(rebuilt.module) == training.weights_sha256(loaded.module)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(rebuilt.module(x), loaded.module(x), rtol=0, atol=1e-6)
    src = training.load_source(member)
    assert src.head == "head" and isinstance(src.module, training.head.WithHead)
    assert src.identity["kind"] == "open_clip"
    target = tiny_training_target(tmp_path / "tiny.npz")
    res = training.run_grid(member, training.load_target_splits(target, fold=None),
                            grid_from_mapping(GRID), tmp_path / "runs.sqlite",
                            batch_sizes=(4,), stop_on_error=True)
    assert (res.total, res.finished, res.failed) == (1, 1, 0)
    with RunStore(tmp_path / "runs.sqlite") as st:
        [row] = st.runs(status="finished")
    assert np.isfinite(row["test_auc"])
