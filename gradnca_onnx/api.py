"""The one call a pipeline embeds: :func:`rank`, the Python form of ``gradnca-onnx rank``.

Every option of the command has its keyword here; the command parses its options and calls
this function. Every setting is checked before any model runs, and a bad one raises the
package's typed exception (:mod:`gradnca_onnx.errors`); what is wrong with one member is that
member's ``error`` in the result (or, with ``errors="raise"``, a :class:`RankingError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence, Union, cast

import numpy as np

from .core._parallel import limited_threads
from .data.dataset import TargetData, from_arrays
from .engine import (
    FeatureCache,
    RankOptions,
    Resampling,
    RuntimeConfig,
    default_cache_dir,
)
from .engine.bounded import check_max_samples, check_sample_seed
from .engine.options import DEFAULT_FRACTION, check_resample_options
from .engine.runtime import memory_size
from .engine.targets import RankTargets, load_rank_targets
from .errors import InputError, RankingError
from .executors import Executor, make_executor
from .executors import rank as rank_targets_with
from .executors.ranking import check_sureness
from .results import Ranking, Rankings

PathLike = Union[str, "os.PathLike[str]"]
#: What ``target`` may be: a path (a target file or folder, or a directory of targets), a
#: loaded :class:`~gradnca_onnx.data.dataset.TargetData`, ``(images, labels)`` arrays, or a
#: list of these (several targets).
Target = Union[PathLike, TargetData, tuple[Any, ...], list[Any]]

#: The --resamples settings and their defaults (given without ``resamples``, they would do
#: nothing, so they are refused).
_RESAMPLE_DEFAULTS = {"seed": 0, "fraction": DEFAULT_FRACTION, "level": 0.95,
                      "fu_resample": "rebatch"}


def rank(zoo: PathLike, target: Target, *, split: str | None = None,
         size: int | tuple[int, int] | None = None, scenario: str = "dataset",
         models: str | Sequence[str] | None = None, metrics: str | Sequence[str] | None = None,
         faithful: bool = False, lp_jitters: int = 0,
         cache: PathLike | FeatureCache | bool | None = None, device: str = "auto",
         threads: int | None = None, features_batch: int = 64,
         residual_memory: int | str = 2 << 30, gradient_pass: str = "auto",
         resize: bool = True, verify: bool = True,
         resamples: int | None = None, seed: int = 0, fraction: float = DEFAULT_FRACTION,
         level: float = 0.95, fu_resample: str = "rebatch", folds: bool = False,
         executor: str | Executor = "local", ray_address: str | None = None,
         max_retries: int = 3, progress: Callable[[str, str, int, int], None] | None = None,
         errors: str = "record", within_family: bool = False,
         columns: dict[str, str | None] | None = None, max_samples: int | None = None,
         sample_seed: int = 0) -> Ranking | Rankings:
    """Rank the models of a zoo by their transferability to a target, best first.

    Parameters
    ----------
    zoo : path of the zoo directory, or a :class:`~gradnca_onnx.zoo.Zoo`
    target : one target, or a list of targets (then a :class:`Rankings` is returned): a
        path (MedMNIST ``.npz``, a paper fold ``.npz``, a folder with one sub-folder per
        class of images, DICOM or NIfTI files, a label table ``.csv``/``.tsv``; a directory
        of such targets counts as several), a loaded ``TargetData``, or ``(images, labels)``
        arrays (uint8 images ``(N, H, W[, C])`` or grey volumes ``(N, D, H, W)`` for 3-D
        members, one label per image); MedMNIST 3-D npz files, NIfTI volumes and DICOM series
        folders named by a label table are volume targets
    split, size : how target paths are read (``rank --split``, ``--size``)
    columns : label tables: the column of each role, ``{"path": ..., "label": ...,
        "group": ..., "split": ...}`` (``rank --path-column`` and its siblings); roles left
        out are found by header name
    scenario : ``"dataset"`` or ``"cross-domain"`` (the paper's model scenario)
    models : the members to rank (names, or one comma-separated string; default all)
    metrics : baseline metrics from the same pass (registry names, comma-separated, or
        ``"all"``)
    faithful : the baseline metrics with the released code's quirks
    lp_jitters : K >= 2: the smoothed S_LP (an extension); 0: the paper's
    cache : feature cache: a directory, a ``FeatureCache``, ``True`` (the default directory,
        ``$GRADNCA_CACHE`` or ``~/.cache/gradnca-onnx``), or ``None``/``False`` (none;
        the default here, so that a library call writes nothing it was not asked to)
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``
    threads : the thread budget of the call: onnxruntime's intra- and inter-op pools, the NCA
        products, the compiled kernels' and the metrics' OpenMP and numba loops, and BLAS
        (default: one per core). BLAS's count is process-wide (OpenBLAS keeps one setting), so
        while the call runs other threads of the process see its limit too; it is restored
        when the last concurrent call ends
    features_batch : images per call of ``features.onnx``
    residual_memory : bytes (or a size such as ``"512MiB"``) the split gradient pass may hold
    gradient_pass : ``"auto"`` (the split pass where a whole S_FU batch's residuals fit
        ``residual_memory``), ``"split"`` (whenever one chunk fits) or ``"whole"``
        (``rank --gradient-pass``)
    resize : resize target images to each model's input (else refuse other sizes)
    verify : check each member's files against their sha256 first
    resamples, seed, fraction, level, fu_resample : ``rank --resamples`` (how sure the
        ranking is); the other four act only with ``resamples``
    folds : ``rank --folds``: the spread over the paper's folds of the train split
    executor : ``"local"``, ``"ray"`` or an executor object; ``ray_address`` and
        ``max_retries`` configure Ray
    progress : ``progress(model, stage, done, total)``; an exception it raises stops the call
        and reaches the caller unchanged
    within_family : combine and rank each family of S_FU layers (``conv+conv``,
        ``conv+linear``...) on its own (``rank --within-family``; an extension for mixed zoos)
    max_samples, sample_seed : a target of more images is scored on a class-stratified
        subsample of ``max_samples`` drawn with ``sample_seed``, stated in the notes
        (``rank --max-samples``; ``None``: 5,000, ``0``: every image)
    errors : ``"record"``: a member that cannot be scored gets its ``error`` and the rest is
        ranked; ``"raise"``: :class:`~gradnca_onnx.errors.RankingError` instead of a result
        with failed members

    Returns
    -------
    Ranking or Rankings
        One :class:`~gradnca_onnx.results.Ranking` for one target; :class:`Rankings` for a list
        of targets or a directory of them. Each renders as the command line prints it
        (``to_json``, ``to_csv``, ``table()``, ``to_frame()``) and says ``ok`` / ``failed``.

    Raises
    ------
    InputError
        A bad setting, an unusable device, a target or zoo that cannot be read (before any
        model runs).
    RankingError
        ``errors="raise"`` and a member could not be scored.

    Examples
    --------
    >>> import gradnca_onnx as g                                   # doctest: +SKIP
    >>> ranking = g.rank("zoo", (images, labels), threads=1)       # doctest: +SKIP
    >>> ranking.models[0].name, ranking.ok                         # doctest: +SKIP
    """
    if errors not in ("record", "raise"):
        raise InputError(f"errors must be 'record' or 'raise'; got {errors!r}")
    runtime = RuntimeConfig(device=device, threads=threads, features_batch=features_batch,
                            residual_memory=memory_size(residual_memory, "residual_memory"),
                            gradient_pass=gradient_pass)
    runtime.providers()  # an unusable device raises now, not once per model
    resampling = _resampling(resamples, seed=seed, fraction=fraction, level=level,
                             fu_resample=fu_resample)
    own_executor = isinstance(executor, str)
    runner = (make_executor(executor, address=ray_address, max_retries=max_retries)
              if isinstance(executor, str) else executor)
    try:
        check_sureness(resampling is not None, folds, runner.in_process)
        targets = _targets(target, split=split, size=size, folds=folds, columns=columns)
        options = RankOptions(scenario=scenario, runtime=runtime, cache=_cache(cache),
                              resize=resize, verify=verify, models=_names(models),
                              metrics=metrics, faithful=faithful, progress=progress,
                              lp_jitters=lp_jitters, within_family=within_family,
                              max_samples=check_max_samples(max_samples),
                              sample_seed=check_sample_seed(sample_seed))
        # threads bounds every pool of this call (onnxruntime's, the NCA products, OpenMP,
        # numba, BLAS), restored afterwards; Ray workers get it through the runtime config.
        with limited_threads(threads if runner.in_process else None):
            result = rank_targets_with(zoo, targets, options, resampling=resampling,
                                       folds=folds, executor=runner)
    finally:
        if own_executor:
            runner.close()
    if errors == "raise" and not result.ok:
        raise RankingError(_failure_line(result), result)
    return result if result.several_targets else result[0]


def _resampling(resamples: int | None, **settings: Any) -> Resampling | None:
    """The --resamples settings, checked; settings given without ``resamples`` refused."""
    if resamples is None:
        check_resample_options(None, settings["fraction"], settings["level"],
                               settings["fu_resample"], settings["seed"])
        given = [k for k, v in settings.items() if v != _RESAMPLE_DEFAULTS[k]]
        if given:
            raise InputError(f"{', '.join(given)} act(s) only with resamples=N; pass "
                             f"resamples (e.g. 200) or leave {', '.join(given)} out")
        return None
    resampling = Resampling(resamples, settings["seed"], settings["fraction"],
                            settings["level"], settings["fu_resample"])
    resampling.check()
    return resampling


def _cache(cache: PathLike | FeatureCache | bool | None) -> FeatureCache:
    if isinstance(cache, FeatureCache):
        return cache
    if cache is None or cache is False:
        return FeatureCache(None)
    store = FeatureCache(default_cache_dir() if cache is True else cache)
    store.check_writable("cache")
    return store


def _names(models: str | Sequence[str] | None) -> list[str] | None:
    if models is None:
        return None
    names = models.split(",") if isinstance(models, str) else list(models)
    if not all(isinstance(n, str) for n in names):
        raise InputError(f"models must be model names (strings); got {models!r}")
    names = [n.strip() for n in names if n.strip()]
    return names or None


def _is_arrays(value: Any) -> bool:
    """``(images, labels)``: a pair whose first item is an array, not a path or a target."""
    return (isinstance(value, tuple) and len(value) == 2
            and not isinstance(value[0], (str, os.PathLike, TargetData))
            and (isinstance(value[0], np.ndarray) or hasattr(value[0], "__array__")
                 or isinstance(value[0], list)))


def _targets(target: Target, *, split: str | None, size: Any, folds: bool,
             columns: dict[str, str | None] | None = None) -> RankTargets:
    """``target`` in any accepted form, loaded; paths as the command line reads them."""
    several = isinstance(target, list) or (isinstance(target, tuple) and not _is_arrays(target))
    # several: a list, or a tuple that is not (images, labels), so iterable
    items = list(cast("tuple[Any, ...] | list[Any]", target)) if several else [target]
    if not items:
        raise InputError("target is an empty list; give at least one target")
    is_path = [isinstance(t, (str, os.PathLike)) for t in items]
    if all(is_path):
        loaded = load_rank_targets(cast("list[PathLike]", items), split, size=size, folds=folds,
                                   columns=columns)
        return RankTargets(loaded.paths, loaded.data, loaded.several or several)
    if folds:
        raise InputError("folds=True reads the paper's folds from target files: pass the "
                         ".npz path(s), not loaded data")
    if not any(is_path) and (split is not None or size is not None):
        raise InputError("split and size apply to target files and folders; loaded data and "
                         "arrays are used as given")
    paths: list[Path] = []
    data: list[TargetData] = []
    for i, item in enumerate(items):
        if is_path[i]:
            loaded = load_rank_targets([cast(PathLike, item)], split, size=size,
                                       columns=columns)
            paths += loaded.paths
            data += loaded.data
        else:
            data.append(_loaded(item, i))
            paths.append(Path(data[-1].name))
    return RankTargets(paths, data, several)


def _loaded(item: Any, index: int) -> TargetData:
    if isinstance(item, TargetData):
        return item
    if _is_arrays(item):
        return from_arrays(item[0], item[1], name="arrays" if index == 0 else f"arrays{index}")
    raise InputError(f"target {index}: expected a path, a TargetData or (images, labels) "
                     f"arrays; got {type(item).__name__}")


def _failure_line(result: Rankings) -> str:
    failed = result.failed
    first = failed[0]
    return (f"{len(failed)} model(s) could not be scored ({', '.join(m.name for m in failed)}); "
            f"{first.name}: {first.error}")
