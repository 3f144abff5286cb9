"""Counts, sums and medians over each position's prior window [lo, tie) of its key.

Counts are index differences and sums are differences of prefix sums; window starts are a
merge of sorted (key, time) integers. In big batches the numba kernels (`_kernels.py`) find
window starts in one pass per key and slide each window along its key instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import ModuleType

import numpy as np
import polars as pl

from pipelines.features.engine.sorted_keys import Clock, Groups, lower_bounds


def prefix(values: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """Prefix sums with a leading 0: the sum of values[lo:hi] is out[hi] - out[lo]."""
    out = np.empty(values.size + 1, dtype=dtype)
    out[0] = 0
    np.cumsum(values, dtype=dtype, out=out[1:])
    return out


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.true_divide(num, den)
    out[den == 0] = np.nan
    return out


def window_bounds(
    clock: Clock,
    g: Groups,
    enc: np.ndarray,
    spans: dict[str, int],
    kernels: ModuleType | None = None,
) -> dict[str, np.ndarray]:
    """Per window: the first position of the key at or after created_at - span."""
    if kernels is not None:
        lo = {w: np.empty(g.gid.size, dtype=np.intp) for w in spans}
        for w, span in spans.items():
            kernels.window_starts(g.time, g.bounds, span, lo[w])
        return lo
    base = clock.base(g.gid)
    lo = {}
    for w, span in spans.items():
        q = enc - span
        np.maximum(q, base, out=q)  # times before the transfers' span clip to the key's start
        (lo[w],) = lower_bounds(clock, g.gid, enc, [(g.gid, q)])
        del q
    return lo


def range_sums(
    g: Groups,
    values: np.ndarray,
    ranges: Iterable[tuple[np.ndarray, np.ndarray]],
    kernels: ModuleType | None = None,
) -> Iterator[np.ndarray]:
    """For each (lo, hi): per position, the int64 sum of `values` (in position order) over
    positions [lo, hi) of its key; lo and hi do not decrease along a key (window starts, ties,
    key starts). Without kernels the prefix sums are taken once for all the ranges."""
    sums = prefix(values) if kernels is None else None
    for lo, hi in ranges:
        if sums is not None:
            out = sums[hi]
            out -= sums[lo]
            yield out
            continue
        out = np.empty(values.size, dtype=np.int64)
        kernels.range_sums(g.bounds, lo, hi, values, out)
        yield out


def range_sum(
    g: Groups,
    values: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    kernels: ModuleType | None = None,
) -> np.ndarray:
    """range_sums for one range."""
    (out,) = range_sums(g, values, [(lo, hi)], kernels)
    return out


def rolling_median_prior(
    clock: Clock, key: np.ndarray, time: np.ndarray, values: np.ndarray, window: int
) -> np.ndarray:
    """Median of the non-NaN values of the same key with time in [time - window, time)."""
    wide = Clock(clock.low, clock.width + window)  # keys further apart than a window
    out = np.empty(values.size, dtype=np.float64)
    for k0 in range(0, int(key[-1]) + 1, wide.per):
        s0, s1 = np.searchsorted(key, np.array([k0, k0 + wide.per], dtype=key.dtype))
        frame = pl.DataFrame(
            {"by": wide.encode(key[s0:s1], time[s0:s1]), "x": values[s0:s1]}, nan_to_null=True
        )
        median = frame.select(pl.col("x").rolling_median_by("by", f"{window}i", closed="left"))
        out[s0:s1] = median.to_series().fill_null(np.nan).to_numpy()
    return out
