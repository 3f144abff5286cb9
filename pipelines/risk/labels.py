"""Fraud outcomes and training targets as they were known at a moment (ledger-v1 labels arrive late).

Label precedence, for the labels of one transfer known at the moment (`reported_at < as_of`):

1. A verdict (`BANK_CONFIRMED` or `REVIEW_VERDICT`) outranks any `VICTIM_REPORT`, whichever came
   first: a verdict is an investigated outcome, a victim report a claim (some are mistaken or
   "friendly fraud"). So a later LEGIT verdict overrides an earlier FRAUD report, and a report made
   after a LEGIT verdict does not flip it: it reopens the case, whose new verdict will decide.
2. Among labels of the same rank the latest wins (a second verdict revises the first).
3. At the same instant `BANK_CONFIRMED` beats `REVIEW_VERDICT`, and FRAUD beats LEGIT.

The fraud type is the deciding label's, or else the latest type any FRAUD label of it gave.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from pipelines.ledger.contract import LABELS_STREAM

DEFAULT_MATURITY_DAYS = 30
VERDICT_SOURCES = ("BANK_CONFIRMED", "REVIEW_VERDICT")
_SOURCE_RANK = {"VICTIM_REPORT": 0, "REVIEW_VERDICT": 1, "BANK_CONFIRMED": 2}
_UTC = pl.Datetime("us", "UTC")


def utc(moment: dt.datetime) -> dt.datetime:
    """`moment` as an aware UTC datetime (a naive one is taken to be UTC, as the contract says)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def as_utc_column(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """`frame` with `column` as Datetime(us, UTC); naive timestamps are taken to be UTC."""
    dtype = frame.schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"column {column!r} must be a Datetime, got {dtype}")
    expr = pl.col(column)
    if dtype.time_zone is None:
        expr = expr.dt.replace_time_zone("UTC")
    elif dtype.time_zone != "UTC":
        expr = expr.dt.convert_time_zone("UTC")
    return frame.with_columns(expr.cast(_UTC))


def known_outcomes(labels: pl.DataFrame, *, as_of: dt.datetime | None = None) -> pl.DataFrame:
    """One row per labelled transfer: `transfer_id, label, fraud_type, source, reported_at`.

    The deciding label (see the module docstring) among those reported strictly before `as_of`;
    all labels when `as_of` is None (evaluation with everything known now).
    """
    _require(labels, ("transfer_id", "label", "source", "reported_at"), "labels")
    if "fraud_type" not in labels.columns:
        labels = labels.with_columns(fraud_type=pl.lit(None, dtype=pl.String))
    labels = as_utc_column(labels, "reported_at")
    if as_of is not None:
        labels = labels.filter(pl.col("reported_at") < utc(as_of))
    unknown = labels.filter(~pl.col("source").is_in(list(_SOURCE_RANK)))["source"].unique()
    if len(unknown):
        raise ValueError(f"labels: unknown source(s) {unknown.to_list()}; expected {_SOURCE_RANK}")
    bad = labels.filter(~pl.col("label").is_in(["FRAUD", "LEGIT"]))["label"].unique()
    if len(bad):
        raise ValueError(f"labels: unknown label value(s) {bad.to_list()}; expected FRAUD/LEGIT")
    ranked = labels.with_columns(
        _verdict=pl.col("source").is_in(VERDICT_SOURCES),
        _rank=pl.col("source").replace_strict(_SOURCE_RANK, return_dtype=pl.Int8),
        _fraud=pl.col("label") == "FRAUD",
    ).sort(["transfer_id", "_verdict", "reported_at", "_rank", "_fraud"])
    latest_type = (
        ranked.filter(pl.col("_fraud") & pl.col("fraud_type").is_not_null())
        .group_by("transfer_id")
        .agg(pl.col("fraud_type").last().alias("_any_type"))
    )
    deciding = ranked.group_by("transfer_id", maintain_order=True).last()
    return (
        deciding.join(latest_type, on="transfer_id", how="left")
        .with_columns(
            fraud_type=pl.when(pl.col("_fraud"))
            .then(pl.coalesce("fraud_type", "_any_type"))
            .otherwise(None)
        )
        .select("transfer_id", "label", "fraud_type", "source", "reported_at")
    )


def training_targets(
    transfers: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    as_of: dt.datetime,
    maturity_days: int = DEFAULT_MATURITY_DAYS,
) -> pl.DataFrame:
    """Targets known at `as_of`: `transfer_id, y (Int8 0/1), fraud_type, matured (bool)`.

    Only transfers created before `as_of`. y=1: the deciding label known at `as_of` is FRAUD.
    y=0: the deciding label is LEGIT, or no label is known and the transfer has matured
    (`created_at <= as_of - maturity_days`). Unlabelled transfers younger than that are left out:
    their fraud may simply not be reported yet. `matured` marks rows whose presence did not depend
    on their label, the only rows on which a fraud rate (and so a calibration) is unbiased.
    """
    _require(transfers, ("transfer_id", "created_at"), "transfers")
    as_of = utc(as_of)
    matured_before = as_of - dt.timedelta(days=maturity_days)
    outcomes = known_outcomes(labels, as_of=as_of).select("transfer_id", "label", "fraud_type")
    return (
        as_utc_column(transfers.select("transfer_id", "created_at"), "created_at")
        .filter(pl.col("created_at") < as_of)
        .unique("transfer_id", keep="first", maintain_order=True)
        .join(outcomes, on="transfer_id", how="left")
        .with_columns(matured=pl.col("created_at") <= matured_before)
        .filter(pl.col("label").is_not_null() | pl.col("matured"))
        .select(
            "transfer_id",
            y=(pl.col("label") == "FRAUD").fill_null(False).cast(pl.Int8),
            fraud_type=pl.col("fraud_type"),
            matured=pl.col("matured"),
        )
    )


def evaluation_targets(
    transfers: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    truth: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Targets with everything known now: `transfer_id, y, fraud_type` for every transfer.

    All labels count (no `as_of`); an unlabelled transfer counts as legitimate. A ground-truth
    frame (`transfer_id, is_fraud, fraud_type`, as the simulator writes) overrides the labels for
    the transfers it covers.
    """
    _require(transfers, ("transfer_id",), "transfers")
    outcomes = known_outcomes(labels).select("transfer_id", "label", "fraud_type")
    targets = (
        transfers.select("transfer_id")
        .unique("transfer_id", keep="first", maintain_order=True)
        .join(outcomes, on="transfer_id", how="left")
        .select(
            "transfer_id",
            y=(pl.col("label") == "FRAUD").fill_null(False).cast(pl.Int8),
            fraud_type=pl.col("fraud_type"),
        )
    )
    if truth is None:
        return targets
    _require(truth, ("transfer_id", "is_fraud"), "truth")
    truth = truth.select(
        "transfer_id",
        _y=pl.col("is_fraud").cast(pl.Int8),
        _type=pl.col("fraud_type") if "fraud_type" in truth.columns else pl.lit(None, pl.String),
    ).unique("transfer_id", keep="last")
    return (
        targets.join(truth, on="transfer_id", how="left")
        .with_columns(
            y=pl.coalesce("_y", "y"),
            fraud_type=pl.when(pl.col("_y").is_null())
            .then(pl.col("fraud_type"))
            .when(pl.col("_y") == 1)
            .then(pl.col("_type"))
            .otherwise(None),
        )
        .select("transfer_id", "y", "fraud_type")
    )


def _require(frame: pl.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; it has {frame.columns}")


def read_labels(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The ledger's labels, as reported (every column of the contract's labels stream)."""
    return con.sql(f"SELECT {', '.join(LABELS_STREAM.columns)} FROM ledger.labels").pl()
