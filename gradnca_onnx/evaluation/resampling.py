"""The statistics of ``rank --resamples``: the subsample design and the summaries per model.

Design: each resample is a class-stratified subsample *without replacement* of a fixed
fraction of the target (default one half: "half-sampling", an m-out-of-n subsample with
m = n/2), kept in the target's order. Without replacement no image is ever its own duplicate
neighbour, so S_LP's self-inclusive 5-NN is not biased upward as under a plain bootstrap; and
at fraction one half the finite-population factor (1 - f) / f is 1, so the spread of a
mean-like score over half-samples matches its sampling spread at the full n. The same
subsamples are used for every model (a paired design), so S can be recombined over the zoo per
resample and models are compared on the same images. The cheap S_FU estimator draws the
cached S_FU batches with replacement (:func:`batch_draws`).

Summary per model: percentile intervals of S, S_LP, S_FU and every metric; P(rank 1) (ties at
the top share the credit); the rank interval; and P(S >= S of the top model), the top model
being the plain ranking's first: a model is *distinguishable from the top* when that
probability is below ``alpha = 1 - level``. Running the passes is the engine's
(:mod:`gradnca_onnx.engine.resample`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from ..scores import combine, fu_batch_slices
from .ranking import best_first_ranks

if TYPE_CHECKING:
    from ..results import ModelResult, ZooRanking

def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the image subsamples and the S_FU batch draws."""
    a, b = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def stratified_subsamples(labels: ArrayLike, n_resamples: int, *,
                          fraction: float, seed: int = 0
                          ) -> list[NDArray[np.int64]]:
    """Class-stratified subsamples without replacement, each sorted (the target's order).

    Each class c of n_c images keeps ``max(2, floor(fraction * n_c + 1/2))`` of them (all of
    them when n_c is smaller), so every class still forms a triplet.

    Parameters
    ----------
    labels : array-like of shape (n,), integer classes
    n_resamples : int
    fraction : float in (0, 1], the share of each class kept (``rank --fraction``, default
        one half); 1 gives the identity resample every time
    seed : int

    Returns
    -------
    list of int64 index arrays into the target
    """
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        raise InputError("cannot resample an empty target")
    if not 0.0 < float(fraction) <= 1.0:
        raise InputError(f"fraction must be in (0, 1]; got {fraction!r}")
    rng, _ = _rngs(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    take = [min(idx.size, max(2, int(np.floor(fraction * idx.size + 0.5)))) for idx in classes]
    if sum(take) < 6:
        raise InputError(f"a resample of {sum(take)} images is too small for S_FU (six "
                         "batches); raise --fraction")
    out = []
    for _ in range(int(n_resamples)):
        parts = [rng.choice(idx, k, replace=False) for idx, k in zip(classes, take)]
        out.append(np.sort(np.concatenate(parts)).astype(np.int64))
    return out


def grouped_subsamples(labels: ArrayLike, groups: Sequence[str], n_resamples: int, *,
                       fraction: float, seed: int = 0) -> list[NDArray[np.int64]]:
    """Subsamples that keep each group (patient) whole: :func:`stratified_subsamples` with
    groups in place of images.

    Each group joins the stratum of its most frequent class (ties: the lower code); a
    resample takes a stratum's groups in a seeded random order until it holds at least
    ``max(2, floor(fraction * n_c + 1/2))`` of the stratum's ``n_c`` images. A patient's
    correlated images are thus drawn together or not at all, so the spread of a resampled
    score is not understated.

    Returns
    -------
    list of int64 index arrays into the target, each sorted (the target's order)
    """
    y = np.asarray(labels).reshape(-1)
    if len(groups) != y.size:
        raise InputError(f"{len(groups)} groups for {y.size} images")
    if not 0.0 < float(fraction) <= 1.0:
        raise InputError(f"fraction must be in (0, 1]; got {fraction!r}")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    strata: dict[int, list[NDArray[np.int64]]] = {}
    for rows in members.values():
        idx = np.asarray(rows, dtype=np.int64)
        strata.setdefault(int(np.bincount(y[idx]).argmax()), []).append(idx)
    rng, _ = _rngs(seed)
    out = []
    for _ in range(int(n_resamples)):
        parts = []
        for c in sorted(strata):
            pool = strata[c]
            need = max(2, int(np.floor(fraction * sum(g.size for g in pool) + 0.5)))
            taken = 0
            for k in rng.permutation(len(pool)):
                if taken >= need:
                    break
                parts.append(pool[k])
                taken += pool[k].size
        out.append(np.sort(np.concatenate(parts)).astype(np.int64))
    if min(r.size for r in out) < 6:
        raise InputError("a resample is too small for S_FU (six batches); raise --fraction")
    return out


def batch_draws(n_samples: int, n_resamples: int, *, seed: int = 0) -> NDArray[np.int64]:
    """For the cheap S_FU estimator: per resample, the S_FU batches drawn with replacement.

    Returns an array (n_resamples, k) of batch indices, k = number of batches of the target.
    """
    k = len(fu_batch_slices(n_samples))
    _, rng = _rngs(seed)
    return rng.integers(0, k, size=(int(n_resamples), k)).astype(np.int64)


@dataclass
class MemberResamples:
    """One model's per-resample values (NaN where a value is undefined in that resample)."""

    lp: NDArray[np.float64]
    fu: NDArray[np.float64] | None
    metrics: dict[str, list[Any]] = field(default_factory=dict)


def percentile_interval(values: ArrayLike, level: float) -> dict[str, Any] | None:
    """``{"lo", "median", "hi", "n"}`` over the finite values, or None if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    a = (1.0 - level) / 2.0
    lo, med, hi = np.quantile(v, [a, 0.5, 1.0 - a])
    return {"lo": float(lo), "median": float(med), "hi": float(hi), "n": int(v.size)}


def zoo_resample_scores(lp: NDArray, fu: NDArray, scenario: str) -> NDArray[np.float64]:
    """S per resample (rows) and model (columns); rows with any undefined term are NaN."""
    out = np.full(lp.shape, np.nan)
    for r in range(lp.shape[0]):
        if np.isfinite(lp[r]).all() and np.isfinite(fu[r]).all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[r] = combine(lp[r], fu[r], scenario=scenario)
    return out


def rank_statistics(scores: NDArray[np.float64], top: int, level: float) -> list[dict[str, Any]]:
    """P(rank 1), the rank interval and the comparison with the top model, per model.

    ``rank_probabilities[k - 1]`` is the share of resamples in which the model has rank k
    (ties share the better rank, so a column of the heat map may sum to more than 1).

    ``scores`` is (n_resamples, n_models) of S; rows holding NaN are left out. ``top`` is the
    column of the plain ranking's first model.
    """
    ok = np.isfinite(scores).all(axis=1)
    s = scores[ok]
    alpha = 1.0 - level
    n_models = scores.shape[1]
    if s.shape[0] == 0:
        return [{"p_rank1": None, "rank_interval": None, "p_at_least_top": None,
                 "distinguishable_from_top": None, "is_top": j == top,
                 "rank_probabilities": None, "n": 0}
                for j in range(n_models)]
    ranks = best_first_ranks(s)
    best = s == s.max(axis=1, keepdims=True)
    credit = (best / best.sum(axis=1, keepdims=True)).mean(axis=0)
    a = alpha / 2.0
    out = []
    for j in range(n_models):
        p_top = float(np.mean(s[:, j] >= s[:, top]))
        out.append({
            "p_rank1": float(credit[j]),
            "rank_interval": [int(np.quantile(ranks[:, j], a, method="lower")),
                              int(np.quantile(ranks[:, j], 1.0 - a, method="higher"))],
            "p_at_least_top": p_top,
            "distinguishable_from_top": bool(j != top and p_top < alpha),
            "is_top": j == top,
            "rank_probabilities": [float(np.mean(ranks[:, j] == k))
                                   for k in range(1, n_models + 1)],
            "n": int(s.shape[0]),
        })
    return out


def metric_matrix(name: str, members: Sequence[MemberResamples], n: int,
                  faithful: bool) -> NDArray[np.float64]:
    """(n_resamples, n_members) of a metric after its zoo step, per resample."""
    from ..metrics import zoo_scores

    out = np.empty((n, len(members)))
    for r in range(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[r] = zoo_scores(name, [m.metrics[name][r] for m in members], faithful=faithful)
    return out


def attach_resampling(ranking: ZooRanking,
                      scored: Sequence[tuple[ModelResult, MemberResamples | None]], n: int,
                      level: float, faithful: bool) -> None:
    """Attach every model's resampling block to ``ranking``'s results.

    ``scored`` pairs each model's result (in ``ranking``) with its per-resample values
    (``None`` for a model that failed); ``n`` is the number of resamples.
    """
    have = [(r, s) for r, s in scored if s is not None]
    full = [(r, s) for r, s in have if r.features_only is None]
    stats: dict[str, dict] = {}
    if full:
        lp = np.column_stack([s.lp for _, s in full])
        fu = np.column_stack([s.fu for _, s in full])
        s_matrix = zoo_resample_scores(lp, fu, ranking.scenario)
        top_name = next(m.name for m in ranking.models if m.rank == 1)
        top = [r.name for r, _ in full].index(top_name)
        for (r, _), st, col in zip(full, rank_statistics(s_matrix, top, level), s_matrix.T):
            stats[r.name] = {**st, "score": percentile_interval(col, level)}
    metric_cols = {name: metric_matrix(name, [s for _, s in have], n, faithful)
                   for name in ranking.metrics}
    for j, (result, samples) in enumerate(have):
        st = stats.get(result.name, {})
        result.resampling = {
            "score": st.get("score"),
            "lp": percentile_interval(samples.lp, level),
            "fu": None if samples.fu is None else percentile_interval(samples.fu, level),
            "metrics": {name: percentile_interval(metric_cols[name][:, j], level)
                        for name in ranking.metrics},
            "p_rank1": st.get("p_rank1"), "rank_interval": st.get("rank_interval"),
            "p_at_least_top": st.get("p_at_least_top"),
            "distinguishable_from_top": st.get("distinguishable_from_top"),
            "is_top": bool(st.get("is_top", False)),
            "rank_probabilities": st.get("rank_probabilities"),
            "n_scored": st.get("n", 0),
        }
        if samples.fu is not None and not np.isfinite(samples.fu).all():
            bad = int((~np.isfinite(samples.fu)).sum())
            result.notes.append(f"S_FU undefined (no violating triplet) in {bad} of {n} "
                                "resamples; those resamples are left out of S and the ranks")
