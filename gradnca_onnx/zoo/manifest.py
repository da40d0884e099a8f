"""The model-directory manifest: the versioned contract between the exporters and the engine.

A model directory holds ``features.onnx``, ``grads.onnx`` and ``manifest.json``. The manifest
says everything the engine needs to preprocess images for the model and to interpret its
graphs; it never needs torch to be read.

Schema 2 adds *features-only* members: ``features_only`` holds why the gradient graph could
not be built (e.g. an operator the importer cannot differentiate), there is no ``grads.onnx``,
and the conv-layer and gradient-batch fields are ``null``. Such a member gets S_LP and the
baseline metrics but no S_FU. Schema 3 adds ``layers.rule``: how the two S_FU layers were
chosen (:data:`LAYER_RULES`), since they may now be any weight-bearing layer (Conv1d/2d/3d,
Linear, an attention block's input projection), not only the paper's two convolutions.
Schema-1 and schema-2 manifests are still read unchanged (their rule is ``None``: unrecorded).
Schema 4 adds the optional ``split`` block: the gradient pass cut in two at the cotangent,
``forward.onnx`` (images to features, logits and residuals) and ``backward.onnx`` (cotangent
and residuals to the two weight gradients), so that the engine runs each image forward once.
``grads.onnx`` stays: the engine falls back to it for chunks whose residuals exceed its memory
budget, and for re-batched passes. Schema 5 adds the optional top-level ``source_images``:
how many images the source model was pre-trained on, as the exporter's user states it
(``--source-images``; ``null``: not recorded). The package cannot check it: it is reported
metadata, read by the static baseline ``source_images``. Schema 6 adds the optional
``input.intensity``: the intensity convention the model expects of a target's physical values
(:mod:`gradnca_onnx.data.conventions`; absent: 8-bit images, the paper's). Writers write the
oldest schema that holds a member's fields: 5, 6 with an intensity convention, 7 with a
depth (so a member without either is byte-identical to what earlier versions wrote). Schema 7
adds the optional ``input.depth``: a 3-D model takes ``float32 [B, channels, depth, height,
width]`` volumes (absent: 2-D images).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import Any

from ..errors import ZooError
from ..io.atomic import atomic_write_text
from ..io.loaders import load_json
from .integrity import FileEntry, verify_files

#: Version of the manifest layout; bump when a field changes meaning or is added.
#: 1: both graphs always; 2: adds ``features_only`` (no ``grads.onnx``) and source kind ``onnx``;
#: 3: adds ``layers.rule`` and the source kinds ``timm``, ``hf`` and ``monai``;
#: 4: adds the optional ``split`` block (``forward.onnx`` and ``backward.onnx``);
#: 5: adds the optional ``source_images`` (the source dataset's size, as the user states it);
#: 6: adds the optional ``input.intensity`` (the model's intensity convention);
#: 7: adds the optional ``input.depth`` (a 3-D model's input depth).
SCHEMA_VERSION = 7
#: What writers write unless a member needs a newer field (:func:`write_version`).
WRITE_VERSION = 5
#: Oldest layout this package still reads.
MIN_SCHEMA_VERSION = 1
#: Smallest per-channel input std a manifest or ``--normalisation`` may give: images are
#: normalised in float32, where a std of 1e-300 is 0 and below ~1e-6 amplifies rounding noise.
MIN_STD = 1e-6
#: Most bytes read from a manifest.json (real ones are a few KiB); a link to an endless file
#: (a device, /proc) cannot exhaust memory.
MAX_MANIFEST_BYTES = 1 << 20
MANIFEST_FILE = "manifest.json"
FEATURES_FILE = "features.onnx"
GRADS_FILE = "grads.onnx"
FORWARD_FILE = "forward.onnx"
BACKWARD_FILE = "backward.onnx"
#: The weights the graphs of a member share (ONNX external data; exporters.weights).
WEIGHTS_FILE = "weights.bin"

#: Graph inputs and outputs, fixed by the schema.
FEATURES_INPUTS = ("images",)
GRADS_INPUTS = ("images", "cotangent")
GRADS_OUTPUTS = ("features", "grad_w1", "grad_w2")
BACKWARD_OUTPUTS = ("grad_w1", "grad_w2")


def residual_names(count: int) -> tuple[str, ...]:
    """Names of the split graphs' residual tensors: ``r0``, ``r1``, ..."""
    return tuple(f"r{i}" for i in range(count))

#: Allowed onnxruntime graph-optimisation levels (names of ``ort.GraphOptimizationLevel``).
ORT_LEVELS = ("disable_all", "basic", "extended", "all")

#: Batch policy of the fixed-batch gradient graph (see :mod:`gradnca_onnx.engine.batching`).
PAD_ZERO = "pad-zero-images-and-cotangent"
CHUNK_SUM = "chunk-and-sum-weight-gradients"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
#: The form of a source kind (``source.kind``). Which kinds exist, and from which schema on, is
#: the source registry's knowledge (:mod:`gradnca_onnx.sources`, where other packages can add
#: kinds): the format checks the form, and the registry refuses a kind it does not provide, or
#: one newer than the manifest's schema, when a member is rebuilt. Scoring never reads the kind.
_SOURCE_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

#: How the two S_FU layers were chosen (``layers.rule``, schema 3):
#: ``paper-table``: the paper's table for its nine architectures (REFERENCE section 4);
#: ``user``: named by the user (``--layers``);
#: ``first-two-convs``: the first two convolutions the forward pass runs (the paper's rule);
#: ``first-two-weight-layers``: a model running fewer than two convolutions (a ViT): the first
#: two weight-bearing layers (a weight of 2 or more dimensions: Conv, Linear, an attention input
#: projection) whose weights receive a gradient from the features, in forward order; an
#: extension beyond the paper.
LAYER_RULES = ("paper-table", "user", "first-two-convs", "first-two-weight-layers")


#: What :data:`_SOURCE_KIND_RE` allows, in words.
SOURCE_KIND_FORM = "must be 1-32 lower-case letters, digits or '_', starting with a letter"


def check_source_kind(kind: str) -> str:
    """Return ``kind`` if it has the form of a source kind (``source.kind``), else raise
    :class:`~gradnca_onnx.errors.ZooError`; whether such a source exists is the registry's
    question (:func:`gradnca_onnx.sources.get`)."""
    if not isinstance(kind, str) or not _SOURCE_KIND_RE.match(kind):
        raise ZooError(f"source kind {kind!r} {SOURCE_KIND_FORM}")
    return kind


def check_model_name(name: str) -> str:
    """Return ``name`` if it is usable as a model directory name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ZooError(
            f"model name {name!r} is not allowed: use 1-128 letters, digits, '.', '_', '+' or "
            "'-', starting with a letter or digit"
        )
    return name


_COUNT_RE = re.compile(r"^\s*[0-9]+\s*$")


def check_source_images(count: Any) -> int | None:
    """Return ``count`` as a manifest ``source_images`` value, else raise ``ValueError``.

    Parameters
    ----------
    count : int, str or None
        How many images the source model was pre-trained on: an integer >= 0 (0: a
        random-initialised model, trained on nothing), or the decimal digits of one
        (command-line text); ``None`` means not recorded.

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        A negative number, or anything that is not a whole number (a bool, a float,
        other text).
    """
    if count is None:
        return None
    value = int(count) if isinstance(count, str) and _COUNT_RE.match(count) else count
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ZooError(f"--source-images {count!r} must be a whole number >= 0 (how many "
                         "images the source model was pre-trained on; 0 for random "
                         "initialisation); leave it out when unknown")
    return int(value)


@dataclass(frozen=True)
class SourceSpec:
    """Where the exported weights came from.

    ``kind`` is ``torchvision`` (``reference`` = architecture name), ``torchscript``
    (``reference`` = file name), ``factory`` (``reference`` = ``package.module:callable``),
    ``module`` (a Python ``nn.Module`` object given to the API) or, from schema 2, ``onnx``
    (a plain ONNX classifier given to ``gradnca-onnx import``; ``reference`` and
    ``checkpoint`` = its file name, ``checkpoint_sha256`` = its hash) or, from schema 5,
    ``torch_export`` (a ``torch.export.save`` program, named as ``onnx``). ``checkpoint`` is the
    checkpoint's file name (not its full path, which is local to the exporting machine) or
    ``None`` for random initialisation; ``options`` holds constructor keyword arguments and
    the random-init seed.
    """

    kind: str
    reference: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """The image tensor a model takes: ``float32 [B, channels, height, width]``, or with
    ``depth`` (schema 7, a 3-D model) ``float32 [B, channels, depth, height, width]``.

    Pixels are scaled to [0, 1] (uint8 / 255), then normalised per channel:
    ``(x - mean[c]) / std[c]``.
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: The model's intensity convention (schema 6), as the manifest's ``input.intensity``
    #: object; ``None``: 8-bit images (:attr:`convention`).
    intensity: dict[str, Any] | None = None
    #: A 3-D model's input depth (schema 7); ``None``: a 2-D model.
    depth: int | None = None

    @property
    def volumetric(self) -> bool:
        """Whether the model takes volumes (``depth`` is set)."""
        return self.depth is not None

    @property
    def spatial(self) -> tuple[int, ...]:
        """``(height, width)``, or ``(depth, height, width)`` for a 3-D model."""
        hw = (self.height, self.width)
        return hw if self.depth is None else (self.depth, *hw)

    @property
    def size_text(self) -> str:
        """``HxW``, or ``DxHxW`` for a 3-D model."""
        return "x".join(map(str, self.spatial))

    @property
    def convention(self) -> Any:
        """The :class:`~gradnca_onnx.data.conventions.Intensity` the model expects."""
        from ..data.conventions import Intensity, intensity_from_dict

        if self.intensity is None:
            return Intensity()
        return intensity_from_dict(self.intensity, "input.intensity")


def write_version(intensity: dict[str, Any] | None, depth: int | None = None) -> int:
    """The schema a writer records: :data:`WRITE_VERSION`, 6 with an intensity convention, 7
    with a depth (a 3-D model)."""
    if depth is not None:
        return 7
    return WRITE_VERSION if intensity is None else 6


@dataclass(frozen=True)
class LayerSpec:
    """Module paths in the source model (REFERENCE sections 2 and 4).

    ``features`` is the module whose input is the feature representation (its output gives
    the logits), or ``""`` when the model's own output is the feature representation (no
    logits); ``conv1`` and ``conv2`` are the layers whose weight gradients S_FU compares.
    A features-only member (schema 2) has no gradient graph: its conv fields are ``None``.
    From schema 3 the two "conv" layers may be any weight-bearing layer: a path names a module
    whose ``weight`` is used, or a weight parameter itself (e.g. an ``nn.MultiheadAttention``'s
    ``in_proj_weight``); ``rule`` (one of :data:`LAYER_RULES`) says how they were chosen
    (``None``: a features-only member, or a schema-1/2 manifest, which did not record it).
    """

    features: str
    conv1: str | None
    conv2: str | None
    conv1_weight_shape: tuple[int, ...] | None
    conv2_weight_shape: tuple[int, ...] | None
    rule: str | None = None


@dataclass(frozen=True)
class BatchPolicy:
    """How the engine must batch the two graphs.

    ``features.onnx`` takes any batch. ``grads.onnx`` was traced at the fixed batch
    ``grads_batch``: a smaller batch is padded with zero images and zero cotangent rows
    (``smaller``), a larger one is split into chunks whose weight gradients are summed
    (``larger``). Both are exact because the model runs in eval mode (each image's forward pass
    depends on that image alone) and the weight gradients are linear in the cotangent.
    ``grads_batch`` is ``None`` for a features-only member (no ``grads.onnx``).
    """

    grads_batch: int | None
    features_batch: str = "dynamic"
    smaller: str = PAD_ZERO
    larger: str = CHUNK_SUM


@dataclass(frozen=True)
class SplitSpec:
    """The split gradient pass (schema 4): ``forward.onnx`` and ``backward.onnx``.

    Both are traced at the manifest's ``grads_batch``. ``residuals`` is the number of
    residual tensors (``r0`` ... in both graphs); ``residual_bytes`` their size for one batch
    of ``grads_batch`` images, which the engine holds per S_FU batch under its memory budget.
    """

    residuals: int
    residual_bytes: int

    @property
    def forward_file(self) -> str:
        return FORWARD_FILE

    @property
    def backward_file(self) -> str:
        return BACKWARD_FILE


@dataclass(frozen=True)
class Manifest:
    """Everything the engine needs to know about one exported model.

    ``features_only`` is ``None`` for a full member (both graphs) and, for a member without
    ``grads.onnx``, the one-line reason its gradient graph could not be built.
    ``source_images`` (schema 5) is how many images the source model was pre-trained on, as
    the exporter's user stated it, or ``None`` when not recorded; nothing checks it.
    """

    name: str
    architecture: str
    pretrained_on: str
    source: SourceSpec
    input: InputSpec
    layers: LayerSpec
    feature_dim: int
    num_classes: int | None
    opset: int
    batch_policy: BatchPolicy
    ort_optimization: str
    files: dict[str, FileEntry]
    package_version: str
    producer: dict[str, str]
    created: str
    features_only: str | None = None
    split: SplitSpec | None = None
    source_images: int | None = None
    schema_version: int = WRITE_VERSION

    @property
    def has_grads(self) -> bool:
        """Whether the member has ``grads.onnx`` (and so an S_FU)."""
        return self.features_only is None

    @property
    def features_outputs(self) -> tuple[str, ...]:
        """Output names of ``features.onnx``: ``features`` and, with a head, ``logits``."""
        return ("features",) if self.num_classes is None else ("features", "logits")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists), in the layout of ``schema_version``."""
        d = asdict(self)
        if self.input.intensity is None:
            d["input"].pop("intensity")  # 8-bit: nothing recorded (schema 1-5 have no field)
        if self.input.depth is None:
            d["input"].pop("depth")  # a 2-D model: nothing recorded (schema 1-6 have no field)
        if self.schema_version < 5 and self.source_images is None:
            d.pop("source_images")  # schema 1-4 have no such field (re-serialise unchanged)
        if self.schema_version < 4 and self.split is None:
            d.pop("split")  # schema 1-3 have no such field (re-serialise unchanged)
        if self.schema_version < 3 and self.layers.rule is None:
            d["layers"].pop("rule")  # schema 1 and 2 have no such field (re-serialise unchanged)
        if self.schema_version < 2 and self.features_only is None:
            # Schema 1 has no such field: a schema-1 manifest must re-serialise unchanged (a
            # schema-1 object that claims features-only keeps it, so validation refuses it).
            d.pop("features_only")
        d["graphs"] = {
            "features": {"file": FEATURES_FILE, "inputs": list(FEATURES_INPUTS),
                         "outputs": list(self.features_outputs), "batch": "dynamic"},
        }
        if self.has_grads:
            d["graphs"]["grads"] = {"file": GRADS_FILE, "inputs": list(GRADS_INPUTS),
                                    "outputs": list(GRADS_OUTPUTS),
                                    "batch": self.batch_policy.grads_batch}
        if self.split is not None:
            res = list(residual_names(self.split.residuals))
            d["graphs"]["forward"] = {"file": FORWARD_FILE, "inputs": list(FEATURES_INPUTS),
                                      "outputs": list(self.features_outputs) + res,
                                      "batch": self.batch_policy.grads_batch}
            d["graphs"]["backward"] = {"file": BACKWARD_FILE, "inputs": ["cotangent"] + res,
                                       "outputs": list(BACKWARD_OUTPUTS),
                                       "batch": self.batch_policy.grads_batch}
        return json.loads(json.dumps(d))

    def to_json(self) -> str:
        """The manifest as indented JSON text, keys in schema order."""
        d = self.to_dict()
        d = {"schema_version": d.pop("schema_version"), **d}
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "manifest") -> "Manifest":
        """Build and validate a manifest from parsed JSON.

        Raises
        ------
        ValueError
            Naming ``where`` and the offending field: a missing or unknown field, a wrong
            type, an impossible value, or a schema version this package does not read.
        """
        return _parse(data, where)

    def validate(self, *, where: str = "manifest") -> "Manifest":
        """Re-check every field (as :meth:`from_dict` does); returns ``self``."""
        _parse(self.to_dict(), where)
        return self


# --------------------------------------------------------------------------- parsing
#
# Hand-written rather than a schema library (pydantic v2 is installed with Ray; msgspec is
# not), measured on this manifest: (1) about half of the rules are not per-field types but
# depend on the schema version (a field allowed only from schema 2, 3, 4 or 5, so that zoos of
# schemas 1-5 load and re-serialise unchanged) or on other fields (a features-only member
# has null conv fields, no grads.onnx and no split; a split needs forward/backward files;
# 'graphs' must agree with the rest): in pydantic these are model validators with the same
# code in them; (2) every fault is one line naming the manifest file, the dotted field and
# what to do, which the CLI's bad-input table pins, while a ValidationError lists every fault
# in its own words, to be rewritten per error type; (3) importing pydantic and defining three
# small models cost 110 ms against 111 ms for the whole zoo package (Intel Xeon, 2 cores,
# python -c, best of 7), and every command imports the zoo.


class _Fields:
    """Typed access to one JSON object, raising ValueError that names the field path."""

    def __init__(self, data: Any, path: str, where: str) -> None:
        if not isinstance(data, dict):
            raise ZooError(f"{where}: field {path or 'top level'} must be a JSON object")
        self.data, self.path, self.where = data, path, where
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> ValueError:
        return ZooError(f"{self.where}: field {self._name(key)!r} {message}; re-export the model")

    def get(self, key: str, *, optional: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if optional:
                return None
            raise self.fail(key, "is missing")
        return self.data[key]

    def str_(self, key: str, *, optional: bool = False, empty: bool = False) -> str | None:
        v = self.get(key, optional=optional)
        if v is None and optional:
            return None
        if not isinstance(v, str) or (not empty and not v):
            raise self.fail(key, "must be a non-empty string")
        return v

    def int_(self, key: str, *, minimum: int = 1, optional: bool = False) -> int | None:
        v = self.get(key, optional=optional)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}")
        return v

    def null(self, key: str, why: str) -> None:
        """Require ``key`` to be absent or ``null`` (a field that does not apply here)."""
        if self.get(key, optional=True) is not None:
            raise self.fail(key, f"must be null {why}")

    def ints(self, key: str) -> tuple[int, ...]:
        v = self.get(key)
        if not isinstance(v, list) or not v or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in v):
            raise self.fail(key, "must be a list of positive integers")
        return tuple(v)

    def floats(self, key: str) -> tuple[float, ...]:
        v = self.get(key)
        if not isinstance(v, list) or not v or any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
                for x in v):
            raise self.fail(key, "must be a list of finite numbers")
        return tuple(float(x) for x in v)

    def sub(self, key: str) -> "_Fields":
        return _Fields(self.get(key), self._name(key), self.where)

    def done(self, *ignored: str) -> None:
        extra = set(self.data) - self.used - set(ignored)
        if extra:
            raise ZooError(
                f"{self.where}: unknown field(s) {sorted(self._name(k) for k in extra)} for "
                f"manifest schema {SCHEMA_VERSION}; was it written by a newer gradnca-onnx?"
            )


def _parse(data: Any, where: str) -> Manifest:
    """Validate parsed JSON as a manifest of schema 1 to :data:`SCHEMA_VERSION`.

    Each block has its own reader below, called in the order the faults are reported.
    """
    top = _Fields(data, "", where)
    version = _schema_version(top)
    features_only = _features_only(top, version)
    name = top.str_("name")
    try:
        check_model_name(name)
    except ValueError as exc:
        raise top.fail("name", str(exc)) from None
    source = _source(top.sub("source"))
    input_spec = _input(top.sub("input"), version)
    layers = _layers(top.sub("layers"), version, features_only)
    policy = _batch_policy(top.sub("batch_policy"), version, features_only)
    ort_level = top.str_("ort_optimization")
    if ort_level not in ORT_LEVELS:
        raise top.fail("ort_optimization", f"must be one of {list(ORT_LEVELS)}")
    fl = top.sub("files")
    files = _files(fl, features_only)
    split = _split(top, fl, files, version, features_only)
    source_images = _source_images(top, version)
    producer = top.get("producer")
    if not isinstance(producer, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in producer.items()):
        raise top.fail("producer", "must map package names to version strings")

    manifest = Manifest(
        name=name, architecture=top.str_("architecture"),
        pretrained_on=top.str_("pretrained_on"), source=source, input=input_spec,
        layers=layers, feature_dim=top.int_("feature_dim"),
        num_classes=top.int_("num_classes", optional=True), opset=top.int_("opset", minimum=7),
        batch_policy=policy, ort_optimization=ort_level, files=files,
        package_version=top.str_("package_version"), producer=dict(producer),
        created=top.str_("created"), features_only=features_only, split=split,
        source_images=source_images, schema_version=version,
    )
    graphs = top.get("graphs", optional=True)
    if graphs is not None and graphs != manifest.to_dict()["graphs"]:
        raise top.fail("graphs", "disagrees with the other fields (file names, outputs, batch)")
    top.done()
    return manifest


#: Why a conv field must be null.
_NO_GRADS = "for a features-only model (no grads.onnx)"


def _schema_version(top: _Fields) -> int:
    version = top.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < MIN_SCHEMA_VERSION:
        raise top.fail("schema_version", "must be a positive integer")
    if version > SCHEMA_VERSION:
        raise ZooError(
            f"{top.where}: schema_version {version} is newer than this gradnca-onnx reads "
            f"({SCHEMA_VERSION}); upgrade gradnca-onnx"
        )
    return version


def _features_only(top: _Fields, version: int) -> str | None:
    """Why the member has no gradient graph, or ``None`` for a full member."""
    if version < 2:
        if "features_only" in top.data:
            raise ZooError(f"{top.where}: field 'features_only' needs schema_version 2 (the "
                           f"manifest says {version}); re-export the model")
        return None
    # Absent and null both mean a full member, so a hand-written schema-2 manifest need
    # not spell it out; a features-only member must say why it has no gradient graph.
    return top.str_("features_only", optional=True)


def _source(src: _Fields) -> SourceSpec:
    kind = src.str_("kind")
    if not _SOURCE_KIND_RE.match(kind):
        raise src.fail("kind", SOURCE_KIND_FORM)
    options = src.get("options")
    if not isinstance(options, dict):
        raise src.fail("options", "must be a JSON object")
    source = SourceSpec(kind=kind, reference=src.str_("reference"),
                        checkpoint=src.str_("checkpoint", optional=True),
                        checkpoint_sha256=src.str_("checkpoint_sha256", optional=True),
                        options=options)
    src.done()
    return source


def _input(inp: _Fields, version: int) -> InputSpec:
    channels = inp.int_("channels")
    mean, std = inp.floats("mean"), inp.floats("std")
    if len(mean) != channels or len(std) != channels:
        raise inp.fail("mean", f"and 'std' must have one value per channel ({channels})")
    if any(s <= 0 for s in std):
        raise inp.fail("std", "must be > 0")
    small = [s for s in std if s < MIN_STD]
    if small:
        # A std below float32's resolution divides every pixel by 0 (1e-300 is 0 in float32).
        raise inp.fail("std", f"holds {small[0]!r}, too small: each std must be >= {MIN_STD:g} "
                       "(it divides every pixel), the model's real input std (e.g. 0.5 or "
                       "ImageNet's)")
    spec = InputSpec(channels=channels, height=inp.int_("height"), width=inp.int_("width"),
                     mean=mean, std=std, intensity=_intensity(inp, version),
                     depth=_depth(inp, version))
    windows = (spec.intensity or {}).get("windows")
    if windows and len(windows) != channels:
        raise inp.fail("intensity", f"lists {len(windows)} windows for {channels} channels "
                       "(one window per channel)")
    inp.done()
    return spec


def _depth(inp: _Fields, version: int) -> int | None:
    """The optional ``input.depth`` (schema 7); ``None``: a 2-D model."""
    if inp.get("depth", optional=True) is None:
        return None
    if version < 7:
        raise inp.fail("depth", f"needs schema_version 7 (the manifest says {version})")
    return inp.int_("depth")


def _intensity(inp: _Fields, version: int) -> dict[str, Any] | None:
    """The optional ``input.intensity`` (schema 6), validated; ``None``: 8-bit images."""
    value = inp.get("intensity", optional=True)
    if value is None:
        return None
    if version < 6:
        raise inp.fail("intensity", f"needs schema_version 6 (the manifest says {version})")
    from ..data.conventions import intensity_from_dict
    from ..errors import InputError

    try:
        convention = intensity_from_dict(value, "input.intensity")
    except InputError as exc:
        raise inp.fail("intensity",
                       str(exc).removeprefix("input.intensity").lstrip(": ")) from None
    return None if convention.is_default else convention.to_dict()


def _layers(lay: _Fields, version: int, features_only: str | None) -> LayerSpec:
    rule = None
    if version >= 3:
        # null: not recorded (a schema-1/2 manifest rewritten by write_manifest); every
        # exporter and importer of this version records it.
        rule = lay.str_("rule", optional=True)
        if rule is not None and rule not in LAYER_RULES:
            raise lay.fail("rule", f"must be one of {list(LAYER_RULES)} or null")
    elif "rule" in lay.data:
        raise lay.fail("rule", f"needs schema_version 3 (the manifest says {version})")
    if features_only is None:
        layers = LayerSpec(features=lay.str_("features", empty=True), conv1=lay.str_("conv1"),
                           conv2=lay.str_("conv2"),
                           conv1_weight_shape=lay.ints("conv1_weight_shape"),
                           conv2_weight_shape=lay.ints("conv2_weight_shape"), rule=rule)
    else:
        for key in ("conv1", "conv2", "conv1_weight_shape", "conv2_weight_shape", "rule"):
            lay.null(key, _NO_GRADS)
        layers = LayerSpec(features=lay.str_("features", empty=True), conv1=None, conv2=None,
                           conv1_weight_shape=None, conv2_weight_shape=None)
    lay.done()
    return layers


def _batch_policy(bp: _Fields, version: int, features_only: str | None) -> BatchPolicy:
    if features_only is None:
        grads_batch = bp.int_("grads_batch")
    else:
        bp.null("grads_batch", _NO_GRADS)
        grads_batch = None
    policy = BatchPolicy(grads_batch=grads_batch,
                         features_batch=bp.str_("features_batch"),
                         smaller=bp.str_("smaller"), larger=bp.str_("larger"))
    if (policy.features_batch, policy.smaller, policy.larger) != ("dynamic", PAD_ZERO, CHUNK_SUM):
        raise bp.fail("smaller", f"/'larger'/'features_batch' must be {PAD_ZERO!r}/{CHUNK_SUM!r}/"
                      f"'dynamic' in schema {version}")
    bp.done()
    return policy


def _files(fl: _Fields, features_only: str | None) -> dict[str, FileEntry]:
    files: dict[str, FileEntry] = {}
    for fname in list(fl.data):
        entry = fl.sub(fname)
        digest = entry.str_("sha256")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise entry.fail("sha256", "must be 64 lowercase hex digits")
        if "/" in fname or "\\" in fname or fname.startswith("."):
            raise fl.fail(fname, "must be a plain file name inside the model directory")
        files[fname] = FileEntry(sha256=digest, bytes=entry.int_("bytes", minimum=0))
        entry.done()
        fl.used.add(fname)
    for needed in (FEATURES_FILE,) + ((GRADS_FILE,) if features_only is None else ()):
        if needed not in files:
            raise fl.fail(needed, "is missing")
    if features_only is not None and GRADS_FILE in files:
        raise fl.fail(GRADS_FILE, "is listed but 'features_only' says the model has no gradient "
                      "graph")
    return files


def _split(top: _Fields, fl: _Fields, files: dict[str, FileEntry], version: int,
           features_only: str | None) -> SplitSpec | None:
    """The split pass (schema 4); absent and ``null`` both mean none."""
    if version < 4:
        if "split" in top.data:
            raise top.fail("split", f"needs schema_version 4 (the manifest says {version})")
        return None
    if top.get("split", optional=True) is None:
        return None
    sp = top.sub("split")
    if features_only is not None:
        raise top.fail("split", "must be null for a features-only model (no gradient graph)")
    split = SplitSpec(residuals=sp.int_("residuals"),
                      residual_bytes=sp.int_("residual_bytes", minimum=0))
    sp.done()
    for needed in (FORWARD_FILE, BACKWARD_FILE):
        if needed not in files:
            raise fl.fail(needed, "is missing (the manifest has a 'split' block)")
    return split


def _source_images(top: _Fields, version: int) -> int | None:
    """The optional ``source_images`` (schema 5); absent and ``null`` both mean not recorded."""
    if version >= 5:
        return top.int_("source_images", minimum=0, optional=True)
    if "source_images" in top.data:
        raise top.fail("source_images", f"needs schema_version 5 (the manifest says {version})")
    return None


# --------------------------------------------------------------------------- files


def read_manifest(model_dir: str | os.PathLike) -> Manifest:
    """Parse and validate ``model_dir/manifest.json`` without checking the ONNX files.

    Raises
    ------
    ValueError
        Naming the manifest: missing, not a regular file (a directory, FIFO or device is
        never opened: a FIFO would block, a device never end), unreadable (any ``OSError``),
        too large, not UTF-8, not JSON, nested too deeply, or not a valid manifest.
    """
    path = Path(model_dir) / MANIFEST_FILE
    if not os.path.lexists(path):
        raise ZooError(f"{path} not found: {model_dir} is not an exported model directory")
    if not path.is_file():
        raise ZooError(f"{path} is not a regular file (a directory, FIFO, device or broken "
                         "link); replace it with the model's manifest or re-export the model")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ZooError(f"{path} cannot be read ({exc.strerror or type(exc).__name__}); "
                         "check the file or re-export the model") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ZooError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB, which no "
                         "manifest is; re-export the model")
    try:
        data = load_json(raw.decode("utf-8"), where=str(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"{path} is not valid JSON ({exc}); re-export the model") from None
    return Manifest.from_dict(data, where=str(path))


def load_manifest(model_dir: str | os.PathLike, *, verify: bool = True) -> Manifest:
    """Read a model directory's manifest and check its files.

    Parameters
    ----------
    model_dir : path
        A directory written by ``gradnca-onnx export``.
    verify : bool, default=True
        Recompute every file's SHA-256; ``False`` checks presence and size only (fast).

    Raises
    ------
    ValueError
        Missing or malformed manifest, missing files, or files that differ from their hashes.
    """
    manifest = read_manifest(model_dir)
    verify_files(model_dir, manifest.files, hashes=verify)
    # A graph file the manifest does not list has no recorded hash, so nothing vouches for it;
    # refuse it rather than leave a file no integrity check covers.
    for graph in (FEATURES_FILE, GRADS_FILE):
        if graph not in manifest.files and (Path(model_dir) / graph).exists():
            raise ZooError(
                f"{Path(model_dir) / graph} is present but not listed in the manifest"
                + (" (a features-only model)" if graph == GRADS_FILE else "")
                + "; remove the file or re-export the model")
    return manifest


def write_manifest(model_dir: str | os.PathLike, manifest: Manifest) -> Path:
    """Validate ``manifest`` and write it atomically as ``model_dir/manifest.json``.

    The file is written in the oldest layout that holds its fields (:func:`write_version`:
    :data:`WRITE_VERSION`, 6 with an intensity convention, 7 with a depth); every older manifest is a valid
    one of that schema (each schema only added fields or values), so upgrading loses nothing,
    and a member without a convention is written as earlier versions wrote it.
    """
    manifest = replace(manifest, schema_version=write_version(manifest.input.intensity,
                                                              manifest.input.depth))
    manifest.validate(where=f"manifest for {manifest.name!r}")
    path = Path(model_dir) / MANIFEST_FILE
    atomic_write_text(path, manifest.to_json())
    return path
