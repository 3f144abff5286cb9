"""What the engine reads: the warehouse's transfers, account events and labels, checked and
turned into numpy columns in created_at order (times in microseconds, strings as hashes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl

from pipelines.india_time import IST_OFFSET_US

SECOND = 1_000_000  # created_at is handled as int64 microseconds since the epoch, UTC
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
LONGEST_WINDOW = timedelta(days=30)  # history a caller must load before the first target

TRANSFER_COLUMNS = (
    "transfer_id",
    "created_at",
    "payer_vpa",
    "payee_vpa",
    "payee_type",
    "amount_paise",
    "channel",
    "payer_device_id",
    "status",
    "response_code",
)
ACCOUNT_EVENT_COLUMNS = ("vpa", "event_type", "event_time")
LABEL_COLUMNS = ("transfer_id", "label", "reported_at")

CHANNELS = ("CHAT", "QR", "INTENT", "COLLECT")
_PIN_CODES = ("ZM", "Z6")
_FUNDS_CODES = ("Z9",)
EVENT_KINDS = ("REGISTERED", "DEVICE_BOUND", "SIM_CHANGED", "PIN_RESET")  # those features use
EVENT_CODE = {kind: i for i, kind in enumerate(EVENT_KINDS)}
_SEEDS = (0x5EED_0001, 0x5EED_0002)  # two independent hashes: a 128-bit key per string

# One byte of facts per transfer, gathered once per key order instead of one array each.
OK, FAILED, PIN_FAIL, FUNDS_FAIL, NIGHT, MERCHANT = (1 << i for i in range(6))


def bit(flags: np.ndarray, mask: int) -> np.ndarray:
    return (flags & mask).astype(bool)


def require(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}; expected at least {columns}")


def _micros(series: pl.Series) -> np.ndarray:
    """Datetimes as int64 microseconds since the epoch, UTC (naive values are taken as UTC)."""
    if not isinstance(series.dtype, pl.Datetime):
        raise ValueError(f"column {series.name} is {series.dtype}; expected a Datetime")
    return series.dt.cast_time_unit("us").to_physical().to_numpy().astype(np.int64, copy=False)


def hash_exprs(column: str) -> list[pl.Expr]:
    """The two hashes of a string column, as <column>_0 and <column>_1."""
    return [pl.col(column).hash(seed=s).alias(f"{column}_{i}") for i, s in enumerate(_SEEDS)]


def _hashes(frame: pl.DataFrame, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """<column>_<i> -> uint64 hash i of each value of the column.

    One at a time and copied into numpy, so that each Polars column is freed at once and the
    next one reuses its memory.
    """
    out = {}
    for column in columns:
        for expr in hash_exprs(column):
            hashed = frame.select(expr).to_series()
            out[hashed.name] = hashed.to_numpy().copy()
            del hashed
    return out


@dataclass
class Inputs:
    """Transfers in created_at order as numpy columns, plus what features need of the labels."""

    transfer_id: pl.Series
    t: np.ndarray  # int64 microseconds
    amount: np.ndarray  # int64 paise
    flags: np.ndarray  # uint8 of OK, FAILED, ...
    channel: np.ndarray  # uint8 index into CHANNELS (4 if unknown)
    hour: np.ndarray  # int8 hour of day in IST
    hashes: dict[str, np.ndarray]  # <column>_<0|1> -> uint64
    fraud_rows: np.ndarray  # rows with a FRAUD label, ascending
    fraud_known_at: np.ndarray  # for each: max(created_at, first FRAUD report)


def prepare(transfers: pl.DataFrame, labels: pl.DataFrame) -> Inputs:
    """Check the frames and lay the transfers out in created_at order (ties in input order)."""
    require(transfers, TRANSFER_COLUMNS, "transfers")
    require(labels, LABEL_COLUMNS, "labels")
    if transfers.height >= 2**31 - 1:
        raise ValueError(f"{transfers.height:,} transfers: split the batch below 2**31 rows")
    frame = transfers.select(TRANSFER_COLUMNS)
    nulls = [c for c in TRANSFER_COLUMNS if c != "response_code" and frame[c].null_count()]
    if nulls:
        raise ValueError(f"transfers: required columns {nulls} contain nulls")
    t = _micros(frame["created_at"])
    if t.size and not bool(np.all(t[1:] >= t[:-1])):
        order = np.argsort(t, kind="stable")  # ties keep the input order
        frame = frame[order]
        t = t[order]
    status, code = pl.col("status"), pl.col("response_code")
    failed = status == "FAILED"
    facts = frame.select(
        (
            status.is_in(["SUCCESS", "REVERSED"]).cast(pl.UInt8) * OK
            + failed.cast(pl.UInt8) * FAILED
            + (failed & code.is_in(_PIN_CODES)).fill_null(False).cast(pl.UInt8) * PIN_FAIL
            + (failed & code.is_in(_FUNDS_CODES)).fill_null(False).cast(pl.UInt8) * FUNDS_FAIL
            + (pl.col("payee_type") == "MERCHANT").cast(pl.UInt8) * MERCHANT
        )
        .cast(pl.UInt8)
        .alias("flags"),
        pl.col("channel")
        .replace_strict(dict(zip(CHANNELS, range(4), strict=True)), default=4)
        .cast(pl.UInt8)
        .alias("channel"),
    )
    hour = ((t + IST_OFFSET_US) // HOUR % 24).astype(np.int8)
    flags = facts["flags"].to_numpy().copy()
    flags |= np.where(hour < 5, NIGHT, 0).astype(np.uint8)

    hit, fraud_known_at = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    reports = (
        labels.lazy()
        .filter(pl.col("label") == "FRAUD")
        .group_by("transfer_id")
        .agg(pl.col("reported_at").min())
        .collect()
    )
    if reports.height:
        hit = np.flatnonzero(frame["transfer_id"].is_in(reports["transfer_id"].implode()))
        joined = (
            frame[hit]
            .select("transfer_id")
            .join(reports, on="transfer_id", how="left", maintain_order="left")
        )
        fraud_known_at = np.maximum(t[hit], _micros(joined["reported_at"]))

    return Inputs(
        transfer_id=frame["transfer_id"],
        t=t,
        amount=frame["amount_paise"].cast(pl.Int64).to_numpy(),
        flags=flags,
        channel=facts["channel"].to_numpy(),
        hour=hour,
        hashes=_hashes(frame, ("payer_vpa", "payee_vpa", "payer_device_id")),
        fraud_rows=hit,
        fraud_known_at=fraud_known_at,
    )


@dataclass
class EventTable:
    """Account events of the kinds features use: hashes of the VPA, kind code, time."""

    h0: np.ndarray
    h1: np.ndarray
    kind: np.ndarray
    time: np.ndarray


def event_table(account_events: pl.DataFrame) -> EventTable:
    require(account_events, ACCOUNT_EVENT_COLUMNS, "account_events")
    frame = (
        account_events.lazy()
        .filter(pl.col("event_type").is_in(list(EVENT_KINDS)) & pl.col("event_time").is_not_null())
        .select(
            *hash_exprs("vpa"),
            pl.col("event_type").replace_strict(EVENT_CODE, return_dtype=pl.Int8).alias("kind"),
            pl.col("event_time").dt.cast_time_unit("us").to_physical().alias("time"),
        )
        .collect()
    )
    h0 = frame["vpa_0"].to_numpy()
    order = np.argsort(h0)  # key lookups by sorted hashes merge instead of jumping around
    return EventTable(
        h0=h0[order],
        h1=frame["vpa_1"].to_numpy()[order],
        kind=frame["kind"].to_numpy()[order],
        time=frame["time"].to_numpy()[order],
    )


def load_inputs(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(transfers, account_events, labels) from the warehouse, with the columns features use.

    `since` keeps transfers created at or after it, and the labels of those transfers (account
    events are all kept: registrations are old). Windowed features of transfers less than
    LONGEST_WINDOW after `since`, and lifetime ones (pair_prior_count, payer_new_device, ...),
    then see only that much history: pass `since` = first target - LONGEST_WINDOW or earlier.
    `until` keeps what was known before it (transfers created, events happened, labels
    reported): the warehouse as of that moment, e.g. for a backtest.
    """
    transfer_where = ["true"]
    if since is not None:
        transfer_where.append("created_at >= $since")
    if until is not None:
        transfer_where.append("created_at < $until")
    bounds = {k: v for k, v in {"since": since, "until": until}.items() if v is not None}
    where = " AND ".join(transfer_where)
    transfers = con.sql(
        f"SELECT {', '.join(TRANSFER_COLUMNS)} FROM ledger.transfers WHERE {where} "
        "ORDER BY created_at, first_seq",
        params=bounds,
    ).pl()
    account_events = con.sql(
        f"SELECT {', '.join(ACCOUNT_EVENT_COLUMNS)} FROM ledger.account_events "
        + ("WHERE event_time < $until" if until is not None else ""),
        params={"until": until} if until is not None else None,
    ).pl()
    label_where = ["true"]
    if since is not None:
        label_where.append(
            "transfer_id IN (SELECT transfer_id FROM ledger.transfers WHERE created_at >= $since)"
        )
    if until is not None:
        label_where.append("reported_at < $until")
    labels = con.sql(
        f"SELECT {', '.join(LABEL_COLUMNS)} FROM ledger.labels WHERE {' AND '.join(label_where)}",
        params=bounds,
    ).pl()
    return transfers, account_events, labels
