"""The DuckDB warehouse: connecting to it and creating the ledger tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from pipelines.ledger import contract as c

# Event tables keep every accepted row of a stream, with where it came from.
EVENT_TABLES = {
    "transfers": "ledger.transfer_events",
    "accounts": "ledger.account_events",
    "labels": "ledger.labels",
}
# The decision of record of each transfer: its first live (non-shadow) decision, the one the
# transfer service acted on; written by the scoring pass (decisions.scoring), read by the adoption marts.
DECISIONS_TABLE = "risk.transfer_decisions"
# What the online decision service decided, before the money moved (decisions.online_record).
ONLINE_DECISIONS_TABLE = "risk.online_decisions"
# Every score of every transfer, live and shadow (written by the scoring pass).
SCORES_TABLE = "risk.transfer_scores"
# Point-in-time features of each transfer (written by pipelines.features.table).
FEATURE_TABLE = "features.transfer_features"
LINEAGE_COLUMNS = {
    "_source": "VARCHAR NOT NULL",
    "_position": "BIGINT",
    "_batch_id": "BIGINT NOT NULL",
    "_ingested_at": "TIMESTAMPTZ NOT NULL",
}

_DUCK_TYPES = {pl.String(): "VARCHAR", pl.Int64(): "BIGINT", c.TIMESTAMP: "TIMESTAMPTZ"}


def _event_table_ddl(stream: c.Stream) -> str:
    columns = [
        f"{f.name} {_DUCK_TYPES[f.dtype]}{' NOT NULL' if f.required else ''}" for f in stream.fields
    ]
    columns += [f"{name} {kind}" for name, kind in LINEAGE_COLUMNS.items()]
    return f"CREATE TABLE IF NOT EXISTS {EVENT_TABLES[stream.name]} ({', '.join(columns)})"


SCHEMA_DDL = [
    "CREATE SCHEMA IF NOT EXISTS ledger",
    *(_event_table_ddl(s) for s in c.STREAMS.values()),
    "CREATE SEQUENCE IF NOT EXISTS ledger.batch_ids START 1",
    """CREATE TABLE IF NOT EXISTS ledger.quarantine (
        batch_id BIGINT NOT NULL, stream VARCHAR NOT NULL, source_kind VARCHAR NOT NULL,
        source VARCHAR NOT NULL, position_kind VARCHAR NOT NULL, position BIGINT,
        reason VARCHAR NOT NULL, record VARCHAR, quarantined_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger.ingested_sources (
        batch_id BIGINT NOT NULL, stream VARCHAR NOT NULL, source_kind VARCHAR NOT NULL,
        source VARCHAR NOT NULL, content_hash VARCHAR, size_bytes BIGINT, mtime_ns BIGINT,
        status VARCHAR NOT NULL, rows_in BIGINT NOT NULL, loaded BIGINT NOT NULL,
        duplicates BIGINT NOT NULL, quarantined BIGINT NOT NULL, note VARCHAR,
        ingested_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger.postgres_watermarks (
        stream VARCHAR PRIMARY KEY, last_seq BIGINT, last_reported_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL)""",
]


def connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse; timestamps come back in UTC whatever the machine's zone."""
    if read_only and not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: run `upi-risk ingest` or `upi-risk demo`")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        con.execute("SET TimeZone = 'UTC'")
        # In Jupyter without ipywidgets DuckDB refuses to touch the progress-bar setting
        # (duckdb/duckdb#7590), and the bar is off there anyway.
        with contextlib.suppress(duckdb.InvalidInputException):
            con.execute("SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def warehouse(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A warehouse connection, with the ledger schema in place when writable; closed on exit."""
    con = connect(path, read_only=read_only)
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ledger schema and tables if they do not exist yet."""
    for ddl in SCHEMA_DDL:
        con.execute(ddl)


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether `schema.table` exists."""
    schema, _, name = qualified.partition(".")
    return bool(
        scalar(
            con,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        )
    )


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The single value a query returns.

    DuckDB 2.x refuses further work on a connection whose `execute()` result was not read to
    the end (`fetchone()` does not), so queries go through `con.sql(...)` relations instead.
    """
    return con.sql(sql, params=params).fetchall()[0][0]
