"""MONAI networks built from their own constructor signatures: ResNet takes
``n_input_channels``/``num_classes``, EfficientNetBN ``in_channels``/``num_classes`` (and would
download weights with its default ``pretrained=True``), DenseNet121 ``in_channels``/
``out_channels``. Each exports at 32 px with the input of its own classifier as the features."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
from click.testing import CliRunner  # noqa: E402

from gradnca_onnx.cli import main  # noqa: E402
from gradnca_onnx.engine.batching import open_session  # noqa: E402
from gradnca_onnx.sources import create_model  # noqa: E402
from gradnca_onnx.zoo import load_manifest  # noqa: E402

from _support import member_parity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NETS = [("ResNet", ["block=basic", "layers=[1,1,1,1]", "block_inplanes=[8,16,32,64]"],
         "fc", "n_input_channels"),
        # b0 is EfficientNetBN's smallest (28 s to export on 2 cores): the slow suite
        pytest.param("EfficientNetBN", ["model_name=efficientnet-b0"], "_fc", "in_channels",
                     marks=pytest.mark.slow)]


def _classifier_input(model: torch.nn.Module, head: str, x: torch.Tensor) -> np.ndarray:
    seen = []
    hook = model.get_submodule(head).register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen[0].flatten(1).numpy()


@pytest.mark.parametrize("net,kwargs,head,chans_arg", NETS, ids=["ResNet", "EfficientNetBN"])
def test_network_exports_with_its_classifier_input(tmp_path, net, kwargs, head, chans_arg):
    args = ["export", "--arch", f"monai:{net}", "--input-size", "32", "--grads-batch", "2",
            "--channels", "1", "--out", str(tmp_path), "--name", "m"]
    for kw in kwargs:
        args += ["--arch-kwarg", kw]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    m = load_manifest(tmp_path / "m")
    used = m.source.options["arch_kwargs"]
    assert used["spatial_dims"] == 2 and used[chans_arg] == 1 and used["num_classes"] == 2
    assert m.layers.features == head and m.num_classes == 2 and m.has_grads
    loaded = create_model(f"monai:{net}", channels=1, arch_kwargs={
        k: v for k, v in used.items()})
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    got = open_session(tmp_path / "m", "features", threads=1).run(None, {"images": x.numpy()})
    want = _classifier_input(loaded.module, head, x)
    err = float(np.linalg.norm(got[0] - want) / np.linalg.norm(want))
    print(f"monai:{net}: features vs classifier input {err:.1e}")
    assert err <= 1e-5
    err = member_parity(loaded.module, tmp_path / "m")
    print(f"monai:{net}: S_FU ratio vs float64 autograd {err['ratio']:.1e} "
          f"(torch fp32 {err['floor']:.1e})")
    assert err["ratio"] <= max(1e-4, 3 * err["floor"])


def test_pretrained_download_is_refused():
    from gradnca_onnx.errors import SourceError

    with pytest.raises(SourceError, match="would download weights"):
        create_model("monai:EfficientNetBN", arch_kwargs={"model_name": "efficientnet-b0",
                                                          "pretrained": True})
