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

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController, threadpool_limits


def available_cores() -> int:
    """The CPUs this process may run on: its affinity mask (a container's or ``taskset``'s
    share), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no affinity mask outside Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads used by the kernels: the current call's bound (:func:`limited_threads`), else
    ``GRADNCA_NUM_THREADS``, else the CPUs this process may use."""
    bound = _CALL_THREADS.get()
    if bound is not None:
        return bound
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


class _BlasLimits:
    """The process-wide BLAS thread count while blocks that limit it are active.

    OpenBLAS (as NumPy and SciPy ship it, pthreads) keeps one thread count for the whole
    process: measured with NumPy's OpenBLAS 0.3.31, ``openblas_set_num_threads_local(1)`` in
    one thread makes ``openblas_get_num_threads()`` return 1 in every other thread too. So the
    blocks of all threads share one setting: the smallest limit any active block asks for,
    set when the first block enters, lowered or raised as blocks come and go, and the
    original restored when the last one leaves. Nested ``threadpool_limits`` blocks in several
    threads would instead restore the original while another thread is still inside its block,
    silently losing the bit-for-bit guarantee of the single-threaded products.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[int] = []
        self._original: list[tuple[object, int]] = []
        self._current: int | None = None

    def _apply(self) -> None:
        wanted = min(self._active) if self._active else None
        if wanted == self._current:
            return
        if self._current is None:
            controllers = ThreadpoolController().select(user_api="blas").lib_controllers
            self._original = [(c, c.num_threads) for c in controllers]
        for controller, original in self._original:
            # a bound never raises a library above the count it had (a limit, not a request)
            _set_blas_threads(controller, original if wanted is None else min(wanted, original))
        if wanted is None:
            self._original = []
        self._current = wanted

    @contextmanager
    def limit(self, n: int) -> Iterator[None]:
        with self._lock:
            self._active.append(max(1, int(n)))
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._active.remove(max(1, int(n)))
                self._apply()


def _set_blas_threads(controller: Any, n: int) -> None:
    """Set a BLAS library's thread count from any thread.

    threadpoolctl lets only the first thread that set an OpenBLAS (pthreads) count set it
    again; from any other thread its setter silently does nothing (measured: a limit entered
    in a worker thread left the count at 2). A ranking runs in whatever thread the caller
    uses, so OpenBLAS's own setter is called directly; other libraries go through
    threadpoolctl.
    """
    if controller.internal_api == "openblas" and controller.threading_layer != "openmp":
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                setter = getattr(controller.dynlib, f"{prefix}openblas_set_num_threads{suffix}",
                                 None)
                if setter is not None:
                    setter(ctypes.c_int(int(n)))
                    return
    controller.set_num_threads(int(n))


_BLAS = _BlasLimits()


def blas_threads(n: int) -> AbstractContextManager[None]:
    """Run BLAS with at most ``n`` threads inside the block (process-wide; see
    :class:`_BlasLimits`); safe from several threads at once."""
    return _BLAS.limit(n)


def single_threaded_blas() -> AbstractContextManager[None]:
    """Run BLAS single-threaded inside the block (see the module docstring for why).

    Safe from several threads at once (a service calling ``label_prediction_score`` from a
    thread pool): every block in any thread runs pinned until the last one leaves.
    """
    return _BLAS.limit(1)


#: The thread budget of the current call (:func:`limited_threads`), None outside one.
_CALL_THREADS: ContextVar[int | None] = ContextVar("gradnca_call_threads", default=None)


@contextmanager
def limited_threads(n: int | None) -> Iterator[None]:
    """Bound every pool a call uses to ``n`` threads inside the block (``None``: no bound).

    Inside the block :func:`default_threads` is ``n`` (the NCA products, the compiled kernels'
    OpenMP regions and the baseline metrics' numba loops take their thread count from it), the
    calling thread's OpenMP runtimes run at most ``n`` threads (OpenMP's setting is per
    thread), and BLAS at most ``n`` (process-wide, shared with concurrent calls:
    :class:`_BlasLimits`). Everything is restored when the block ends.
    """
    if n is None:
        yield
        return
    n = max(1, int(n))
    token = _CALL_THREADS.set(n)
    try:
        with blas_threads(n), threadpool_limits(limits=n, user_api="openmp"):
            yield
    finally:
        _CALL_THREADS.reset(token)


@contextmanager
def numba_threads() -> Iterator[None]:
    """numba's parallel loops on at most :func:`default_threads` threads inside the block
    (numba's setting is per thread, so other threads are not affected)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(default_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)
