"""Input validation shared by the public NumPy API: one clear ``ValueError`` per problem."""

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


def check_labels(labels: ArrayLike, n_samples: int, *, name: str = "labels",
                 min_classes: int = 2) -> tuple[NDArray[np.int64], NDArray]:
    """Validate labels and remap them to 0..C-1.

    Accepts shape (N,) or (N, 1) (the MedMNIST layout). Returns ``(codes, classes)``.
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{name} must have shape (N,) or (N, 1); got {np.asarray(labels).shape}")
    if y.shape[0] != n_samples:
        raise InputError(f"{name} has {y.shape[0]} entries but there are {n_samples} samples")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise InputError(f"{name} contains NaN/inf")
        if not np.all(y == np.round(y)):
            raise InputError(f"{name} must be class labels; got non-integer floats")
    classes, codes = np.unique(y, return_inverse=True)
    if classes.shape[0] < min_classes:
        raise InputError(
            f"{name} has {classes.shape[0]} distinct class(es) ({classes.tolist()}); "
            f"at least {min_classes} are needed"
        )
    return codes.astype(np.int64, copy=False).reshape(-1), classes
