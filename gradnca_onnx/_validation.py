"""Input validation shared by the public NumPy API and the target readers: one clear
:class:`~gradnca_onnx.errors.InputError` (a ``ValueError``) per problem.

Labels are checked here and nowhere else: :func:`check_labels` for class values of any kind
(coded 0..C-1), :func:`check_label_codes` for labels stored as class codes (target files).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InputError


def check_features(features: ArrayLike, *, name: str = "features", min_samples: int = 2) -> NDArray:
    """Return ``features`` as a 2-D float array (float32 kept, others made float64)."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (n_samples, n_features); got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise InputError(f"{name} must be numeric; got dtype {x.dtype}")
    if x.dtype != np.float32:
        x = x.astype(np.float64, copy=False)
    if x.shape[0] < min_samples:
        raise InputError(f"{name} needs at least {min_samples} samples; got {x.shape[0]}")
    if x.shape[1] < 1:
        raise InputError(f"{name} has no feature columns (shape {x.shape})")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise InputError(
            f"{name} contains {int(bad.sum())} NaN/inf values (first bad rows: {rows[:5].tolist()}); "
            "remove or repair those samples"
        )
    return x


#: Largest number of classes a target may have. Labels are class codes 0..C-1, and several
#: steps allocate per class (counts, names), so a stray huge code (1e12) must be refused, not
#: allocated for.
MAX_CLASSES = 100_000


def _check_integral(y: NDArray, name: str) -> None:
    """Float labels must be whole numbers (no NaN, inf or 0.5); the first bad one is named."""
    if y.dtype.kind != "f" or (np.isfinite(y).all() and np.all(y == np.round(y))):
        return
    flat = y.reshape(-1)
    first = flat[np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))[0]]
    shown = "NaN" if np.isnan(first) else repr(first.item())  # inf, -inf, 0.5
    raise InputError(f"{name} must be integers; got non-integer values (e.g. {shown})")


def _label_array(labels: ArrayLike, n_samples: int, *, name: str, multi_label: bool,
                 samples: str) -> NDArray:
    """``labels`` as (N,) (an (N, 1) column is flattened), or (N, L) where ``multi_label``,
    with integral values if they are floats and one entry per sample."""
    y = np.asarray(labels)
    _check_integral(y, name)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 and not (multi_label and y.ndim == 2):
        shapes = "(N,), (N, 1) or (N, L)" if multi_label else "(N,) or (N, 1)"
        raise InputError(f"{name} must have shape {shapes}; got {np.shape(labels)}")
    if y.shape[0] != n_samples:
        raise InputError(f"{name} (shape {np.shape(labels)}) has {y.shape[0]} entries but there "
                         f"are {n_samples} {samples}")
    return y


def _check_class_count(classes: NDArray, name: str, min_classes: int) -> None:
    if classes.shape[0] < min_classes:
        k = classes.shape[0]
        raise InputError(f"{name}: only {k} {'class' if k == 1 else 'classes'} "
                         f"({classes.tolist()}); at least {min_classes} distinct classes are "
                         "needed to rank models or fine-tune")


def check_labels(labels: ArrayLike, n_samples: int, *, name: str = "labels",
                 min_classes: int = 2, samples: str = "samples"
                 ) -> tuple[NDArray[np.int64], NDArray]:
    """Validate class labels of any kind and code them 0..C-1.

    Parameters
    ----------
    labels : array-like, (N,) or (N, 1)
        Class values: integers, whole-number floats, strings, ...
    n_samples : int
        N, the number of samples the labels belong to.
    name : str
        How the message names the labels (e.g. ``"labels"``, ``"x.npz train labels"``).
    min_classes : int
        Fewest distinct classes accepted.
    samples : str
        What the message calls the samples (``"images"`` for a target).

    Returns
    -------
    codes : ndarray, int64 (N,)
        Codes 0..C-1 in the sorted order of the distinct values (like ``LabelEncoder``).
    classes : ndarray (C,)
        The distinct values; ``classes[codes]`` gives the labels back.
    """
    y = _label_array(labels, n_samples, name=name, multi_label=False, samples=samples)
    classes, codes = np.unique(y, return_inverse=True)
    _check_class_count(classes, name, min_classes)
    return codes.astype(np.int64, copy=False).reshape(-1), classes


def check_label_codes(labels: ArrayLike, n_samples: int, *, name: str = "labels",
                      min_classes: int = 2, samples: str = "images") -> NDArray[np.int64]:
    """Validate labels stored as class codes, as target files hold them (not recoded).

    Parameters
    ----------
    labels : array-like, (N,), (N, 1) or (N, L)
        Codes 0..C-1 (integers or whole-number floats), or 0/1 indicators of L labels.
    n_samples, name, min_classes, samples
        As in :func:`check_labels` (``min_classes`` is not applied to multi-label indicators;
        the samples of stored codes are a target's images).

    Returns
    -------
    ndarray, int64 (N,) or (N, L)

    Raises
    ------
    InputError
        Non-integer labels, a length mismatch, a code that is negative or too large (at most
        :data:`MAX_CLASSES` classes), non-0/1 indicators, or fewer than ``min_classes``
        classes.
    """
    y = np.asarray(labels)
    if y.dtype.kind not in "uibf":
        raise InputError(f"{name} must be integers; got dtype {y.dtype}")
    y = _label_array(y, n_samples, name=name, multi_label=True, samples=samples)
    if y.size and y.max().item() >= MAX_CLASSES:
        raise InputError(f"{name}: label {y.max().item()!r} is too large: labels must be class "
                         f"codes 0..C-1 with at most {MAX_CLASSES} classes; recode the labels")
    y = y.astype(np.int64)
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            raise InputError(f"{name}: multi-label labels (N, {y.shape[1]}) must be 0/1 "
                             "indicators")
        return y
    if y.size and y.min() < 0:
        raise InputError(f"{name} must be class codes 0..C-1; got {y.min()}")
    _check_class_count(np.unique(y), name, min_classes)
    return y
