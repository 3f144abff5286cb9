"""The online state built in bulk from a ledger: the same records the updates would append.

Records are made column-wise with Polars and numpy, grouped by key with one sort, and handed
to the store in large appends, so millions of transfers take minutes. Transfers created before
`keep_from` become the summaries compaction would write (`compute.compact`): per counterpart
and direction, devices seen; fraud reports and the latest event of each kind are kept.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl

from pipelines.features.engine.inputs import (
    ACCOUNT_EVENT_COLUMNS,
    EVENT_CODE,
    FAILED,
    FUNDS_FAIL,
    LABEL_COLUMNS,
    OK,
    PIN_FAIL,
    TRANSFER_COLUMNS,
    load_inputs,
    require,
)
from pipelines.features.online.records import (
    AS_DEVICE,
    AS_PAYEE,
    AS_PAYER,
    DEVICE_SEEN,
    DEVICE_USE,
    EVENT,
    FRAUD,
    IN,
    MERCHANT,
    MULE_CONFIRMED,
    OUT,
    PAIR,
    RECORD,
    night_bit,
    records,
    stable_hashes,
)
from pipelines.features.online.state import INDEX_SEPARATOR, KEEP, OnlineFeatureState, micros
from pipelines.features.online.store import StateStore

_APPEND_CHUNK = 50_000  # keys per store.append: one round trip each on Redis


def build_state(
    store: StateStore,
    transfers: pl.DataFrame,
    account_events: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    keep_from: datetime | None = None,
) -> OnlineFeatureState:
    """The state of exactly this ledger (the store is cleared first): every transfer with its
    current status, every account event, every label (`fraud_type` and `source` columns, if
    present, feed the block list). Transfers created before `keep_from` are kept as summaries:
    features of transfers from keep_from + 30 days on are exact."""
    require(transfers, TRANSFER_COLUMNS, "transfers")
    require(account_events, ACCOUNT_EVENT_COLUMNS, "account_events")
    require(labels, LABEL_COLUMNS, "labels")
    store.clear()
    frame = _transfer_frame(transfers)
    horizon = None if keep_from is None else micros(keep_from)
    recent = frame if horizon is None else frame.filter(pl.col("t") >= horizon)
    old = frame.head(0) if horizon is None else frame.filter(pl.col("t") < horizon)
    parts = [
        _transfer_records(recent),
        *_summaries(old),
        _event_records(account_events, horizon),
        _label_records(frame, labels),
    ]
    keys = pl.concat([k for k, _ in parts])
    recs = np.concatenate([r for _, r in parts])
    _append_grouped(store, keys, recs)
    _write_index(store, frame)
    return OnlineFeatureState(store)


def bootstrap_from_warehouse(
    con: duckdb.DuckDBPyConnection,
    store: StateStore,
    *,
    as_of: datetime | None = None,
) -> OnlineFeatureState:
    """The state as of `as_of` (default: all the warehouse holds) from ledger.transfers,
    account_events and labels: the last `state.KEEP` days as records, older transfers as
    lifetime summaries."""
    transfers, events, _ = load_inputs(con, until=as_of)
    where = "" if as_of is None else "WHERE reported_at < $until"
    labels = con.sql(
        f"SELECT transfer_id, label, reported_at, fraud_type, source FROM ledger.labels {where}",
        params=None if as_of is None else {"until": as_of},
    ).pl()
    newest = as_of
    if newest is None and transfers.height:
        newest = transfers["created_at"].max()
    keep_from = None if newest is None else newest - timedelta(microseconds=KEEP)
    return build_state(store, transfers, events, labels, keep_from=keep_from)


def _hash(series: pl.Series) -> np.ndarray:
    """stable_hash of each value, hashing each distinct value once."""
    distinct = series.unique()
    table = pl.DataFrame({"v": distinct, "h": pl.Series(stable_hashes(distinct.to_list()))})
    return (
        series.to_frame("v").join(table, on="v", how="left", maintain_order="left")["h"].to_numpy()
    )


def _transfer_frame(transfers: pl.DataFrame) -> pl.DataFrame:
    """One row per transfer: keys, hashes, microseconds, flags (as `state.record_transfer`)."""
    status, code = pl.col("status"), pl.col("response_code")
    failed = status == "FAILED"
    frame = transfers.select(
        "transfer_id",
        "payer_vpa",
        "payee_vpa",
        "payer_device_id",
        pl.col("amount_paise").cast(pl.Int64).alias("amount"),
        pl.col("created_at").dt.epoch("us").alias("t"),
        (
            status.is_in(["SUCCESS", "REVERSED"]).cast(pl.UInt8) * OK
            + failed.cast(pl.UInt8) * FAILED
            + (failed & code.is_in(["ZM", "Z6"])).fill_null(False).cast(pl.UInt8) * PIN_FAIL
            + (failed & code.is_in(["Z9"])).fill_null(False).cast(pl.UInt8) * FUNDS_FAIL
            + (pl.col("payee_type") == "MERCHANT").cast(pl.UInt8) * MERCHANT
        )
        .cast(pl.UInt8)
        .alias("flags"),
    )
    return frame.with_columns(
        flags=frame["flags"].to_numpy() | night_bit(frame["t"].to_numpy()),
        tx=_hash(frame["transfer_id"]),
        payer_h=_hash(frame["payer_vpa"]),
        payee_h=_hash(frame["payee_vpa"]),
        device_h=_hash(frame["payer_device_id"]),
    )


def _keys(prefix: str, column: pl.Series) -> pl.Series:
    return (prefix + column).alias("key")


def _transfer_records(frame: pl.DataFrame) -> tuple[pl.Series, np.ndarray]:
    n = frame.height
    recs = records(3 * n)
    out, got, used = recs[:n], recs[n : 2 * n], recs[2 * n :]
    out["kind"], got["kind"], used["kind"] = OUT, IN, DEVICE_USE
    for part in (out, got, used):
        part["time"] = frame["t"].to_numpy()
        part["tx"] = frame["tx"].to_numpy()
    for part in (out, got):
        part["flags"] = frame["flags"].to_numpy()
        part["amount"] = frame["amount"].to_numpy()
    out["other"], out["aux"] = frame["payee_h"].to_numpy(), frame["device_h"].to_numpy()
    got["other"] = frame["payer_h"].to_numpy()
    keys = pl.concat(
        [
            _keys("v:", frame["payer_vpa"]),
            _keys("v:", frame["payee_vpa"]),
            _keys("d:", frame["payer_device_id"]),
        ]
    )
    return keys, recs


def _summaries(old: pl.DataFrame) -> list[tuple[pl.Series, np.ndarray]]:
    """PAIR records for both sides of each (payer, payee), DEVICE_SEEN per (payer, device)."""
    pairs = old.group_by("payer_vpa", "payee_vpa").agg(
        pl.len().alias("n"),
        pl.col("amount").sum(),
        pl.col("t").max().alias("last"),
        pl.col("t").min().alias("first"),
        pl.col("payer_h").first(),
        pl.col("payee_h").first(),
    )
    out = []
    for role, own, other in (
        (AS_PAYER, "payer_vpa", "payee_h"),
        (AS_PAYEE, "payee_vpa", "payer_h"),
    ):
        recs = records(pairs.height)
        recs["kind"], recs["flags"] = PAIR, role
        recs["n"] = pairs["n"].to_numpy()
        recs["amount"] = pairs["amount"].to_numpy()
        recs["time"] = pairs["last"].to_numpy()
        recs["time2"] = pairs["first"].to_numpy()
        recs["other"] = pairs[other].to_numpy()
        out.append((_keys("v:", pairs[own]), recs))
    devices = old.group_by("payer_vpa", "device_h").agg(pl.col("t").min())
    recs = records(devices.height)
    recs["kind"] = DEVICE_SEEN
    recs["other"] = devices["device_h"].to_numpy()
    recs["time"] = devices["t"].to_numpy()
    out.append((_keys("v:", devices["payer_vpa"]), recs))
    return out


def _event_records(events: pl.DataFrame, horizon: int | None) -> tuple[pl.Series, np.ndarray]:
    """EVENT records of the kinds features read; before `horizon`, the latest of each kind."""
    frame = events.filter(
        pl.col("event_type").is_in(list(EVENT_CODE)) & pl.col("event_time").is_not_null()
    ).select(
        "vpa",
        pl.col("event_type").replace_strict(EVENT_CODE, return_dtype=pl.UInt16).alias("code"),
        pl.col("event_time").dt.epoch("us").alias("time"),
    )
    if horizon is not None:
        old = pl.col("time") < horizon
        latest_old = pl.col("time") == pl.col("time").filter(old).max().over("vpa", "code")
        frame = frame.filter(~old | latest_old).unique(["vpa", "code", "time"])
    recs = records(frame.height)
    recs["kind"] = EVENT
    recs["code"] = frame["code"].to_numpy()
    recs["time"] = frame["time"].to_numpy()
    return _keys("v:", frame["vpa"]), recs


def _label_records(frame: pl.DataFrame, labels: pl.DataFrame) -> tuple[pl.Series, np.ndarray]:
    """FRAUD records for the payer, the payee and the device of each FRAUD label."""
    fraud_type = pl.col("fraud_type") if "fraud_type" in labels.columns else pl.lit(None)
    source = pl.col("source") if "source" in labels.columns else pl.lit(None)
    mule = ((fraud_type == "MULE") & (source == "BANK_CONFIRMED")).fill_null(False)
    found = (
        labels.filter(pl.col("label") == "FRAUD")
        .select(
            "transfer_id",
            pl.col("reported_at").dt.epoch("us").alias("reported"),
            mule.cast(pl.UInt8).alias("mule"),
        )
        .join(frame, on="transfer_id", how="inner")
    )
    n = found.height
    recs = records(3 * n)
    for i in range(3):
        part = recs[i * n : (i + 1) * n]
        part["kind"] = FRAUD
        part["time"] = found["reported"].to_numpy()
        part["time2"] = found["t"].to_numpy()
        part["tx"] = found["tx"].to_numpy()
    recs["flags"][:n] = AS_PAYER
    recs["flags"][n : 2 * n] = AS_PAYEE | found["mule"].to_numpy() * MULE_CONFIRMED
    recs["flags"][2 * n :] = AS_DEVICE
    keys = pl.concat(
        [
            _keys("v:", found["payer_vpa"]),
            _keys("v:", found["payee_vpa"]),
            _keys("d:", found["payer_device_id"]),
        ]
    )
    return keys, recs


def _append_grouped(store: StateStore, keys: pl.Series, recs: np.ndarray) -> None:
    """Append each key's records as one value, in chunks of keys."""
    if keys.len() == 0:
        return
    order = keys.arg_sort().to_numpy()
    keys = keys.gather(order)
    data = recs[order].tobytes()
    starts = np.flatnonzero(np.append(True, (keys.slice(1) != keys.slice(0, keys.len() - 1))))
    ends = np.append(starts[1:], keys.len()) * RECORD.itemsize
    names = keys.gather(starts).to_list()
    begins = starts * RECORD.itemsize
    items = []
    for name, a, b in zip(names, begins.tolist(), ends.tolist(), strict=True):
        items.append((name, data[a:b]))
        if len(items) == _APPEND_CHUNK:
            store.append(items)
            items = []
    if items:
        store.append(items)


def _write_index(store: StateStore, frame: pl.DataFrame) -> None:
    """The set-once index of every transfer (as `state.TransferIndex.encode`)."""
    values = frame.select(
        ("t:" + pl.col("transfer_id")).alias("key"),
        pl.concat_str(
            pl.col("t").cast(pl.String),
            "payer_vpa",
            "payee_vpa",
            "payer_device_id",
            separator=INDEX_SEPARATOR,
        ).alias("value"),
    )
    rows = [(key, value.encode()) for key, value in values.iter_rows()]
    for start in range(0, len(rows), _APPEND_CHUNK):
        store.set_if_absent_many(rows[start : start + _APPEND_CHUNK])
