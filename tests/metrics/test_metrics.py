"""Baseline metrics (gradnca_onnx.metrics) against the independent references of
test_metrics_reference.py, on random features and on features of real medical images; their
invariances, input checks, quirk options, determinism, and the registry the engine calls.

Tolerances, and why:
- exact formulas evaluated in another order (LEEP, NCE, GBC, NLEEP, TransRate): 1e-10 relative,
  float64 round-off of sums of O(1)-O(1e3) terms;
- LogME: 1e-8 relative: the spectrum comes from ``eigh(F^T F)`` here and ``svd(F^T F)`` in the
  reference; both agree to ~1e-13 relative, and the evidence sums N of them;
- SFDA: 1e-8 relative: ``Sw'^-1`` by a Cholesky solve here and by ``V V^T`` from a generalised
  eigensolver in the reference; the shrunk scatter can have condition numbers ~1e8, which
  multiplies round-off;
- NCTI terms: 1e-7 relative, same reason (eigen-solver LDA written out in the reference);
- PARC: 1e-9 absolute on its 100 x rho scale: rho is exact here; the only difference is
  round-off in the feature dissimilarities, which can only swap near-equal ranks;
- H-score: 1e-8 relative (eigendecomposition-based pseudo-inverse vs SVD-based pinv).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradnca_onnx.metrics as gm
from _support import ROOT, cnn_features, pixel_features, real_images
from gradnca_onnx.metrics import DegenerateScoreWarning
from gradnca_onnx.metrics.parc import stratified_subsample
from gradnca_onnx.scores import ConstantTermWarning
from _reference_metrics import (
    ref_gbc,
    ref_hscore,
    ref_leep,
    ref_logme,
    ref_nce,
    ref_ncti_terms,
    ref_ncti_zoo,
    ref_nleep,
    ref_parc,
    ref_sfda,
    ref_transrate,
)


def blobs(n: int, d: int, c: int, seed: int, sep: float = 1.5, scale: float = 1.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes with an anisotropic (decaying) spectrum, every class present."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    rng.shuffle(y)
    centres = rng.normal(size=(c, d)) * sep
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(d))
    X = (centres[y] + rng.normal(size=(n, d)) * spectrum) * scale
    return X, y


def head_logits(X: np.ndarray, n_source: int, seed: int) -> np.ndarray:
    """A random linear 'source classifier' on the features."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(X.shape[1], n_source)) / np.sqrt(X.shape[1])
    return X @ W * 3.0 + rng.normal(size=n_source)


@pytest.fixture(scope="module")
def pool_pixels() -> tuple[np.ndarray, np.ndarray]:
    images, y = real_images("pool11", 330, seed=5)
    return pixel_features(images, side=8), y


@pytest.fixture(scope="module")
def pool_cnn() -> tuple[np.ndarray, np.ndarray]:
    images, y = real_images("pool11", 330, seed=6)
    return cnn_features(images, seed=1), y


@pytest.fixture(scope="module")
def binary_pixels() -> tuple[np.ndarray, np.ndarray]:
    # The paper's binary-target setting: N = 200 samples, fewer than dimensions (here 16 x 16
    # pixels, normalised with mean 0.5 / std 0.5 as the paper does for non-ImageNet sources).
    images, y = real_images("binary", 200, seed=7)
    return (pixel_features(images, side=16) - 0.5) / 0.5, y


RANDOM_CASES = [  # (n, d, classes, seed): N > D and N < D, binary and multi-class
    (240, 20, 3, 0),
    (150, 60, 2, 1),
    (90, 200, 5, 2),
]


# ------------------------------------------------------------------ against the references
@pytest.mark.parametrize("n,d,c,seed", RANDOM_CASES)
def test_feature_metrics_match_references_random(n: int, d: int, c: int, seed: int) -> None:
    X, y = blobs(n, d, c, seed)
    assert gm.logme(X, y) == pytest.approx(ref_logme(X, y), rel=1e-8, abs=1e-10)
    assert gm.parc(X, y) == pytest.approx(ref_parc(X, y), abs=1e-9)
    assert gm.sfda(X, y, saturated="as_released") == pytest.approx(ref_sfda(X, y), rel=1e-8)
    assert gm.gbc(X, y) == pytest.approx(ref_gbc(X, y), rel=1e-10, abs=1e-12)
    assert gm.gbc(X, y, gaussian_type="spherical") == pytest.approx(
        ref_gbc(X, y, "spherical"), rel=1e-10, abs=1e-12)
    assert gm.hscore(X, y) == pytest.approx(ref_hscore(X, y), rel=1e-8, abs=1e-12)
    assert gm.hscore(X, y, shrinkage=0.3) == pytest.approx(ref_hscore(X, y, 0.3), rel=1e-8)
    assert gm.transrate(X, y) == pytest.approx(ref_transrate(X, y), rel=1e-9)
    np.testing.assert_allclose(gm.ncti_terms(X, y), ref_ncti_terms(X, y), rtol=1e-7)


@pytest.mark.parametrize("n,d,c,seed,log", [(*RANDOM_CASES[0], True), (*RANDOM_CASES[1], False)])
def test_nleep_matches_reference_random(n: int, d: int, c: int, seed: int, log: bool) -> None:
    X, y = blobs(n, d, c, seed)
    assert gm.nleep(X, y, log=log, random_state=3) == pytest.approx(
        ref_nleep(X, y, log=log, seed=3), rel=1e-10)


@pytest.mark.parametrize("n_source", [2, 7, 1000])
def test_logit_metrics_match_references_random(n_source: int) -> None:
    X, y = blobs(200, 16, 4, seed=n_source)
    logits = head_logits(X, n_source, seed=n_source)
    assert gm.leep(logits, y) == pytest.approx(ref_leep(logits, y), rel=1e-10)
    assert gm.nce(logits, y) == pytest.approx(ref_nce(logits, y), rel=1e-10, abs=1e-14)


def test_logme_rank_deficient_features_match_reference() -> None:
    # Dead ReLU units (zero columns) and collinear columns: the rank cut on the spectrum must
    # keep the same directions as the released SVD of F^T F, since every kept direction adds
    # -1/2 log(alpha + beta s^2) to the evidence.
    X, y = blobs(300, 40, 4, seed=26)
    X[:, :5] = 0.0
    X[:, 5:10] = X[:, 10:15] * 2.0
    assert gm.logme(X, y) == pytest.approx(ref_logme(X, y), rel=1e-8)
    X2, y2 = blobs(50, 120, 3, seed=27)  # N <= D with duplicated samples
    X2[25:] = X2[:25]
    y2[25:] = y2[:25]
    assert gm.logme(X2, y2) == pytest.approx(ref_logme(X2, y2), rel=1e-8)


def test_ncti_eigen_solver_path_matches_reference() -> None:
    # Small-scale features keep exp(-sum of 32 variances) above 1e-10: the shrinkage-LDA path.
    X, y = blobs(200, 40, 4, seed=8, scale=0.2)
    assert np.exp(-np.var(X, axis=0).sum()) > 1e-10
    np.testing.assert_allclose(gm.ncti_terms(X, y), ref_ncti_terms(X, y), rtol=1e-7)


def test_metrics_match_references_real_pixels(pool_pixels) -> None:
    X, y = pool_pixels
    logits = head_logits(X, 20, seed=0)
    assert gm.logme(X, y) == pytest.approx(ref_logme(X, y), rel=1e-8)
    assert gm.leep(logits, y) == pytest.approx(ref_leep(logits, y), rel=1e-10)
    assert gm.nce(logits, y) == pytest.approx(ref_nce(logits, y), rel=1e-10)
    assert gm.parc(X, y) == pytest.approx(ref_parc(X, y), abs=1e-9)
    assert gm.sfda(X, y) == pytest.approx(ref_sfda(X, y), rel=1e-8)
    assert gm.gbc(X, y) == pytest.approx(ref_gbc(X, y), rel=1e-10)
    assert gm.hscore(X, y) == pytest.approx(ref_hscore(X, y), rel=1e-8)
    assert gm.transrate(X, y) == pytest.approx(ref_transrate(X, y), rel=1e-9)
    np.testing.assert_allclose(gm.ncti_terms(X, y), ref_ncti_terms(X, y), rtol=1e-7)
    assert gm.nleep(X, y, log=False) == pytest.approx(ref_nleep(X, y, log=False, seed=42),
                                                      rel=1e-10)


def test_metrics_match_references_real_cnn(pool_cnn) -> None:
    X, y = pool_cnn  # N = 330 < D = 512, ReLU features of a random-init resnet18
    logits = head_logits(X, 50, seed=1)
    assert gm.logme(X, y) == pytest.approx(ref_logme(X, y), rel=1e-8)
    assert gm.leep(logits, y) == pytest.approx(ref_leep(logits, y), rel=1e-10)
    assert gm.parc(X, y) == pytest.approx(ref_parc(X, y), abs=1e-9)
    assert gm.sfda(X, y, saturated="as_released") == pytest.approx(ref_sfda(X, y), rel=1e-8)
    assert gm.gbc(X, y) == pytest.approx(ref_gbc(X, y), rel=1e-10)
    assert gm.hscore(X, y) == pytest.approx(ref_hscore(X, y), rel=1e-8)
    assert gm.transrate(X, y) == pytest.approx(ref_transrate(X, y), rel=1e-9)
    np.testing.assert_allclose(gm.ncti_terms(X, y), ref_ncti_terms(X, y), rtol=1e-7)


def test_parc_exact_spearman_with_ties() -> None:
    # Duplicated samples make exact ties in the feature RDM (0 between copies, and equal values
    # between copies of two samples); the rank-sum merge must treat them as average ranks.
    # Between copies the dissimilarity is 0 only up to round-off (it is 1 - x.x for a unit x),
    # and which side of 0 a pair's round-off falls differs between np.corrcoef and the
    # package's dot products, so those ~1e-16 values rank differently: 1e-5 absolute.
    rng = np.random.default_rng(9)
    base = rng.normal(size=(60, 40))
    X = np.repeat(base, 3, axis=0)
    y = np.repeat(rng.integers(0, 3, 60), 3)
    assert gm.parc(X, y) == pytest.approx(ref_parc(X, y), abs=1e-5)


def test_parc_snapped_label_rdm_equals_literal_corrcoef_for_binary() -> None:
    # For two classes np.corrcoef's label RDM is exactly two-valued, so the literal released
    # computation (no snapping) is reproduced number for number.
    X, y = blobs(300, 50, 2, seed=10)
    assert gm.parc(X, y) == pytest.approx(ref_parc(X, y, snap_label_rdm=False), abs=1e-9)


# ------------------------------------------------------------------------------ quirks
def test_nleep_log_and_seed_quirks() -> None:
    X, y = blobs(240, 20, 3, seed=22)
    without_log = gm.nleep(X, y, log=False)
    with_log = gm.nleep(X, y, log=True)
    assert 0.0 <= without_log <= 1.0
    assert with_log <= np.log(without_log) + 1e-12  # Jensen: mean log <= log mean
    assert gm.nleep(X, y, log=False) == without_log  # seeded by default: deterministic
    unseeded = gm.nleep(X, y, log=False, random_state=None)  # as released
    assert 0.0 <= unseeded <= 1.0


def test_parc_subsample_applied_and_ignored() -> None:
    X, y = blobs(400, 30, 3, seed=11)
    limit = 250
    keep = stratified_subsample(y, limit, 0)
    counts = np.bincount(y)
    assert np.array_equal(np.bincount(y[keep]), (limit / 400 * counts).astype(int))
    assert gm.parc(X, y, max_samples=limit, subsample="ignored") == pytest.approx(
        ref_parc(X, y), abs=1e-9)
    applied = gm.parc(X, y, max_samples=limit, subsample="applied", random_state=0)
    assert applied == pytest.approx(ref_parc(X[keep], y[keep]), abs=1e-9)
    assert applied == gm.parc(X, y, max_samples=limit, random_state=0)  # seeded: same draw
    # below the limit both modes score every sample
    assert gm.parc(X, y, subsample="applied") == gm.parc(X, y, subsample="ignored")
    with pytest.raises(ValueError, match="leaves no sample"):
        gm.parc(X, y, max_samples=2)


def test_sfda_saturates_on_binary_target_with_fewer_samples_than_dims(binary_pixels) -> None:
    X, y = binary_pixels
    assert X.shape[0] < X.shape[1] and len(np.unique(y)) == 2
    assert ref_sfda(X, y) == 1.0
    assert gm.sfda(X, y, saturated="as_released") == 1.0
    with pytest.warns(DegenerateScoreWarning, match="true-class probability is 1.0"):
        assert np.isnan(gm.sfda(X, y))


def test_ncti_zoo_sign_and_exclusion_match_reference() -> None:
    rng = np.random.default_rng(12)
    terms = rng.normal(size=(6, 3)) + [10.0, 0.5, 3.0]
    for sign in ("+", "-"):
        np.testing.assert_allclose(gm.ncti_zoo(terms, vc_sign=sign), ref_ncti_zoo(terms, sign),
                                   atol=1e-12)
        got = gm.ncti_zoo(terms, vc_sign=sign, exclude=[2])
        np.testing.assert_allclose(got, ref_ncti_zoo(terms, sign, exclude=[2]), atol=1e-12)
        assert np.isnan(got[2])
    mask = np.zeros(6, dtype=bool)
    mask[4] = True
    np.testing.assert_allclose(gm.ncti_zoo(terms, exclude=mask), ref_ncti_zoo(terms, "-", [4]),
                               atol=1e-12)
    released = gm.ncti_zoo(terms, vc_sign="+")
    assert released.min() >= 0.0 and released.max() <= 3.0


def test_ncti_zoo_constant_term_does_not_give_nan() -> None:
    terms = np.array([[1.0, 0.5, 2.0], [2.0, 0.5, 1.0]])
    with pytest.warns(ConstantTermWarning):
        out = gm.ncti_zoo(terms)
    np.testing.assert_allclose(out, [0.0 + 1.0 - 1.0, 1.0 + 1.0 - 0.0])


# ------------------------------------------------------------------------ invariances
FEATURE_METRICS = {
    "logme": gm.logme,
    "parc": gm.parc,
    "sfda": lambda X, y: gm.sfda(X, y, saturated="as_released"),
    "gbc": gm.gbc,
    "hscore": gm.hscore,
    "transrate": gm.transrate,
    "ncti": lambda X, y: np.array(gm.ncti_terms(X, y)),
}


@pytest.mark.parametrize("name", sorted(FEATURE_METRICS))
def test_permuting_samples_leaves_score_unchanged(name: str, pool_pixels) -> None:
    # NLEEP is left out: the k-means++ initialisation of its mixture picks samples by position.
    X, y = pool_pixels
    perm = np.random.default_rng(13).permutation(len(y))
    f = FEATURE_METRICS[name]
    np.testing.assert_allclose(f(X[perm], y[perm]), f(X, y), rtol=1e-7, atol=1e-9)


def test_permuting_samples_leaves_logit_metrics_unchanged(pool_pixels) -> None:
    X, y = pool_pixels
    logits = head_logits(X, 20, seed=2)
    perm = np.random.default_rng(14).permutation(len(y))
    assert gm.leep(logits[perm], y[perm]) == pytest.approx(gm.leep(logits, y), rel=1e-12)
    assert gm.nce(logits[perm], y[perm]) == pytest.approx(gm.nce(logits, y), rel=1e-12)


def test_relabelling_classes_leaves_scores_unchanged(pool_pixels) -> None:
    X, y = pool_pixels
    relabel = np.random.default_rng(15).permutation(11) * 3 + 100  # other values, other order
    y2 = relabel[y]
    logits = head_logits(X, 20, seed=3)
    for name, f in FEATURE_METRICS.items():
        np.testing.assert_allclose(f(X, y2), f(X, y), rtol=1e-7, atol=1e-9, err_msg=name)
    # the mixture never sees the labels: NLEEP is unchanged to round-off
    Xb, yb = blobs(240, 20, 3, seed=23)
    assert gm.nleep(Xb, relabel[yb]) == pytest.approx(gm.nleep(Xb, yb), rel=1e-12)
    assert gm.leep(logits, y2) == pytest.approx(gm.leep(logits, y), rel=1e-12)
    assert gm.nce(logits, y2) == pytest.approx(gm.nce(logits, y), rel=1e-12)


def test_ranges_and_signs(pool_cnn) -> None:
    X, y = pool_cnn
    logits = head_logits(X, 30, seed=4)
    assert gm.leep(logits, y) <= 0.0
    assert gm.nce(logits, y) <= 0.0
    assert gm.nce(logits, y) >= -np.log(11) - 1e-12
    assert 0.0 <= gm.nleep(X, y, log=False) <= 1.0
    assert gm.nleep(X, y) <= 0.0
    assert 0.0 <= gm.sfda(X, y, saturated="as_released") <= 1.0
    assert 0.0 <= gm.ncti_terms(X, y).ncc <= 1.0
    assert -11 * 10 <= gm.gbc(X, y) <= 0.0
    assert gm.hscore(X, y) >= 0.0
    assert -100.0 <= gm.parc(X, y) <= 100.0
    proba = gm.sfda_probabilities(X, y)
    assert np.all((proba >= 0) & (proba <= 1))


def test_scores_follow_class_separation() -> None:
    # Every metric must rank better-separated features higher (same labels, same noise).
    rng = np.random.default_rng(16)
    y = np.repeat(np.arange(4), 60)
    noise = rng.normal(size=(240, 24))
    centres = rng.normal(size=(4, 24))
    weak, strong = noise + 0.3 * centres[y], noise + 3.0 * centres[y]
    for name in ("logme", "parc", "sfda", "gbc", "hscore", "transrate"):
        f = FEATURE_METRICS[name]
        assert f(strong, y) > f(weak, y), name
    assert gm.leep(head_logits(strong, 8, 0), y) != gm.leep(head_logits(weak, 8, 0), y)


# --------------------------------------------------------------------------- input checks
ALL_FEATURE_FUNCS = [gm.logme, gm.nleep, gm.parc, gm.sfda, gm.gbc, gm.hscore, gm.transrate,
                     gm.ncti_terms]


@pytest.mark.parametrize("func", ALL_FEATURE_FUNCS, ids=lambda f: f.__name__)
def test_feature_metric_input_errors(func) -> None:
    X, y = blobs(60, 5, 2, seed=17)
    with pytest.raises(ValueError, match="distinct class"):
        func(X, np.zeros(60, dtype=int))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        func(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        func(bad, y)
    with pytest.raises(ValueError, match="59 entries but there are 60 samples"):
        func(X, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        func(X[:, 0], y)


@pytest.mark.parametrize("func", [gm.leep, gm.nce], ids=lambda f: f.__name__)
def test_logit_metric_input_errors(func) -> None:
    X, y = blobs(60, 5, 2, seed=18)
    logits = head_logits(X, 6, seed=0)
    with pytest.raises(ValueError, match="width 1"):
        func(logits[:, :1], y)
    with pytest.raises(ValueError, match="entries but there are"):
        func(logits[:-2], y)
    with pytest.raises(ValueError, match="distinct class"):
        func(logits, np.ones(60))
    bad = logits.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        func(bad, y)


def test_option_errors() -> None:
    X, y = blobs(60, 5, 3, seed=19)
    with pytest.raises(ValueError, match="at least that many samples"):
        gm.nleep(X[:12], y[:12])  # 15 components for 3 classes
    with pytest.raises(ValueError, match="subsample"):
        gm.parc(X, y, subsample="sometimes")
    with pytest.raises(ValueError, match="saturated"):
        gm.sfda(X, y, saturated="ignore")
    with pytest.raises(ValueError, match="vc_sign"):
        gm.ncti_zoo(np.ones((3, 3)), vc_sign="plus")
    with pytest.raises(ValueError, match="gaussian_type"):
        gm.gbc(X, y, gaussian_type="full")
    with pytest.raises(ValueError, match="shrinkage"):
        gm.hscore(X, y, shrinkage=1.5)
    with pytest.raises(ValueError, match="eps"):
        gm.transrate(X, y, eps=0.0)


# ---------------------------------------------------------------- registry and skip logic
def test_registry_declares_every_metric() -> None:
    assert list(gm.METRICS) == ["logme", "leep", "nleep", "parc", "sfda", "ncti", "gbc",
                                "hscore", "nce", "transrate", "params", "source_images"]
    assert {n for n, m in gm.METRICS.items() if m.needs_logits} == {"leep", "nce"}
    assert all(m.higher_is_better for m in gm.METRICS.values())
    assert [n for n, m in gm.METRICS.items() if m.zoo_step is not None] == ["ncti"]


def test_compute_metrics_skips_logit_metrics_for_headless_model(pool_pixels) -> None:
    X, y = pool_pixels
    out = gm.compute_metrics("all", X, y)
    assert list(out) == list(gm.METRICS)
    for name in ("leep", "nce"):
        assert out[name].skipped and np.isnan(out[name].value)
        assert out[name].note.startswith(gm.NO_LOGITS_NOTE)
    for name in ("logme", "nleep", "parc", "sfda", "gbc", "hscore", "transrate"):
        assert out[name].status == "ok" and np.isfinite(out[name].value), name
    assert out["logme"].value == gm.logme(X, y)
    assert set(out["ncti"].terms) == {"seli", "ncc", "vc"} and np.isnan(out["ncti"].value)


def test_compute_metrics_with_logits_and_options() -> None:
    X, y = blobs(240, 20, 3, seed=24)
    logits = head_logits(X, 20, seed=5)
    out = gm.compute_metrics("leep, nce ,nleep", X, y, logits,
                             options={"nleep": {"log": False}})
    assert list(out) == ["leep", "nce", "nleep"]
    assert out["leep"].value == gm.leep(logits, y)
    assert out["nce"].value == gm.nce(logits, y)
    assert out["nleep"].value == gm.nleep(X, y, log=False)
    with pytest.raises(ValueError, match="rows but there are"):
        gm.compute_metrics(["leep"], X, y, logits[:5])


def test_compute_metrics_faithful_mode(binary_pixels) -> None:
    opts = gm.faithful_options()
    assert opts == {"nleep": {"log": False, "random_state": None},
                    "parc": {"subsample": "ignored"}, "sfda": {"saturated": "as_released"},
                    "ncti": {"vc_sign": "+"}}
    X, y = binary_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoreWarning)
        assert gm.compute_metrics(["sfda"], X, y, faithful=True)["sfda"].value == 1.0
    with pytest.warns(DegenerateScoreWarning):
        corrected = gm.compute_metrics(["sfda"], X, y)
    assert np.isnan(corrected["sfda"].value) and "true-class probability" in corrected["sfda"].note
    Xb, yb = blobs(240, 20, 3, seed=25)
    out = gm.compute_metrics("nleep", Xb, yb, faithful=True, options={"nleep": {"random_state": 0}})
    assert out["nleep"].value == gm.nleep(Xb, yb, log=False, random_state=0)


def test_compute_metrics_rejects_unknown_names_and_options(pool_pixels) -> None:
    X, y = pool_pixels
    with pytest.raises(ValueError, match="unknown metric 'gradnca'"):
        gm.compute_metrics("gradnca,logme", X, y)
    with pytest.raises(ValueError, match="logme has no option 'log'"):
        gm.compute_metrics("logme", X, y, options={"logme": {"log": True}})
    with pytest.raises(ValueError, match="unknown metric"):
        gm.compute_metrics("logme", X, y, options={"foo": {}})


def test_compute_metrics_records_errors_when_asked() -> None:
    X, y = blobs(12, 5, 3, seed=20)
    with pytest.raises(ValueError, match="at least that many samples"):
        gm.compute_metrics("nleep", X, y)
    out = gm.compute_metrics("nleep,logme", X, y, errors="record")
    assert out["nleep"].status == "error" and "at least that many samples" in out["nleep"].note
    assert out["logme"].status == "ok"


def test_zoo_scores_ncti_and_passthrough(pool_pixels) -> None:
    X, y = pool_pixels
    rng = np.random.default_rng(21)
    zoo = [X, X @ rng.normal(size=(64, 64)), X + rng.normal(size=X.shape), np.sqrt(X)]
    per_model = [gm.compute_metrics("ncti,logme,leep", F, y) for F in zoo]
    ncti_results = [r["ncti"] for r in per_model]
    terms = np.array([gm.ncti_terms(F, y) for F in zoo])
    np.testing.assert_allclose(gm.zoo_scores("ncti", ncti_results), ref_ncti_zoo(terms, "-"),
                               atol=1e-12)
    np.testing.assert_allclose(gm.zoo_scores("ncti", ncti_results, faithful=True),
                               ref_ncti_zoo(terms, "+"), atol=1e-12)
    np.testing.assert_allclose(
        gm.zoo_scores("ncti", ncti_results, exclude=[1], options={"vc_sign": "+"}),
        ref_ncti_zoo(terms, "+", exclude=[1]), atol=1e-12)
    logme_scores = gm.zoo_scores("logme", [r["logme"] for r in per_model])
    np.testing.assert_array_equal(logme_scores, [gm.logme(F, y) for F in zoo])
    assert np.all(np.isnan(gm.zoo_scores("leep", [r["leep"] for r in per_model])))
    with pytest.raises(ValueError, match="got a result of 'logme'"):
        gm.zoo_scores("ncti", [r["logme"] for r in per_model])


def test_metrics_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np, gradnca_onnx.metrics as gm; "
            "X = np.random.default_rng(0).normal(size=(60, 8)); y = np.arange(60) % 3; "
            "gm.compute_metrics('all', X, y, X[:, :4]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_readme_quirk_table_lists_every_quirk() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Baseline metrics" in text
    section = text.split("## Baseline metrics", 1)[1]
    for q in gm.QUIRKS:
        row = next((line for line in section.splitlines()
                    if line.startswith("|") and f"`{q['option']}" in line
                    and q["metric"] in line.lower()), None)
        assert row is not None, q
        assert repr(q["default"]) in row or str(q["default"]) in row, (q, row)
