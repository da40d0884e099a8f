"""SFDA: self-challenging Fisher discriminant analysis (Shao et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg

from ..errors import InputError
from ._common import (
    check_choice,
    class_sums,
    large_factorisation,
    prepare,
    row_span,
    softmax_rows,
    warn_degenerate,
)

Saturated = Literal["nan", "as_released"]

SHRINKAGE_FLOOR = 1e-10
POWER_ITERATIONS = 3


def largest_eigenvalue_estimate(A: NDArray[np.float64], n_iter: int = POWER_ITERATIONS,
                                start: NDArray[np.float64] | None = None) -> float:
    """The released code's estimate of A's largest eigenvalue: ``n_iter`` double power steps
    from the row sums ``A 1``, then ``x^T A y`` (x, y the last two unit iterates).

    ``start`` replaces the all-ones vector (the span form passes Q^T 1, see :func:`fit_fda`).
    """
    x = A.sum(axis=1) if start is None else A @ start
    y = x
    for _ in range(n_iter):
        t = A @ x
        y = t / np.linalg.norm(t)
        t = A @ y
        x = t / np.linalg.norm(t)
    return float(x @ A @ y)


def _shrink(cov: NDArray[np.float64], shrinkage: float, dim: int | None = None
            ) -> NDArray[np.float64]:
    """(1 - s) cov + s (trace(cov) / dim) I; ``dim`` defaults to cov's order (the span form
    passes the feature dimension D, the order of the matrix it stands for)."""
    k = cov.shape[0]
    out = (1.0 - shrinkage) * cov
    out.flat[:: k + 1] += shrinkage * np.trace(cov) / (k if dim is None else dim)
    return out


@dataclass(frozen=True)
class FDAFit:
    """A regularised FDA fitted as in the released SFDA code."""

    shrinkage: float
    coef: NDArray[np.float64]        # (C, D)
    intercept: NDArray[np.float64]   # (C,)

    def predict_proba(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return softmax_rows(X @ self.coef.T + self.intercept)


def fit_fda(X: NDArray[np.float64], y: NDArray[np.int64], n_classes: int,
            shrinkage: float | None = None, *, dim: int | None = None,
            start: NDArray[np.float64] | None = None) -> FDAFit:
    """Regularised FDA (REFERENCE section 6): Sw = sum_c prior_c cov_c (biased); lambda =
    max(exp(-5 a), 1e-10) with a the power-iteration estimate of Sw's largest eigenvalue (unless
    given); Sw' = shrunk Sw; St = shrunk covariance of all samples; Sb = St - Sw'.

    The released code takes the generalised eigenvectors V of (Sb, Sw') and sets
    ``coef = means V V^T``. scipy normalises them to ``V^T Sw' V = I``, so ``V V^T = Sw'^-1``
    whatever the eigenvalues or their order: ``coef = means Sw'^-1`` exactly, which is what is
    computed here, by a Cholesky solve (O(D^3 / 3) instead of a generalised eigensolve).

    Span form (``dim`` and ``start`` given): ``X`` holds the samples as ``Z = X Q`` in an
    orthonormal basis Q (D, k) of their span (:func:`~._common.row_span`), ``dim`` is D and
    ``start`` is Q^T 1. Sw = Q Sw_Z Q^T, since every centred row lies in the span, so
    Sw' = Q Sw'_Z Q^T + mu (I - Q Q^T) with mu = lambda tr(Sw) / D (the trace is the same in
    both bases); the class means lie in the span too, so ``means Sw'^-1 = (means_Z Sw'_Z^-1)
    Q^T`` and the logits ``X coef^T`` are ``Z coef_Z^T``: every quantity the score uses is the
    same, from a k x k solve. The power iteration from ``A 1`` is ``Q`` times the one from
    ``A_Z (Q^T 1)``, with the same norms, so lambda is the same too.
    """
    n, d = X.shape
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    priors = counts / n
    means = class_sums(X, y, n_classes) / counts[:, None]
    within = np.zeros((d, d))
    for c in range(n_classes):
        centred = X[y == c] - means[c]
        # prior_c * biased covariance = (n_c / N) * (centred^T centred / n_c)
        within += centred.T @ centred / n
    if shrinkage is None:
        shrinkage = max(float(np.exp(-5.0 * largest_eigenvalue_estimate(within, start=start))),
                        SHRINKAGE_FLOOR)
    within_shrunk = _shrink(within, shrinkage, dim)
    try:
        with large_factorisation(d):
            factor = linalg.cho_factor(within_shrunk, lower=True, check_finite=False)
    except linalg.LinAlgError as err:
        # The released generalised eigensolver factors the same matrix and fails alike.
        raise InputError(
            "SFDA: the shrunk within-class scatter is not positive definite (features constant "
            f"within every class, or lambda={shrinkage:.3g} too small for their scale)"
        ) from err
    coef = linalg.cho_solve(factor, means.T, check_finite=False).T
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    return FDAFit(shrinkage=float(shrinkage), coef=coef, intercept=intercept)


def sfda_probabilities(features: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """Per-sample true-class probability of SFDA's second (ConfMix) FDA; see :func:`sfda`."""
    X, y, n_classes = prepare(features, labels)
    return _sfda_true_class_proba(X, y, n_classes)


def _sfda_true_class_proba(X: NDArray[np.float64], y: NDArray[np.int64], n_classes: int
                           ) -> NDArray[np.float64]:
    n, d = X.shape
    dim = start = None
    if d > n:
        # Wide features (a headless ViT: D = 16k for N = 120): the scatter has rank < N, so
        # both FDAs run exactly in the N-dimensional span of the samples (fit_fda's span
        # form); the mixed samples below are combinations of rows and means, in it as well.
        X, basis = row_span(X)
        dim, start = d, basis.sum(axis=0)
    first = fit_fda(X, y, n_classes, dim=dim, start=start)
    prob = first.predict_proba(X)
    # "Soften" the probabilities with a second softmax before mixing.
    prob = softmax_rows(prob)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    means = class_sums(X, y, n_classes) / counts[:, None]
    others = (means.sum(axis=0) - means) / (n_classes - 1)  # mean of the other classes' means
    p = prob[np.arange(n), y][:, None]
    mixed = p * X + (1.0 - p) * others[y]
    second = fit_fda(mixed, y, n_classes, shrinkage=first.shrinkage, dim=dim)
    return second.predict_proba(mixed)[np.arange(n), y]


def sfda(features: ArrayLike, labels: ArrayLike, *, saturated: Saturated = "nan") -> float:
    """SFDA score: mean true-class probability after a self-challenging (ConfMix) FDA.

    Shao, Zhao, Ge, Zhang, Wang, Chen, Luo, *Not All Models Are Equal: Predicting Model
    Transferability in a Self-challenging Fisher Space*, ECCV 2022 (Reg-FDA and ConfMix), as the
    released code and REFERENCE section 6 compute it: a regularised FDA
    (:func:`fit_fda`) gives ``prob = softmax(X coef^T + intercept)``; ``prob`` is softened by a
    second softmax; each sample x of class c becomes ``p x + (1 - p) m_c'`` with p its softened
    probability of class c and m_c' the mean of the other classes' means; a second FDA with the
    same lambda is fitted on the mixed samples; the score is the mean probability of the true
    class (no log).

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    saturated : {"nan", "as_released"}, default="nan"
        When the FDA separates the classes perfectly, every true-class probability is 1.0 and the
        score is exactly 1.0 for every model. This is what the paper's binary targets give
        (breast, pneumonia: N = 200 < D = 512, and lambda at its 1e-10 floor), and why its table
        has no SFDA tau there. ``"as_released"`` returns that 1.0; ``"nan"`` returns NaN with a
        :class:`DegenerateScoreWarning`, so a ranking treats the score as missing (as the paper
        did) instead of as a tie at the top.

    Returns
    -------
    float
        In [0, 1]; higher is better.
    """
    mode = check_choice(saturated, "saturated", ("nan", "as_released"))
    X, y, n_classes = prepare(features, labels)
    score = float(np.mean(_sfda_true_class_proba(X, y, n_classes)))
    if score == 1.0 and mode == "nan":
        warn_degenerate(
            "SFDA: every sample's true-class probability is 1.0 (the regularised FDA separates "
            f"the classes perfectly; N={X.shape[0]}, D={X.shape[1]}, {n_classes} classes), so the "
            "score cannot rank models; returning NaN (saturated='as_released' returns 1.0)"
        )
        return float("nan")
    return score
