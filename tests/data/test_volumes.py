"""3-D volumes to a model's input (the first brick of 3-D targets): trilinear resampling equal
to ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` on random and
real MedMNIST 3-D volumes, and the normalisation of the 2-D pipeline in 3-D."""

from __future__ import annotations

import numpy as np
import pytest

from gradnca_onnx.data.volumes import preprocess_volumes, resize_volumes
from gradnca_onnx.errors import InputError

from _support import ADRENAL3D

torch = pytest.importorskip("torch")


def torch_trilinear(x: np.ndarray, size, dtype=torch.float32) -> np.ndarray:
    t = torch.from_numpy(np.asarray(x)).to(dtype)[:, None]
    return torch.nn.functional.interpolate(t, size=size, mode="trilinear",
                                           align_corners=False)[:, 0].double().numpy()


@pytest.mark.parametrize("shape,size", [
    ((2, 8, 8, 8), (4, 4, 4)), ((2, 8, 8, 8), (16, 16, 16)), ((1, 5, 7, 9), (3, 11, 4)),
    ((3, 28, 28, 28), (64, 64, 64)), ((2, 64, 64, 64), (28, 28, 28)), ((1, 1, 6, 6), (3, 6, 6))])
def test_trilinear_equals_torch(shape, size):
    x = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    ref = torch_trilinear(x, size, torch.float64)
    # Judged on float64 torch, within torch float32's own error (a float32 scale such as 64/28
    # moves every source coordinate: both float32 results are ~2e-5 off there).
    own = np.abs(torch_trilinear(x, size) - ref).max()
    err = np.abs(resize_volumes(x, size).astype(np.float64) - ref).max()
    print(f"{shape}->{size}: {err:.1e} (torch float32 {own:.1e})")
    assert err <= max(1e-6, 1.5 * own)


def test_real_adrenal_volumes_resampled_as_torch_does():
    with np.load(ADRENAL3D) as f:
        x = f["train_images"][:4]
    assert x.shape[1:] == (28, 28, 28) and x.dtype == np.uint8
    got = preprocess_volumes(x, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], size=64, channels=3)
    ref = (torch_trilinear(x.astype(np.float32) / 255, (64, 64, 64)) - 0.5) / 0.5
    assert got.shape == (4, 3, 64, 64, 64)
    for c in range(3):
        np.testing.assert_allclose(got[:, c], ref, rtol=0, atol=1e-5)


def test_bad_shapes_and_sizes_are_one_line():
    with pytest.raises(InputError, match=r"\(N, D, H, W\)"):
        preprocess_volumes(np.zeros((2, 4, 4)), mean=[0.5], std=[0.5])
    with pytest.raises(InputError, match="depth, height, width"):
        resize_volumes(np.zeros((1, 4, 4, 4)), (4, 4))
    with pytest.raises(InputError, match="std > 0"):
        preprocess_volumes(np.zeros((1, 4, 4, 4)), mean=[0.5], std=[0.0])
