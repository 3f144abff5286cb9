"""Synthetic feature frames with late fraud labels, for tests, benchmarks and demos of the risk model.

Stands in for the feature engine's output (`transfer_id` + Float64 features with nulls) until it is
ready, and gives the risk code data whose truth is known. The fraud signal is deliberately
non-linear (interactions, thresholds, a U-shape), so that a linear model cannot capture all of it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

FRAUD_TYPES = ("ACCOUNT_TAKEOVER", "SOCIAL_ENGINEERING", "MULE", "COLLECT_SCAM")
_US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class SyntheticData:
    """`features` (transfer_id, created_at, payer_vpa, amount_paise, *feature_names), the ledger
    `labels` as reported (late, incomplete), and the ground `truth` (transfer_id, is_fraud,
    fraud_type)."""

    features: pl.DataFrame
    labels: pl.DataFrame
    truth: pl.DataFrame
    feature_names: list[str]


def synthetic_risk_data(
    n: int = 50_000,
    *,
    n_features: int = 40,
    days: int = 60,
    fraud_rate: float = 0.004,
    report_rate: float = 0.75,
    report_delay_median_days: float = 4.0,
    start: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    seed: int = 0,
) -> SyntheticData:
    """`n` transfers over `days` with `n_features` (>= 8) features and ~`fraud_rate` fraud."""
    if n_features < 8:
        raise ValueError(f"n_features must be at least 8, got {n_features}")
    rng = np.random.default_rng(seed)
    created_us = np.sort(rng.integers(0, days * _US_PER_DAY, n)) + _epoch_us(start)
    payers = max(n // 8, 10)
    payer = np.minimum(rng.zipf(1.3, n), payers) - 1
    payer = (payer * 2_654_435_761 + rng.integers(0, 4, n)) % payers  # spread the heavy payers
    amount_rupees = np.exp(rng.normal(6.0, 1.3, n))

    new_device = (rng.random(n) < 0.06).astype(np.float64)
    payee_new_payers_24h = rng.poisson(0.6, n).astype(np.float64)
    account_age_days = rng.exponential(120.0, n)
    hour_ist = rng.uniform(0, 24, n)
    amount_vs_usual = np.exp(rng.normal(0.0, 0.7, n))
    failed_pin_1h = rng.poisson(0.05, n).astype(np.float64)
    collect = (rng.random(n) < 0.08).astype(np.float64)
    velocity_1h = rng.poisson(0.8, n).astype(np.float64)

    # Non-linear signal: each typology is an interaction, not a sum of main effects.
    ato = 6.0 * new_device * (amount_vs_usual > 1.6) + 2.0 * failed_pin_1h * new_device
    social = 5.5 * (payee_new_payers_24h >= 2) * (account_age_days < 40)
    mule = 2.5 * np.clip(velocity_1h - 1.0, 0, 4) * (payee_new_payers_24h >= 1)
    collect_scam = 6.0 * collect * ((hour_ist < 7) | (hour_ist > 21)) * (amount_vs_usual > 1.2)
    night = 1.0 * ((hour_ist < 5) | (hour_ist > 23))
    signal = np.column_stack([ato, social, mule, collect_scam])
    z = signal.sum(axis=1) + night
    intercept = _intercept_for_rate(z, fraud_rate)
    is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-(z + intercept)))
    typology = np.where(signal.max(axis=1) > 0, signal.argmax(axis=1), rng.integers(0, 4, n))
    fraud_type = np.where(is_fraud, np.asarray(FRAUD_TYPES, dtype=object)[typology], None)

    columns: dict[str, np.ndarray] = {
        "f_new_device": new_device,
        "f_payee_new_payers_24h": payee_new_payers_24h,
        "f_account_age_days": account_age_days,
        "f_hour_ist": hour_ist,
        "f_amount_vs_usual": amount_vs_usual,
        "f_failed_pin_1h": failed_pin_1h,
        "f_collect": collect,
        "f_velocity_1h": velocity_1h,
    }
    # The rest: noise of the usual shapes (counts, log amounts, ratios), some weakly correlated.
    for j in range(n_features - len(columns)):
        kind = j % 4
        if kind == 0:
            col = rng.poisson(2.0, n).astype(np.float64)
        elif kind == 1:
            col = np.log1p(amount_rupees) + rng.normal(0, 1.0, n)
        elif kind == 2:
            col = rng.beta(2, 5, n)
        else:
            col = 0.15 * z + rng.normal(0, 1.0, n)  # a faint linear echo of the signal
        columns[f"f_noise_{j:02d}"] = col
    feature_names = list(columns)
    frame = pl.DataFrame(
        {
            "transfer_id": pl.Series([f"T{i:010d}" for i in range(n)], dtype=pl.String),
            "created_at": pl.Series(created_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "payer_vpa": pl.Series([f"u{p}@okbank" for p in payer], dtype=pl.String),
            "amount_paise": pl.Series((amount_rupees * 100).astype(np.int64) + 100),
        }
    )
    # Unknowns as the feature engine gives them: nulls (account age of unregistered payers etc.).
    features = []
    for i, name in enumerate(feature_names):
        values = columns[name]
        null_share = 0.0 if i < 2 else (0.02 if i % 3 else 0.12)
        mask = rng.random(n) < null_share
        features.append(pl.Series(name, values, dtype=pl.Float64).set(pl.Series(mask), None))
    frame = frame.with_columns(features)

    labels = _labels(
        rng, frame, is_fraud, fraud_type, report_rate, report_delay_median_days, created_us
    )
    truth = pl.DataFrame(
        {
            "transfer_id": frame["transfer_id"],
            "is_fraud": pl.Series(is_fraud, dtype=pl.Boolean),
            "fraud_type": pl.Series(fraud_type.tolist(), dtype=pl.String),
        }
    )
    return SyntheticData(features=frame, labels=labels, truth=truth, feature_names=feature_names)


def _labels(
    rng: np.random.Generator,
    frame: pl.DataFrame,
    is_fraud: np.ndarray,
    fraud_type: np.ndarray,
    report_rate: float,
    delay_median_days: float,
    created_us: np.ndarray,
) -> pl.DataFrame:
    """Victim reports (most, days to weeks late), bank confirmations, a few genuine disputes."""
    fraud = np.flatnonzero(is_fraud)
    reported = fraud[rng.random(len(fraud)) < report_rate]
    delay = np.exp(rng.normal(np.log(delay_median_days), 1.0, len(reported)))
    banked = fraud[rng.random(len(fraud)) < 0.3]
    bank_delay = rng.uniform(5.0, 40.0, len(banked))
    legit = np.flatnonzero(~is_fraud & (rng.random(len(is_fraud)) < 0.001))
    legit_delay = rng.uniform(1.0, 20.0, len(legit))
    rows = np.concatenate([reported, banked, legit])
    delays = np.concatenate([delay, bank_delay, legit_delay])
    return pl.DataFrame(
        {
            "transfer_id": frame["transfer_id"].gather(rows),
            "label": ["FRAUD"] * (len(reported) + len(banked)) + ["LEGIT"] * len(legit),
            "fraud_type": pl.Series(fraud_type[rows].tolist(), dtype=pl.String),
            "source": ["VICTIM_REPORT"] * len(reported)
            + ["BANK_CONFIRMED"] * len(banked)
            + ["REVIEW_VERDICT"] * len(legit),
            "reported_at": pl.Series(
                created_us[rows] + (delays * _US_PER_DAY).astype(np.int64), dtype=pl.Int64
            ).cast(pl.Datetime("us", "UTC")),
        }
    ).sort("reported_at")


def _intercept_for_rate(z: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(z + b)) = rate, by bisection."""
    lo, hi = -30.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(z + mid)))) > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _epoch_us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
