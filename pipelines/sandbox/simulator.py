"""Seeded UPI traffic simulator: ledger-v1 landing files plus a separate ground truth.

The same config and seed give byte-identical files. The population (onboarding, social graph,
merchants, account lifecycle) and every fraud case are planned up front; the bulk traffic is then
generated, vectorised, one UTC day at a time and written as it goes, so memory is bounded by a day.

Output:
    landing_dir/{transfers,accounts,labels}/date=YYYY-MM-DD/part-NNNNN.parquet  (ledger-v1)
    truth_dir/transfers.parquet   one row per transfer: is_fraud, fraud_type, case, reporting
    truth_dir/labels.parquet      every label, including those reported after the simulated end
    truth_dir/users.parquet       users, merchants and cash-out accounts with their fraud roles
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.ledger import contract as c

__all__ = ["SimulationConfig", "SimulationSummary", "simulate"]

# --- time ------------------------------------------------------------------------------------

SECOND = 1_000_000  # timestamps are int64 microseconds since the Unix epoch, UTC
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
HALF_HOUR = 30 * MINUTE
NEVER = np.iinfo(np.int64).max // 4  # "not in this lifetime", far enough from overflow
_IST_SHIFT_BINS = 11  # IST is UTC+5:30, i.e. eleven half-hour bins ahead

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


_P2P_CDF = _utc_cdf(_ist_profile(p2m=False))
_P2M_CDF = _utc_cdf(_ist_profile(p2m=True))
_NIGHT = np.zeros(48)
_NIGHT[np.r_[46:48, 0:8]] = 1.0  # 23:00-04:00 IST, when account takeovers drain accounts
_NIGHT_CDF = _utc_cdf(_NIGHT)

# Monday first. P2M is busier at weekends (shopping, eating out); P2P a little.
_WEEKDAY_P2P = (1.0, 0.97, 0.97, 0.98, 1.03, 1.08, 1.04)
_WEEKDAY_P2M = (0.94, 0.95, 0.96, 0.98, 1.05, 1.17, 1.12)

# --- codes (indices into the contract's tuples, so nothing is redefined) ----------------------

_CHANNEL = {name: i for i, name in enumerate(c.CHANNELS)}
CHAT, QR, INTENT, COLLECT = (_CHANNEL[k] for k in ("CHAT", "QR", "INTENT", "COLLECT"))
_STATUS = {name: i for i, name in enumerate(c.TRANSFER_STATUSES)}
PENDING, SUCCESS, FAILED, REVERSED = (
    _STATUS[k] for k in ("PENDING", "SUCCESS", "FAILED", "REVERSED")
)
_RC_CODES = tuple(c.NPCI_RESPONSE_CODES)
RC = {code: i for i, code in enumerate(_RC_CODES)}
_EVENT = {name: i for i, name in enumerate(c.ACCOUNT_EVENT_TYPES)}
REGISTERED, BANK_LINKED, DEVICE_BOUND, SIM_CHANGED, PIN_RESET, DEREGISTERED = (
    _EVENT[k]
    for k in (
        "REGISTERED",
        "BANK_LINKED",
        "DEVICE_BOUND",
        "SIM_CHANGED",
        "PIN_RESET",
        "DEREGISTERED",
    )
)
# Fraud type codes: 0 is legit, i + 1 is c.FRAUD_TYPES[i].
_FT = {name: i + 1 for i, name in enumerate(c.FRAUD_TYPES)}
ATO, SE, MULE, MF, CS = (
    _FT[k]
    for k in (
        "ACCOUNT_TAKEOVER",
        "SOCIAL_ENGINEERING",
        "MULE",
        "MERCHANT_FRAUD",
        "COLLECT_SCAM",
    )
)
_CASE_PREFIX = {ATO: "ATO", SE: "SE", MULE: "MULE", MF: "MF", CS: "CS"}
_CASE_SIZE = {ATO: 5, SE: 2, MULE: 14, MF: 30, CS: 10}  # typical transfers per case

# --- geography and identities -----------------------------------------------------------------

# (ISO 3166-2:IN, population in millions, UPI adoption relative to the national average)
_STATES = (
    ("IN-UP", 241, 0.8),
    ("IN-MH", 126, 1.4),
    ("IN-BR", 128, 0.6),
    ("IN-WB", 100, 0.9),
    ("IN-MP", 87, 0.85),
    ("IN-TN", 77, 1.2),
    ("IN-RJ", 81, 0.9),
    ("IN-KA", 68, 1.5),
    ("IN-GJ", 71, 1.2),
    ("IN-AP", 53, 1.2),
    ("IN-OR", 46, 0.8),
    ("IN-TG", 38, 1.5),
    ("IN-KL", 35, 1.1),
    ("IN-JH", 40, 0.7),
    ("IN-AS", 36, 0.7),
    ("IN-PB", 31, 1.0),
    ("IN-CT", 30, 0.8),
    ("IN-HR", 30, 1.2),
    ("IN-DL", 21, 1.6),
    ("IN-JK", 14, 0.8),
    ("IN-UT", 12, 1.0),
    ("IN-HP", 7.5, 1.0),
    ("IN-TR", 4.2, 0.8),
    ("IN-ML", 3.3, 0.7),
    ("IN-MN", 3.2, 0.7),
    ("IN-NL", 2.2, 0.7),
    ("IN-GA", 1.6, 1.4),
    ("IN-AR", 1.6, 0.7),
    ("IN-PY", 1.6, 1.1),
    ("IN-DH", 1.3, 1.0),
    ("IN-MZ", 1.2, 0.8),
    ("IN-CH", 1.2, 1.5),
    ("IN-SK", 0.7, 0.9),
    ("IN-AN", 0.4, 0.9),
    ("IN-LA", 0.3, 0.8),
    ("IN-LD", 0.07, 0.8),
)
_STATE_CODES = tuple(s[0] for s in _STATES)
_STATE_P = np.array([s[1] * s[2] for s in _STATES])
_STATE_P /= _STATE_P.sum()

# The app's partner-bank handles, other apps' handles (contacts not on the app yet, cash-out
# accounts) and acquirer handles for merchants.
_APP_HANDLES = (("wasbi", 0.36), ("wahdfcbank", 0.26), ("waicici", 0.22), ("waaxis", 0.16))
_OTHER_HANDLES = (
    ("ybl", 0.40),
    ("oksbi", 0.12),
    ("okhdfcbank", 0.08),
    ("okicici", 0.07),
    ("okaxis", 0.06),
    ("paytm", 0.15),
    ("ibl", 0.06),
    ("axl", 0.06),
)
_MERCHANT_HANDLES = (("wabizaxis", 0.3), ("wabizhdfc", 0.2), ("ybl", 0.3), ("paytm", 0.2))

# fmt: off
_FIRST_NAMES = (
    "aarav", "aditi", "aditya", "akash", "amit", "ananya", "anil", "anita", "anjali", "ankit",
    "arjun", "aryan", "asha", "deepak", "deepika", "divya", "gaurav", "geeta", "harish", "ishaan",
    "jaya", "karan", "kavita", "kiran", "krishna", "lakshmi", "mahesh", "manish", "meena",
    "mohan", "neha", "nikhil", "pooja", "pradeep", "prakash", "priya", "rahul", "raj", "rajesh",
    "ramesh", "ravi", "rekha", "rohit", "sachin", "sanjay", "santosh", "sarita", "shreya",
    "shweta", "sneha", "sunil", "sunita", "suresh", "swati", "tanvi", "uma", "varun", "vijay",
    "vikram", "vinod", "vivek", "yash", "abdul", "farhan", "imran", "salma", "ayesha", "zoya",
    "harpreet", "gurpreet", "manpreet", "simran", "joseph", "mary", "thomas", "anand", "balaji",
    "murugan", "selvi", "venkatesh", "srinivas", "lavanya", "bhavna", "hemant", "jitendra",
    "kamal", "lalit", "naveen", "omprakash", "pankaj", "rinku", "sonu", "chandan", "dinesh",
    "ganesh", "irfan", "kunal", "madhu", "nandini", "parveen", "rupa", "saurabh", "tarun", "usha",
    "vandana"
)
_SURNAMES = (
    "sharma", "verma", "singh", "kumar", "yadav", "patel", "shah", "gupta", "reddy", "nair",
    "iyer", "das", "ghosh", "mishra", "pandey", "jain", "khan", "ali", "joshi", "mehta", "rao",
    "naidu", "pillai", "mukherjee", "chauhan", "thakur", "gill", "sandhu", "biswas", "sahu",
    "patil", "kulkarni", "desai", "menon"
)
# fmt: on

# --- merchant categories ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Mcc:
    """A merchant category: how many merchants, how much traffic, and what its payments look like."""

    code: str
    merchant_share: float
    volume_share: float
    national: bool  # a few big national merchants rather than many local shops
    median_rupees: float
    sigma: float
    rounding: tuple[float, float, float]  # share rounded to ₹100, to ₹10, with paise; rest ₹1
    channels: tuple[float, float, float]  # QR, INTENT, COLLECT
    favourite: float  # share of payments that go to one of the payer's regular merchants
    stems: tuple[str, ...]


# fmt: off
_MCC_ROWS = (
    # mcc, merchants, volume, national, median ₹, sigma, rounding (₹100, ₹10, paise),
    # channels (QR, INTENT, COLLECT), regulars, VPA stems
    ("5411", .24, .22, False, 230, .85, (.05, .30, .08), (.90, .10, 0), .80, ("kirana", "supermart", "generalstore", "provisions")),
    ("5812", .11, .10, False, 380, .75, (.05, .35, .05), (.85, .15, 0), .45, ("dhaba", "restaurant", "biryanihouse", "cafe")),
    ("5814", .09, .08, False, 90, .70, (0, .45, 0), (.95, .05, 0), .70, ("chaistall", "snacks", "juicecentre", "tiffins")),
    ("5499", .07, .045, False, 140, .75, (.02, .35, 0), (.93, .07, 0), .70, ("sweets", "dairy", "bakery", "fruits")),
    ("4814", .004, .08, True, 299, 0, (0, 0, 0), (.10, .72, .18), .95, ("recharge", "mobilepay", "prepaid")),
    ("4900", .008, .04, False, 1300, .70, (0, .05, .85), (.10, .60, .30), .95, ("powerbill", "electricity", "waterboard", "gasbill")),
    ("5541", .05, .07, False, 450, .60, (.55, .15, .10), (.90, .10, 0), .70, ("fuelstation", "petrolpump", "fillingstation")),
    ("5912", .06, .055, False, 320, .80, (.02, .20, .25), (.90, .10, 0), .65, ("medicals", "pharmacy", "chemist")),
    ("5651", .06, .04, False, 1100, .80, (.10, .40, 0), (.85, .15, 0), .30, ("fashion", "garments", "textiles", "boutique")),
    ("5732", .03, .015, False, 3500, 1.0, (.15, .30, 0), (.75, .25, 0), .20, ("electronics", "mobiles", "digital")),
    ("5399", .004, .10, True, 700, 1.0, (0, .15, .30), (.10, .75, .15), .60, ("shoponline", "megamart", "dealstore")),
    ("4121", .004, .06, True, 210, .60, (0, .10, 0), (.25, .75, 0), .85, ("cabs", "autoride", "bikeride")),
    ("4111", .004, .02, False, 45, .50, (0, .60, 0), (.80, .20, 0), .95, ("metro", "transit", "busticket")),
    ("8220", .02, .012, False, 9000, 1.0, (.40, .30, 0), (.35, .50, .15), .90, ("school", "academy", "college", "coaching")),
    ("8062", .02, .015, False, 2500, 1.2, (.20, .30, .10), (.70, .25, .05), .60, ("hospital", "clinic", "nursinghome", "diagnostics")),
    ("6300", .003, .01, True, 6000, .90, (0, .10, .50), (.05, .55, .40), .95, ("insurance", "lifecover", "healthcover")),
    ("7011", .01, .005, False, 3000, .80, (.20, .40, 0), (.60, .40, 0), .10, ("hotel", "residency", "lodge")),
    ("4722", .004, .008, True, 4500, 1.0, (0, .20, .30), (.10, .85, .05), .50, ("travels", "tours", "holidays")),
    ("6211", .002, .01, True, 5000, 1.3, (.60, .20, 0), (.05, .80, .15), .95, ("securities", "broking", "invest")),
    ("5999", .07, .03, False, 400, .90, (.05, .35, 0), (.88, .12, 0), .40, ("store", "traders", "enterprises", "agencies")),
)
# fmt: on
_MCCS = tuple(_Mcc(*row) for row in _MCC_ROWS)
_MCC_CODES = (c.PERSON_MCC, *(m.code for m in _MCCS))  # party mcc index 0 is a person
_MCC_IDX = {m.code: i for i, m in enumerate(_MCCS)}
_MCC_VOLUME = np.array([m.volume_share for m in _MCCS])
_MCC_VOLUME /= _MCC_VOLUME.sum()
_MCC_MEDIAN = np.array([m.median_rupees for m in _MCCS])
_MCC_SIGMA = np.array([m.sigma for m in _MCCS])
_MCC_ROUNDING = np.cumsum(np.array([m.rounding for m in _MCCS]), axis=1)
_MCC_CHANNEL_CDF = np.cumsum(np.array([m.channels for m in _MCCS]), axis=1)
_MCC_CHANNEL_CDF /= _MCC_CHANNEL_CDF[:, -1:]
_MCC_FAVOURITE = np.array([m.favourite for m in _MCCS])
_MCC_LOCAL = np.array([not m.national for m in _MCCS])
_MCC_LIMIT = np.array(
    [c.P2M_LIMIT_PAISE if m.code in c.P2M_HIGH_LIMIT_MCCS else c.P2P_LIMIT_PAISE for m in _MCCS],
    dtype=np.int64,
)
_TELECOM = _MCC_IDX["4814"]
_PLAN_RUPEES = np.array([19, 29, 155, 199, 239, 249, 299, 349, 479, 666, 719, 839, 859, 2999, 3599])
_PLAN_P = np.array([3, 2, 6, 10, 10, 8, 12, 8, 10, 6, 8, 5, 4, 3, 1], dtype=np.float64)
_PLAN_P /= _PLAN_P.sum()
_STOREFRONT_RUPEES = np.array([299, 399, 499, 599, 799, 999, 1299, 1499, 1999, 2499, 2999, 4999])

# --- notes ------------------------------------------------------------------------------------

_P2P_NOTES = (
    "rent",
    "dinner",
    "lunch",
    "chai",
    "petrol",
    "movie",
    "groceries",
    "thanks",
    "bday gift",
    "shagun",
    "loan",
    "return",
    "milk",
    "fees",
    "trip",
    "cab",
    "electricity",
    "for maa",
    "party",
    "emi",
    "gift",
    "kharcha",
    "🙏",
    "sabzi",
    "maid salary",
    "recharge",
)
_P2M_NOTES = ("order", "bill", "payment", "advance", "balance")
_SE_NOTES = (
    "refund",
    "cashback",
    "kyc update",
    "receive money",
    "prize claim",
    "customer care",
    "olx payment",
    "army officer advance",
    "processing fee",
    "verification",
)
_CS_NOTES = ("electricity bill pending", "kyc verification", "refund", "cashback credit")
_MULE_NOTES = ("task payment", "investment", "part time job", "trading deposit")
_NOTES = (None, *_P2P_NOTES, *_P2M_NOTES, *_SE_NOTES, *_CS_NOTES, *_MULE_NOTES)
_NOTE_BASE = {}
_i = 1
for _name, _group in (
    ("p2p", _P2P_NOTES),
    ("p2m", _P2M_NOTES),
    ("se", _SE_NOTES),
    ("cs", _CS_NOTES),
    ("mule", _MULE_NOTES),
):
    _NOTE_BASE[_name] = (_i, len(_group))
    _i += len(_group)
del _i, _name, _group

# Lookup series: gathering from these turns code arrays into contract strings; index 0 is null
# where the field is optional.
_S_CHANNEL = pl.Series(c.CHANNELS, dtype=pl.String)
_S_STATUS = pl.Series(c.TRANSFER_STATUSES, dtype=pl.String)
_S_RC = pl.Series([None, *_RC_CODES], dtype=pl.String)
_S_NOTE = pl.Series(_NOTES, dtype=pl.String)
_S_STATE = pl.Series([None, *_STATE_CODES], dtype=pl.String)
_S_MCC = pl.Series(_MCC_CODES, dtype=pl.String)
_S_PAYEE_TYPE = pl.Series(c.PAYEE_TYPES, dtype=pl.String)
_S_EVENT = pl.Series(c.ACCOUNT_EVENT_TYPES, dtype=pl.String)
_S_LABEL = pl.Series(c.LABELS, dtype=pl.String)
_S_SOURCE = pl.Series(c.LABEL_SOURCES, dtype=pl.String)
_S_FTYPE = pl.Series([None, *c.FRAUD_TYPES], dtype=pl.String)
assert c.PAYEE_TYPES == ("PERSON", "MERCHANT")  # is_merchant (0/1) indexes it
_FRAUD_LABEL, _LEGIT_LABEL = c.LABELS.index("FRAUD"), c.LABELS.index("LEGIT")
_VICTIM, _BANK, _REVIEW = (
    c.LABEL_SOURCES.index(s) for s in ("VICTIM_REPORT", "BANK_CONFIRMED", "REVIEW_VERDICT")
)

# Legit failures: (code, share when the amount is small, share when it is over ₹2,000).
_FAIL_CODES = (
    ("Z9", 0.32, 0.45),
    ("U30", 0.20, 0.17),
    ("ZM", 0.19, 0.15),
    ("Z8", 0.03, 0.06),
    ("Z6", 0.02, 0.02),
    ("Z7", 0.03, 0.02),
    ("K1", 0.03, 0.04),
    ("ZI", 0.02, 0.02),
    ("U16", 0.04, 0.05),
    ("XH", 0.03, 0.02),
)
_FAIL_IDX = np.array([RC[f[0]] for f in _FAIL_CODES])
_FAIL_CDF_SMALL = np.cumsum([f[1] for f in _FAIL_CODES]) / sum(f[1] for f in _FAIL_CODES)
_FAIL_CDF_LARGE = np.cumsum([f[2] for f in _FAIL_CODES]) / sum(f[2] for f in _FAIL_CODES)
_COLLECT_FAIL_IDX = np.array([RC["ZA"], RC["U69"], RC["Z9"], RC["U30"]])
_COLLECT_FAIL_CDF = np.cumsum([0.50, 0.35, 0.08, 0.07])
_RETRY_P = {"ZM": 0.65, "U30": 0.5, "Z9": 0.25, "XH": 0.1}
_NEW_USER_LIMIT_PAISE = 500_000  # NPCI: ₹5,000 in the first 24 h after a new UPI registration

# --- public API -------------------------------------------------------------------------------

_DEFAULT_MIX = {
    "ACCOUNT_TAKEOVER": 0.20,
    "SOCIAL_ENGINEERING": 0.27,
    "MULE": 0.30,
    "MERCHANT_FRAUD": 0.12,
    "COLLECT_SCAM": 0.11,
}
_DEFAULT_VICTIM_REPORT = {
    "ACCOUNT_TAKEOVER": 0.72,
    "SOCIAL_ENGINEERING": 0.62,
    "MULE": 0.35,
    "MERCHANT_FRAUD": 0.45,
    "COLLECT_SCAM": 0.60,
}
_DEFAULT_BANK_CONFIRM = {
    "ACCOUNT_TAKEOVER": 0.30,
    "SOCIAL_ENGINEERING": 0.15,
    "MULE": 0.50,
    "MERCHANT_FRAUD": 0.40,
    "COLLECT_SCAM": 0.45,
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
    typology_mix: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_MIX))
    victim_report_rate: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_VICTIM_REPORT)
    )
    bank_confirm_rate: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_BANK_CONFIRM))
    report_delay_median_days: float = Field(4.0, gt=0.0, description="victim reports")
    max_report_delay_days: float = Field(60.0, gt=0.0)
    legit_label_rate: float = Field(0.0003, ge=0.0, le=0.1, description="disputes found genuine")
    max_rows_per_file: int = Field(1_000_000, ge=1_000)

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        for name in ("typology_mix", "victim_report_rate", "bank_confirm_rate"):
            value = getattr(self, name)
            unknown = set(value) - set(c.FRAUD_TYPES)
            if unknown:
                raise ValueError(f"{name}: unknown fraud types {sorted(unknown)}")
            top = math.inf if name == "typology_mix" else 1.0
            if any(not 0.0 <= v <= top for v in value.values()):
                raise ValueError(f"{name}: values must be within [0, {top}]")
        if sum(self.typology_mix.values()) <= 0 and self.fraud_rate > 0:
            raise ValueError("typology_mix must give some weight to a fraud type")
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


@dataclass
class SimulationSummary:
    """What a run produced: row counts per stream, ground-truth frauds, files and seconds."""

    transfers: int
    transfer_events: int
    account_events: int
    labels: int
    frauds: int
    files: int
    seconds: float
    registered_users: int = 0
    labels_not_yet_reported: int = 0


def simulate(
    config: SimulationConfig,
    landing_dir: Path,
    truth_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Simulate `config`, write landing streams day by day and ground truth; return counts."""
    t_start = time.perf_counter()
    landing_dir, truth_dir = Path(landing_dir), Path(truth_dir)
    for name in c.STREAMS:
        existing = landing_dir / name
        if existing.exists() and any(existing.rglob("*.parquet")):
            # Landed files are immutable by contract: never overwrite or mix runs.
            raise FileExistsError(f"{existing} already holds parquet files; use an empty dir")
    truth_dir.mkdir(parents=True, exist_ok=True)

    world = _World(config)
    run = _Run(world, landing_dir, truth_dir)
    for d in range(config.days):
        run.day(d)
        if progress is not None:
            progress(d + 1, config.days)
    run.close()

    s = run.stats
    return SimulationSummary(
        transfers=s["transfers"],
        transfer_events=s["transfer_events"],
        account_events=int(s["account_events"]),
        labels=s["labels"],
        frauds=s["frauds"],
        files=s["files"],
        seconds=round(time.perf_counter() - t_start, 3),
        registered_users=int((world.pop.reg < world.end_us).sum()),
        labels_not_yet_reported=s["labels_future"],
    )


# --- helpers ----------------------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per component and day, so output does not depend on chunking."""
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, *stream])


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_uniform(salt: int, *parts: np.ndarray) -> np.ndarray:
    """A uniform in [0, 1) fixed by its inputs: a payer's regular shop without storing it."""
    h = np.full(len(parts[0]), salt & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    for p in parts:
        h = _splitmix(h ^ p.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _encode(values: np.ndarray, alphabet: bytes, width: int, prefix: bytes = b"") -> pl.Series:
    """Fixed-width strings of `values` in base len(alphabet), without a Python loop per value."""
    v = np.asarray(values).astype(np.uint64)
    lut = np.frombuffer(alphabet, dtype=np.uint8)
    base = np.uint64(len(alphabet))
    out = np.empty((len(v), len(prefix) + width), dtype=np.uint8)
    if prefix:
        out[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    for i in range(len(prefix) + width - 1, len(prefix) - 1, -1):
        out[:, i] = lut[v % base]
        v = v // base
    return pl.Series(out.view(f"S{out.shape[1]}").ravel()).cast(pl.String)


_B36 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HEX = b"0123456789abcdef"


def _timestamps(us: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(us, dtype=np.int64)).cast(c.TIMESTAMP)


def _sample_in_day(rng: np.random.Generator, n: int, cdf: np.ndarray, day_start: int) -> np.ndarray:
    """`n` event times in the UTC day from `day_start`, following a half-hourly profile."""
    b = np.searchsorted(cdf, rng.random(n), side="right")
    return day_start + b * HALF_HOUR + (rng.random(n) * HALF_HOUR).astype(np.int64)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


def _round_p2p(rng: np.random.Generator, rupees: np.ndarray) -> np.ndarray:
    """People send whole hundreds, tens or rupees; never paise."""
    u = rng.random(len(rupees))
    r100 = np.maximum(np.round(rupees / 100), 1) * 100
    r10 = np.maximum(np.round(rupees / 10), 1) * 10
    r1 = np.maximum(np.round(rupees), 1)
    big = np.where(u < 0.55, r100, np.where(u < 0.8, r10, r1))
    small = np.where(u < 0.5, r10, r1)
    return np.where(rupees >= 200, big, small).astype(np.int64) * 100


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write atomically so a reader globbing *.parquet never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    os.replace(tmp, path)


def _cdf_choice(rng: np.random.Generator, cdf_rows: np.ndarray) -> np.ndarray:
    """One categorical draw per row, each row with its own cumulative distribution."""
    u = rng.random(len(cdf_rows))[:, None]
    return np.minimum((u >= cdf_rows).sum(axis=1), cdf_rows.shape[1] - 1)


def _choice(rng: np.random.Generator, n: int, p: tuple[float, ...] | np.ndarray) -> np.ndarray:
    cdf = np.cumsum(np.asarray(p, dtype=np.float64))
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(n), side="right")


# --- the world: population, graph, merchants, accounts, fraud plan ----------------------------


@dataclass
class _Population:
    """Every person who may register, as parallel arrays indexed by user number."""

    n: int
    state: np.ndarray  # int16 index into _STATE_CODES
    reg: np.ndarray  # registration time, NEVER if not within the period
    link: np.ndarray  # bank linked (can pay from then on)
    dereg: np.ndarray
    dev_change: np.ndarray  # when a new own device was bound
    sim_change: np.ndarray  # legit SIM swap (new SIM, port), NEVER if none
    pin_reset: np.ndarray
    dev0: np.ndarray  # device-table index before dev_change
    dev1: np.ndarray
    activity: np.ndarray  # relative transfer rate, mean 1
    amount_scale: np.ndarray  # relative spend, median 1
    is_mule: np.ndarray
    contact_off: np.ndarray  # CSR social graph: contacts of u are contacts[off[u]:off[u+1]]
    contacts: np.ndarray
    link_order: np.ndarray  # users by bank-link time, to pick someone able to pay at t
    link_sorted: np.ndarray
    mules: np.ndarray  # mule users by bank-link time
    mule_link: np.ndarray


@dataclass
class _Merchants:
    """Legit merchants and a grouped cumulative table to pick them by (category, state)."""

    n: int
    mcc: np.ndarray  # index into _MCCS
    state: np.ndarray
    seg_lo: np.ndarray  # group g's members span [g, g + 1): start of each member's share
    seg_member: np.ndarray
    local_group: np.ndarray  # (mcc, state) -> group, -1 if no such merchant
    national_group: np.ndarray  # mcc -> group over all its merchants


class _World:
    """Everything planned before the first day is written."""

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.start_us = int(cfg.start_datetime.timestamp()) * SECOND
        self.end_us = self.start_us + cfg.days * DAY
        self.pop = self._population(_rng(cfg.seed, 0))
        self.merch = self._merchants(_rng(cfg.seed, 1))
        self.other_base = self.pop.n  # other-app VPA of user u is party n + u
        self.merchant_base = 2 * self.pop.n
        self.extra_base = self.merchant_base + self.merch.n
        self.expected = self._expected_volume()
        self.accounts = self._account_events(_rng(cfg.seed, 2))
        self.plan = _FraudPlanner(self, _rng(cfg.seed, 3)).run()
        self._merge_fraud_account_events()
        self._parties(_rng(cfg.seed, 4))
        self.devices = self._devices()

    # population ---------------------------------------------------------------------------

    def _registration_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Queue positions in an S-curve of demand, clipped by the user cap on a 30-min grid."""
        cfg = self.cfg
        steps = cfg.days * 48
        # Demand builds while people are awake: "activity time" advances with the profile.
        w = np.diff(np.concatenate([[0.0], _P2P_CDF]))
        tau = np.concatenate([[0.0], np.cumsum(np.tile(w, cfg.days))])
        x = tau / cfg.days

        def logistic(v: np.ndarray | float) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-(np.asarray(v) - cfg.demand_midpoint) / cfg.demand_width))

        l0 = logistic(0.0)
        demand = (logistic(x) - l0) / (1.0 - l0)
        # The cap is on wall-clock time; each raise rolls out linearly so servers keep up.
        grid_days = np.arange(steps + 1) / 48.0
        cap = np.full(steps + 1, cfg.cap_steps[0][1])
        for (_, prev), (at, step) in zip(cfg.cap_steps, cfg.cap_steps[1:], strict=False):
            # Snap to the grid so no one registers under a raise before it takes effect.
            begin = math.ceil(at * cfg.days * 48 - 1e-9) / 48
            ramp = np.clip((grid_days - begin) / max(cfg.cap_rollout_days, 1e-9), 0.0, 1.0)
            cap += (step - prev) * ramp * (grid_days >= begin)
        registered = np.maximum.accumulate(n * np.minimum(demand, np.minimum(cap, 1.0)))
        target = np.arange(1, n + 1, dtype=np.float64)
        k = np.searchsorted(registered, target, side="left")
        ok = k <= steps
        kk = np.clip(k, 1, steps)
        lo, hi = registered[kk - 1], registered[kk]
        frac = np.where(hi > lo, (target - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
        times = self.start_us + ((kk - 1 + frac) * HALF_HOUR).astype(np.int64)
        times = np.where(ok, times, NEVER)
        reg = np.empty(n, dtype=np.int64)
        reg[rng.permutation(n)] = times
        return reg

    def _population(self, rng: np.random.Generator) -> _Population:
        cfg = self.cfg
        n = cfg.users
        end = self.end_us
        months = cfg.days / 30.0
        state = _choice(rng, n, _STATE_P).astype(np.int16)
        reg = self._registration_times(rng, n)
        registered = reg < end

        fast = rng.random(n) < 0.65
        delay = np.where(
            fast,
            _lognormal(rng, 4 * MINUTE, 0.9, n),
            _lognormal(rng, 20 * HOUR, 1.1, n),
        )
        delay = np.clip(delay, 20 * SECOND, 20 * DAY).astype(np.int64)
        linked = registered & (rng.random(n) < cfg.bank_link_rate)
        link = np.where(linked, reg + delay, NEVER)
        link = np.where(link < end, link, NEVER)
        active = link < end

        def later(p: float) -> tuple[np.ndarray, np.ndarray]:
            """Which linked users have an event with probability p, and when (after linking)."""
            has = active & (rng.random(n) < p)
            span = np.maximum(end - link, 1).astype(np.float64)
            t = link + (rng.random(n) * span).astype(np.int64)
            # Keep the date but move the time of day into waking hours.
            day0 = self.start_us + (t - self.start_us) // DAY * DAY
            waking = day0 + (
                np.searchsorted(_P2P_CDF, rng.random(n), side="right") * HALF_HOUR
                + (rng.random(n) * HALF_HOUR).astype(np.int64)
            )
            t = np.where((waking > link) & (waking < end), waking, t)
            return has, np.where(has, t, NEVER)

        # Monthly rates: a new phone 3%, a new SIM 1.2%, a forgotten PIN 2%, leaving 0.4%.
        _, dev_change = later(0.03 * months)
        _, sim_change = later(0.012 * months)
        _, pin_reset = later(0.02 * months)

        mule_candidates = np.flatnonzero(active & (link < end - 3 * DAY))
        n_mules = min(len(mule_candidates), max(8, round(n * cfg.mule_share)))
        mules = np.sort(rng.choice(mule_candidates, n_mules, replace=False))
        is_mule = np.zeros(n, dtype=bool)
        is_mule[mules] = True
        _, dereg = later(0.004 * months)
        dereg = np.where(is_mule, NEVER, dereg)

        dev0 = np.arange(n, dtype=np.int64)
        dev1 = np.arange(n, 2 * n, dtype=np.int64)
        # Mule herders run several accounts from one phone.
        if len(mules) > 1:
            share = rng.random(len(mules)) < 0.3
            dev0[mules[share]] = dev0[rng.choice(mules, int(share.sum()))]

        activity = np.clip(rng.gamma(0.6, 1 / 0.6, n), 0.02, 15.0)
        amount_scale = np.exp(0.45 * rng.standard_normal(n))

        # Social graph: power-law number of contacts, 80% in one's own state.
        deg = np.minimum(1 + np.floor(rng.pareto(1.7, n) * 4), 150).astype(np.int64)
        off = np.concatenate([[0], np.cumsum(deg)])
        owner = np.repeat(np.arange(n, dtype=np.int64), deg)
        by_state = np.argsort(state, kind="stable")
        counts = np.bincount(state, minlength=len(_STATE_CODES))
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        s = state[owner]
        same = by_state[first[s] + (rng.random(len(owner)) * counts[s]).astype(np.int64)]
        anyone = rng.integers(0, n, len(owner))
        contacts = np.where(rng.random(len(owner)) < 0.8, same, anyone)
        contacts = np.where(contacts == owner, (contacts + 1) % n, contacts)

        order = np.argsort(link, kind="stable")
        mule_order = mules[np.argsort(link[mules], kind="stable")]
        return _Population(
            n=n,
            state=state,
            reg=np.where(registered, reg, NEVER),
            link=link,
            dereg=dereg,
            dev_change=dev_change,
            sim_change=sim_change,
            pin_reset=pin_reset,
            dev0=dev0,
            dev1=dev1,
            activity=activity,
            amount_scale=amount_scale,
            is_mule=is_mule,
            contact_off=off,
            contacts=contacts.astype(np.int64),
            link_order=order,
            link_sorted=link[order],
            mules=mule_order,
            mule_link=link[mule_order],
        )

    def _merchants(self, rng: np.random.Generator) -> _Merchants:
        n = self.cfg.merchant_count
        shares = np.array([m.merchant_share for m in _MCCS])
        counts = np.maximum(np.where(_MCC_LOCAL, 1, 2), np.round(n * shares / shares.sum()))
        counts = counts.astype(np.int64)
        counts[0] += max(n - counts.sum(), 1 - counts[0])  # groceries absorb the rounding
        n = int(counts.sum())
        mcc = np.repeat(np.arange(len(_MCCS)), counts)
        state = _choice(rng, n, _STATE_P).astype(np.int16)
        # Local shops: lognormal popularity. National billers: a few giants (Zipf).
        weight = np.exp(1.0 * rng.standard_normal(n))
        for i in np.flatnonzero(~_MCC_LOCAL):
            members = np.flatnonzero(mcc == i)
            weight[members] = 1.0 / np.arange(1, len(members) + 1) ** 1.1

        n_states = len(_STATE_CODES)
        local_group = np.full((len(_MCCS), n_states), -1, dtype=np.int64)
        national_group = np.empty(len(_MCCS), dtype=np.int64)
        seg_lo: list[np.ndarray] = []
        seg_member: list[np.ndarray] = []
        g = 0

        def add_group(members: np.ndarray) -> None:
            w = weight[members]
            seg_lo.append(g + np.concatenate([[0.0], np.cumsum(w)[:-1]]) / w.sum())
            seg_member.append(members)

        for i in range(len(_MCCS)):
            members = np.flatnonzero(mcc == i)
            add_group(members)
            national_group[i] = g
            g += 1
            if _MCC_LOCAL[i]:
                for s in np.unique(state[members]):
                    add_group(members[state[members] == s])
                    local_group[i, s] = g
                    g += 1
        return _Merchants(
            n=n,
            mcc=mcc,
            state=state,
            seg_lo=np.concatenate(seg_lo),
            seg_member=np.concatenate(seg_member),
            local_group=local_group,
            national_group=national_group,
        )

    # volume --------------------------------------------------------------------------------

    def day_weights(self, day_start: int) -> np.ndarray:
        """Each user's expected share of the day's traffic: activity x time able to pay x ramp."""
        pop = self.pop
        day_end = day_start + DAY
        lo = np.maximum(pop.link, day_start)
        hi = np.minimum(pop.dereg, day_end)
        frac = np.clip((hi - lo) / DAY, 0.0, 1.0)
        # New users find their feet over their first week or two.
        tenure = np.maximum(day_end - pop.link, 0) / DAY
        ramp = 1.0 - 0.5 * np.exp(-tenure / 7.0)
        return pop.activity * frac * ramp

    def p2m_share(self, d: int) -> float:
        """Share of P2M before weekday effects: rises linearly over the period."""
        cfg = self.cfg
        return cfg.p2m_share_start + (cfg.p2m_share_end - cfg.p2m_share_start) * (
            d / max(cfg.days - 1, 1)
        )

    def _expected_volume(self) -> np.ndarray:
        """Expected legit (P2P, P2M) transfers per day, before retries."""
        cfg = self.cfg
        out = np.zeros((cfg.days, 2))
        for d in range(cfg.days):
            date = cfg.start + dt.timedelta(days=d)
            w = self.day_weights(self.start_us + d * DAY).sum()
            share = self.p2m_share(d)
            salary = date.day <= 5  # salaries land at the start of the month
            f_p2p = _WEEKDAY_P2P[date.weekday()] * (1.15 if salary else 1.0)
            f_p2m = _WEEKDAY_P2M[date.weekday()] * (1.06 if salary else 1.0)
            out[d, 0] = cfg.transfer_rate * w * (1.0 - share) * f_p2p
            out[d, 1] = cfg.transfer_rate * w * share * f_p2m
        return out

    # accounts ------------------------------------------------------------------------------

    def _account_events(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Lifecycle events of every user as parallel arrays (user, time, type, device)."""
        pop = self.pop
        n = pop.n
        users = np.arange(n, dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]] = []

        def add(mask: np.ndarray, t: np.ndarray, kind: int, device: np.ndarray | None) -> None:
            dev = np.full(n, -1, dtype=np.int64) if device is None else device
            parts.append((users[mask], t[mask], kind, dev[mask]))

        registered = pop.reg < self.end_us
        add(registered, pop.reg, REGISTERED, None)
        bound = pop.reg + np.clip(_lognormal(rng, 25 * SECOND, 0.6, n), 3 * SECOND, 10 * MINUTE)
        add(registered, bound.astype(np.int64), DEVICE_BOUND, pop.dev0)
        add(pop.link < self.end_us, pop.link, BANK_LINKED, pop.dev0)
        add(pop.dev_change < self.end_us, pop.dev_change, DEVICE_BOUND, pop.dev1)
        has_sim = pop.sim_change < self.end_us
        add(has_sim, pop.sim_change, SIM_CHANGED, None)
        # After a SIM swap UPI makes the user re-bind, usually on the same phone.
        rebind = pop.sim_change + _lognormal(rng, 5 * MINUTE, 0.7, n).astype(np.int64)
        own = np.where(rebind >= pop.dev_change, pop.dev1, pop.dev0)
        add(has_sim & (rebind < self.end_us), rebind, DEVICE_BOUND, own)
        add(pop.pin_reset < self.end_us, pop.pin_reset, PIN_RESET, None)
        add(pop.dereg < self.end_us, pop.dereg, DEREGISTERED, None)
        user = np.concatenate([p[0] for p in parts])
        t = np.concatenate([p[1] for p in parts])
        kind = np.concatenate([np.full(len(p[0]), p[2], dtype=np.int8) for p in parts])
        device = np.concatenate([p[3] for p in parts])
        # Nothing happens to an account after it is deregistered.
        keep = (t <= pop.dereg[user]) & (t < self.end_us)
        return {"user": user[keep], "t": t[keep], "kind": kind[keep], "device": device[keep]}

    def _merge_fraud_account_events(self) -> None:
        ev = self.plan.account_events
        a = self.accounts
        for k in a:
            a[k] = np.concatenate([a[k], ev[k]])
        keep = a["t"] < self.end_us
        for k in a:
            a[k] = a[k][keep]
        order = np.lexsort((a["kind"], a["user"], a["t"]))
        for k in a:
            a[k] = a[k][order]

    # identities ----------------------------------------------------------------------------

    def _person_vpas(
        self, rng: np.random.Generator, n: int, handles: tuple[tuple[str, float], ...]
    ) -> pl.Series:
        """`name.1234`, `namesurname12` or a 10-digit mobile number, at one of `handles`."""
        names = pl.Series(_FIRST_NAMES)
        surnames = pl.Series(_SURNAMES)
        h = pl.Series([x[0] for x in handles])
        df = pl.DataFrame(
            {
                "kind": _choice(rng, n, (0.35, 0.45, 0.20)),
                "phone": rng.integers(6_000_000_000, 10_000_000_000, n),
                "first": names.gather(rng.integers(0, len(names), n)),
                "last": surnames.gather(rng.integers(0, len(surnames), n)),
                "num": rng.integers(10, 10_000, n),
                "handle": h.gather(_choice(rng, n, tuple(x[1] for x in handles))),
            }
        )
        local = (
            pl.when(pl.col("kind") == 0)
            .then(pl.col("phone").cast(pl.String))
            .when(pl.col("kind") == 1)
            .then(pl.concat_str(pl.col("first"), pl.lit("."), pl.col("num").cast(pl.String)))
            .otherwise(
                pl.concat_str(
                    pl.col("first"), pl.col("last"), (pl.col("num") % 100).cast(pl.String)
                )
            )
        )
        return df.select(pl.concat_str(local, pl.lit("@"), pl.col("handle"))).to_series()

    def _merchant_vpas(self, rng: np.random.Generator, mcc: np.ndarray) -> pl.Series:
        """QR-sticker ids (`q123456789`) or `stem.12345` by category, at a merchant handle."""
        n = len(mcc)
        stems = [m.stems for m in _MCCS]
        flat = pl.Series([s for group in stems for s in group])
        first = np.cumsum([0, *(len(s) for s in stems)])[:-1]
        count = np.array([len(s) for s in stems])
        stem = first[mcc] + (rng.random(n) * count[mcc]).astype(np.int64)
        h = pl.Series([x[0] for x in _MERCHANT_HANDLES])
        df = pl.DataFrame(
            {
                "qr": rng.random(n) < 0.35,
                "digits": rng.integers(100_000_000, 1_000_000_000, n),
                "stem": flat.gather(stem),
                "num": rng.integers(100, 100_000, n),
                "handle": h.gather(_choice(rng, n, tuple(x[1] for x in _MERCHANT_HANDLES))),
            }
        )
        local = (
            pl.when(pl.col("qr"))
            .then(pl.concat_str(pl.lit("q"), pl.col("digits").cast(pl.String)))
            .otherwise(pl.concat_str(pl.col("stem"), pl.lit("."), pl.col("num").cast(pl.String)))
        )
        return df.select(pl.concat_str(local, pl.lit("@"), pl.col("handle"))).to_series()

    def _parties(self, rng: np.random.Generator) -> None:
        """Every payer/payee VPA: users, their other-app VPAs, merchants, fraud-only parties."""
        n = self.pop.n
        extra = self.plan.extra
        extra_merchant = np.asarray(extra["merchant"], dtype=bool)
        extra_mcc = np.asarray(extra["mcc"], dtype=np.int64)
        parts = [
            self._person_vpas(rng, n, _APP_HANDLES),
            self._person_vpas(rng, n, _OTHER_HANDLES),
            self._merchant_vpas(rng, self.merch.mcc),
        ]
        if len(extra_merchant):
            people = self._person_vpas(rng, len(extra_merchant), _OTHER_HANDLES)
            shops = self._merchant_vpas(rng, np.maximum(extra_mcc, 0))
            parts.append(
                pl.select(
                    pl.when(pl.Series(extra_merchant)).then(shops).otherwise(people)
                ).to_series()
            )
        vpa = pl.concat(parts).alias("vpa")
        # Collisions (same name and number) get a fresh mobile-number VPA until all are unique.
        for _ in range(50):
            dup = ~vpa.is_first_distinct()
            idx = np.flatnonzero(dup.to_numpy())
            if len(idx) == 0:
                break
            handle = vpa.gather(idx).str.split("@").list.get(1)
            phone = pl.Series(rng.integers(6_000_000_000, 10_000_000_000, len(idx)))
            fresh = phone.cast(pl.String) + "@" + handle
            vpa = vpa.scatter(idx, fresh)
        else:  # pragma: no cover - 50 rounds of 10-digit collisions do not happen
            raise RuntimeError("could not make VPAs unique")
        self.vpa = vpa
        is_merchant = np.zeros(len(vpa), dtype=np.uint8)
        is_merchant[self.merchant_base : self.extra_base] = 1
        is_merchant[self.extra_base :] = extra_merchant
        mcc = np.zeros(len(vpa), dtype=np.int64)
        mcc[self.merchant_base : self.extra_base] = self.merch.mcc + 1
        mcc[self.extra_base :] = np.where(extra_merchant, extra_mcc + 1, 0)
        self.party_merchant = is_merchant
        self.party_mcc = mcc

    def _devices(self) -> pl.Series:
        """Opaque 16-hex device ids: users' own phones, then attackers' phones."""
        total = 2 * self.pop.n + self.plan.attacker_devices
        salt = np.uint64(self.cfg.seed & 0xFFFFFFFFFFFFFFFF)
        ids = _splitmix(np.arange(total, dtype=np.uint64) ^ _splitmix(np.full(1, salt))[0])
        return _encode(ids, _HEX, 16)

    def device_at(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        pop = self.pop
        return np.where(t >= pop.dev_change[users], pop.dev1[users], pop.dev0[users])


# --- fraud ------------------------------------------------------------------------------------


class _FraudPlanner:
    """Plans every fraud case of the period: small loops per case, far fewer than transfers."""

    _COLS = (
        "created",
        "payer",
        "payee",
        "amount",
        "channel",
        "device",
        "status",
        "rc",
        "note",
        "ftype",
        "case",
        "victim_at",
        "bank_at",
    )

    def __init__(self, world: _World, rng: np.random.Generator) -> None:
        self.w = world
        self.pop = world.pop
        self.cfg = world.cfg
        self.rng = rng
        self.rows: list[tuple[int, ...]] = []
        self.events: list[tuple[int, int, int, int]] = []
        self.extra: dict[str, list[int]] = {"merchant": [], "mcc": [], "state": [], "since": []}
        self.attacker_devices = 0
        self.case_types: list[int] = []
        self._cashouts: list[int] = []
        self._scam_merchants: list[int] = []
        self._se_merchants: list[int] = []
        self._attackers: list[int] = []
        self._case: list[tuple[int, ...]] = []

    # sampling helpers ----------------------------------------------------------------------

    def _r(self) -> float:
        return float(self.rng.random())

    def _logn(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * float(self.rng.standard_normal()))

    def _pick(self, options: tuple, p: tuple[float, ...]) -> Any:
        return options[int(_choice(self.rng, 1, p)[0])]

    def _time_in_day(self, day_start: int, cdf: np.ndarray) -> int:
        return int(_sample_in_day(self.rng, 1, cdf, day_start)[0])

    def _waking(self, t: int, not_before: int) -> int:
        """A time on t's UTC day when people are awake, and not before `not_before`."""
        day0 = self.w.start_us + (t - self.w.start_us) // DAY * DAY
        out = self._time_in_day(day0, _P2M_CDF)
        if out < not_before:
            out = not_before + int(self._r() * max(day0 + DAY - not_before, 1))
        return out

    def _user(self, t: int, tenure: int, exclude: int = -1) -> int | None:
        """Someone who could pay at t: bank-linked `tenure` before, not leaving, not a mule."""
        pop = self.pop
        k = int(np.searchsorted(pop.link_sorted, t - tenure, side="right"))
        if k == 0:
            return None
        for _ in range(20):
            u = int(pop.link_order[int(self.rng.integers(k))])
            if u != exclude and not pop.is_mule[u] and pop.dereg[u] > t + 2 * DAY:
                return u
        return None

    def _mule(self, t: int, exclude: int = -1) -> int | None:
        k = int(np.searchsorted(self.pop.mule_link, t - 6 * HOUR, side="right"))
        if k == 0 or (k == 1 and int(self.pop.mules[0]) == exclude):
            return None
        while True:
            m = int(self.pop.mules[int(self.rng.integers(k))])
            if m != exclude:
                return m

    def _device(self, u: int, t: int) -> int:
        return int(self.w.device_at(np.array([u]), np.array([t]))[0])

    def _new_party(self, merchant: bool, mcc: int, t: int) -> int:
        self.extra["merchant"].append(int(merchant))
        self.extra["mcc"].append(mcc)
        self.extra["state"].append(int(_choice(self.rng, 1, _STATE_P)[0]))
        self.extra["since"].append(t)
        return self.w.extra_base + len(self.extra["merchant"]) - 1

    def _cashout(self, t: int) -> int:
        """An account on another app that turns money into cash; often reused by a ring."""
        if not self._cashouts or self._r() < 0.5:
            self._cashouts.append(self._new_party(False, -1, t))
        return self._cashouts[int(self.rng.integers(len(self._cashouts)))]

    def _fraud_merchant(self, pool: list[int], reuse: float, mccs: tuple[str, ...], t: int) -> int:
        if not pool or self._r() >= reuse:
            pool.append(self._new_party(True, _MCC_IDX[self._pick(mccs, (1.0,) * len(mccs))], t))
            return pool[-1]
        return pool[int(self.rng.integers(len(pool)))]

    def _attacker(self) -> int:
        """A fraudster's phone; rings reuse phones across victims."""
        if self._attackers and self._r() < 0.35:
            return self._attackers[int(self.rng.integers(len(self._attackers)))]
        self._attackers.append(2 * self.pop.n + self.attacker_devices)
        self.attacker_devices += 1
        return self._attackers[-1]

    def _rupees(self, rupees: float, lo: float, hi: float, styles: tuple[float, ...]) -> int:
        """Paise for rupees clipped to [lo, hi], styled (₹1000s, x999, ₹100s, ₹1) by `styles`."""
        r = min(max(rupees, lo), hi)
        style = int(_choice(self.rng, 1, styles)[0])
        if style == 0:
            r = max(round(r / 1000), 1) * 1000
        elif style == 1:
            r = max(round(r / 1000), 1) * 1000 - 1
        elif style == 2:
            r = max(round(r / 100), 1) * 100
        else:
            r = max(round(r), 1)
        return int(min(r, hi)) * 100

    def _add(
        self,
        t: int,
        payer: int,
        payee: int,
        amount: int,
        channel: int,
        device: int,
        status: int,
        rc: str,
        note: int,
        victim: int,
    ) -> None:
        self._case.append((t, payer, payee, amount, channel, device, status, RC[rc], note, victim))

    def _note(self, group: str, p: float) -> int:
        if self._r() >= p:
            return 0
        base, count = _NOTE_BASE[group]
        return base + int(self.rng.integers(count))

    # cases ---------------------------------------------------------------------------------

    def _ato(self, day_start: int) -> None:
        """SIM swap or new phone, then a night-time drain to new payees, wrong PINs first."""
        night = self._r() < 0.65
        t0 = self._time_in_day(day_start, _NIGHT_CDF if night else _P2P_CDF)
        v = self._user(t0, 3 * DAY)
        if v is None:
            return
        own = self._device(v, t0)
        attacker = self._attacker()
        t = t0
        if self._r() < 0.7:
            self.events.append((v, t, SIM_CHANGED, -1))
            t += int(self._logn(8 * MINUTE, 0.6))
        self.events.append((v, t, DEVICE_BOUND, attacker))
        reset = self._r() < 0.55
        if reset:
            t += int((1 + 5 * self._r()) * MINUTE)
            self.events.append((v, t, PIN_RESET, attacker))
        t += int((3 + 27 * self._r()) * MINUTE)
        dests = []
        for _ in range(1 + int(self.rng.integers(3))):
            m = self._mule(t) if self._r() < 0.7 else None
            dests.append(m if m is not None else self._cashout(t))
        balance = max(300_000.0, self._logn(4_500_000 * self.pop.amount_scale[v], 0.8))
        n_zm = int(_choice(self.rng, 1, (0.7, 0.3) if reset else (0, 0.5, 0.35, 0.15))[0])
        for i in range(n_zm):
            guess = self._rupees(self._logn(20_000, 0.5), 1000, 99_000, (0.6, 0, 0.4, 0))
            self._add(
                t, v, dests[0], guess, INTENT, attacker, FAILED, "Z6" if i == 2 else "ZM", 0, v
            )
            t += int((30 + 90 * self._r()) * SECOND)
        if n_zm == 3:  # locked out: reset the PIN with the victim's card details, then go on
            t += int((5 + 20 * self._r()) * MINUTE)
            self.events.append((v, t, PIN_RESET, attacker))
        remaining = balance
        for _ in range(min(1 + int(self.rng.poisson(2.5)), 7)):
            amount = self._rupees(
                min(remaining / 100, self._logn(20_000, 0.6)), 500, 99_500, (0.5, 0, 0.5, 0)
            )
            if amount > remaining:
                break
            channel = self._pick((INTENT, CHAT, QR), (0.55, 0.25, 0.2))
            dest = dests[int(self.rng.integers(len(dests)))]
            if self._r() < 0.07:
                self._add(
                    t,
                    v,
                    dest,
                    amount,
                    channel,
                    attacker,
                    FAILED,
                    self._pick(("K1", "U16"), (0.5, 0.5)),
                    0,
                    v,
                )
            else:
                self._add(t, v, dest, amount, channel, attacker, SUCCESS, "00", 0, v)
                remaining -= amount
            t += int((2 + 23 * self._r()) * MINUTE)
        if self._r() < 0.45:  # one more try than the account could bear
            amount = self._rupees(remaining / 100 + 5000, 500, 99_500, (0.5, 0, 0.5, 0))
            self._add(t, v, dests[0], amount, INTENT, attacker, FAILED, "Z9", 0, v)
        if self._r() < 0.75:  # the victim gets the account back on their own phone
            self.events.append((v, t + int(self._logn(18 * HOUR, 0.6)), DEVICE_BOUND, own))

    def _se(self, day_start: int) -> None:
        """Victim pays a first-time payee far more than usual, sometimes several times."""
        t = self._time_in_day(day_start, _P2M_CDF)
        v = self._user(t, DAY)
        if v is None:
            return
        r = self._r()
        payee = self._mule(t) if r < 0.45 else None
        merchant = False
        if payee is None and r < 0.8:
            payee = self._fraud_merchant(self._se_merchants, 0.6, ("5999", "5399", "4814"), t)
            merchant = True
        elif payee is None:
            payee = self._cashout(t)
        typical = 400 * float(self.pop.amount_scale[v])
        n = int(_choice(self.rng, 1, (0.5, 0.25, 0.12, 0.08, 0.05))[0]) + 1
        for _ in range(n):
            amount = self._rupees(typical * self._logn(25, 0.6), 2000, 95_000, (0.4, 0.3, 0, 0.3))
            if merchant:
                channel = self._pick((QR, INTENT), (0.5, 0.5))
            else:
                channel = self._pick((QR, INTENT, CHAT), (0.4, 0.4, 0.2))
            note = self._note("se", 0.35)
            if self._r() < 0.88:
                status, rc = SUCCESS, "00"
            else:
                status, rc = FAILED, self._pick(("K1", "U16", "ZI", "Z9"), (0.3, 0.3, 0.2, 0.2))
            self._add(t, v, payee, amount, channel, self._device(v, t), status, rc, note, v)
            t += int((2 + 28 * self._r()) * MINUTE)

    def _mule_case(self, day_start: int) -> None:
        """Many unrelated payers into one mule, swept out within hours to mules or cash-out."""
        t0 = self._time_in_day(day_start, _P2P_CDF)
        m = self._mule(t0 - 6 * HOUR)
        if m is None:
            return
        k = 4 + min(int(self.rng.poisson(5)), 16)
        span = min(max(self._logn(10 * HOUR, 0.6), HOUR), 40 * HOUR)
        raw = t0 + (self.rng.random(k) * span).astype(np.int64)
        times = np.sort([self._waking(int(t), t0) for t in raw])
        sweeps = 1 + int(k > 8) + int(k > 14)
        for group in np.array_split(times, sweeps):
            pot = 0
            for ti in group:
                ti = int(ti)
                p = self._user(ti, DAY // 2, exclude=m)
                if p is None:
                    continue
                amount = self._rupees(self._logn(6000, 0.7), 500, 90_000, (0.2, 0, 0.5, 0.3))
                channel = self._pick((INTENT, CHAT, QR), (0.45, 0.25, 0.3))
                ok = self._r() < 0.95
                rc = "00" if ok else self._pick(("Z9", "U30"), (0.6, 0.4))
                note = self._note("mule", 0.15)
                self._add(
                    ti,
                    p,
                    m,
                    amount,
                    channel,
                    self._device(p, ti),
                    SUCCESS if ok else FAILED,
                    rc,
                    note,
                    p,
                )
                pot += amount if ok else 0
            if pot == 0:
                continue
            t = int(group[-1]) + int(min(max(self._logn(90 * MINUTE, 0.6), 10 * MINUTE), 12 * HOUR))
            onward = self._mule(t, exclude=m) if self._r() < 0.4 else None
            dest = onward if onward is not None else self._cashout(t)
            left = int(pot * (0.92 + 0.07 * self._r())) // 10_000 * 10_000
            moved = 0
            while left > 0:
                amount = min(left, 9_500_000)
                channel = self._pick((INTENT, CHAT), (0.6, 0.4))
                self._add(t, m, dest, amount, channel, self._device(m, t), SUCCESS, "00", 0, -1)
                left -= amount
                moved += amount
                t += int((1 + 4 * self._r()) * MINUTE)
            if onward is not None and self._r() < 0.6:  # layering: a second hop to cash out
                t2 = t + int(self._logn(60 * MINUTE, 0.6))
                amount = max(int(moved * 0.97) // 10_000 * 10_000, 10_000)
                out = self._cashout(t2)
                while amount > 0:
                    part = min(amount, 9_500_000)
                    self._add(
                        t2,
                        onward,
                        out,
                        part,
                        INTENT,
                        self._device(onward, t2),
                        SUCCESS,
                        "00",
                        0,
                        -1,
                    )
                    amount -= part
                    t2 += int((1 + 4 * self._r()) * MINUTE)

    def _merchant_fraud(self, day_start: int) -> None:
        """A new storefront takes a spike of payments for a few days, then vanishes."""
        t0 = self._time_in_day(day_start, _P2M_CDF)
        f = self._fraud_merchant([], 0.0, ("5399", "5651", "5732", "5999"), t0 - 6 * HOUR)
        k = 12 + int(self.rng.poisson(18))
        span = (1 + 3 * self._r()) * DAY
        # Word spreads: payments pick up towards the end, then stop dead.
        raw = t0 + (self.rng.random(k) ** 0.7 * span).astype(np.int64)
        times = np.sort([self._waking(int(t), t0) for t in raw])
        for ti in times:
            ti = int(ti)
            p = self._user(ti, DAY // 2)
            if p is None:
                continue
            price = int(self.rng.choice(_STOREFRONT_RUPEES)) * (2 if self._r() < 0.1 else 1)
            channel = self._pick((INTENT, QR), (0.65, 0.35))
            ok = self._r() < 0.93
            rc = "00" if ok else self._pick(("Z9", "U30", "ZI"), (0.5, 0.3, 0.2))
            note = self._note("p2m", 0.1)
            self._add(
                ti,
                p,
                f,
                price * 100,
                channel,
                self._device(p, ti),
                SUCCESS if ok else FAILED,
                rc,
                note,
                p,
            )

    def _collect_scam(self, day_start: int) -> None:
        """A fraudster merchant sends collect requests; some victims approve them."""
        t0 = self._time_in_day(day_start, _P2M_CDF)
        f = self._fraud_merchant(self._scam_merchants, 0.3, ("4900", "5399", "4814", "5999"), t0)
        span = (2 + 46 * self._r()) * HOUR
        for _ in range(3 + min(int(self.rng.poisson(5)), 17)):
            t = self._waking(t0 + int(self._r() * span), t0)
            v = self._user(t, DAY)
            if v is None:
                continue
            for _ in range(1 if self._r() < 0.7 else 2):
                amount = self._rupees(self._logn(4000, 0.7), 500, 50_000, (0, 0.3, 0.5, 0.2))
                outcome = int(_choice(self.rng, 1, (0.55, 0.25, 0.15, 0.05))[0])
                rc = ("00", "ZA", "U69", "Z9")[outcome]
                status = SUCCESS if outcome == 0 else FAILED
                note = self._note("cs", 0.5)
                self._add(t, v, f, amount, COLLECT, self._device(v, t), status, rc, note, v)
                t += int((1 + 19 * self._r()) * MINUTE)

    # reporting and the plan ----------------------------------------------------------------

    def _finish(self, ftype: int) -> int:
        """Keep the case's in-period transfers and decide who reports them, and when."""
        rows = [r for r in self._case if self.w.start_us <= r[0] < self.w.end_us]
        self._case = []
        if not rows:
            return 0
        cfg = self.cfg
        name = c.FRAUD_TYPES[ftype - 1]
        case = len(self.case_types)
        self.case_types.append(ftype)
        max_delay = cfg.max_report_delay_days * DAY
        median = cfg.report_delay_median_days * DAY * (0.4 if ftype == ATO else 1.0)
        victim_at: dict[int, int] = {}
        for victim in sorted({r[9] for r in rows if r[9] >= 0}):
            paid = [r[0] for r in rows if r[9] == victim and r[6] == SUCCESS]
            if paid and self._r() < cfg.victim_report_rate.get(name, 0.0):
                delay = min(max(self._logn(median, 0.9), 2 * HOUR), max_delay)
                victim_at[victim] = max(paid) + int(delay)
        bank_at = -1
        if self._r() < cfg.bank_confirm_rate.get(name, 0.0):
            delay = min(
                max(self._logn(2.2 * cfg.report_delay_median_days * DAY, 0.6), DAY), max_delay
            )
            bank_at = max(r[0] for r in rows) + int(delay)
            if victim_at:  # the bank confirms after the victims have complained
                bank_at = max(bank_at, max(victim_at.values()) + DAY)
        for r in rows:
            v_at = victim_at.get(r[9], -1) if r[6] == SUCCESS else -1
            self.rows.append((*r[:9], ftype, case, v_at, bank_at))
        return len(rows)

    def run(self) -> _FraudPlanner:
        w, cfg = self.w, self.cfg
        expected = w.expected.sum(axis=1)
        # Retries of failed legit transfers add ~2.5% to the legit count the fraud share is of.
        budget = np.cumsum(expected * 1.025 * cfg.fraud_rate / (1.0 - cfg.fraud_rate))
        mix = {ft: cfg.typology_mix.get(name, 0.0) for name, ft in _FT.items()}
        total = sum(mix.values()) or 1.0
        cases = {
            ATO: self._ato,
            SE: self._se,
            MULE: self._mule_case,
            MF: self._merchant_fraud,
            CS: self._collect_scam,
        }
        planned = dict.fromkeys(cases, 0)
        for d in range(cfg.days):
            day_start = w.start_us + d * DAY
            for ft, make in cases.items():
                target = budget[d] * mix[ft] / total
                misses = 0
                # Start a case once the budget covers about half of it, so big cases do not
                # swamp the first thin days.
                while planned[ft] + _CASE_SIZE[ft] / 2 < target and misses < 5:
                    make(day_start)
                    made = self._finish(ft)
                    planned[ft] += made
                    misses = misses + 1 if made == 0 else 0
        self._freeze()
        return self

    def _freeze(self) -> None:
        rows = sorted(self.rows, key=lambda r: r[0])  # stable: ties keep planning order
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(self._COLS)
        self.transfers = {
            k: np.asarray(v, dtype=np.int64) for k, v in zip(self._COLS, cols, strict=True)
        }
        ev = sorted(self.events, key=lambda e: e[1])
        ecols = list(zip(*ev, strict=True)) if ev else [()] * 4
        self.account_events = {
            "user": np.asarray(ecols[0], dtype=np.int64),
            "t": np.asarray(ecols[1], dtype=np.int64),
            "kind": np.asarray(ecols[2], dtype=np.int8),
            "device": np.asarray(ecols[3], dtype=np.int64),
        }
        self.case_names = pl.Series(
            [f"{_CASE_PREFIX[ft]}-{i + 1:06d}" for i, ft in enumerate(self.case_types)],
            dtype=pl.String,
        )


# --- the day loop -----------------------------------------------------------------------------

_BATCH = (
    "created",
    "payer",
    "payee",
    "amount",
    "channel",
    "device",
    "state",
    "status",
    "rc",
    "note",
    "ftype",
    "case",
    "victim_at",
    "bank_at",
)


def _concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _take(batch: dict[str, np.ndarray], idx: np.ndarray | slice) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in batch.items()}


class _Run:
    """Writes one UTC day at a time; carries events that belong to later days."""

    def __init__(self, world: _World, landing: Path, truth: Path) -> None:
        self.w = world
        self.cfg = world.cfg
        self.landing = landing
        self.truth_dir = truth
        self.counter = 0  # transfers created so far: the transfer_id sequence
        self.seq = 0  # transfers stream ledger_seq
        self.carry: dict[str, np.ndarray] | None = None  # events not yet due
        self.pending_labels: list[pl.DataFrame] = []
        self.all_labels: list[pl.DataFrame] = []
        self.truth_writer: pq.ParquetWriter | None = None
        self.truth_tmp = truth / ".transfers.parquet.tmp"
        self.stats = dict.fromkeys(
            (
                "transfers",
                "transfer_events",
                "account_events",
                "labels",
                "frauds",
                "files",
                "labels_future",
            ),
            0,
        )
        plan = world.plan.transfers
        self.fraud = plan
        self.fraud["state"] = world.pop.state[plan["payer"]].astype(np.int64)
        self.acc_seq = 0

    # legit traffic -------------------------------------------------------------------------

    def _legit(self, d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        w, pop = self.w, self.w.pop
        ds = w.start_us + d * DAY
        de = ds + DAY
        weights = w.day_weights(ds)
        cw = np.cumsum(weights)
        if cw[-1] <= 0:
            return {k: np.zeros(0, dtype=np.int64) for k in _BATCH}
        n1 = int(rng.poisson(w.expected[d, 0]))
        n2 = int(rng.poisson(w.expected[d, 1]))
        n = n1 + n2
        payer = np.minimum(np.searchsorted(cw, rng.random(n) * cw[-1], side="right"), pop.n - 1)
        t = np.concatenate(
            [_sample_in_day(rng, n1, _P2P_CDF, ds), _sample_in_day(rng, n2, _P2M_CDF, ds)]
        )
        # Someone who linked their bank (or left) today pays only while they can.
        lo = np.maximum(pop.link[payer], ds)
        hi = np.minimum(pop.dereg[payer], de)
        bad = (t < lo) | (t >= hi)
        t[bad] = lo[bad] + (rng.random(int(bad.sum())) * (hi[bad] - lo[bad])).astype(np.int64)

        payee = np.empty(n, dtype=np.int64)
        channel = np.empty(n, dtype=np.int64)
        amount = np.empty(n, dtype=np.int64)
        note = np.zeros(n, dtype=np.int64)

        # P2P: pay a contact, mostly the same few; a contact not on the app yet is paid on the
        # VPA they have on another app.
        p = payer[:n1]
        off = pop.contact_off
        deg = off[p + 1] - off[p]
        k = (deg * rng.random(n1) ** 2.2).astype(np.int64)
        contact = pop.contacts[off[p] + k]
        on_app = (pop.link[contact] <= t[:n1]) & (pop.dereg[contact] > t[:n1])
        payee[:n1] = np.where(on_app, contact, w.other_base + contact)
        channel[:n1] = np.array([CHAT, QR, INTENT])[_choice(rng, n1, (0.74, 0.13, 0.13))]
        rupees = _lognormal(rng, 400, 1.05, n1) * pop.amount_scale[p]
        amount[:n1] = np.minimum(_round_p2p(rng, rupees), c.P2P_LIMIT_PAISE)
        base, count = _NOTE_BASE["p2p"]
        has = rng.random(n1) < 0.35
        note[:n1] = np.where(has, base + (rng.random(n1) * count).astype(np.int64), 0)

        # P2M: a category, then a regular shop of the payer's (deterministic hash) or any shop,
        # in their state for local categories.
        q = payer[n1:]
        mcc = _choice(rng, n2, _MCC_VOLUME)
        m = self._merchant(rng, mcc, q)
        payee[n1:] = w.merchant_base + m
        channel[n1:] = np.array([QR, INTENT, COLLECT])[_cdf_choice(rng, _MCC_CHANNEL_CDF[mcc])]
        amount[n1:] = self._p2m_amounts(rng, mcc, pop.amount_scale[q])
        base, count = _NOTE_BASE["p2m"]
        has = rng.random(n2) < 0.04
        note[n1:] = np.where(has, base + (rng.random(n2) * count).astype(np.int64), 0)

        device = w.device_at(payer, t)
        state = np.where(rng.random(n) < 0.015, -1, pop.state[payer].astype(np.int64))
        new_user = (t - pop.link[payer] < DAY) & (amount > _NEW_USER_LIMIT_PAISE)
        status, rc = self._legit_status(rng, amount, channel, new_user)
        batch = {
            "created": t,
            "payer": payer,
            "payee": payee,
            "amount": amount,
            "channel": channel,
            "device": device,
            "state": state,
            "status": status,
            "rc": rc,
            "note": note,
        }
        retries = self._retries(rng, batch, de)
        batch = _concat([batch, retries])
        size = len(batch["created"])
        batch["ftype"] = np.zeros(size, dtype=np.int64)
        batch["case"] = np.full(size, -1, dtype=np.int64)
        batch["victim_at"] = np.full(size, -1, dtype=np.int64)
        batch["bank_at"] = np.full(size, -1, dtype=np.int64)
        return batch

    def _merchant(self, rng: np.random.Generator, mcc: np.ndarray, payer: np.ndarray) -> np.ndarray:
        merch, pop = self.w.merch, self.w.pop
        n = len(mcc)
        fav = rng.random(n) < _MCC_FAVOURITE[mcc]
        slot = (rng.random(n) ** 2 * 3).astype(np.int64)
        u = np.where(fav, _hash_uniform(self.cfg.seed, payer, mcc, slot), rng.random(n))
        local = merch.local_group[mcc, pop.state[payer]]
        use_local = _MCC_LOCAL[mcc] & (local >= 0) & (fav | (rng.random(n) < 0.85))
        g = np.where(use_local, local, merch.national_group[mcc])
        pos = np.searchsorted(merch.seg_lo, g + u, side="right") - 1
        return merch.seg_member[pos]

    def _p2m_amounts(
        self, rng: np.random.Generator, mcc: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        n = len(mcc)
        rupees = _MCC_MEDIAN[mcc] * np.exp(_MCC_SIGMA[mcc] * rng.standard_normal(n)) * scale**0.5
        u = rng.random(n)
        cdf = _MCC_ROUNDING[mcc]
        paise = np.where(
            u < cdf[:, 0],
            np.maximum(np.round(rupees / 100), 1) * 10_000,
            np.where(
                u < cdf[:, 1],
                np.maximum(np.round(rupees / 10), 1) * 1000,
                np.where(
                    u < cdf[:, 2], np.round(rupees * 100), np.maximum(np.round(rupees), 1) * 100
                ),
            ),
        ).astype(np.int64)
        telecom = mcc == _TELECOM
        paise[telecom] = _PLAN_RUPEES[_choice(rng, int(telecom.sum()), _PLAN_P)] * 100
        paise = np.maximum(paise, 100)
        limit = _MCC_LIMIT[mcc]
        over = paise > limit
        # Nobody pays exactly the limit: big payments land on round thousands below it.
        redo = (limit[over] * (0.3 + 0.7 * rng.random(int(over.sum())))) // 100_000 * 100_000
        paise[over] = np.maximum(redo, 100_000)
        return paise

    def _legit_status(
        self,
        rng: np.random.Generator,
        amount: np.ndarray,
        channel: np.ndarray,
        new_user: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(amount)
        rupees = amount / 100
        collect = channel == COLLECT
        # Bigger payments fail more often (mostly insufficient funds).
        p = self.cfg.failure_rate * (
            0.8 + 0.25 * np.clip(np.log10(np.maximum(rupees, 1) / 300), 0, 3)
        )
        p = np.where(collect, 0.18, p)
        fail = rng.random(n) < p
        u = rng.random(n)
        code = np.where(
            rupees > 2000,
            _FAIL_IDX[
                np.minimum(np.searchsorted(_FAIL_CDF_LARGE, u, side="right"), len(_FAIL_IDX) - 1)
            ],
            _FAIL_IDX[
                np.minimum(np.searchsorted(_FAIL_CDF_SMALL, u, side="right"), len(_FAIL_IDX) - 1)
            ],
        )
        ccode = _COLLECT_FAIL_IDX[
            np.minimum(
                np.searchsorted(_COLLECT_FAIL_CDF, u, side="right"), len(_COLLECT_FAIL_IDX) - 1
            )
        ]
        code = np.where(collect, ccode, code)
        cooling = new_user & ~collect & (rng.random(n) < 0.85)
        code = np.where(cooling, RC["Z8"], code)
        fail |= cooling
        status = np.where(fail, FAILED, SUCCESS).astype(np.int64)
        rc = np.where(fail, code, RC["00"]).astype(np.int64)
        return status, rc

    def _retries(
        self, rng: np.random.Generator, b: dict[str, np.ndarray], day_end: int
    ) -> dict[str, np.ndarray]:
        """People retry after a wrong PIN or a bank hiccup, usually within a minute."""
        n = len(b["created"])
        p = np.zeros(n)
        for code, prob in _RETRY_P.items():
            p[b["rc"] == RC[code]] = prob
        p[b["channel"] == COLLECT] = 0.0
        idx = np.flatnonzero((b["status"] == FAILED) & (rng.random(n) < p))
        r = _take(b, idx)
        wait = np.clip(_lognormal(rng, 45 * SECOND, 0.6, len(idx)), 8 * SECOND, 15 * MINUTE)
        r["created"] = r["created"] + wait.astype(np.int64)
        z9 = r["rc"] == RC["Z9"]
        half = np.maximum(r["amount"] // 2 // 10_000 * 10_000, 10_000)
        r["amount"] = np.where(z9 & (r["amount"] > 20_000), half, r["amount"])
        ok = rng.random(len(idx)) < 0.88
        r["status"] = np.where(ok, SUCCESS, FAILED).astype(np.int64)
        r["rc"] = np.where(ok, RC["00"], r["rc"]).astype(np.int64)
        return _take(r, r["created"] < day_end)

    # a day ---------------------------------------------------------------------------------

    def day(self, d: int) -> None:
        w, cfg = self.w, self.cfg
        ds = w.start_us + d * DAY
        de = ds + DAY
        rng = _rng(cfg.seed, 100, d)
        legit = self._legit(d, rng)
        f = self.fraud
        a, b = np.searchsorted(f["created"], [ds, de])
        batch = _concat([legit, {k: f[k][a:b] for k in _BATCH}])
        order = np.argsort(batch["created"], kind="stable")
        batch = _take(batch, order)
        n = len(order)
        counter = self.counter + np.arange(n, dtype=np.int64)
        self.counter += n

        final, rev = self._timing(rng, batch)
        labels = self._labels(rng, batch, counter, final)
        self._truth(batch, counter)
        self.stats["transfers"] += n
        self.stats["frauds"] += int((batch["ftype"] > 0).sum())

        # Write in windows of at most ~half a file of transfers so memory stays flat on big days.
        chunk = max(1, int(cfg.max_rows_per_file * 0.45))
        part = 0
        for lo in range(0, max(n, 1), chunk):
            hi = min(lo + chunk, n)
            window_end = int(batch["created"][hi]) if hi < n else de
            part = self._window(batch, counter, final, rev, lo, hi, window_end, ds, part)

        self._accounts(ds, de)
        self._land_labels(labels, ds, de)

    def _timing(
        self, rng: np.random.Generator, b: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """When each transfer reached its final state, and when (if ever) it was reversed."""
        n = len(b["created"])
        lat = np.clip(_lognormal(rng, 1.6 * SECOND, 0.7, n), 0.2 * SECOND, 40 * SECOND)
        lat = np.where(b["rc"] == RC["U30"], lat * 2.5, lat)
        collect = b["channel"] == COLLECT
        approve = np.clip(_lognormal(rng, 40 * SECOND, 1.0, n), 3 * SECOND, 25 * MINUTE)
        lat = np.where(collect, approve, lat)
        expired = b["rc"] == RC["U69"]
        lat = np.where(expired, 30 * MINUTE + rng.random(n) * 90 * SECOND, lat)
        final = b["created"] + lat.astype(np.int64)
        reversed_ = (
            (b["status"] == SUCCESS) & (b["ftype"] == 0) & (rng.random(n) < self.cfg.reversal_rate)
        )
        later = np.clip(_lognormal(rng, 4 * HOUR, 0.8, n), 15 * MINUTE, 47 * HOUR).astype(np.int64)
        rev = np.where(reversed_, final + later, -1)
        return final, rev

    def _labels(
        self,
        rng: np.random.Generator,
        b: dict[str, np.ndarray],
        counter: np.ndarray,
        final: np.ndarray,
    ) -> pl.DataFrame:
        """Fraud labels as planned, plus a few disputes that turned out genuine (LEGIT)."""
        cfg = self.cfg
        n = len(counter)
        is_p2m = self.w.party_merchant[b["payee"]] == 1
        p = cfg.legit_label_rate * np.where(is_p2m, 1.6, 0.4)
        legit = np.flatnonzero((b["ftype"] == 0) & (b["status"] == SUCCESS) & (rng.random(n) < p))
        delay = np.clip(
            _lognormal(rng, 7 * DAY, 0.8, len(legit)), HOUR, cfg.max_report_delay_days * DAY
        )
        source = np.where(rng.random(len(legit)) < 0.7, _REVIEW, _BANK)
        vic = np.flatnonzero(b["victim_at"] >= 0)
        bank = np.flatnonzero(b["bank_at"] >= 0)
        rows = np.concatenate([legit, vic, bank])
        df = pl.DataFrame(
            {
                "transfer_id": _transfer_ids(counter[rows]),
                "label": _S_LABEL.gather(
                    np.repeat([_LEGIT_LABEL, _FRAUD_LABEL], [len(legit), len(vic) + len(bank)])
                ),
                "fraud_type": _S_FTYPE.gather(b["ftype"][rows]),
                "source": _S_SOURCE.gather(
                    np.concatenate([source, np.full(len(vic), _VICTIM), np.full(len(bank), _BANK)])
                ),
                "reported_at": _timestamps(
                    np.concatenate(
                        [
                            final[legit] + delay.astype(np.int64),
                            b["victim_at"][vic],
                            b["bank_at"][bank],
                        ]
                    )
                ),
            },
            schema=c.LABELS_STREAM.schema,
        )
        self.all_labels.append(df)
        return df

    def _truth(self, b: dict[str, np.ndarray], counter: np.ndarray) -> None:
        v, k = b["victim_at"], b["bank_at"]
        first = np.where((v >= 0) & (k >= 0), np.minimum(v, k), np.maximum(v, k))
        case = b["case"]
        df = pl.DataFrame(
            {
                "transfer_id": _transfer_ids(counter),
                "is_fraud": b["ftype"] > 0,
                "fraud_type": _S_FTYPE.gather(b["ftype"]),
                "fraud_case_id": self._case_ids(case),
                "reported": first >= 0,
                "label_reported_at": _timestamps(first).set(pl.Series(first < 0), None),
            }
        )
        table = df.to_arrow()
        if self.truth_writer is None:
            self.truth_writer = pq.ParquetWriter(self.truth_tmp, table.schema, compression="zstd")
        self.truth_writer.write_table(table.cast(self.truth_writer.schema))

    def _case_ids(self, case: np.ndarray) -> pl.Series:
        names = self.w.plan.case_names
        if not len(names):
            return pl.Series([None] * len(case), dtype=pl.String)
        return names.gather(np.maximum(case, 0)).set(pl.Series(case < 0), None)

    def _window(
        self,
        b: dict[str, np.ndarray],
        counter: np.ndarray,
        final: np.ndarray,
        rev: np.ndarray,
        lo: int,
        hi: int,
        window_end: int,
        day_start: int,
        part: int,
    ) -> int:
        """Emit the window's state rows, due carried rows first-come, and land them in order."""
        sl = slice(lo, hi)
        base = {
            k: b[k][sl]
            for k in ("created", "payer", "payee", "amount", "channel", "device", "state", "note")
        }
        base["counter"] = counter[sl]
        m = hi - lo
        has_rev = np.flatnonzero(rev[sl] >= 0)
        idx = np.concatenate([np.arange(m), np.arange(m), has_rev])
        ev = _take(base, idx)
        ev["t"] = np.concatenate([base["created"], final[sl], rev[sl][has_rev]])
        ev["rank"] = np.repeat(np.array([0, 1, 2], dtype=np.int64), [m, m, len(has_rev)])
        ev["status"] = np.concatenate(
            [np.full(m, PENDING), b["status"][sl], np.full(len(has_rev), REVERSED)]
        ).astype(np.int64)
        ev["rc"] = np.concatenate(
            [np.full(m, -1), b["rc"][sl], np.full(len(has_rev), RC["RB"])]
        ).astype(np.int64)
        if self.carry is not None:
            ev = _concat([self.carry, ev])
        order = np.lexsort((ev["rank"], ev["counter"], ev["t"]))
        ev = _take(ev, order)
        cut = int(np.searchsorted(ev["t"], window_end, side="left"))
        self.carry = _take(ev, slice(cut, None))
        now = _take(ev, slice(0, cut))
        if cut == 0:
            return part
        df = self._transfer_frame(now)
        date = dt.datetime.fromtimestamp(day_start // SECOND, tz=dt.UTC).date()
        folder = self.landing / "transfers" / f"date={date.isoformat()}"
        step = self.cfg.max_rows_per_file
        for s in range(0, cut, step):
            _write_parquet(df.slice(s, step), folder / f"part-{part:05d}.parquet")
            part += 1
            self.stats["files"] += 1
        self.stats["transfer_events"] += cut
        return part

    def _transfer_frame(self, ev: dict[str, np.ndarray]) -> pl.DataFrame:
        w = self.w
        n = len(ev["t"])
        payee = ev["payee"]
        df = pl.DataFrame(
            {
                "transfer_id": _transfer_ids(ev["counter"]),
                "ledger_seq": np.arange(self.seq + 1, self.seq + n + 1, dtype=np.int64),
                "created_at": _timestamps(ev["created"]),
                "payer_vpa": w.vpa.gather(ev["payer"]),
                "payee_vpa": w.vpa.gather(payee),
                "payee_type": _S_PAYEE_TYPE.gather(w.party_merchant[payee]),
                "mcc": _S_MCC.gather(w.party_mcc[payee]),
                "amount_paise": ev["amount"],
                "currency": pl.repeat(c.CURRENCIES[0], n, eager=True, dtype=pl.String),
                "channel": _S_CHANNEL.gather(ev["channel"]),
                "payer_device_id": w.devices.gather(ev["device"]),
                "payer_state": _S_STATE.gather(ev["state"] + 1),
                "status": _S_STATUS.gather(ev["status"]),
                "response_code": _S_RC.gather(ev["rc"] + 1),
                "note": _S_NOTE.gather(ev["note"]),
            },
            schema=c.TRANSFERS.schema,
        )
        self.seq += n
        return df

    def _accounts(self, ds: int, de: int) -> None:
        w = self.w
        a = w.accounts
        lo, hi = np.searchsorted(a["t"], [ds, de])
        if hi == lo:
            return
        user = a["user"][lo:hi]
        n = hi - lo
        seq = np.arange(self.acc_seq + 1, self.acc_seq + n + 1, dtype=np.int64)
        self.acc_seq += n
        device = a["device"][lo:hi]
        df = pl.DataFrame(
            {
                "event_id": _encode(seq, _B36, 10, b"AE"),
                "ledger_seq": seq,
                "event_time": _timestamps(a["t"][lo:hi]),
                "vpa": w.vpa.gather(user),
                "event_type": _S_EVENT.gather(a["kind"][lo:hi]),
                "device_id": w.devices.gather(np.maximum(device, 0)).set(
                    pl.Series(device < 0), None
                ),
                "state": _S_STATE.gather(w.pop.state[user].astype(np.int64) + 1),
            },
            schema=c.ACCOUNTS.schema,
        )
        date = dt.datetime.fromtimestamp(ds // SECOND, tz=dt.UTC).date()
        folder = self.landing / "accounts" / f"date={date.isoformat()}"
        step = self.cfg.max_rows_per_file
        for part, s in enumerate(range(0, n, step)):
            _write_parquet(df.slice(s, step), folder / f"part-{part:05d}.parquet")
            self.stats["files"] += 1
        self.stats["account_events"] += int(n)

    def _land_labels(self, new: pl.DataFrame, ds: int, de: int) -> None:
        """Land the labels reported today; keep later ones until their day comes."""
        pending = pl.concat([*self.pending_labels, new])
        t = pending["reported_at"].dt.epoch("us").to_numpy()
        due = (t >= ds) & (t < de)
        self.pending_labels = [pending.filter(pl.Series(t >= de))]
        today = pending.filter(pl.Series(due)).sort(["reported_at", "transfer_id", "source"])
        if today.height == 0:
            return
        date = dt.datetime.fromtimestamp(ds // SECOND, tz=dt.UTC).date()
        folder = self.landing / "labels" / f"date={date.isoformat()}"
        step = self.cfg.max_rows_per_file
        for part, s in enumerate(range(0, today.height, step)):
            _write_parquet(today.slice(s, step), folder / f"part-{part:05d}.parquet")
            self.stats["files"] += 1
        self.stats["labels"] += today.height

    # the end -------------------------------------------------------------------------------

    def close(self) -> None:
        w = self.w
        if self.truth_writer is not None:
            self.truth_writer.close()
            os.replace(self.truth_tmp, self.truth_dir / "transfers.parquet")
        labels = pl.concat(self.all_labels).sort(["reported_at", "transfer_id", "source"])
        self.stats["labels_future"] = int((labels["reported_at"].dt.epoch("us") >= w.end_us).sum())
        _write_parquet(labels, self.truth_dir / "labels.parquet")
        _write_parquet(self._users(), self.truth_dir / "users.parquet")

    def _users(self) -> pl.DataFrame:
        """Who is who: registered users, merchants and fraud-only parties, with their roles."""
        w, pop = self.w, self.w.pop
        users = np.flatnonzero(pop.reg < w.end_us)
        n_extra = len(w.plan.extra["merchant"])
        extra_merchant = np.asarray(w.plan.extra["merchant"], dtype=bool)
        extra_state = np.asarray(w.plan.extra["state"], dtype=np.int64)
        extra_since = np.asarray(w.plan.extra["since"], dtype=np.int64)
        party = np.concatenate(
            [users, w.merchant_base + np.arange(w.merch.n), w.extra_base + np.arange(n_extra)]
        )
        kind = np.concatenate(
            [np.zeros(len(users)), np.ones(w.merch.n), np.where(extra_merchant, 1, 2)]
        ).astype(np.int64)
        registered = np.concatenate([pop.reg[users], np.full(w.merch.n, -1), extra_since])
        linked = np.concatenate([pop.link[users], np.full(w.merch.n + n_extra, -1)])
        state = np.concatenate([pop.state[users], w.merch.state, extra_state]).astype(np.int64)
        return pl.DataFrame(
            {
                "vpa": w.vpa.gather(party),
                "kind": pl.Series(["USER", "MERCHANT", "EXTERNAL"]).gather(kind),
                "is_mule": np.concatenate(
                    [pop.is_mule[users], np.zeros(w.merch.n, bool), ~extra_merchant]
                ),
                "is_fraudster_merchant": np.concatenate(
                    [np.zeros(len(users) + w.merch.n, bool), extra_merchant]
                ),
                "registered_at": _timestamps(registered).set(pl.Series(registered < 0), None),
                "bank_linked_at": _timestamps(linked).set(
                    pl.Series((linked < 0) | (linked >= w.end_us)), None
                ),
                "state": _S_STATE.gather(state + 1),
                "mcc": _S_MCC.gather(w.party_mcc[party]),
            }
        )


def _transfer_ids(counter: np.ndarray) -> pl.Series:
    """`WAP` and 12 base-36 digits: unique, deterministic, within the contract's 35 chars."""
    return _encode(counter + 1, _B36, 12, b"WAP")
