"""Deterministic parallel matrix products.

BLAS libraries round differently with different thread counts (OpenBLAS splits some reductions
across threads), so a result computed with multi-threaded BLAS depends on the machine. Here BLAS
runs single-threaded and the parallelism comes from splitting the *output* of each product into
row or column slabs computed concurrently: every output element is then formed by the same
single-threaded kernel whatever the thread count, so results are identical on every machine and
bit-identical to single-threaded BLAS.

That last claim holds for OpenBLAS's Haswell and Zen dgemm kernels on row or column slabs, but
not for its AVX-512 (SkylakeX, Cooperlake) kernels, which pick their code path by shape, so a slab
can be summed in another order than the whole product (measured here on an AVX-512 EPYC: 22 of
140 products of tests/core/test_core_kernels.py's grid differed). So each split is checked once per
shape, layout and slab plan on random data of that shape (:func:`_split_is_exact`), and a split
that is not bit-identical to one call runs as one call. It does not hold for sgemm, nor between
a syrk and a row-split gemm, so callers keep those as single calls.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits


def available_cores() -> int:
    """The CPUs this process may run on: its affinity mask (a container's or ``taskset``'s
    share), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no affinity mask outside Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads used by the kernels: ``GRADNCA_NUM_THREADS`` or the CPUs this process may use."""
    env = os.environ.get("GRADNCA_NUM_THREADS")
    if env:
        return max(1, int(env))
    return available_cores()


def _slabs(n: int, parts: int, align: int = 8) -> list[slice]:
    parts = max(1, min(parts, n // align or 1))
    step = -(-n // parts)
    step = -(-step // align) * align
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


#: (product, shapes, layouts, dtypes, slab plan) -> whether the split equals one call.
_EXACT: dict[tuple, bool] = {}
_EXACT_LOCK = threading.Lock()


def _layout(x: NDArray) -> str:
    return "C" if x.flags.c_contiguous else "F" if x.flags.f_contiguous else "S"


def _probe_like(x: NDArray, rng: np.random.Generator) -> NDArray:
    # Same shape, dtype and memory layout (BLAS picks its transposition flags from the layout).
    y = rng.standard_normal(x.shape).astype(x.dtype)
    return np.asfortranarray(y) if _layout(x) == "F" else y


def _split_is_exact(kind: str, a: NDArray, b: NDArray, slabs: list[slice]) -> bool:
    """Whether computing ``a @ b`` by these row (``kind="rows"``) or column slabs gives the bits
    of one call, for this BLAS, shape and layout; checked once on random data and cached.

    The BLAS chooses its kernel from the shapes and transposition flags alone, so two different
    summation orders agree on random data only by a (negligible) accident.
    """
    key = (kind, a.shape, b.shape, _layout(a), _layout(b), a.dtype.str, b.dtype.str,
           tuple((sl.start, sl.stop) for sl in slabs))
    with _EXACT_LOCK:
        hit = _EXACT.get(key)
    if hit is None:
        rng = np.random.default_rng(0)
        pa, pb = _probe_like(a, rng), _probe_like(b, rng)
        whole = pa.dot(pb)
        split = np.empty_like(whole)
        for sl in slabs:
            if kind == "rows":
                np.dot(pa[sl], pb, out=split[sl])
            else:
                split[:, sl] = pa.dot(pb[:, sl])
        hit = bool(np.array_equal(whole, split))
        with _EXACT_LOCK:
            _EXACT[key] = hit
    return hit


class Products:
    """Matrix products split over a thread pool, each slab by single-threaded BLAS."""

    def __init__(self, n_threads: int | None = None) -> None:
        self.n_threads = default_threads() if n_threads is None else max(1, int(n_threads))
        self._pool = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "Products":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, fn, slabs: list[slice]) -> None:
        if self._pool is None or len(slabs) == 1:
            for sl in slabs:
                fn(sl)
        else:
            for future in [self._pool.submit(fn, sl) for sl in slabs]:
                future.result()

    def matmul_rows(self, a: NDArray, b: NDArray, out: NDArray | None = None) -> NDArray:
        """``a @ b`` computed by row slabs of ``a``."""
        if out is None:
            out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

        def part(sl: slice) -> None:
            np.dot(a[sl], b, out=out[sl])

        slabs = _slabs(a.shape[0], self.n_threads)
        if len(slabs) > 1 and not _split_is_exact("rows", a, b, slabs):
            slabs = [slice(0, a.shape[0])]
        self._run(part, slabs)
        return out

    def matmul_cols(self, a: NDArray, b: NDArray) -> NDArray:
        """``a @ b`` computed by column slabs of ``b``."""
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

        def part(sl: slice) -> None:
            out[:, sl] = a.dot(b[:, sl])

        slabs = _slabs(b.shape[1], self.n_threads)
        if len(slabs) > 1 and not _split_is_exact("cols", a, b, slabs):
            slabs = [slice(0, b.shape[1])]
        self._run(part, slabs)
        return out

    def map_rows(self, fn, n: int) -> None:
        """Call ``fn(slice)`` on row slabs of ``range(n)`` concurrently (fn must release the GIL)."""
        self._run(fn, _slabs(n, self.n_threads))


#: The BLAS limit is process-global: one limiter shared by every thread inside a pinned block.
_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict = {"depth": 0, "limiter": None}


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS single-threaded inside the block (see the module docstring for why).

    Safe from several threads at once (a service calling ``label_prediction_score`` from a
    thread pool): the BLAS thread count is a process-wide setting, so nested
    ``threadpool_limits`` blocks would restore it while another thread is still inside its
    block, silently losing the bit-for-bit guarantee. Here the first thread to enter pins BLAS
    to one thread and the last one to leave restores it; every block in between runs pinned.
    """
    with _BLAS_LOCK:
        if _BLAS_STATE["depth"] == 0:
            _BLAS_STATE["limiter"] = threadpool_limits(limits=1, user_api="blas")
        _BLAS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["depth"] -= 1
            if _BLAS_STATE["depth"] == 0:
                limiter, _BLAS_STATE["limiter"] = _BLAS_STATE["limiter"], None
                limiter.restore_original_limits()
