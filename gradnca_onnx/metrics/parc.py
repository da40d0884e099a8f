"""PARC: Spearman correlation of feature and label dissimilarity matrices (Bolya et al. 2021).

The released code builds two N x N representation dissimilarity matrices (RDMs) and hands their
upper triangles to ``scipy.stats.spearmanr``: at N = 20,000 that is several 3.2 GB arrays plus a
sort of 2e8 values. Here no N x N matrix is formed. The label RDM ``1 - corrcoef(one-hot)`` takes
exactly two values (0 for a same-class pair, C/(C-1) otherwise), so its ranks are an affine
function of the "different class" indicator b, and Spearman's rho is the Pearson correlation of
the feature-RDM ranks with b: a rank-sum (Mann-Whitney) statistic of the between-class against
the within-class dissimilarities. The N(N-1)/2 feature dissimilarities are computed once by a
numba kernel straight into two float64 arrays (within / between class), each is sorted, and one
merge pass yields the rank sum and the tie correction exactly (average ranks, as ``spearmanr``).
Peak memory is about 8 N(N-1)/2 bytes (0.9 GB at 15,000 samples, 1.6 GB at 20,000).
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ..core._parallel import numba_threads
from ..errors import InputError
from ._common import (
    check_choice,
    check_positive_int,
    pca_components,
    prepare,
    warn_degenerate,
)

Subsample = Literal["applied", "ignored"]

#: Above this many samples the released code draws a class-stratified subsample ...
MAX_SAMPLES = 15_000
#: ... with its PCA settings:
PCA_DIMS = 32
PCA_SEED = 1919


def reduce_features(X: NDArray[np.float64], n_dims: int = PCA_DIMS) -> NDArray[np.float64]:
    """``PCA(n_dims, svd_solver='randomized', random_state=1919, iterated_power=1)``.

    ``n_dims`` is capped at N (as released) and at D (where the released code would fail).
    """
    k = pca_components(n_dims, X.shape[0], X.shape[1])
    return PCA(n_components=k, svd_solver="randomized", random_state=PCA_SEED,
               iterated_power=1).fit_transform(X)


def stratified_subsample(y: NDArray[np.int64], max_samples: int, random_state: int | None
                         ) -> NDArray[np.int64]:
    """Indices (sorted) of ``int(p * n_c)`` samples per class, ``p = max_samples / N``.

    The released helper (``initLabeled``) draws the same counts per class with numpy's global,
    unseeded RNG; here the draw is seeded.
    """
    rng = np.random.default_rng(random_state)
    p = max_samples / y.shape[0]
    chosen = []
    for c in range(int(y.max()) + 1):
        members = np.flatnonzero(y == c)
        take = int(p * members.shape[0])
        if take:
            chosen.append(rng.choice(members, size=take, replace=False))
    if not chosen:
        raise InputError(f"max_samples={max_samples} leaves no sample of any class to score")
    return np.sort(np.concatenate(chosen))


@numba.njit(cache=True, parallel=True)
def _pair_dissimilarities(unit: NDArray, y: NDArray, same_start: NDArray, diff_start: NDArray,
                          same_out: NDArray, diff_out: NDArray) -> None:
    """Write 1 - clip(<u_i, u_j>, -1, 1) for every i < j into the within/between arrays.

    Row i's pairs go to fixed offsets (``same_start[i]``, ``diff_start[i]``), so rows run in
    parallel and the output does not depend on the thread count.
    """
    n, d = unit.shape
    for i in numba.prange(n):
        a = same_start[i]
        b = diff_start[i]
        yi = y[i]
        for j in range(i + 1, n):
            acc = 0.0
            for k in range(d):
                acc += unit[i, k] * unit[j, k]
            if acc > 1.0:
                acc = 1.0
            elif acc < -1.0:
                acc = -1.0
            if y[j] == yi:
                same_out[a] = 1.0 - acc
                a += 1
            else:
                diff_out[b] = 1.0 - acc
                b += 1


@numba.njit(cache=True)
def _rank_sum_stats(same_sorted: NDArray, diff_sorted: NDArray) -> tuple[float, float]:
    """Merge the sorted groups: (S, T) with S = 2 * sum over between-class entries of
    (average rank - mean rank) and T = sum over tie groups of t^3 - t."""
    n0 = same_sorted.shape[0]
    n1 = diff_sorted.shape[0]
    m = n0 + n1
    i = 0
    j = 0
    pos = 0
    s = 0  # int64: each term is an integer, |S| <= M * n1
    ties = 0.0
    while i < n0 or j < n1:
        if j >= n1 or (i < n0 and same_sorted[i] <= diff_sorted[j]):
            v = same_sorted[i]
        else:
            v = diff_sorted[j]
        a = 0
        while i < n0 and same_sorted[i] == v:
            a += 1
            i += 1
        b = 0
        while j < n1 and diff_sorted[j] == v:
            b += 1
            j += 1
        t = a + b
        # 2 * (average rank - (M + 1) / 2) for this tie group is the integer 2 pos + t - M.
        s += b * (2 * pos + t - m)
        if t > 1:
            ft = float(t)
            ties += ft * ft * ft - ft
        pos += t
    return float(s), ties


def parc_from_reduced(reduced: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    """100 x Spearman(1 - corrcoef(standardised rows), 1 - corrcoef(one-hot labels)).

    ``reduced`` are the PCA-reduced features; pairs are i < j (upper triangles).
    """
    n = reduced.shape[0]
    z = StandardScaler().fit_transform(reduced)
    z = z - z.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(z, axis=1)
    if np.any(norms == 0):
        warn_degenerate(
            "PARC: some samples have identical values in every reduced dimension, so their "
            "correlation (and the released code's RDM) is undefined; returning NaN"
        )
        return float("nan")
    unit = np.ascontiguousarray(z / norms[:, None])
    y = np.ascontiguousarray(y, dtype=np.int64)
    counts = np.bincount(y)
    # same-class partners after i: members of i's class with a larger index
    rank_in_class = np.empty(n, dtype=np.int64)
    for c in range(counts.shape[0]):
        members = np.flatnonzero(y == c)
        rank_in_class[members] = np.arange(members.shape[0])
    same_after = counts[y] - 1 - rank_in_class
    diff_after = (n - 1 - np.arange(n)) - same_after
    same_start = np.concatenate(([0], np.cumsum(same_after)[:-1])).astype(np.int64)
    diff_start = np.concatenate(([0], np.cumsum(diff_after)[:-1])).astype(np.int64)
    n0 = int(same_after.sum())
    n1 = int(diff_after.sum())
    if n0 == 0 or n1 == 0:
        warn_degenerate(
            "PARC: the label RDM is constant (every class has a single sample), so the "
            "Spearman correlation is undefined; returning NaN"
        )
        return float("nan")
    same = np.empty(n0)
    diff = np.empty(n1)
    with numba_threads():  # the call's thread bound (per thread in numba)
        _pair_dissimilarities(unit, y, same_start, diff_start, same, diff)
    same.sort()
    diff.sort()
    s, ties = _rank_sum_stats(same, diff)
    m = float(n0 + n1)
    var_rank = (m * m - 1.0) / 12.0 - ties / (12.0 * m)
    if var_rank <= 0:
        warn_degenerate("PARC: every pair has the same feature dissimilarity; returning NaN")
        return float("nan")
    rho = s / (2.0 * np.sqrt(var_rank * float(n0) * float(n1)))
    return float(100.0 * rho)


def parc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    subsample: Subsample = "applied",
    max_samples: int = MAX_SAMPLES,
    random_state: int | None = 0,
    n_dims: int = PCA_DIMS,
) -> float:
    """PARC score (Pairwise Annotation Representation Comparison).

    Bolya, Mittapalli, Hoffman, *Scalable Diverse Model Selection for Accessible Transfer
    Learning*, NeurIPS 2021, Sec. 4 (PARC), as REFERENCE section 6 states it: reduce the
    features to 32 dims with ``PCA(32, svd_solver='randomized', random_state=1919,
    iterated_power=1)`` (capped at N); standardise each column; RDM1 = 1 - corrcoef of the
    samples' feature rows; RDM2 = 1 - corrcoef of the one-hot labels; score = 100 x Spearman
    correlation of the two upper triangles (i < j). See the module docstring for how this is
    computed without N x N matrices.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,) or (n_samples, 1)
    subsample : {"applied", "ignored"}, default="applied"
        Above ``max_samples`` samples the released code draws a class-stratified subsample
        (``int(p * n_c)`` per class, ``p = max_samples / N``) and then scores all samples anyway
        (``"ignored"``, the quirk). ``"applied"`` scores the subsample, as intended.
    max_samples : int, default=15000
    random_state : int or None, default=0
        Seed of the subsample draw (the released draw is unseeded).
    n_dims : int, default=32

    Returns
    -------
    float
        In [-100, 100]; higher is better. NaN (with a :class:`DegenerateScoreWarning`) when the
        correlation is undefined: every class has one sample, or a sample's reduced features are
        all equal.

    Notes
    -----
    ``np.corrcoef`` of one-hot rows in the released code gives the label RDM's two values with
    round-off that depends on the class pair (e.g. 0 and 2.2e-16 for same-class pairs), and
    ``spearmanr`` ranks those as distinct values; that changes the released score by up to a few
    hundredths and depends on the BLAS build. The exact two-valued RDM is used here.
    """
    X, y, _ = prepare(features, labels)
    mode = check_choice(subsample, "subsample", ("applied", "ignored"))
    limit = check_positive_int(max_samples, "max_samples")
    if mode == "applied" and X.shape[0] > limit:
        keep = stratified_subsample(y, limit, random_state)
        X = X[keep]
        # re-code: a class may vanish from a tiny stratum
        _, y = np.unique(y[keep], return_inverse=True)
    reduced = reduce_features(X, check_positive_int(n_dims, "n_dims"))
    return parc_from_reduced(reduced, y.astype(np.int64))
