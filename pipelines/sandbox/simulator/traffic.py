"""When and how much people pay: IST time-of-day and weekday profiles, and each day's volume.

Timestamps are UTC, but people live by India time: the half-hourly profiles are written over an
IST day and shifted onto the UTC day by India's offset.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from pipelines.india_time import IST_OFFSET_US
from pipelines.sandbox.simulator.codes import DAY, HALF_HOUR

if TYPE_CHECKING:
    from pipelines.sandbox.simulator.config import SimulationConfig
    from pipelines.sandbox.simulator.world import Population

# --- time of day -----------------------------------------------------------------------------

_IST_SHIFT_BINS = IST_OFFSET_US // HALF_HOUR  # IST is UTC+5:30, i.e. eleven half-hour bins ahead

# Relative activity per IST hour: morning ramp, 10-13 peak, afternoon dip, 17-21:30 peak.
_IST_HOURLY = (
    *(1.1, 0.55, 0.3, 0.2, 0.22, 0.45, 1.1, 2.2, 3.4, 4.5, 5.8, 6.4),
    *(6.3, 5.4, 4.5, 4.4, 4.8, 5.6, 6.4, 7.0, 7.0, 6.2, 2.8, 1.8),
)


def _ist_profile(p2m: bool) -> np.ndarray:
    """Half-hourly weights over an IST day; shops peak at lunch, friends pay late evening."""
    w = np.repeat(np.asarray(_IST_HOURLY, dtype=np.float64), 2)
    w[43] = 4.0  # 21:30-22:00: the evening peak is over
    if p2m:
        w[22:28] *= 1.12
        w[np.r_[46:48, 0:12]] *= 0.75
    else:
        w[38:44] *= 1.08
    return w


def _utc_cdf(ist_weights: np.ndarray) -> np.ndarray:
    """Cumulative distribution over the 48 half-hours of a UTC day."""
    w = np.roll(ist_weights, -_IST_SHIFT_BINS)
    cdf = np.cumsum(w) / w.sum()
    cdf[-1] = 1.0
    return cdf


P2P_CDF = _utc_cdf(_ist_profile(p2m=False))
P2M_CDF = _utc_cdf(_ist_profile(p2m=True))
_NIGHT = np.zeros(48)
_NIGHT[np.r_[46:48, 0:8]] = 1.0  # 23:00-04:00 IST, when account takeovers drain accounts
NIGHT_CDF = _utc_cdf(_NIGHT)

# Monday first. P2M is busier at weekends (shopping, eating out); P2P a little.
_WEEKDAY_P2P = (1.0, 0.97, 0.97, 0.98, 1.03, 1.08, 1.04)
_WEEKDAY_P2M = (0.94, 0.95, 0.96, 0.98, 1.05, 1.17, 1.12)


def sample_in_day(rng: np.random.Generator, n: int, cdf: np.ndarray, day_start: int) -> np.ndarray:
    """`n` event times in the UTC day from `day_start`, following a half-hourly profile."""
    b = np.searchsorted(cdf, rng.random(n), side="right")
    return day_start + b * HALF_HOUR + (rng.random(n) * HALF_HOUR).astype(np.int64)


# --- volume ----------------------------------------------------------------------------------


def day_weights(pop: Population, day_start: int) -> np.ndarray:
    """Each user's expected share of the day's traffic: activity x time able to pay x ramp."""
    day_end = day_start + DAY
    lo = np.maximum(pop.link, day_start)
    # A dormant account pays no one from the day it goes quiet (aligned to a day's start).
    hi = np.minimum(np.minimum(pop.dereg, pop.quiet), day_end)
    frac = np.clip((hi - lo) / DAY, 0.0, 1.0)
    # New users find their feet over their first week or two.
    tenure = np.maximum(day_end - pop.link, 0) / DAY
    ramp = 1.0 - 0.5 * np.exp(-tenure / 7.0)
    return pop.activity * frac * ramp


def _p2m_share(cfg: SimulationConfig, d: int) -> float:
    """Share of P2M before weekday effects: rises linearly over the period."""
    return cfg.p2m_share_start + (cfg.p2m_share_end - cfg.p2m_share_start) * (
        d / max(cfg.days - 1, 1)
    )


def expected_volume(cfg: SimulationConfig, pop: Population, start_us: int) -> np.ndarray:
    """Expected legit (P2P, P2M) transfers per day, before retries."""
    out = np.zeros((cfg.days, 2))
    for d in range(cfg.days):
        date = cfg.start + dt.timedelta(days=d)
        w = day_weights(pop, start_us + d * DAY).sum()
        share = _p2m_share(cfg, d)
        salary = date.day <= 5  # salaries land at the start of the month
        f_p2p = _WEEKDAY_P2P[date.weekday()] * (1.15 if salary else 1.0)
        f_p2m = _WEEKDAY_P2M[date.weekday()] * (1.06 if salary else 1.0)
        out[d, 0] = cfg.transfer_rate * w * (1.0 - share) * f_p2p
        out[d, 1] = cfg.transfer_rate * w * share * f_p2m
    return out
