"""Ledger contract v1 (`shared/contracts/ledger-v1.md`) as code: one definition of each stream.

Everything that reads, writes or checks ledger data (simulator, ingestion, quality suites,
Postgres source) takes its column names, types, enums, patterns and limits from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

CONTRACT_VERSION = "ledger-v1"

TIMESTAMP = pl.Datetime("us", "UTC")

# Patterns are anchored for both Python `re` / Rust regex (Polars) and pandas (GX).
TRANSFER_ID_PATTERN = r"^[A-Za-z0-9]{1,35}$"
VPA_PATTERN = r"^[a-z0-9._-]{2,256}@[a-z0-9]{2,64}$"
MCC_PATTERN = r"^[0-9]{4}$"
STATE_PATTERN = r"^IN-[A-Z]{2}$"
RESPONSE_CODE_PATTERN = r"^[A-Z0-9]{2,3}$"  # NPCI codes are 2 chars; `U30`-style codes are 3
PERSON_MCC = "0000"

PAYEE_TYPES = ("PERSON", "MERCHANT")
CURRENCIES = ("INR",)
CHANNELS = ("CHAT", "QR", "INTENT", "COLLECT")
TRANSFER_STATUSES = ("PENDING", "SUCCESS", "FAILED", "REVERSED")
ACCOUNT_EVENT_TYPES = (
    "REGISTERED",
    "BANK_LINKED",
    "DEVICE_BOUND",
    "SIM_CHANGED",
    "PIN_RESET",
    "DEREGISTERED",
)
LABELS = ("FRAUD", "LEGIT")
LABEL_SOURCES = ("VICTIM_REPORT", "BANK_CONFIRMED", "REVIEW_VERDICT")
# The contract's list is open ("..."): these are the types the project knows, the contract's
# four and those the simulator adds (the last three turn: a payee or account good until now).
FRAUD_TYPES = (
    "ACCOUNT_TAKEOVER",
    "SOCIAL_ENGINEERING",
    "MULE",
    "MERCHANT_FRAUD",
    "COLLECT_SCAM",
    "QR_SWAP",
    "DORMANT_MULE",
    "ATO_SAME_DEVICE",
)

# Money is integer paise. 1 lakh rupees = 100,000 INR = 10,000,000 paise.
P2P_LIMIT_PAISE = 10_000_000
P2M_LIMIT_PAISE = 50_000_000
# Merchant categories NPCI allows up to 5 lakh a transfer (capital markets, insurance, tax,
# hospitals and education, travel, credit-card bill payment); others are capped at 1 lakh.
P2M_HIGH_LIMIT_MCCS = frozenset({"6211", "6300", "9311", "8062", "8220", "8299", "4722", "6012"})

NPCI_RESPONSE_CODES = {
    "00": "approved",
    "Z9": "insufficient funds",
    "ZM": "wrong UPI PIN",
    "Z6": "PIN tries exceeded",
    "Z8": "per-transfer limit exceeded",
    "Z7": "transaction frequency limit exceeded",
    "K1": "declined on remitter risk",
    "ZI": "declined on beneficiary risk",
    "U30": "debit failed at remitter bank",
    "U69": "collect request expired",
    "U16": "risk threshold exceeded",
    "ZA": "transaction declined by customer",
    "XH": "account does not exist",
    "RB": "reversal: credit not confirmed",
}

# Plausible times: nothing in the ledger predates UPI's launch, and nothing is stamped more than
# a small clock skew after the row reached us (years 0001 or 9999 are producer bugs).
EARLIEST_TIME = datetime(2016, 4, 11, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(days=1)

# Labels carry no id of their own: a label is the (transfer, source, time) it was reported at.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "transfers": ("transfer_id", "ledger_seq"),
    "accounts": ("event_id",),
    "labels": ("transfer_id", "source", "reported_at"),
}
# What no two accepted rows of a stream may share, whatever the rest of their content: a repeat
# is a duplicate when identical, else a conflict. `ledger_seq` is unique across the whole
# transfers ledger, so it alone identifies a transfer row.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {**NATURAL_KEYS, "transfers": ("ledger_seq",)}


@dataclass(frozen=True)
class Field:
    """One column of a stream: name, Polars type, whether it is required, and its meaning."""

    name: str
    dtype: pl.DataType
    required: bool
    meaning: str


@dataclass(frozen=True)
class Stream:
    """One ledger stream: its landing folder name, its Postgres table and its fields."""

    name: str
    postgres_table: str
    incremental_column: str
    fields: tuple[Field, ...]

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({f.name: f.dtype for f in self.fields})

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    @property
    def key(self) -> tuple[str, ...]:
        return NATURAL_KEYS[self.name]

    @property
    def unique_key(self) -> tuple[str, ...]:
        return UNIQUE_KEYS[self.name]

    @property
    def time_columns(self) -> list[str]:
        return [f.name for f in self.fields if f.dtype == TIMESTAMP]


TRANSFERS = Stream(
    name="transfers",
    postgres_table="transfers",
    incremental_column="ledger_seq",
    fields=(
        Field("transfer_id", pl.String(), True, "UPI transaction id"),
        Field("ledger_seq", pl.Int64(), True, "strictly increasing across the ledger"),
        Field("created_at", TIMESTAMP, True, "when the payer initiated the transfer (UTC)"),
        Field("payer_vpa", pl.String(), True, "payer's UPI id"),
        Field("payee_vpa", pl.String(), True, "payee's UPI id"),
        Field("payee_type", pl.String(), True, "PERSON or MERCHANT"),
        Field("mcc", pl.String(), True, "merchant category code; 0000 for a person"),
        Field("amount_paise", pl.Int64(), True, "amount in paise, > 0, within UPI limits"),
        Field("currency", pl.String(), True, "INR"),
        Field("channel", pl.String(), True, "CHAT, QR, INTENT or COLLECT"),
        Field("payer_device_id", pl.String(), True, "opaque id of the initiating device"),
        Field("payer_state", pl.String(), False, "payer's state, ISO 3166-2:IN"),
        Field("status", pl.String(), True, "PENDING, SUCCESS, FAILED or REVERSED"),
        Field("response_code", pl.String(), False, "NPCI response code"),
        Field("note", pl.String(), False, "payer's remark, at most 50 chars"),
    ),
)

ACCOUNTS = Stream(
    name="accounts",
    postgres_table="account_events",
    incremental_column="ledger_seq",
    fields=(
        Field("event_id", pl.String(), True, "unique event id"),
        Field("ledger_seq", pl.Int64(), True, "increasing"),
        Field("event_time", TIMESTAMP, True, "when the event happened (UTC)"),
        Field("vpa", pl.String(), True, "the user's UPI id"),
        Field("event_type", pl.String(), True, "lifecycle event type"),
        Field("device_id", pl.String(), False, "device involved, if any"),
        Field("state", pl.String(), False, "user's state, ISO 3166-2:IN"),
    ),
)

LABELS_STREAM = Stream(
    name="labels",
    postgres_table="labels",
    incremental_column="reported_at",
    fields=(
        Field("transfer_id", pl.String(), True, "the transfer the label is about"),
        Field("label", pl.String(), True, "FRAUD or LEGIT"),
        Field("fraud_type", pl.String(), False, "typology of a FRAUD label"),
        Field("source", pl.String(), True, "VICTIM_REPORT, BANK_CONFIRMED or REVIEW_VERDICT"),
        Field("reported_at", TIMESTAMP, True, "when the label became known (UTC)"),
    ),
)

STREAMS: dict[str, Stream] = {s.name: s for s in (TRANSFERS, ACCOUNTS, LABELS_STREAM)}


def stream(name: str) -> Stream:
    """The stream called `name`, or a ValueError naming the streams that exist."""
    try:
        return STREAMS[name]
    except KeyError:
        raise ValueError(
            f"unknown ledger stream {name!r}; expected one of {sorted(STREAMS)}"
        ) from None
