"""S_FU: ratio of triplet-loss gradient norms of the second and first conv layers (REFERENCE 4).

The model-dependent half (back-propagating a cotangent to the two conv weights) runs in the
engine's ONNX gradient graph; this module owns the model-independent half: the batching rule,
the triplet loss and its gradient with respect to the features (the cotangent), and the ratio.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_features
from ..core import triplet_margin_loss_grad
from ..errors import InputError

#: The paper splits the target set into this many full batches (plus a smaller remainder).
N_FULL_BATCHES = 6


def fu_batch_slices(n_samples: int, *, n_full_batches: int = N_FULL_BATCHES) -> list[slice]:
    """Batches of ``floor(n / 6)`` consecutive samples in dataset order, the remainder included.

    ``n = 1100`` gives six batches of 183 and one of 2.
    """
    n = int(n_samples)
    size = n // n_full_batches
    if size < 1:
        raise InputError(
            f"S_FU needs at least {n_full_batches} samples (batch size floor(n/{n_full_batches})); "
            f"got {n}"
        )
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def triplet_loss_grad(
    embeddings: ArrayLike, labels: ArrayLike, *, margin: float = 0.05
) -> tuple[float, NDArray[np.floating[Any]]]:
    """Triplet margin loss of one batch and its gradient with respect to the raw embeddings.

    Same numbers as pytorch-metric-learning's ``TripletMarginLoss(margin)`` (L2-normalised
    embeddings, every valid triplet, mean over the non-zero losses) back-propagated by torch
    autograd. A batch without a violating (or without any valid) triplet has loss 0 and a zero
    gradient.

    Parameters
    ----------
    embeddings : array-like of shape (batch, dim)
    labels : array-like of shape (batch,) or (batch, 1)
        Any label values; only equality matters.
    margin : float, default=0.05

    Returns
    -------
    loss : float
    grad : ndarray of shape (batch, dim), in the embeddings' dtype (float32 or float64)
    """
    X = check_features(embeddings, name="embeddings", min_samples=1)
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InputError(
            f"labels must have shape ({X.shape[0]},) or ({X.shape[0]}, 1) to match the embeddings; "
            f"got {np.asarray(labels).shape}"
        )
    if not np.isfinite(margin):
        raise InputError(f"margin must be finite; got {margin}")
    _, codes = np.unique(y, return_inverse=True)
    loss, grad, _, _ = triplet_margin_loss_grad(X, codes.reshape(-1), margin=float(margin))
    return loss, grad.astype(X.dtype, copy=False)


def fu_cotangents(
    features: ArrayLike, labels: ArrayLike, *, margin: float = 0.05
) -> list[tuple[slice, float, NDArray[np.floating[Any]]]]:
    """Per S_FU batch: its slice, triplet loss and the feature cotangent to back-propagate."""
    X = check_features(features, min_samples=1)
    y = np.asarray(labels).reshape(X.shape[0], -1)[:, 0] if np.asarray(labels).size == X.shape[0] \
        else np.asarray(labels)
    out = []
    for sl in fu_batch_slices(X.shape[0]):
        loss, grad = triplet_loss_grad(X[sl], y[sl], margin=margin)
        out.append((sl, loss, grad))
    return out


def _has_triplet(labels: NDArray[Any]) -> bool:
    """Whether a batch can form a triplet: two classes, one of them with two images."""
    _, counts = np.unique(labels, return_counts=True)
    return counts.size >= 2 and bool((counts >= 2).any())


def _same_rows(x: NDArray[Any]) -> bool:
    """Whether every row (image or feature vector) of ``x`` equals the first."""
    return bool(len(x) == 0 or np.all(x == x[:1]))


def fu_undefined_reason(features: ArrayLike, labels: ArrayLike, *, target: str,
                        images: ArrayLike | None = None, margin: float = 0.05) -> str:
    """Why no S_FU batch of a target gave a first-layer gradient, in one phrase naming it.

    The causes, checked in this order: too few images for a triplet in a batch (fewer than
    18: batches of ``floor(n/6) < 3`` images); all images identical; the model's features the
    same for every image; every batch of one class (the target's order); features the same
    within every batch that has a triplet; no triplet violating the margin; else the model's
    first conv layer has a zero gradient although the loss does not.
    """
    y = np.asarray(labels)
    # The array's length, not len(labels): an ArrayLike need not have a len().
    y = y.reshape(y.shape[0], -1)[:, 0]
    X = np.asarray(features)
    n = y.shape[0]
    slices = fu_batch_slices(n)
    size = slices[0].stop - slices[0].start
    if size < 3:
        return (f"target {target} has {n} images, so its S_FU batches of floor({n}/"
                f"{N_FULL_BATCHES}) = {size} image(s) are too small for a triplet (anchor, "
                f"positive, negative); S_FU needs at least {3 * N_FULL_BATCHES} images")
    if images is not None and _same_rows(np.asarray(images)):
        return (f"all {n} images of target {target} are identical (e.g. all black, or decoded "
                "to one constant value); check how the images were written")
    if _same_rows(X):
        return (f"the model's features are the same for every image of target {target} (are "
                "its images constant, e.g. black, or decoded to constants?)")
    with_triplet = [sl for sl in slices if _has_triplet(y[sl])]
    if not with_triplet:
        return (f"every S_FU batch ({size} consecutive images) of target {target} holds a "
                "single class; put the images in an order that mixes the classes (image folders "
                "are interleaved when loaded; shuffle the images of an npz)")
    if all(_same_rows(X[sl]) for sl in with_triplet):
        return (f"the model's features are the same for every image within each S_FU batch of "
                f"target {target}")
    if not any(triplet_loss_grad(X[sl], y[sl], margin=margin)[1].any() for sl in with_triplet):
        return (f"no triplet in any S_FU batch of target {target} violates the margin "
                f"{margin:g}: the model's features already separate its classes")
    return (f"the model's first conv layer has a zero gradient on every S_FU batch of target "
            f"{target} (the layer does not change the features of these images)")


def feature_update_score(grad_norms_w1: ArrayLike, grad_norms_w2: ArrayLike, *,
                         why: Callable[[], str] | None = None) -> float:
    """S_FU = mean over batches of ||grad W2|| / mean over batches of ||grad W1||.

    Batches without a violating triplet contribute zeros to both means, as in the paper.

    Parameters
    ----------
    grad_norms_w1, grad_norms_w2 : array-like (batches,)
        Per-batch gradient norms of the first and second conv layer.
    why : callable, optional
        Called only when S_FU is undefined: the reason, naming the target (e.g. a
        :func:`fu_undefined_reason` with the target's features and labels bound).

    Raises
    ------
    ValueError
        Mismatched lengths, negative or non-finite norms, or every first-layer norm zero (no
        batch had a violating triplet, so the ratio is undefined; ``why`` says why).
    """
    w1 = np.asarray(grad_norms_w1, dtype=np.float64).reshape(-1)
    w2 = np.asarray(grad_norms_w2, dtype=np.float64).reshape(-1)
    if w1.shape != w2.shape or w1.size == 0:
        raise InputError(
            f"need one first- and one second-layer norm per batch; got {w1.size} and {w2.size}"
        )
    if not (np.isfinite(w1).all() and np.isfinite(w2).all()):
        raise InputError("gradient norms contain NaN/inf; the gradient graph or its input is broken")
    if (w1 < 0).any() or (w2 < 0).any():
        raise InputError("gradient norms must be non-negative")
    m1 = w1.mean()
    if m1 == 0.0:
        reason = why() if why is not None else (
            "every batch has a zero first-layer gradient (no violating triplet in any batch: too "
            "few images, one class per batch, or identical features)")
        raise InputError(f"S_FU is undefined: {reason}")
    return float(w2.mean() / m1)
