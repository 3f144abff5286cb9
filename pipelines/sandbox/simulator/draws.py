"""Seeded randomness: one generator per component and day, hash-fixed uniforms, vector draws."""

from __future__ import annotations

import numpy as np


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per component and day, so output does not depend on chunking."""
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, *stream])


def splitmix(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a well-mixed 64-bit hash of each value."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_uniform(salt: int, *parts: np.ndarray) -> np.ndarray:
    """A uniform in [0, 1) fixed by its inputs: a payer's regular shop without storing it."""
    h = np.full(len(parts[0]), salt & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    for p in parts:
        h = splitmix(h ^ p.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    """`n` draws spread around `median` by `sigma` on the log scale."""
    return median * np.exp(sigma * rng.standard_normal(n))


def cdf_choice(rng: np.random.Generator, cdf_rows: np.ndarray) -> np.ndarray:
    """One categorical draw per row, each row with its own cumulative distribution."""
    u = rng.random(len(cdf_rows))[:, None]
    return np.minimum((u >= cdf_rows).sum(axis=1), cdf_rows.shape[1] - 1)


def choice(rng: np.random.Generator, n: int, p: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """`n` category indices drawn with weights `p`."""
    cdf = np.cumsum(np.asarray(p, dtype=np.float64))
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(n), side="right")
