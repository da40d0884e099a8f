"""Scoring one model on one target: the passes (cached), S_LP and S_FU.

The zoo-level ranking over these per-model scores is :mod:`gradnca_onnx.engine.ranking`'s.
A features-only member (manifest schema 2, no ``grads.onnx``) gets S_LP but no S_FU.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from ..data.dataset import TargetData
from ..data.preprocess import DEFAULT_FILTER, preprocess, preprocess_values
from ..data.volumes import preprocess_volumes
from ..errors import InputError
from ..results import ModelResult
from ..results.ranking import layer_family
from ..scores import (
    feature_update_score,
    fu_batch_slices,
    label_prediction_score,
)
from ..scores.feature_update import fu_undefined_reason, triplet_loss_grad
from ..scores.label_prediction import check_jitters
from ..zoo import Manifest
from .batching import run_grads
from .cache import FeatureCache, cache_key, environment
from .options import Progress
from .runtime import RuntimeConfig, run_session
from .split_pass import choose_pass, split_passes

#: S_LP settings of the paper (REFERENCE section 3); part of every cache key.
LP_SETTINGS = {"n_components": 50, "n_neighbors": 5, "random_state": 42}


def lp_settings(feature_dim: int, jitters: int = 0) -> dict[str, int]:
    """The paper's S_LP settings for features of dimension ``feature_dim`` (the projection
    capped at ``feature_dim``), with ``jitters`` (the smoothed variant) when it is not 0."""
    settings = dict(LP_SETTINGS)
    settings["n_components"] = min(settings["n_components"], int(feature_dim))
    if jitters:
        settings["jitters"] = int(jitters)
    return settings


def check_scoring_target(target: TargetData) -> None:
    """Refuse targets the score is undefined on, with one clear message."""
    if not isinstance(target, TargetData):
        raise InputError(f"the target must be a TargetData (gradnca_onnx.load_target or "
                         f"from_arrays); got {type(target).__name__} (gradnca_onnx.rank also "
                         "takes paths and (images, labels) arrays)")
    where = target.source or target.name
    if target.labels.ndim != 1:
        raise InputError(f"{where}: multi-label targets are not supported (S_LP needs one class "
                         "per image)")
    counts = np.bincount(target.labels, minlength=target.n_classes)
    present = np.flatnonzero(counts)
    if present.size < 2:
        raise InputError(f"{where} ({target.split}): only one class ({present.tolist()}) is "
                         "present; transferability needs at least two")
    lonely = [int(c) for c in present if counts[c] < 2]
    if lonely:
        names = ", ".join(f"{target.class_names[c]!r}" for c in lonely)
        raise InputError(f"{where} ({target.split}): class {names} has a single image, too few to "
                         "form a triplet (anchor and positive); add images or drop the class")
    if len(target) < 6:
        raise InputError(f"{where}: S_FU needs at least 6 images (six batches); got {len(target)}")


def check_dimensions(target: TargetData, manifest: Manifest) -> None:
    """Refuse (one line) a 2-D member on a volume target or a 3-D member on 2-D images: in a
    zoo of both, each member scores the data it can take and the others say why not."""
    spec = manifest.input
    if spec.volumetric and not target.volumetric:
        raise InputError(f"{manifest.name} is a 3-D model (it takes {spec.size_text} volumes) "
                         f"but the target holds 2-D images ({target.size_text}); rank it on a "
                         "volume target (MedMNIST 3-D npz, NIfTI volumes, DICOM series)")
    if target.volumetric and not spec.volumetric:
        raise InputError(f"{manifest.name} is a 2-D model ({spec.size_text} images) but the "
                         f"target holds {target.size_text} volumes; rank 3-D members on it "
                         "(export --depth, or --inflate-3d DEPTH for a 2-D CNN)")


def _input_settings(target: TargetData, manifest: Manifest, resize: bool) -> tuple[dict, list[str]]:
    """The preprocessing a model asks of this target (part of the cache key), and notes."""
    spec = manifest.input
    check_dimensions(target, manifest)
    size = manifest.input.spatial
    kind = "volumes" if spec.volumetric else "images"
    filt = "trilinear" if spec.volumetric else DEFAULT_FILTER
    notes = []
    if target.spatial_size != size:
        if not resize:
            raise InputError(
                f"{manifest.name} takes {spec.size_text} {kind} but the target's are "
                f"{target.size_text}; allow resizing or export the model at the target's size")
        notes.append(f"{kind} resized {target.size_text} -> {spec.size_text} ({filt})")
    settings = {"channels": spec.channels, "size": list(size), "mean": list(spec.mean),
                "std": list(spec.std), "filter": filt}
    convention = spec.convention
    notes += _convention_notes(target, manifest, convention)
    if not convention.is_default:  # an 8-bit member keeps the cache key it always had
        settings["intensity"] = convention.to_dict()
    return settings, notes


def _convention_notes(target: TargetData, manifest: Manifest, convention: Any) -> list[str]:
    """Refuse a member whose intensity convention the target cannot serve; a note when an
    8-bit member reads the 8-bit rendering of a target with physical values."""
    kind = f"{target.modality} " if target.modality else ""
    unit = f" in {target.unit}" if target.unit else ""
    if convention.physical and target.physical is None:
        raise InputError(
            f"{manifest.name} expects physical intensities ({convention.text()}), but the "
            f"target has 8-bit images without them; give the target as DICOM, NIfTI or 16-bit "
            "files (or arrays with physical values), or rank without this member")
    if convention.unit and convention.unit != target.unit:
        # A window in HU read on values of another or no unit (MR, a 16-bit PNG export)
        # would be a confident ranking of meaningless inputs.
        theirs = f"in {target.unit}" if target.unit else "without a unit"
        raise InputError(f"{manifest.name} expects values in {convention.unit} "
                         f"({convention.text()}), but the target's {kind}values are {theirs}; "
                         "give a target in that unit (CT DICOM for HU), or a member whose "
                         "convention fits it")
    if convention.physical:
        return [f"intensity {convention.text()} applied to the target's {kind}values{unit}"]
    if not target.eight_bit:
        raise InputError(
            f"{manifest.name} takes 8-bit images (no intensity convention in its manifest), but "
            f"the target holds physical values without an 8-bit scale; store the images as "
            "uint8 (0..255) or floats within 0..1, or export the member with the convention it "
            "was trained on (--intensity window:LOW,HIGH, percentile:PLOW,PHIGH or zscore)")
    if target.physical is not None:
        return [f"{manifest.name} takes 8-bit images (no intensity convention in its "
                f"manifest), so it reads the target's 8-bit rendering of its {kind}values"
                f"{unit}; if it was trained on another convention, export it with --intensity "
                "(e.g. window:-1000,1000:HU) for a ranking you can defend"]
    return []


def check_input_memory(target: TargetData, manifest: Manifest) -> None:
    """Refuse, in one line, a member whose float32 input of the whole target would not fit in
    the memory available now (a 3-channel 64^3 member on thousands of volumes): the member
    becomes a note and the others are ranked, instead of the OOM killer ending the run.

    The estimate is the input itself plus two float32 copies of the target at its own size
    (the scale and resampling steps before the input is written)."""
    from .. import _memory

    spec = manifest.input
    need = 4 * len(target) * (spec.channels * int(np.prod(spec.spatial))
                              + 2 * int(np.prod(target.images.shape[1:])))
    room = _memory.available_memory()
    if room is not None and need > room:
        raise InputError(f"{manifest.name}: its float32 input for {len(target)} "
                         f"{'volumes' if spec.volumetric else 'images'} of "
                         f"{spec.channels}x{spec.size_text} needs {need / 2 ** 30:.1f} GiB and "
                         f"{room / 2 ** 30:.1f} GiB are available; rank a split or a subset of "
                         "the target, or export the member at a smaller input size")


class PreparedInputs:
    """The last preprocessed target, kept for the next member that asks for the same
    preprocessing of the same data (its cache-key settings: channels, size, mean/std, filter,
    intensity convention): a zoo of models that share an input convention preprocesses the
    target once, not once per member.

    One slot: the array is as large as the target's input to a member, which the member held
    anyway, so the peak does not grow; members of other conventions replace it. The array is
    made read-only. Thread-safe (rankings may run in threads of one process).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._value: NDArray[np.float32] | None = None
        self.made = 0  # how many arrays were made (tests read it)

    def get(self, key: tuple, make: Callable[[], NDArray[np.float32]]) -> NDArray[np.float32]:
        with self._lock:
            if self._key == key and self._value is not None:
                return self._value
            # the old array is dropped before the new one is made: one at a time in memory
            self._key, self._value = None, None
        value = make()
        value.setflags(write=False)
        with self._lock:
            self._key, self._value = key, value
            self.made += 1
        return value

    def clear(self) -> None:
        with self._lock:
            self._key, self._value = None, None


#: The process's one slot (:class:`PreparedInputs`).
PREPARED = PreparedInputs()


def _prepare(target: TargetData, manifest: Manifest) -> NDArray[np.float32]:
    check_input_memory(target, manifest)
    spec = manifest.input
    size = manifest.input.spatial
    resize_to = size if target.spatial_size != size else None
    convention = spec.convention
    if spec.volumetric:
        values = (convention.apply(target.physical) if convention.physical
                  and target.physical is not None else target.images)
        return preprocess_volumes(values, mean=spec.mean, std=spec.std, size=resize_to,
                                  channels=spec.channels)
    if convention.physical and target.physical is not None:
        return preprocess_values(convention.apply(target.physical), mean=spec.mean,
                                 std=spec.std, size=resize_to, channels=spec.channels)
    return preprocess(target.images, mean=spec.mean, std=spec.std, size=resize_to,
                      channels=spec.channels)


def _features(session: Any, x: NDArray[np.float32], batch: int, manifest: Manifest,
              tick: Callable[[int], None]) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    has_logits = manifest.num_classes is not None
    outputs = ["features", "logits"] if has_logits else ["features"]
    where = f"{manifest.name}: features.onnx"
    feats, logits = [], []
    for start in range(0, len(x), batch):
        out = run_session(session, outputs, {"images": x[start:start + batch]}, where=where)
        _check_output(out[0], manifest.feature_dim, "features", "feature_dim", where)
        feats.append(out[0])
        if has_logits:
            _check_output(out[1], manifest.num_classes, "logits", "num_classes", where)
            logits.append(out[1])
        tick(min(start + batch, len(x)))
    return np.concatenate(feats), (np.concatenate(logits) if has_logits else None)


def _check_output(out: NDArray, size: int | None, name: str, field: str, where: str) -> None:
    """Refuse a graph output whose width contradicts the manifest (e.g. feature_dim 999 over a
    64-wide graph), or that is not finite."""
    if out.ndim != 2 or out.shape[1] != size:
        raise InputError(f"{where}: output {name!r} has shape {list(out.shape)} but the manifest's "
                         f"{field} is {size}; the graph and manifest.json disagree: re-export "
                         "the model")


def entry_problem(hit: dict[str, NDArray], manifest: Manifest, n: int) -> str | None:
    """Why a cache entry cannot be trusted for this model and target, or ``None``.

    Every array must be there with the shape this model and target give, a real floating
    dtype and finite values; S_LP must lie in [0, 1] (a mean probability) and the gradient
    norms be >= 0. An entry with the right shapes but a string, NaN or 5.0 in it is as bad
    as a truncated one: it is recomputed, never scored.
    """
    expected = {"features": (n, manifest.feature_dim), "lp": ()}
    if manifest.has_grads:
        k = len(fu_batch_slices(n))
        expected.update(grad_norms_w1=(k,), grad_norms_w2=(k,))
    if manifest.num_classes is not None:
        expected["logits"] = (n, manifest.num_classes)
    for name, shape in expected.items():
        if name not in hit:
            return f"no {name!r} array"
        a = hit[name]
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            return f"{name!r} is not floating point (dtype {getattr(a, 'dtype', type(a))})"
        if a.shape != shape:
            return f"{name!r} has shape {list(a.shape)}, not {list(shape)}"
        if not np.isfinite(a).all():
            return f"{name!r} holds NaN or inf"
    if not 0.0 <= float(hit["lp"]) <= 1.0:
        return f"S_LP {float(hit['lp']):g} is outside [0, 1]"
    for name in ("grad_norms_w1", "grad_norms_w2"):
        if name in expected and (hit[name] < 0).any():
            return f"{name!r} holds a negative norm"
    return None


def model_passes(model_dir: Path, manifest: Manifest, target: TargetData, *,
                 runtime: RuntimeConfig, cache: FeatureCache, resize: bool = True,
                 progress: Progress | None = None, lp_jitters: int = 0
                 ) -> tuple[dict[str, NDArray], bool, list[str]]:
    """Features, logits, per-batch gradient norms and S_LP of one model (cached).

    ``lp_jitters=K`` (K >= 2) replaces the paper's S_LP with the mean over ``K`` feature
    jitters (:func:`~gradnca_onnx.scores.label_prediction_score`). The cache holds the
    paper's S_LP; the smoothed one is computed from the (cached) features on every call.

    A member with the split gradient pass (manifest ``split``) runs each image forward once
    (:mod:`gradnca_onnx.engine.split_pass`); others run ``features.onnx`` over every image and
    then ``grads.onnx`` per S_FU batch. A features-only member (``manifest.has_grads`` false)
    gets no gradient norms: its arrays hold ``features``, ``lp`` and, with a head, ``logits``.

    Returns the arrays, whether they came from the cache, and notes for the user.
    """
    tick = (lambda stage, total: (lambda done: progress(manifest.name, stage, done, total))) \
        if progress else (lambda stage, total: (lambda done: None))
    settings, notes = _input_settings(target, manifest, resize)
    lp_jitters = check_jitters(lp_jitters, "lp_jitters")
    paper_lp = lp_settings(manifest.feature_dim)
    if manifest.feature_dim < LP_SETTINGS["n_components"]:
        notes.append(f"NCA projection capped at the feature dimension D={manifest.feature_dim} "
                     f"(the paper uses {LP_SETTINGS['n_components']})")
    env = environment(runtime.providers())
    # The split pass's features come from forward.onnx, not features.onnx: equal within fp32
    # rounding, not bit for bit, so the key says which pass made them.
    split, why_whole = choose_pass(manifest, runtime.residual_memory, len(target),
                                   runtime.gradient_pass)
    if why_whole:
        notes.append(why_whole)
    key = cache_key({
        "model": {k: v.sha256 for k, v in sorted(manifest.files.items())},
        "data": target.sha256, "preprocessing": settings, "lp": paper_lp,
        "ort": manifest.ort_optimization, "environment": env,
        **({"pass": "split"} if split else {}),
        # S_FU's batches follow the image order; a dataset-ordered target keeps its old key.
        **({"order": target.order} if target.order != "dataset" else {}),
    })
    hit, problem = cache.lookup(key)
    if hit is not None:
        problem = entry_problem(hit, manifest, len(target))
    if hit is not None and problem is None:
        # The pass's own notes (chunks recomputed) are kept with the entry, so a cache hit
        # reports them too.
        kept = cache.meta(key).get("pass_notes")
        notes.extend(str(n) for n in (kept if isinstance(kept, list) else ()))
        return _smoothed_lp(hit, target, manifest, lp_jitters, notes), True, notes
    x = PREPARED.get((target.sha256, json.dumps(settings, sort_keys=True)),
                     lambda: _prepare(target, manifest))
    labels = target.labels
    pass_notes: list[str] = []
    if split:
        # Without onnxruntime's memory arenas: measured at 224 px, resnet18's peak RSS
        # 3.1 -> 2.4 GiB for the same time (README, peak memory).
        feats, logits, n1, n2, pass_notes = split_passes(
            lambda graph: runtime.open(model_dir, manifest, graph, arena=False), manifest, x,
            labels, runtime.residual_memory, tick)
        notes.extend(pass_notes)
        arrays: dict[str, NDArray] = {"features": feats, "grad_norms_w1": n1,
                                      "grad_norms_w2": n2}
    else:
        feats_sess = runtime.open(model_dir, manifest, "features")
        feats, logits = _features(feats_sess, x, runtime.features_batch, manifest,
                                  tick("features", len(x)))
        del feats_sess
        arrays = {"features": feats}
        if manifest.has_grads:
            arrays["grad_norms_w1"], arrays["grad_norms_w2"] = _grad_norms(
                model_dir, manifest, x, feats, labels, runtime, tick)
    arrays["lp"] = np.float64(label_prediction_score(feats, labels, **paper_lp))
    if logits is not None:
        arrays["logits"] = logits
    unsaved = cache.save(key, arrays, meta={"model": manifest.name, "target": target.name,
                                            "split": target.split, **env,
                                            "pass_notes": pass_notes})
    if unsaved:
        notes.append(f"feature cache: {unsaved}")
    elif problem is not None:
        # An incomplete, damaged or poisoned entry was recomputed and is now overwritten.
        notes.append(f"feature cache entry {key[:12]} was bad ({problem}); recomputed and "
                     "overwritten")
    return _smoothed_lp(arrays, target, manifest, lp_jitters, notes), False, notes


def _smoothed_lp(arrays: dict[str, NDArray], target: TargetData, manifest: Manifest,
                 jitters: int, notes: list[str]) -> dict[str, NDArray]:
    """``arrays`` with the smoothed S_LP in place of the paper's when ``jitters`` is set."""
    if not jitters:
        return arrays
    notes.append(f"S_LP: mean over {jitters} feature jitters of 1e-6 (the smoothed variant, "
                 "--lp-jitters; not the paper's S_LP)")
    lp = label_prediction_score(arrays["features"], target.labels,
                                **lp_settings(manifest.feature_dim, jitters))
    return {**arrays, "lp": np.float64(lp)}


def _grad_norms(model_dir: Path, manifest: Manifest, x: NDArray[np.float32],
                feats: NDArray[np.float32], labels: NDArray, runtime: RuntimeConfig,
                tick: Callable[[str, int], Callable[[int], None]],
                sessions: dict[str, Any] | None = None
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per S_FU batch, the norms of the two conv weight gradients (``grads.onnx``).

    ``sessions`` keeps the opened ``grads.onnx`` session (key ``"grads"``) for later calls.
    """
    sessions = {} if sessions is None else sessions
    slices = fu_batch_slices(len(x))
    n1, n2 = np.zeros(len(slices)), np.zeros(len(slices))
    step = tick("gradients", len(slices))
    for i, sl in enumerate(slices):
        _, cot = triplet_loss_grad(feats[sl], labels[sl])
        if cot.any():  # the gradient is linear in the cotangent: a zero one needs no pass
            if "grads" not in sessions:
                sessions["grads"] = runtime.open(model_dir, manifest, "grads")
            _, g1, g2 = run_grads(sessions["grads"], x[sl], cot)
            n1[i], n2[i] = np.linalg.norm(g1), np.linalg.norm(g2)
        step(i + 1)
    return n1, n2


def score_arrays(model_dir: str | Path, manifest: Manifest, target: TargetData, *,
                 runtime: RuntimeConfig | None, cache: FeatureCache | None, resize: bool,
                 progress: Progress | None, lp_jitters: int = 0
                 ) -> tuple[ModelResult, dict[str, NDArray]]:
    """:func:`score_model`, plus the model's arrays as :func:`model_passes` returns them."""
    t0 = time.perf_counter()
    path = Path(model_dir)
    arrays, cached, notes = model_passes(path, manifest, target, runtime=runtime or RuntimeConfig(),
                                         cache=cache or FeatureCache(None), resize=resize,
                                         progress=progress, lp_jitters=lp_jitters)
    why = lambda: fu_undefined_reason(  # noqa: E731 - only called when S_FU is undefined
        arrays["features"], target.labels, target=f"{target.name!r} (split {target.split})",
        images=target.images)
    fu = (feature_update_score(arrays["grad_norms_w1"], arrays["grad_norms_w2"], why=why)
          if manifest.has_grads else None)
    result = ModelResult(name=manifest.name, path=path, lp=float(arrays["lp"]), fu=fu,
                         notes=notes, cached=cached, seconds=time.perf_counter() - t0,
                         architecture=manifest.architecture, pretrained_on=manifest.pretrained_on,
                         features_only=manifest.features_only, layers=fu_layers(manifest))
    return result, arrays


def fu_layers(manifest: Manifest) -> dict[str, Any] | None:
    """The member's two S_FU layers, their rule and family, for every output (``None`` for a
    features-only member)."""
    lay = manifest.layers
    if not manifest.has_grads or lay.conv1 is None:
        return None
    return {"fu_layer1": lay.conv1, "fu_layer2": lay.conv2, "rule": lay.rule,
            "family": layer_family(lay.conv1_weight_shape, lay.conv2_weight_shape)}


def score_model(model_dir: str | Path, manifest: Manifest, target: TargetData, *,
                runtime: RuntimeConfig | None = None, cache: FeatureCache | None = None,
                resize: bool = True, progress: Progress | None = None,
                lp_jitters: int = 0) -> ModelResult:
    """S_LP and S_FU of one exported model on a target (errors are raised, not recorded).

    A features-only member comes back with ``fu`` ``None`` and ``features_only`` set;
    ``lp_jitters`` as :func:`model_passes`.
    """
    return score_arrays(model_dir, manifest, target, runtime=runtime, cache=cache,
                        resize=resize, progress=progress, lp_jitters=lp_jitters)[0]
