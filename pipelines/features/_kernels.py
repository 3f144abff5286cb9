"""numba kernels for big batches, apart so that numba is imported only by them (the
single-transfer path stays plain numpy). Each does what the numpy code beside its use does,
on both cores; tests check that both paths give the same features."""

import numba
import numpy as np


@numba.njit(parallel=True, nogil=True, cache=True)
def scatter(out: np.ndarray, perm: np.ndarray, values: np.ndarray) -> None:
    """out[perm[i]] = values[i], cast to out's type; perm has no repeats, so threads never
    write the same element. On 10M rows 3-4x faster than numpy's `out[perm] = values` here."""
    for i in numba.prange(perm.size):
        out[perm[i]] = values[i]


@numba.njit(parallel=True, nogil=True, cache=True)
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
