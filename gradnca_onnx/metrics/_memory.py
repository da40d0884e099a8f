"""The memory pre-check of :func:`~gradnca_onnx.metrics.compute_metrics` (issue 24, item 20).

A metric that asks for more memory than the machine has does not fail cleanly: the kernel's
OOM killer ends the whole process (every model's result lost), or a library crashes on the
huge matrix. So before each metric runs, its peak memory is estimated from the sizes alone
(N samples, D features, C classes) and compared with a budget, a fraction of the memory the
machine has free; above it, the metric is skipped for that model with one note, and the
others still run.

The estimates are upper bounds of the extra memory each algorithm allocates (in float64),
checked against measured peaks by ``benchmarks/bench_metrics_wide.py``; they are not exact,
and need not be: they separate "fits easily" from "cannot fit", which differ by orders of
magnitude (a 16k x 16k matrix is 2 GiB; the span forms need a few N x D arrays instead).
"""

from __future__ import annotations

from typing import Any, Callable

from .._memory import available_memory

#: Bytes of one float64.
F8 = 8
#: Share of the free memory a metric's estimate may reach. The estimates count the arrays the
#: algorithm allocates; the measured resident peak adds BLAS buffers and allocator slack (up to
#: ~1.3x the estimate in the benchmark), and other processes may grow meanwhile: half is kept.
MEMORY_FRACTION = 0.5


def _k(n: int, d: int) -> int:
    return min(n, d)


def _pca(n: int, d: int) -> float:
    """scikit-learn's PCA: a centred copy, and U, s, Vt of its (thin or randomized) SVD."""
    k = _k(n, d)
    return F8 * (3 * n * d + 2 * k * (n + d))


def _sfda(n: int, d: int, c: int, **_: Any) -> float:
    # row_span's QR (input copy and Q: 2 N D) or, for D <= N, the D x D scatter, its shrunk
    # copy, the factor and temporaries (6 k^2); the mixed samples and class-centred rows.
    k = _k(n, d)
    return F8 * (4 * n * d + 6 * k * k)


def _hscore(n: int, d: int, c: int, **_: Any) -> float:
    # centred copy, QR (2 N D), X**2 of the Ledoit-Wolf alpha; the k x k covariance, eigh.
    k = _k(n, d)
    return F8 * (5 * n * d + 5 * k * k) + F8 * 1000 * 1000 * 2  # sklearn's 1000-blocks


def _transrate(n: int, d: int, c: int, **_: Any) -> float:
    # centred copy, one class's rows, the Gram matrix and its factor.
    k = _k(n, d)
    return F8 * (3 * n * d + 3 * k * k)


def _logme(n: int, d: int, c: int, **_: Any) -> float:
    # F^T F or F F^T and its SVD / eigendecomposition (U, s, Vt and workspace).
    k = _k(n, d)
    return F8 * (n * d + 5 * k * k + n * c)


def _gbc(n: int, d: int, c: int, **_: Any) -> float:
    return _pca(n, d) + F8 * (n * 64 + c * c * 64 * 3)


def _ncti(n: int, d: int, c: int, **_: Any) -> float:
    return _pca(n, d) + F8 * (4 * n * 64 + 2 * n * c)


def _nleep(n: int, d: int, c: int, *, components_per_class: int = 5, **_: Any) -> float:
    # PCA keeps p <= k dimensions; the mixture holds m = 5 C full p x p covariances (and their
    # Cholesky factors) and N x m responsibilities, plus one N x p product per component.
    k = _k(n, d)
    m = int(components_per_class) * c
    return _pca(n, d) + F8 * (2 * m * k * k + 3 * n * m + 2 * n * k)


def _parc(n: int, d: int, c: int, *, subsample: str = "applied", max_samples: int = 15_000,
          **_: Any) -> float:
    # the N(N-1)/2 pair dissimilarities (one float64 each) on the (sub)sample, after its PCA.
    m = min(n, int(max_samples)) if subsample == "applied" else n
    return _pca(m, d) + F8 * (m * (m - 1) / 2 + 8 * m)


def _logits(n: int, d: int, c: int, **_: Any) -> float:
    # LEEP, NCE: softmax of the N x Cs logits and its product with p(y|z).
    return F8 * (3 * n * d + 2 * c * d)


#: Metric name -> estimate(n, d, c, **options) of its peak extra memory in bytes; d is the
#: logits' width for the metrics computed from logits.
ESTIMATES: dict[str, Callable[..., float]] = {
    "logme": _logme, "leep": _logits, "nleep": _nleep, "parc": _parc, "sfda": _sfda,
    "ncti": _ncti, "gbc": _gbc, "hscore": _hscore, "nce": _logits, "transrate": _transrate,
}


def memory_budget() -> int | None:
    """The bytes one metric may plan to use: :data:`MEMORY_FRACTION` of what is free."""
    free = available_memory()
    return None if free is None else int(MEMORY_FRACTION * free)


def memory_refusal(name: str, title: str, n: int, d: int, c: int,
                   options: dict[str, Any]) -> str | None:
    """The note of a metric skipped because it would exceed :func:`memory_budget`, or None.

    ``d`` is the width of what the metric is computed from (features, or logits).
    """
    estimate = ESTIMATES.get(name)
    if estimate is None:
        return None
    need = estimate(n, d, c, **options)
    budget = memory_budget()
    if budget is None or need <= budget:
        return None
    gib = 2.0 ** 30
    return (f"skipped: {title} would need about {need / gib:.1f} GiB of memory for N={n} "
            f"samples of D={d} values, more than the {budget / gib:.1f} GiB this machine can "
            "give it now; score fewer images, free memory or use a larger machine, or leave "
            f"{name} out of the metrics (rank --metrics)")
