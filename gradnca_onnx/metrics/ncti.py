"""NCTI: neural-collapse transferability index (Wang et al. 2023), per model and over a zoo."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from ..errors import InputError
from ..scores.combine import min_max
from ._common import check_choice, check_positive_int, pca_components, prepare

VcSign = Literal["-", "+"]

PCA_DIMS = 64
PCA_SEED = 42
#: How many leading explained variances set the LDA shrinkage ...
SHRINKAGE_DIMS = 32
#: ... and its floor, at which the released code switches to the 'svd' solver.
SHRINKAGE_FLOOR = 1e-10


class NCTITerms(NamedTuple):
    """The three per-model NCTI terms, before the zoo-level normalisation."""

    seli: float  #: S_seli: nuclear norm of the centred LDA projection
    ncc: float   #: S_ncc: mean LDA probability of the true class
    vc: float    #: S_vc: log of the sum over classes of the nuclear norm of their probability rows


def ncti_terms(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int = PCA_DIMS,
    random_state: int | None = PCA_SEED,
) -> NCTITerms:
    """The per-model NCTI terms, as REFERENCE section 6 states the released code.

    Wang, Luo, Zheng, Huang, Baktashmotlagh, *How Far Pre-trained Models Are from Neural
    Collapse on the Target Dataset Informs their Transferability*, ICCV 2023 (Sec. 3: S_seli,
    S_ncc, S_vc): ``PCA(64, random_state=42)``; ``temp = max(exp(-sum of the first 32 explained
    variances), 1e-10)``; ``LinearDiscriminantAnalysis(solver='svd')`` when temp is at the floor,
    else ``(solver='eigen', shrinkage=temp)``, fitted on the reduced features;
    S_seli = nuclear norm of the centred LDA projection; S_ncc = mean LDA probability of the true
    class; S_vc = log(sum over classes c of the nuclear norm of the probability rows of class c).

    The PCA size is capped at min(N, D) (the released code fails below 64).

    Returns
    -------
    NCTITerms
        Combine them over the zoo with :func:`ncti_zoo`.
    """
    X, y, n_classes = prepare(features, labels)
    k = pca_components(check_positive_int(n_components, "n_components"), *X.shape)
    pca = PCA(n_components=k, random_state=random_state)
    reduced = pca.fit_transform(X)
    temp = max(float(np.exp(-pca.explained_variance_[:SHRINKAGE_DIMS].sum())), SHRINKAGE_FLOOR)
    if temp == SHRINKAGE_FLOOR:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=temp)
    projected = lda.fit_transform(reduced, y)
    projected = projected - projected.mean(axis=0, keepdims=True)
    seli = float(np.linalg.svd(projected, compute_uv=False).sum())
    proba = lda.predict_proba(reduced)
    ncc = float(np.mean(proba[np.arange(y.shape[0]), y]))
    class_nuclear = sum(float(np.linalg.svd(proba[y == c], compute_uv=False).sum())
                        for c in range(n_classes))
    return NCTITerms(seli=seli, ncc=ncc, vc=float(np.log(class_nuclear)))


def ncti_zoo(
    terms: ArrayLike,
    *,
    vc_sign: VcSign = "-",
    exclude: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """NCTI of every model of a zoo on one target: min-max each term over the zoo and add.

    ``NCTI = mm(S_seli) + mm(S_ncc) -/+ mm(S_vc)``, mm(x) = (x - min) / (max - min) over the
    models that are not excluded. Wang et al. (ICCV 2023) subtract the within-class
    variability term (``vc_sign="-"``, the default); the code released with the paper this
    project implements adds it (``vc_sign="+"``, quirk; its scores lie in [0, 3]).

    Parameters
    ----------
    terms : array-like of shape (n_models, 3) or sequence of :class:`NCTITerms`
        (S_seli, S_ncc, S_vc) per model.
    vc_sign : {"-", "+"}, default="-"
    exclude : array-like of bool (n_models,) or of int indices, optional
        Models left out of the min-max (the paper excludes the model pre-trained on the target
        itself); their NCTI is NaN.

    Returns
    -------
    ndarray of shape (n_models,)
        Higher is better. A term that is constant over the zoo (e.g. a zoo of one) is mapped to 1
        for every model with a ``ConstantTermWarning`` (see :func:`gradnca_onnx.scores.min_max`),
        so it shifts every score alike instead of producing NaN.
    """
    sign = check_choice(vc_sign, "vc_sign", ("-", "+"))
    t = np.asarray(terms, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 3:
        raise InputError(f"terms must have shape (n_models, 3) (seli, ncc, vc); got {t.shape}")
    keep = np.ones(t.shape[0], dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.dtype == bool:
            if ex.shape != keep.shape:
                raise InputError(f"exclude mask has shape {ex.shape}; expected {keep.shape}")
            keep &= ~ex
        else:
            keep[ex.astype(np.int64)] = False
    if not keep.any():
        raise InputError("every model is excluded; nothing to normalise over")
    out = np.full(t.shape[0], np.nan)
    seli = min_max(t[keep, 0], name="NCTI S_seli")
    ncc = min_max(t[keep, 1], name="NCTI S_ncc")
    vc = min_max(t[keep, 2], name="NCTI S_vc")
    out[keep] = seli + ncc + (vc if sign == "+" else -vc)
    return out
