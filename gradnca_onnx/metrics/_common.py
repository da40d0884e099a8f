"""Input checks and small numerical helpers shared by the baseline metrics."""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_features, check_labels


class DegenerateScoreWarning(UserWarning):
    """A metric's value carries no ranking information for this model (see the message)."""


def prepare(features: ArrayLike, labels: ArrayLike, *, min_samples: int = 2
            ) -> tuple[NDArray[np.float64], NDArray[np.int64], int]:
    """Validate ``features`` / ``labels`` and return ``(X float64, codes 0..C-1, C)``.

    All metrics compute in float64: the released code mixes float32 and float64 depending on
    what the feature extractor returned, which would make the numbers depend on the caller.
    """
    X = check_features(features, min_samples=min_samples)
    y, classes = check_labels(labels, X.shape[0])
    return np.ascontiguousarray(X, dtype=np.float64), y, int(classes.shape[0])


def prepare_logits(logits: ArrayLike, labels: ArrayLike
                   ) -> tuple[NDArray[np.float64], NDArray[np.int64], int]:
    """Validate source-model logits (N, Cs) against the labels; return float64 logits."""
    z = check_features(logits, name="logits")
    y, classes = check_labels(labels, z.shape[0])
    if z.shape[1] < 2:
        raise ValueError(
            f"logits must have one column per source class (at least 2); got width {z.shape[1]}. "
            "Pass the output of the model's final classification layer, not a single score"
        )
    return np.ascontiguousarray(z, dtype=np.float64), y, int(classes.shape[0])


def softmax_rows(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise softmax with the row maximum subtracted first (no overflow)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def class_sums(X: NDArray[np.float64], y: NDArray[np.int64], n_classes: int) -> NDArray[np.float64]:
    """Per-class sums of the rows of ``X`` (C, D), as one one-hot product (BLAS, not a loop)."""
    onehot = np.zeros((X.shape[0], n_classes))
    onehot[np.arange(X.shape[0]), y] = 1.0
    return onehot.T @ X


def pca_components(n_components: int, n_samples: int, n_features: int) -> int:
    """Cap a PCA size at min(N, D); scikit-learn refuses larger values."""
    return int(max(1, min(n_components, n_samples, n_features)))


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return str(value)


def warn_degenerate(message: str) -> None:
    warnings.warn(message, DegenerateScoreWarning, stacklevel=3)
