"""numba kernels for big batches, apart so that numba is imported only by them (the
single-transfer path stays plain numpy). Each does what the numpy code beside its use does,
on both cores; tests check that both paths give the same features.

Each kernel is compiled for the argument types the engine passes, once, when this module is
imported (the machine code is cached beside it): the engine imports it on a spare thread
while it reads its inputs, instead of paying for it at the first call of each type.

The engine calls them from two threads. Each kernel already uses both cores, and numba's
fallback threading layer (workqueue, when neither OpenMP nor TBB is installed) aborts the
process on concurrent launches, so launches take turns."""

import functools
import threading
from collections.abc import Callable

import numba
import numpy as np
from numba import boolean, float32, float64, int64, void

from pipelines.features.engine.inputs import HOUR

_launch = threading.Lock()
_POSITIONS = int64[::1]  # positions and row numbers (intp)


def _kernel(*signatures: object) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Compile for `signatures` (parallel, cached) and take turns at launch (see above)."""

    def compile_kernel(body: Callable[..., None]) -> Callable[..., None]:
        compiled = numba.njit(list(signatures), parallel=True, nogil=True, cache=True)(body)

        @functools.wraps(body)
        def launch(*args: np.ndarray | int) -> None:
            with _launch:
                compiled(*args)

        return launch

    return compile_kernel


@_kernel(
    *(
        void(out[::1], _POSITIONS, v[::1])
        for out in (float64, float32)
        for v in (boolean, int64, float64)
    )
)
def scatter(out: np.ndarray, perm: np.ndarray, values: np.ndarray) -> None:
    """out[perm[i]] = values[i], cast to out's type; perm has no repeats, so threads never
    write the same element. On 10M rows 3-4x faster than numpy's `out[perm] = values` here."""
    for i in numba.prange(perm.size):
        out[perm[i]] = values[i]


@_kernel(void(int64[::1], _POSITIONS, int64, _POSITIONS))
def window_starts(time: np.ndarray, first: np.ndarray, span: int, out: np.ndarray) -> None:
    """out[p] = the first position q of p's key with time[q] >= time[p] - span.

    Positions are sorted by (key, time); `first` holds each key's first position and then the
    number of positions. One forward pass per key instead of a binary search per position.
    """
    for k in numba.prange(first.size - 1):
        lo = first[k]
        for p in range(first[k], first[k + 1]):
            while time[lo] < time[p] - span:
                lo += 1
            out[p] = lo


@_kernel(*(void(_POSITIONS, _POSITIONS, _POSITIONS, v[::1], int64[::1]) for v in (boolean, int64)))
def range_sums(
    first: np.ndarray, lo: np.ndarray, hi: np.ndarray, values: np.ndarray, out: np.ndarray
) -> None:
    """out[p] = values[lo[p]:hi[p]].sum(), with lo and hi within p's key and not decreasing
    along it (`first` as in window_starts). A window sliding along each key: no prefix sums,
    no temporaries; integer sums wrap as numpy's prefix-sum differences do."""
    for k in numba.prange(first.size - 1):
        a = b = first[k]
        total = 0
        for p in range(first[k], first[k + 1]):
            while b < hi[p]:
                total += values[b]
                b += 1
            while a < lo[p]:
                total -= values[a]
                a += 1
            out[p] = total


@_kernel(void(float64[::1], _POSITIONS, int64[::1], _POSITIONS, _POSITIONS, int64[::1]))
def hours_since(
    out: np.ndarray,
    perm: np.ndarray,
    time: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    when: np.ndarray,
) -> None:
    """out[perm[p]] = (time[p] - when[e]) / HOUR for p in [start[e], stop[e]) of each event
    e: the spans do not overlap. No expanded (position, event) arrays."""
    for e in numba.prange(start.size):
        for p in range(start[e], stop[e]):
            out[perm[p]] = (time[p] - when[e]) / HOUR


@_kernel(void(_POSITIONS, int64[::1], float64[::1], int64, float64[::1]))
def rolling_median_prior(
    first: np.ndarray, time: np.ndarray, values: np.ndarray, window: int, out: np.ndarray
) -> None:
    """out[p] = the median of the non-NaN values of p's key with time in [time[p] - window,
    time[p]), NaN if none; positions sorted by (key, time), `first` as in window_starts.

    Each key keeps its window's values sorted in a small buffer (a payer's 30 days hold tens
    of transfers): an insertion and a removal per transfer. The median of an even count is
    lower + (upper - lower) * 0.5, as Polars' rolling median (linear interpolation) has it.
    """
    for k in numba.prange(first.size - 1):
        start, end = first[k], first[k + 1]
        window_values = np.empty(end - start, dtype=np.float64)
        m = 0  # values in the window, sorted in window_values[:m]
        lo = hi = start  # positions [lo, hi) have entered the window; [start, lo) have left
        for p in range(start, end):
            while hi < end and time[hi] < time[p]:
                v = values[hi]
                if not np.isnan(v):
                    i = m
                    while i > 0 and window_values[i - 1] > v:
                        window_values[i] = window_values[i - 1]
                        i -= 1
                    window_values[i] = v
                    m += 1
                hi += 1
            while lo < hi and time[lo] < time[p] - window:
                v = values[lo]
                if not np.isnan(v):
                    i = 0
                    while window_values[i] != v:
                        i += 1
                    for j in range(i, m - 1):
                        window_values[j] = window_values[j + 1]
                    m -= 1
                lo += 1
            if m == 0:
                out[p] = np.nan
            else:
                lower, upper = window_values[(m - 1) // 2], window_values[m // 2]
                out[p] = lower + (upper - lower) * 0.5
