"""The features of one incoming transfer (the online decision path), by the batch engine run on
the history the transfer's features read: its payer's, its payee's and its device's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.engine.batch import compute_features
from pipelines.features.engine.inputs import (
    ACCOUNT_EVENT_COLUMNS,
    LABEL_COLUMNS,
    TRANSFER_COLUMNS,
)

_OUTCOME = ("status", "response_code")  # not known yet when a transfer arrives
# The engine's columns with their types: a frame of transfers as the features read it.
TRANSFER_SCHEMA = {
    "transfer_id": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "payer_vpa": pl.String,
    "payee_vpa": pl.String,
    "payee_type": pl.String,
    "amount_paise": pl.Int64,
    "channel": pl.String,
    "payer_device_id": pl.String,
    "status": pl.String,
    "response_code": pl.String,
}


def features_for_transfer(
    transfer: dict,
    history: pl.DataFrame,
    account_events: pl.DataFrame,
    labels: pl.DataFrame,
) -> dict[str, float | None]:
    """The features of one incoming transfer, from the same engine as the batch.

    `transfer` holds at least TRANSFER_COLUMNS except status and response_code (it has no
    outcome yet). Rows of `history` at or after its created_at, and the transfer itself if
    present, are ignored; only the rows its features read are passed to the engine.
    """
    missing = [c for c in TRANSFER_COLUMNS if c not in transfer and c not in _OUTCOME]
    if missing:
        raise ValueError(f"transfer lacks {missing}; expected {TRANSFER_COLUMNS}")
    created = transfer["created_at"]
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    cutoff = _epoch_us(created)
    row = {c: transfer.get(c) for c in TRANSFER_COLUMNS} | {"created_at": created}
    row["status"] = row["status"] or "PENDING"
    one = pl.DataFrame([row], schema=TRANSFER_SCHEMA)
    payer, payee = transfer["payer_vpa"], transfer["payee_vpa"]
    prior = (
        history.lazy()
        .select(TRANSFER_COLUMNS)
        .filter(
            (pl.col("created_at").dt.epoch("us") < cutoff)
            & (pl.col("transfer_id") != transfer["transfer_id"])
        )
    )
    relevant = (
        prior.filter(
            pl.col("payer_vpa").is_in([payer, payee])
            | (pl.col("payee_vpa") == payee)
            | (pl.col("payer_device_id") == transfer["payer_device_id"])
        )
        .with_columns(_as_utc("created_at"))
        .cast(TRANSFER_SCHEMA)
        .collect()
    )
    events = account_events.select(ACCOUNT_EVENT_COLUMNS).filter(
        pl.col("vpa").is_in([payer, payee]) & (pl.col("event_time").dt.epoch("us") < cutoff)
    )
    ids = pl.concat([relevant["transfer_id"], one["transfer_id"]])
    known = labels.select(LABEL_COLUMNS).filter(
        pl.col("transfer_id").is_in(ids.implode()) & (pl.col("reported_at").dt.epoch("us") < cutoff)
    )
    frame = compute_features(pl.concat([relevant, one]), events, known, targets=one["transfer_id"])
    return {name: frame[name][0] for name in FEATURE_NAMES}


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _as_utc(column: str) -> pl.Expr:
    """A Datetime column as Datetime(us, UTC), whatever its unit or zone (naive = UTC)."""
    return pl.from_epoch(pl.col(column).dt.epoch("us"), time_unit="us").dt.replace_time_zone("UTC")
