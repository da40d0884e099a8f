"""NCE: negative conditional entropy of the labels given source predictions (Tran et al. 2019)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._common import prepare_logits


def nce(logits: ArrayLike, labels: ArrayLike) -> float:
    """NCE score: ``-H(Y | Z)`` with Z the source model's predicted class.

    Tran, Nguyen, Hassner, *Transferability and Hardness of Supervised Classification Tasks*,
    ICCV 2019, measure transferability by the conditional entropy H(Y|Z) of the target labels
    given source labels; as in the NCE baseline of Nguyen et al. (LEEP, ICML 2020), the source
    labels are the source model's predictions: ``z_i = argmax logits_i`` (first maximum on
    ties); ``P(y, z)`` = the
    empirical joint frequency; ``H(Y|Z) = - sum_{y,z} P(y, z) log(P(y, z) / P(z))`` over the
    pairs with ``P(y, z) > 0``.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_source_classes)
        Output of the source model's final classification layer (probabilities work too: only
        the arg-max is used).
    labels : array-like of shape (n_samples,) or (n_samples, 1)

    Returns
    -------
    float
        In [-log C, 0]; higher is better.
    """
    z, y, n_classes = prepare_logits(logits, labels)
    n = y.shape[0]
    pred = np.argmax(z, axis=1)
    _, pred = np.unique(pred, return_inverse=True)  # only predicted source classes matter
    joint = np.zeros((n_classes, int(pred.max()) + 1))
    np.add.at(joint, (y, pred), 1.0)
    joint /= n
    marginal = joint.sum(axis=0)
    mask = joint > 0
    cond = joint[mask] / np.broadcast_to(marginal, joint.shape)[mask]
    return float(np.sum(joint[mask] * np.log(cond)))
