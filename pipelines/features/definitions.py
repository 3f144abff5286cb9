"""The feature catalogue: every feature defined once, with its meaning in one line.

The engine (`pipelines.features.engine`) computes exactly these columns, in this order, for
batch training, backtests and the online decision API alike. Windows are half-open and end
strictly before the transfer: "24 h" means prior transfers with created_at in [t - 24 h, t).
Amounts are in rupees. Counts and sums over an empty history are 0; ratios, averages and
times-since with nothing to measure are null. Counts and 0/1 flags are Float32, exact and half
the memory; the rest are Float64 (`FEATURE_DTYPES`).

Label features and the label delay: a transfer's fraud is known from its first FRAUD label's
reported_at (taken as its created_at if reported earlier), so a feature of transfer t counts a
fraud only once it was reported strictly before t, about a transfer strictly before t. Labels
arrive days after the fraud (a week is typical): a window's reports are the frauds *reported*
in it, whenever they happened, and a window's fraud rate counts, among the transfers made in
it, those already reported; so the 1-day rate sees only the fastest reports, and every rate
is a lower bound of the true one that rises as reports come in.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

GROUPS = ("transfer", "payer", "payee", "pair", "device")


@dataclass(frozen=True)
class Feature:
    """One model input: its column name, whose history it reads, and what it means."""

    name: str
    group: str  # one of GROUPS
    meaning: str

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"feature {self.name}: group {self.group!r} is not one of {GROUPS}")
        if not self.meaning.strip():
            raise ValueError(f"feature {self.name}: meaning is empty")


def _windows(stem: str, group: str, meaning: str, windows: tuple[str, ...]) -> list[Feature]:
    return [Feature(f"{stem}_{w}", group, meaning.format(w=w)) for w in windows]


_PAYER_WINDOWS = ("5m", "1h", "24h", "7d", "30d")
LABEL_WINDOWS = ("1d", "7d", "30d")
# Whose transfers each family of label features reads, as the group's own words put it.
_LABEL_ENTITIES = {
    "payer": "the payer's transfers",
    "payee": "transfers to the payee",
    "device": "transfers made from the payer's device (any payer)",
}


def _label_recency(group: str) -> list[Feature]:
    """Recent fraud reports on an entity's transfers: reports in each window, the fraud rate
    of each window's transfers, days since the latest report (see the module docstring)."""
    whose = _LABEL_ENTITIES[group]
    return [
        *_windows(
            f"{group}_fraud_reports",
            group,
            f"{whose} whose fraud was first reported in the prior {{w}} (reports arrive days "
            "after the fraud: counts frauds reported, not made, in the window)",
            LABEL_WINDOWS,
        ),
        *_windows(
            f"{group}_fraud_rate",
            group,
            f"share of {whose} made in the prior {{w}} whose fraud was reported before the "
            "transfer (a lower bound: recent frauds are mostly not reported yet)",
            LABEL_WINDOWS,
        ),
        Feature(
            f"{group}_days_since_fraud_report",
            group,
            f"days since the latest first fraud report on {whose}, null if none",
        ),
    ]


FEATURES: tuple[Feature, ...] = (
    # --- the transfer itself
    Feature("amount_log", "transfer", "log1p of the amount in rupees"),
    Feature("payee_is_merchant", "transfer", "1 if the payee is a merchant (P2M), 0 for a person"),
    Feature("channel_chat", "transfer", "1 if paid to a contact in chat"),
    Feature("channel_qr", "transfer", "1 if paid by scanning a QR code"),
    Feature("channel_intent", "transfer", "1 if paid through a deep link from another app"),
    Feature("channel_collect", "transfer", "1 if a payee-initiated collect request"),
    Feature("hour_ist", "transfer", "hour of day of created_at in IST (0-23)"),
    Feature("is_night_ist", "transfer", "1 if created between 00:00 and 05:00 IST"),
    # --- the payer's own history (by payer_vpa)
    *_windows(
        "payer_count", "payer", "transfers the payer attempted in the prior {w}", _PAYER_WINDOWS
    ),
    *_windows(
        "payer_amount",
        "payer",
        "rupees the payer attempted to send in the prior {w} (any status)",
        _PAYER_WINDOWS,
    ),
    Feature(
        "payer_amount_ratio_median_30d",
        "payer",
        "amount / median of the payer's successful amounts in the prior 30d",
    ),
    Feature(
        "payer_amount_zscore_30d",
        "payer",
        "(amount - mean) / sample std of the payer's successful amounts in the prior 30d; "
        "null with fewer than 2 or all equal",
    ),
    Feature(
        "payer_hours_since_registration",
        "payer",
        "hours since the payer's latest REGISTERED event before the transfer",
    ),
    Feature(
        "payer_hours_since_device_bound",
        "payer",
        "hours since the payer's latest DEVICE_BOUND event before the transfer",
    ),
    Feature(
        "payer_hours_since_sim_change",
        "payer",
        "hours since the payer's latest SIM_CHANGED event before the transfer",
    ),
    Feature(
        "payer_hours_since_pin_reset",
        "payer",
        "hours since the payer's latest PIN_RESET event before the transfer",
    ),
    Feature(
        "payer_new_device",
        "payer",
        "1 if payer_device_id is on none of the payer's prior transfers (bind events ignored)",
    ),
    Feature(
        "payer_distinct_payees_24h", "payer", "distinct payees of the payer's prior-24h transfers"
    ),
    Feature(
        "payer_new_payee_share_24h",
        "payer",
        "share of the payer's prior-24h transfers that were its first to that payee",
    ),
    Feature(
        "payer_night_share_30d",
        "payer",
        "share of the payer's prior-30d transfers made 00:00-05:00 IST",
    ),
    Feature(
        "payer_failed_pin_24h",
        "payer",
        "the payer's prior-24h transfers that FAILED on PIN (ZM wrong PIN, Z6 tries exceeded)",
    ),
    Feature(
        "payer_failed_funds_24h",
        "payer",
        "the payer's prior-24h transfers that FAILED on insufficient funds (Z9)",
    ),
    # --- the payee's history (by payee_vpa)
    *_windows(
        "payee_distinct_payers",
        "payee",
        "distinct payers of the payee's prior-{w} inbound transfers (fan-in)",
        ("1h", "24h", "7d"),
    ),
    Feature(
        "payee_inbound_amount_24h",
        "payee",
        "rupees the payee received in successful transfers in the prior 24h",
    ),
    Feature(
        "payee_passthrough_24h",
        "payee",
        "rupees the payee sent successfully as a payer / rupees it received, prior 24h (mules)",
    ),
    Feature(
        "payee_account_age_hours",
        "payee",
        "hours since the payee's latest REGISTERED event, else since its first prior transfer",
    ),
    Feature(
        "payee_volume_spike",
        "payee",
        "payee's inbound count in the prior 24h / (its daily average over the 7d before + 1)",
    ),
    Feature(
        "payee_fraud_rate_reported",
        "payee",
        "payee_fraud_reports / (prior transfers to the payee + 10)",
    ),
    Feature(
        "payee_fraud_reports",
        "payee",
        "prior transfers to the payee with a FRAUD label reported before the transfer",
    ),
    Feature(
        "payee_decline_rate_7d",
        "payee",
        "share of the payee's prior-7d inbound transfers that FAILED",
    ),
    *_label_recency("payee"),
    Feature(
        "payee_new_payer_share_7d",
        "payee",
        "share of the payee's prior-7d inbound transfers that were the payer's first to it",
    ),
    Feature(
        "payee_amount_ratio_mean_30d",
        "payee",
        "amount / mean of the payee's successful inbound amounts in the prior 30d (its ticket)",
    ),
    # --- the (payer, payee) pair
    Feature("pair_prior_count", "pair", "prior transfers from this payer to this payee, ever"),
    Feature("pair_is_first", "pair", "1 if the payer never tried to pay this payee before"),
    Feature(
        "pair_amount_ratio_mean",
        "pair",
        "amount / mean amount of the pair's prior transfers (any status)",
    ),
    Feature("pair_days_since_last", "pair", "days since the pair's latest prior transfer"),
    # --- the payer's own fraud reports
    *_label_recency("payer"),
    # --- the payer's device (by payer_device_id), whoever pays from it
    *_label_recency("device"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
# Each entity's recent-report features (`_label_recency`), e.g. for an ablation of the family.
LABEL_RECENCY_FEATURES: dict[str, tuple[str, ...]] = {
    group: tuple(f.name for f in _label_recency(group)) for group in _LABEL_ENTITIES
}
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

# Counts and 0/1 flags are whole numbers: Float32 holds them exactly (below 2**24, far above
# any count here) in half the memory of Float64, which the other features keep.
WHOLE_NUMBER_FEATURES: frozenset[str] = frozenset(
    (
        "payee_is_merchant",
        "channel_chat",
        "channel_qr",
        "channel_intent",
        "channel_collect",
        "hour_ist",
        "is_night_ist",
        *(f"payer_count_{w}" for w in _PAYER_WINDOWS),
        "payer_new_device",
        "payer_distinct_payees_24h",
        "payer_failed_pin_24h",
        "payer_failed_funds_24h",
        *(f"payee_distinct_payers_{w}" for w in ("1h", "24h", "7d")),
        "payee_fraud_reports",
        "pair_prior_count",
        "pair_is_first",
        *(f"{g}_fraud_reports_{w}" for g in _LABEL_ENTITIES for w in LABEL_WINDOWS),
    )
)
if not set(FEATURE_NAMES) >= WHOLE_NUMBER_FEATURES:
    raise ValueError(f"not features: {sorted(WHOLE_NUMBER_FEATURES - set(FEATURE_NAMES))}")
FEATURE_DTYPES: dict[str, type[pl.DataType]] = {
    name: pl.Float32 if name in WHOLE_NUMBER_FEATURES else pl.Float64 for name in FEATURE_NAMES
}
