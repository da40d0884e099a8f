"""Deterministic parallel matrix products.

BLAS libraries round differently with different thread counts (OpenBLAS splits some reductions
across threads), so a result computed with multi-threaded BLAS depends on the machine. Here BLAS
runs single-threaded and the parallelism comes from splitting the *output* of each product into
row or column slabs computed concurrently: every output element is then formed by the same
single-threaded kernel whatever the thread count, so results are identical on every machine and
bit-identical to single-threaded BLAS.

That last claim holds for OpenBLAS's dgemm on row or column slabs (tests/test_core_kernels.py
checks it over a grid of odd and even shapes); it does not hold for sgemm, nor between a syrk
and a row-split gemm, so callers keep those as single calls.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits


def default_threads() -> int:
    """Threads used by the kernels: ``GRADNCA_NUM_THREADS`` or the CPUs this process may use."""
    env = os.environ.get("GRADNCA_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _slabs(n: int, parts: int, align: int = 8) -> list[slice]:
    parts = max(1, min(parts, n // align or 1))
    step = -(-n // parts)
    step = -(-step // align) * align
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


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

        self._run(part, _slabs(a.shape[0], self.n_threads))
        return out

    def matmul_cols(self, a: NDArray, b: NDArray) -> NDArray:
        """``a @ b`` computed by column slabs of ``b``."""
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

        def part(sl: slice) -> None:
            out[:, sl] = a.dot(b[:, sl])

        self._run(part, _slabs(b.shape[1], self.n_threads))
        return out

    def map_rows(self, fn, n: int) -> None:
        """Call ``fn(slice)`` on row slabs of ``range(n)`` concurrently (fn must release the GIL)."""
        self._run(fn, _slabs(n, self.n_threads))


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS single-threaded inside the block (see the module docstring for why)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
