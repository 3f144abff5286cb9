"""What to simulate: the typed configuration, with defaults that run on one machine.

The fraud side is set per typology (`FRAUD_TYPES`): the mix of cases (any share may be 0, which
makes none of that typology), who reports them and how late, and how long the typologies that
turn last. A typology hold-out evaluation trains on worlds of one mix and these durations and
tests on a world with another mix, durations, fraud rate and seed.
"""

from __future__ import annotations

import datetime as dt
import math

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipelines.sandbox.simulator.codes import FRAUD_TYPES

# Share of fraud cases by type (relative weights), and how often each is reported by the victim
# or confirmed by the bank. The typologies that turn take modest shares; the others keep their
# earlier proportions.
_DEFAULT_MIX = {
    "ACCOUNT_TAKEOVER": 0.18,
    "SOCIAL_ENGINEERING": 0.24,
    "MULE": 0.27,
    "MERCHANT_FRAUD": 0.11,
    "COLLECT_SCAM": 0.10,
    "QR_SWAP": 0.04,
    "DORMANT_MULE": 0.03,
    "ATO_SAME_DEVICE": 0.03,
}
_DEFAULT_VICTIM_REPORT = {
    "ACCOUNT_TAKEOVER": 0.72,
    "SOCIAL_ENGINEERING": 0.62,
    "MULE": 0.35,
    "MERCHANT_FRAUD": 0.45,
    "COLLECT_SCAM": 0.60,
    # A customer who paid a swapped QR code got the goods: they hear of it from the shop, if ever.
    "QR_SWAP": 0.30,
    "DORMANT_MULE": 0.35,
    "ATO_SAME_DEVICE": 0.65,
}
_DEFAULT_BANK_CONFIRM = {
    "ACCOUNT_TAKEOVER": 0.30,
    "SOCIAL_ENGINEERING": 0.15,
    "MULE": 0.50,
    "MERCHANT_FRAUD": 0.40,
    "COLLECT_SCAM": 0.45,
    "QR_SWAP": 0.55,  # the merchant misses the money and complains to the bank
    "DORMANT_MULE": 0.50,
    "ATO_SAME_DEVICE": 0.30,
}
# Victims' report delay relative to `report_delay_median_days`: a drained account is noticed
# fast; a swapped QR code only once the shop finds its money missing.
_DEFAULT_REPORT_DELAY_FACTOR = {
    "ACCOUNT_TAKEOVER": 0.4,
    "SOCIAL_ENGINEERING": 1.0,
    "MULE": 1.0,
    "MERCHANT_FRAUD": 1.0,
    "COLLECT_SCAM": 1.0,
    "QR_SWAP": 1.8,
    "DORMANT_MULE": 1.0,
    "ATO_SAME_DEVICE": 0.5,
}
_PER_TYPE_DEFAULTS = {
    "victim_report_rate": _DEFAULT_VICTIM_REPORT,
    "bank_confirm_rate": _DEFAULT_BANK_CONFIRM,
    "report_delay_factor": _DEFAULT_REPORT_DELAY_FACTOR,
}


class SimulationConfig(BaseModel):
    """What to simulate; every field has a default that runs on one machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: int = Field(100_000, ge=100, description="people who will eventually register")
    merchants: int | None = Field(None, ge=20, description="default max(50, users // 40)")
    days: int = Field(30, ge=1, le=3660)
    start: dt.date = dt.date(2026, 1, 1)
    seed: int = 7
    fraud_rate: float = Field(0.004, ge=0.0, lt=0.2, description="fraud share of transfers")
    transfer_rate: float = Field(0.6, gt=0.0, description="transfers per active user per day")
    p2m_share_start: float = Field(0.35, ge=0.0, le=1.0)
    p2m_share_end: float = Field(0.55, ge=0.0, le=1.0)
    failure_rate: float = Field(0.06, ge=0.0, le=0.5, description="base legit failure rate")
    reversal_rate: float = Field(0.0012, ge=0.0, le=0.05, description="share of successes")
    bank_link_rate: float = Field(0.92, gt=0.0, le=1.0)
    mule_share: float = Field(0.0015, ge=0.0, le=0.05, description="share of users who are mules")
    # Demand for the app: a logistic S-curve over the period (midpoint and width as fractions).
    demand_midpoint: float = Field(0.38, ge=-1.0, le=2.0)
    demand_width: float = Field(0.12, gt=0.0, le=1.0)
    # User cap as (fraction of the period when it takes effect, fraction of `users`); the last
    # step at 1.0 is the cap lifted. Each raise rolls out over `cap_rollout_days`.
    cap_steps: tuple[tuple[float, float], ...] = ((0.0, 0.2), (0.25, 0.4), (0.5, 1.0))
    cap_rollout_days: float = Field(3.0, ge=0.0)
    typology_mix: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_MIX),
        description="relative share of fraud cases per type; a type left out or at 0 is not made",
    )
    # Per type; a type left out keeps its default.
    victim_report_rate: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_VICTIM_REPORT)
    )
    bank_confirm_rate: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_BANK_CONFIRM))
    report_delay_factor: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_REPORT_DELAY_FACTOR),
        description="victims' median report delay per type, relative to report_delay_median_days",
    )
    report_delay_median_days: float = Field(4.0, gt=0.0, description="victim reports")
    # How long the typologies that turn last, as (shortest, longest); each case draws within.
    qr_swap_days: tuple[float, float] = Field(
        (2.0, 6.0), description="days a merchant's QR code stays swapped"
    )
    dormancy_days: tuple[float, float] = Field(
        (10.0, 21.0), description="days a dormant mule's account was quiet before its fan-in"
    )
    ato_spree_hours: tuple[float, float] = Field(
        (0.5, 6.0),
        description="hours from the first to the last transfer of a same-device takeover",
    )
    max_report_delay_days: float = Field(60.0, gt=0.0)
    legit_label_rate: float = Field(0.0003, ge=0.0, le=0.1, description="disputes found genuine")
    max_rows_per_file: int = Field(1_000_000, ge=1_000)

    @field_validator(
        "typology_mix", "victim_report_rate", "bank_confirm_rate", "report_delay_factor"
    )
    @classmethod
    def _per_type(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        name = info.field_name
        unknown = sorted(set(value) - set(FRAUD_TYPES))
        if unknown:
            raise ValueError(
                f"{name}: unknown fraud types {unknown}; expected some of {list(FRAUD_TYPES)}"
            )
        top = 1.0 if name in ("victim_report_rate", "bank_confirm_rate") else math.inf
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= top}  # NaN fails too
        if bad:
            raise ValueError(f"{name}: values must be within [0, {top}], got {bad}")
        if name == "report_delay_factor" and any(v == 0.0 for v in value.values()):
            raise ValueError(f"{name}: factors must be > 0, got {value}")
        if name in _PER_TYPE_DEFAULTS:
            return {**_PER_TYPE_DEFAULTS[name], **value}
        return value

    @field_validator("qr_swap_days", "dormancy_days", "ato_spree_hours")
    @classmethod
    def _duration_range(
        cls, value: tuple[float, float], info: ValidationInfo
    ) -> tuple[float, float]:
        lo, hi = value
        if not 0.0 < lo <= hi < math.inf:
            raise ValueError(
                f"{info.field_name}: expected (shortest, longest) with 0 < shortest <= longest, "
                f"got {value}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if sum(self.typology_mix.values()) <= 0 and self.fraud_rate > 0:
            raise ValueError(
                "typology_mix: give some weight to a fraud type, or set fraud_rate to 0"
            )
        if not self.cap_steps or self.cap_steps[0][0] != 0.0:
            raise ValueError("cap_steps must start at fraction 0.0")
        at = [s[0] for s in self.cap_steps]
        caps = [s[1] for s in self.cap_steps]
        if at != sorted(at) or caps != sorted(caps) or min(caps) <= 0:
            raise ValueError("cap_steps must rise: increasing times and caps, caps > 0")
        return self

    @property
    def merchant_count(self) -> int:
        """Legit merchants simulated."""
        return self.merchants if self.merchants is not None else max(50, self.users // 40)

    @property
    def start_datetime(self) -> dt.datetime:
        """Start of the simulated period (midnight UTC)."""
        return dt.datetime.combine(self.start, dt.time(), tzinfo=dt.UTC)

    @property
    def end_datetime(self) -> dt.datetime:
        """End of the simulated period (exclusive)."""
        return self.start_datetime + dt.timedelta(days=self.days)

    def user_cap(self, moment: dt.datetime) -> int:
        """Registered users allowed at `moment` by the cap step in force (its rollout is below it)."""
        fraction = (moment - self.start_datetime) / dt.timedelta(days=self.days)
        cap = self.cap_steps[0][1]
        for at, step in self.cap_steps:
            if fraction >= at:
                cap = step
        return math.floor(min(cap, 1.0) * self.users)
