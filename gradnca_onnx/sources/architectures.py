"""The paper's nine torchvision architectures: feature and S_FU conv layers (REFERENCE 2, 4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArchSpec:
    """Module paths of one architecture.

    ``head`` is the module whose input is the feature representation (the released code cuts
    there; for mobilenet_v3_small it is the whole classifier block); ``conv1``/``conv2`` are the
    layers whose weight gradients S_FU compares; ``feature_dim`` is D; ``defaults`` are
    constructor arguments used unless the user overrides them.
    """

    head: str
    conv1: str
    conv2: str
    feature_dim: int
    defaults: dict[str, Any] = field(default_factory=dict)


PAPER_ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("fc", "conv1", "layer1.0.conv1", 512),
    "densenet121": ArchSpec("classifier", "features.conv0",
                            "features.denseblock1.denselayer1.conv1", 1024),
    "efficientnet_v2_s": ArchSpec("classifier.1", "features.0.0", "features.1.0.block.0.0", 1280),
    # No aux heads (unused in eval mode; a checkpoint that has them turns them back on).
    # torchvision's own googlenet init (truncated normal, std 0.01) makes random-init features
    # vanish (~1e-12), so random init uses PyTorch's default layer init instead. torchvision's
    # ImageNet weights expect transform_input=True: pass --arch-kwarg transform_input=true for
    # checkpoints fine-tuned from those.
    "googlenet": ArchSpec("fc", "conv1.conv", "conv2.conv", 1024,
                          {"aux_logits": False, "init_weights": False}),
    "mnasnet1_0": ArchSpec("classifier.1", "layers.0", "layers.3", 1280),
    "mobilenet_v3_small": ArchSpec("classifier", "features.0.0", "features.1.block.0.0", 576),
    "vgg11": ArchSpec("classifier.6", "features.0", "features.3", 4096),
    "convnext_tiny": ArchSpec("classifier.2", "features.0.0", "features.1.0.block.0", 768),
    "shufflenet_v2_x0_5": ArchSpec("fc", "conv1.0", "stage2.0.branch1.0", 1024),
}
