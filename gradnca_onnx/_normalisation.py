"""The paper's per-channel input normalisation presets (REFERENCE section 1), defined once.

Below both layers that use them: the data layer's preprocessing and the zoo's manifests (the
``imagenet`` and ``half`` presets of :func:`gradnca_onnx.zoo.parse_normalisation`). Imports
nothing, so the zoo format loads neither the data package nor Pillow.
"""

#: ImageNet statistics, for ImageNet-pretrained models.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The paper's normalisation for every source that is not ImageNet-pretrained.
HALF_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
HALF_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
