"""The paper's training augmentation (REFERENCE 7), with torchvision transforms v2."""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                    augment: bool = True) -> v2.Compose:
    """Per-image transform of a uint8 ``(C, H, W)`` tensor to a normalised float32 tensor.

    With ``augment``, in the paper's order: random horizontal flip (p = 0.5), random resized
    crop to ``image_size`` (torchvision's default scale (0.08, 1) and ratio (3/4, 4/3),
    bilinear with antialiasing), random rotation by 0-5 degrees, random sharpness (factor 2,
    p = 0.5), random autocontrast (p = 0.5), random equalise (p = 0.5). Then ``/ 255`` and
    ``(x - mean) / std``. The images arrive already resized to ``image_size`` (Pillow), as the
    paper's 224 px files did. Randomness comes from torch's global generator, which each run
    seeds.
    """
    steps: list[torch.nn.Module] = []
    if augment:
        steps += [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomRotation(degrees=(0.0, 5.0)),
            v2.RandomAdjustSharpness(sharpness_factor=2),
            v2.RandomAutocontrast(),
            v2.RandomEqualize(),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)
