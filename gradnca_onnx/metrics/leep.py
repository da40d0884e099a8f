"""LEEP: log expected empirical prediction from the source classifier (Nguyen et al. 2020)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._common import prepare_logits, softmax_rows


def empirical_conditional(source_proba: NDArray[np.float64], y: NDArray[np.int64], n_classes: int
                          ) -> NDArray[np.float64]:
    """p(y | z) (C, Cz) from soft assignments ``source_proba`` (N, Cz) and target codes ``y``.

    joint(y, z) = sum over samples with label y of P[i, z] / N; p(y|z) = joint / column sum,
    0 where a column sums to 0 (a source class no sample is assigned to).
    """
    n = source_proba.shape[0]
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    joint = onehot.T @ source_proba / n
    marginal = joint.sum(axis=0)
    cond = np.zeros_like(joint)
    np.divide(joint, marginal, out=cond, where=marginal > 0)
    return cond


def leep(logits: ArrayLike, labels: ArrayLike) -> float:
    """LEEP score of a source classifier on the target labels.

    Nguyen, Hassner, Seeger, Archambeau, *LEEP: A New Measure to Evaluate Transferability of
    Learned Representations*, ICML 2020, as REFERENCE section 6 states it:
    ``P = softmax(logits)`` (N x Cs); ``joint(y, z) = sum_{i: y_i = y} P[i, z] / N``;
    ``p(y|z) = joint / sum_y joint`` (0 for a source class with zero mass);
    ``E = P p(y|z)^T``; ``LEEP = mean_i log E[i, y_i]``.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_source_classes)
        Output of the source model's final classification layer (before softmax).
    labels : array-like of shape (n_samples,) or (n_samples, 1)

    Returns
    -------
    float
        Always <= 0; higher is better. ``-inf`` if a sample's expected probability underflows
        to 0 (only possible with extreme logits).
    """
    z, y, n_classes = prepare_logits(logits, labels)
    proba = softmax_rows(z)
    cond = empirical_conditional(proba, y, n_classes)
    expected = (proba @ cond.T)[np.arange(y.shape[0]), y]
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log(expected)))
