"""Checks of the independent metric references (``_reference_metrics.py``) on cases with a
known answer, so that a wrong reference cannot make a wrong package implementation pass."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from _reference_metrics import (_logme_evidence, _logme_stats, _ref_coding_rate, ref_gbc,
                                ref_hscore, ref_leep, ref_logme, ref_nce, ref_ncti_zoo)


# --------------------------------------------------------------- checks of the references
# These pin the references to closed-form answers, so a wrong reference cannot make a wrong
# package implementation pass. Tolerances are round-off of float64 sums of O(1) terms.

def test_ref_leep_uniform_source_gives_log_prior() -> None:
    # Uniform source predictions carry no information: p(y|z) is the class prior, E[i, y] too.
    y = np.array([0, 0, 0, 1, 2, 2])
    prior = np.bincount(y) / len(y)
    assert ref_leep(np.zeros((6, 4)), y) == pytest.approx(np.mean(np.log(prior[y])), abs=1e-12)


def test_ref_leep_perfect_source_is_zero() -> None:
    # One source class per target class, with saturated logits: E[i, y_i] = 1, log = 0.
    y = np.array([0, 1, 1, 2, 0])
    logits = 200.0 * np.eye(3)[y]
    assert ref_leep(logits, y) == pytest.approx(0.0, abs=1e-12)


def test_ref_nce_closed_forms() -> None:
    y = np.array([0, 0, 1, 1, 1, 2])
    assert ref_nce(10.0 * np.eye(3)[y], y) == pytest.approx(0.0, abs=1e-15)
    prior = np.bincount(y) / len(y)
    # a constant prediction leaves all the label entropy: -H(Y)
    assert ref_nce(np.tile([1.0, 0.0], (6, 1)), y) == pytest.approx(np.sum(prior * np.log(prior)),
                                                                    abs=1e-12)


def test_ref_logme_evidence_is_the_gaussian_marginal_likelihood() -> None:
    # LogME's closed-form evidence at (alpha, beta) must equal log N(y; 0, I/beta + F F^T/alpha),
    # the marginal likelihood it stands for (rel 1e-9: both are O(N) sums of O(1) logs in
    # float64). The reference's returned value lags by one update of m (as released): within
    # the 1e-3 stopping tolerance on t, that moves it by far less than 1e-5 relative.
    rng = np.random.default_rng(0)
    F = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, 60)
    _, evidences, params = ref_logme(F, y, return_params=True)
    for cls, (ev, (alpha, beta, sigma, x2, res_x2)) in enumerate(zip(evidences, params)):
        t = (y == cls).astype(float)
        cov = np.eye(60) / beta + F @ F.T / alpha
        direct = scipy.stats.multivariate_normal(np.zeros(60), cov).logpdf(t) / 60
        _, m2, res2 = _logme_stats(alpha / beta, sigma, x2, res_x2)
        at_fixed_t = _logme_evidence(alpha, beta, m2, res2, sigma, 60, 5) / 60
        assert at_fixed_t == pytest.approx(direct, rel=1e-9)
        assert ev == pytest.approx(direct, rel=1e-5)


def test_ref_transrate_coding_rate_closed_form() -> None:
    # Z = c Q with orthonormal columns: R = d/2 log(1 + c^2 / (n eps)).
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(40, 6)))
    assert _ref_coding_rate(3.0 * q, 1e-2) == pytest.approx(3.0 * np.log(1 + 9.0 / 0.4), rel=1e-12)


def test_ref_gbc_identical_and_separated_classes() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(50, 3))
    X = np.vstack([base, base])           # two classes with identical statistics: BC = 1
    y = np.repeat([0, 1], 50)
    assert ref_gbc(X, y) == pytest.approx(-2.0, abs=1e-12)
    X2 = np.vstack([base, base + 1e3])    # far apart: BC ~ 0
    assert ref_gbc(X2, y) == pytest.approx(0.0, abs=1e-12)


def test_ref_hscore_unregularised_is_affine_invariant() -> None:
    # tr(cov(f)^-1 cov(g)) is invariant under f -> A f + b, A invertible (Bao et al. 2019).
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4))
    y = rng.integers(0, 3, 200)
    X[:, 0] += y
    A = rng.normal(size=(4, 4)) + 3 * np.eye(4)
    assert ref_hscore(X @ A.T + 5.0, y, 0.0) == pytest.approx(ref_hscore(X, y, 0.0), rel=1e-9)


def test_ref_parc_label_rdm_snap_only_removes_round_off() -> None:
    # The label RDM 1 - corrcoef(one-hot) is 0 (same class) or C/(C-1); np.corrcoef leaves
    # round-off of a few 1e-16 on some class pairs. Rounding to 12 decimals must remove exactly
    # that and nothing else.
    rng = np.random.default_rng(4)
    for c in (2, 3, 5, 7, 11):
        y = rng.integers(0, c, 120)
        _, y = np.unique(y, return_inverse=True)
        c_eff = int(y.max()) + 1
        raw = 1 - np.corrcoef(np.eye(c_eff)[y])
        snapped = np.round(raw, 12)
        exact = np.where(y[:, None] == y[None, :], 0.0, c_eff / (c_eff - 1))
        assert np.max(np.abs(raw - exact)) < 1e-14
        assert np.max(np.abs(snapped - exact)) < 1e-12
        iu = np.triu_indices(120, 1)
        assert len(np.unique(snapped[iu])) == 2


def test_ref_ncti_zoo_hand_example() -> None:
    terms = np.array([[1.0, 0.5, 2.0], [3.0, 0.7, 1.0], [2.0, 0.6, 4.0]])
    # mm columns: seli [0, 1, .5]; ncc [0, 1, .5]; vc [1/3, 0, 1]
    np.testing.assert_allclose(ref_ncti_zoo(terms, "+"), [1 / 3, 2.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(ref_ncti_zoo(terms, "-"), [-1 / 3, 2.0, 0.0], atol=1e-12)
