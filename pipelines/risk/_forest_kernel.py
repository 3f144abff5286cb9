"""The numba kernel of `forest.CompiledForest`, apart so that numba is imported only when used."""

import numba
import numpy as np

from pipelines.risk.forest import _BLOCK_ROWS, _FEATURE_BITS, MAX_FEATURES

_SHIFT = _FEATURE_BITS + 2
_MASK = MAX_FEATURES - 1


@numba.njit(inline="always")
def _step(X, i, node, nodes):  # pragma: no cover - compiled
    word = np.int64(nodes[node, 1])
    x = X[i, (word >> 2) & _MASK]
    go_right = (x > nodes[node, 0]) | ((x != x) & ((word & 2) != 0)) | ((word & 1) != 0)
    return (word >> _SHIFT) if go_right else node + 1


@numba.njit(nogil=True, cache=True)
def walk(X, nodes, values, roots, depths, baseline, out):  # pragma: no cover - compiled
    """Sum of leaf values plus baseline for each row of X, into `out`; block by block of rows."""
    n = X.shape[0]
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        for i in range(start, stop):
            out[i] = baseline
        for t in range(roots.shape[0]):
            r = roots[t]
            d = depths[t]
            i = start
            # Eight independent walks in lock-step: their loads overlap instead of queueing.
            while i + 8 <= stop:
                a0 = r
                a1 = r
                a2 = r
                a3 = r
                a4 = r
                a5 = r
                a6 = r
                a7 = r
                for _ in range(d):
                    a0 = _step(X, i, a0, nodes)
                    a1 = _step(X, i + 1, a1, nodes)
                    a2 = _step(X, i + 2, a2, nodes)
                    a3 = _step(X, i + 3, a3, nodes)
                    a4 = _step(X, i + 4, a4, nodes)
                    a5 = _step(X, i + 5, a5, nodes)
                    a6 = _step(X, i + 6, a6, nodes)
                    a7 = _step(X, i + 7, a7, nodes)
                out[i] += values[a0]
                out[i + 1] += values[a1]
                out[i + 2] += values[a2]
                out[i + 3] += values[a3]
                out[i + 4] += values[a4]
                out[i + 5] += values[a5]
                out[i + 6] += values[a6]
                out[i + 7] += values[a7]
                i += 8
            while i < stop:
                a = r
                for _ in range(d):
                    a = _step(X, i, a, nodes)
                out[i] += values[a]
                i += 1
    return out
