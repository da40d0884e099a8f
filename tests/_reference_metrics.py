"""Independent reference implementations of the baseline metrics (plain functions, no tests).

Each ``ref_*`` is written straight from REFERENCE section 6 (or the cited formula), as plainly as
possible: loops, textbook formulas, the library calls REFERENCE names (scikit-learn PCA / GMM /
LDA, ``np.corrcoef``, ``scipy.stats.spearmanr``, ``scipy.linalg.eigh``) and none of the
package's shortcuts. They are slow and only used on small inputs (and by
``benchmarks/bench_metrics.py`` as the "reference" timings). ``metrics/test_metrics_reference.py``
checks the references themselves on cases with a known answer; ``metrics/test_metrics.py`` checks
the package against them.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats
from scipy import linalg
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler


# --------------------------------------------------------------------------- references
def _softmax(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    for i in range(z.shape[0]):
        e = np.exp(z[i] - z[i].max())
        out[i] = e / e.sum()
    return out


def _leep_from_proba(prob: np.ndarray, y: np.ndarray, log: bool) -> float:
    n, cz = prob.shape
    c = int(y.max()) + 1
    joint = np.zeros((c, cz))
    for i in range(n):
        for z in range(cz):
            joint[y[i], z] += prob[i, z] / n
    cond = np.zeros((c, cz))
    for z in range(cz):
        col = joint[:, z].sum()
        if col > 0:
            cond[:, z] = joint[:, z] / col
    total = 0.0
    for i in range(n):
        e = sum(prob[i, z] * cond[y[i], z] for z in range(cz))
        total += math.log(e) if log else e
    return total / n


def ref_leep(logits: np.ndarray, y: np.ndarray) -> float:
    """REFERENCE 6, LEEP: softmax; joint; p(y|z); mean log E[i, y_i]."""
    return _leep_from_proba(_softmax(np.asarray(logits, dtype=np.float64)), y, log=True)


def ref_nleep(X: np.ndarray, y: np.ndarray, *, log: bool, seed: int | None) -> float:
    """REFERENCE 6, NLEEP: PCA(0.8, rs=42), GMM(5C) (seeded here), LEEP over components."""
    reduced = PCA(n_components=0.8, random_state=42).fit_transform(X)
    c = int(y.max()) + 1
    gmm = GaussianMixture(n_components=5 * c, random_state=seed).fit(reduced)
    return _leep_from_proba(gmm.predict_proba(reduced), y, log=log)


def _logme_stats(t: float, sigma: np.ndarray, x2: np.ndarray, res_x2: float):
    """gamma, ||m||^2 and ||y - F m||^2 of the posterior mean at t = alpha / beta."""
    gamma = (sigma / (sigma + t)).sum()
    m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
    res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
    return gamma, m2, res2


def _logme_evidence(alpha, beta, m2, res2, sigma, n, d) -> float:
    return float(d / 2 * np.log(alpha) + n / 2 * np.log(beta)
                 - 0.5 * np.sum(np.log(alpha + beta * sigma))
                 - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))


def _logme_spectrum(F: np.ndarray):
    n, d = F.shape
    if n > d:
        _, s2, vh = np.linalg.svd(F.T @ F)
        s = np.sqrt(s2)
        k = int(np.sum(s > 1e-10))
        s, vh = s[:k], vh[:k]
        u = (F @ vh.T) / s
    else:
        u, s, vh = np.linalg.svd(F, full_matrices=False)
    return u, s ** 2


def ref_logme(F: np.ndarray, y: np.ndarray, *, return_params: bool = False):
    """REFERENCE 6, LogME: the fixed-point algorithm, SVD through F^T F when N > D.

    As in the released code, the evidence is evaluated with the new (alpha, beta) but the
    ||m||^2 and residual of the previous t (a lag that vanishes at the fixed point).
    """
    F = np.asarray(F, dtype=np.float64)
    n, d = F.shape
    u, sigma = _logme_spectrum(F)
    evidences, params = [], []
    for cls in range(int(y.max()) + 1):
        t_y = (y == cls).astype(np.float64)
        x = u.T @ t_y
        x2 = x ** 2
        res_x2 = (t_y ** 2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma, m2, res2 = _logme_stats(t, sigma, x2, res_x2)
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            t_new = alpha / beta
            if abs(t_new - t) / t <= 1e-3:
                break
        evidences.append(_logme_evidence(alpha, beta, m2, res2, sigma, n, d) / n)
        params.append((alpha, beta, sigma, x2, res_x2))
    if return_params:
        return float(np.mean(evidences)), evidences, params
    return float(np.mean(evidences))


def ref_parc(X: np.ndarray, y: np.ndarray, *, snap_label_rdm: bool = True) -> float:
    """REFERENCE 6, PARC: PCA(32 randomized, rs=1919, iterated_power=1) capped at N; standardise;
    RDMs as 1 - np.corrcoef; 100 x spearmanr of the upper triangles.

    ``snap_label_rdm`` rounds the label RDM to 12 decimals: it is mathematically two-valued
    (0 / C/(C-1)) and np.corrcoef's round-off (2.2e-16 for some class pairs) would otherwise be
    ranked by spearmanr as distinct values.
    """
    k = min(32, X.shape[0], X.shape[1])
    f = PCA(n_components=k, svd_solver="randomized", random_state=1919,
            iterated_power=1).fit_transform(X)
    f = StandardScaler().fit_transform(f)
    onehot = np.eye(int(y.max()) + 1)[y]
    rdm1 = 1 - np.corrcoef(f)
    rdm2 = 1 - np.corrcoef(onehot)
    if snap_label_rdm:
        rdm2 = np.round(rdm2, 12)
    iu = np.triu_indices(X.shape[0], 1)
    return float(scipy.stats.spearmanr(rdm1[iu], rdm2[iu])[0] * 100)


def _cov(X: np.ndarray, shrinkage: float = -1.0) -> np.ndarray:
    emp = np.cov(np.asarray(X).T, bias=True)
    emp = np.atleast_2d(emp)
    if shrinkage < 0:
        return emp
    d = emp.shape[0]
    out = (1.0 - shrinkage) * emp
    out[np.diag_indices(d)] += shrinkage * np.trace(emp) / d
    return out


def _power_largest(A: np.ndarray) -> float:
    x = A.sum(axis=1)
    for _ in range(3):
        t = A @ x
        yv = t / np.linalg.norm(t)
        t = A @ yv
        x = t / np.linalg.norm(t)
    return float(x @ A @ yv)


def _ref_fda_proba(X: np.ndarray, y: np.ndarray, shrinkage: float | None):
    c = int(y.max()) + 1
    n, d = X.shape
    priors = np.array([np.sum(y == k) for k in range(c)]) / n
    means = np.array([X[y == k].mean(axis=0) for k in range(c)])
    Sw = np.zeros((d, d))
    for k in range(c):
        Sw += priors[k] * _cov(X[y == k])
    if shrinkage is None:
        shrinkage = max(np.exp(-5 * _power_largest(Sw)), 1e-10)
    St = _cov(X, shrinkage)
    Sw_s = (1 - shrinkage) * Sw
    Sw_s[np.diag_indices(d)] += shrinkage * np.trace(Sw) / d
    Sb = St - Sw_s
    evals, evecs = linalg.eigh(Sb, Sw_s)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return _softmax(X @ coef.T + intercept), shrinkage


def ref_sfda(X: np.ndarray, y: np.ndarray) -> float:
    """REFERENCE 6, SFDA: Reg-FDA, softened softmax, ConfMix, second FDA with the same lambda."""
    X = np.array(X, dtype=np.float64)
    n = X.shape[0]
    c = int(y.max()) + 1
    prob, shrinkage = _ref_fda_proba(X, y, None)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = np.array([X[y == k].mean(axis=0) for k in range(c)])
    others = np.array([(means.sum(axis=0) - means[k]) / (c - 1) for k in range(c)])
    for k in range(c):
        idx = np.flatnonzero(y == k)
        p = prob[idx, k][:, None]
        X[idx] = p * X[idx] + (1 - p) * others[k]
    prob2, _ = _ref_fda_proba(X, y, shrinkage)
    return float(np.mean([prob2[i, y[i]] for i in range(n)]))


def _ref_lda_eigen(X: np.ndarray, y: np.ndarray, shrinkage: float):
    """LinearDiscriminantAnalysis(solver='eigen', shrinkage) written out (Duda et al. 3.8.3):
    per-class shrunk covariances weighted by priors; St shrunk; eigh(St - Sw, Sw)."""
    c = int(y.max()) + 1
    n, d = X.shape
    priors = np.array([np.sum(y == k) for k in range(c)]) / n
    means = np.array([X[y == k].mean(axis=0) for k in range(c)])
    Sw = np.zeros((d, d))
    for k in range(c):
        Sw += priors[k] * _cov(X[y == k], shrinkage)
    St = _cov(X, shrinkage)
    evals, evecs = linalg.eigh(St - Sw, Sw)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    projected = X @ evecs[:, : min(c - 1, d)]
    scores = X @ coef.T + intercept
    if c == 2:  # scikit-learn's binary case: logistic of the score difference
        diff = scores[:, 1] - scores[:, 0]
        p1 = 1 / (1 + np.exp(-diff))
        proba = np.stack([1 - p1, p1], axis=1)
    else:
        proba = _softmax(scores)
    return projected, proba


def ref_ncti_terms(X: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """REFERENCE 6, NCTI per model: PCA(64, rs=42); temp; LDA; S_seli, S_ncc, S_vc."""
    k = min(64, X.shape[0], X.shape[1])
    pca = PCA(n_components=k, random_state=42)
    Z = pca.fit_transform(X)
    temp = max(np.exp(-pca.explained_variance_[:32].sum()), 1e-10)
    if temp == 1e-10:
        lda = LinearDiscriminantAnalysis(solver="svd")
        projected = lda.fit_transform(Z, y)
        proba = lda.predict_proba(Z)
    else:
        projected, proba = _ref_lda_eigen(Z, y, float(temp))
    projected = projected - projected.mean(axis=0, keepdims=True)
    seli = np.linalg.norm(projected, ord="nuc")
    ncc = np.mean([proba[i, y[i]] for i in range(len(y))])
    vc = np.log(sum(np.linalg.norm(proba[y == c], ord="nuc") for c in range(int(y.max()) + 1)))
    return float(seli), float(ncc), float(vc)


def ref_ncti_zoo(terms: np.ndarray, sign: str, exclude: list[int] | None = None) -> np.ndarray:
    """REFERENCE 6, NCTI over the zoo: min-max each term over the kept models, add (+/- S_vc)."""
    terms = np.asarray(terms, dtype=np.float64)
    keep = [i for i in range(len(terms)) if i not in (exclude or [])]
    out = np.full(len(terms), np.nan)
    cols = []
    for j in range(3):
        col = terms[keep, j]
        cols.append((col - col.min()) / (col.max() - col.min()))
    for pos, i in enumerate(keep):
        out[i] = cols[0][pos] + cols[1][pos] + (cols[2][pos] if sign == "+" else -cols[2][pos])
    return out


def ref_gbc(X: np.ndarray, y: np.ndarray, gaussian_type: str = "diagonal") -> float:
    """Pandy et al. 2022: PCA(64); per-class mean / variance (floor 1e-4); -sum of exp(-D_B)."""
    k = min(64, X.shape[0], X.shape[1])
    Z = PCA(n_components=k, random_state=42).fit_transform(X)
    classes = range(int(y.max()) + 1)
    stats = {}
    for c in classes:
        var = np.maximum(np.var(Z[y == c], axis=0), 1e-4)
        if gaussian_type == "spherical":
            var = np.full(k, var.mean())
        stats[c] = (Z[y == c].mean(axis=0), var)
    total = 0.0
    for c1 in classes:
        for c2 in classes:
            if c1 == c2:
                continue
            mu1, s1 = stats[c1]
            mu2, s2 = stats[c2]
            s = (s1 + s2) / 2
            dist = (np.sum((mu1 - mu2) ** 2 / s) / 8
                    + 0.5 * (np.sum(np.log(s)) - 0.5 * np.sum(np.log(s1))
                             - 0.5 * np.sum(np.log(s2))))
            total += np.exp(-dist)
    return float(-total)


def ref_hscore(X: np.ndarray, y: np.ndarray, shrinkage: str | float = "ledoit-wolf") -> float:
    """Ibrahim et al. 2022: tr(pinv(cov_alpha) (1 - alpha) cov(g)), g = class-mean features."""
    f = X - X.mean(axis=0, keepdims=True)
    if shrinkage == "ledoit-wolf":
        est = LedoitWolf(assume_centered=False).fit(f)
        alpha, cov = est.shrinkage_, est.covariance_
    else:
        alpha = float(shrinkage)
        emp = np.cov(f, rowvar=False, bias=True)
        cov = (1 - alpha) * emp + alpha * np.trace(emp) / f.shape[1] * np.eye(f.shape[1])
    g = np.zeros_like(f)
    for c in range(int(y.max()) + 1):
        g[y == c] = f[y == c].mean(axis=0)
    covg = np.cov(g, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov, rtol=1e-15) @ ((1 - alpha) * covg)))


def ref_nce(logits: np.ndarray, y: np.ndarray) -> float:
    """Tran et al. 2019: -H(Y | Z), Z = argmax of the source logits, empirical joint."""
    z = np.argmax(logits, axis=1)
    n = len(y)
    joint: dict[tuple[int, int], float] = {}
    pz: dict[int, float] = {}
    for yi, zi in zip(y.tolist(), z.tolist()):
        joint[(yi, zi)] = joint.get((yi, zi), 0.0) + 1.0 / n
        pz[zi] = pz.get(zi, 0.0) + 1.0 / n
    return float(sum(p * math.log(p / pz[zi]) for (yi, zi), p in joint.items()))


def _ref_coding_rate(Z: np.ndarray, eps: float) -> float:
    n, d = Z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + Z.T @ Z / (n * eps))[1]


def ref_transrate(X: np.ndarray, y: np.ndarray, eps: float = 1e-4) -> float:
    """Huang et al. 2022 (published code): centre; R(Z) - mean over classes of R(Z_c)."""
    Z = X - X.mean(axis=0, keepdims=True)
    classes = range(int(y.max()) + 1)
    return float(_ref_coding_rate(Z, eps)
                 - sum(_ref_coding_rate(Z[y == c], eps) for c in classes) / len(classes))
