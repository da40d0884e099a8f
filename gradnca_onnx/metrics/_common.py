"""Input checks and small numerical helpers shared by the baseline metrics."""

from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_features, check_labels
from ..core._parallel import single_threaded_blas
from ..errors import (
    DegenerateScoreWarning,  # noqa: F401 - re-exported
    InputError,
)


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
        raise InputError(
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
        raise InputError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}; got {value!r}")
    return str(value)


#: From this order on a dense factorisation (Cholesky, eigh, SVD) runs on one BLAS thread: the
#: threaded Cholesky (dpotrf) of OpenBLAS dies with SIGSEGV from order ~15,600 (measured on 2
#: cores with the builds scipy 1.17 and numpy 2.4 bundle, 0.3.30 and 0.3.31: the identity of
#: order 15,000 passes, 15,600, 16,128 and 16,384 crash; on one thread 16,384 passes in 45 s),
#: which took a whole ``rank`` down (SFDA on 16k-wide features). Half that leaves a margin.
ONE_THREAD_ORDER = 8192


def large_factorisation(order: int) -> ContextManager[object]:
    """Context for factoring an ``order`` x ``order`` matrix: one BLAS thread when it is large.

    See :data:`ONE_THREAD_ORDER`; below it, a no-op (the library's threads are kept).
    """
    if order >= ONE_THREAD_ORDER:
        return single_threaded_blas()
    return contextlib.nullcontext()


def row_span(X: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(Z, Q)``: an orthonormal basis Q (D, N) of a space holding every row of ``X`` (N, D),
    and the rows in that basis, ``Z = X Q`` (N, N); for D > N.

    Every vector a linear metric forms from the rows (class means, centred rows, their
    scatter) lies in that span, so a D x D computation on them equals the N x N one on ``Z``
    rotated by Q: exact, in O(N^2 D) time and O(N D) memory instead of O(D^3) and O(D^2).
    A thin QR of X^T gives both (Z = R^T); it needs no rank decision, since a Q that spans
    more than the rows is as good.
    """
    q, r = np.linalg.qr(X.T)
    return np.ascontiguousarray(r.T), q


def warn_degenerate(message: str) -> None:
    warnings.warn(message, DegenerateScoreWarning, stacklevel=3)
