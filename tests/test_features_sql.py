"""The benchmark's baselines agree with the engine: plain SQL and idiomatic Polars.

Three independent implementations, one with DuckDB RANGE window frames and ASOF joins, one
with Polars rolling windows and as-of joins, one with sorts and prefix sums, must give the
same value for every feature of every transfer.
"""

import duckdb
import polars as pl
import pytest

from pipelines.features.engine import compute_features
from pipelines.features.reference_polars import compute_features_polars
from pipelines.features.reference_sql import compute_features_sql
from tests.test_features import assert_features_equal, random_ledger


def assert_agrees_with_the_engine(engine: pl.DataFrame, reference: pl.DataFrame) -> None:
    engine, reference = engine.sort("transfer_id"), reference.sort("transfer_id")
    assert reference.columns == engine.columns
    assert reference["transfer_id"].equals(engine["transfer_id"])
    rows = zip(engine.iter_rows(named=True), reference.iter_rows(named=True), strict=True)
    for got, want in rows:
        assert_features_equal(got, want, got["transfer_id"])


@pytest.mark.parametrize("seed", [11, 12])
def test_sql_window_frames_agree_with_the_engine(seed: int) -> None:
    transfers, events, labels = random_ledger(seed)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("transfers_in", transfers)
    con.register("events_in", events)
    con.register("labels_in", labels)
    sql = compute_features_sql(con, "transfers_in", "events_in", "labels_in")
    assert_agrees_with_the_engine(compute_features(transfers, events, labels), sql)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_polars_rolling_windows_agree_with_the_engine(seed: int) -> None:
    transfers, events, labels = random_ledger(seed)
    polars = compute_features_polars(transfers, events, labels)
    assert_agrees_with_the_engine(compute_features(transfers, events, labels), polars)


def test_polars_reads_zoned_and_naive_times_alike() -> None:
    """The warehouse gives UTC-zoned times, a notebook may hand naive ones (taken as UTC)."""
    transfers, events, labels = random_ledger(14, n=80)
    naive = [
        frame.with_columns(pl.col(column).dt.replace_time_zone(None))
        for frame, column in ((transfers, "created_at"), (events, "event_time"))
    ]
    zoned = compute_features_polars(transfers, events, labels).sort("transfer_id")
    assert compute_features_polars(naive[0], naive[1], labels).sort("transfer_id").equals(zoned)
