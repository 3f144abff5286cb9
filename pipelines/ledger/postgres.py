"""The production ledger source: PostgreSQL tables read incrementally by `ledger_seq`.

Transfers and account events are read by `ledger_seq` (labels by `reported_at`) above the
watermark kept in the warehouse. A look-back re-reads a window below the watermark, because a
sequence number can commit after a higher one; row dedup makes the overlap free of duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import duckdb
import polars as pl
import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from pipelines.ledger import contract as c
from pipelines.ledger.ingest import BatchSource, IngestReport, load_batch
from pipelines.ledger.validate import POSITION
from pipelines.warehouse import ensure_schema


class PostgresLedgerConfig(BaseModel):
    """Where the ledger tables are and how to page through them."""

    model_config = ConfigDict(frozen=True)

    dsn: str
    schema_name: str = "ledger"
    page_rows: int = 200_000
    lookback_seq: int = 10_000


_PG_TYPES = {pl.String(): "text", pl.Int64(): "bigint", c.TIMESTAMP: "timestamptz"}


def create_ledger_tables(pg: psycopg.Connection, schema_name: str = "ledger") -> None:
    """Create the three ledger-v1 tables in `schema_name` (for the sandbox and the tests)."""
    with pg.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema_name)))
        for stream in c.STREAMS.values():
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_PG_TYPES[f.dtype]))
                for f in stream.fields
            )
            table = sql.Identifier(schema_name, stream.postgres_table)
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, columns))
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(f"{stream.postgres_table}_{stream.incremental_column}_idx"),
                    table,
                    sql.Identifier(stream.incremental_column),
                )
            )


def insert_rows(
    pg: psycopg.Connection, schema_name: str, stream: c.Stream, rows: list[dict]
) -> None:
    """Append rows (dicts of contract fields) to a ledger table with COPY."""
    table = sql.Identifier(schema_name, stream.postgres_table)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in stream.columns)
    with (
        pg.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)) as copy,
    ):
        for row in rows:
            copy.write_row([row.get(name) for name in stream.columns])


def _watermark(con: duckdb.DuckDBPyConnection, stream: c.Stream) -> int | datetime | None:
    column = "last_reported_at" if stream.incremental_column == "reported_at" else "last_seq"
    rows = con.sql(
        f"SELECT {column} FROM ledger.postgres_watermarks WHERE stream = ?", params=[stream.name]
    ).fetchall()
    return rows[0][0] if rows else None


def _save_watermark(
    con: duckdb.DuckDBPyConnection, stream: c.Stream, value: int | datetime
) -> None:
    seq, reported = (None, value) if stream.incremental_column == "reported_at" else (value, None)
    con.execute(
        "INSERT OR REPLACE INTO ledger.postgres_watermarks VALUES (?, ?, ?, ?)",
        [stream.name, seq, reported, datetime.now(UTC)],
    )


def pages(
    pg: psycopg.Connection,
    config: PostgresLedgerConfig,
    stream: c.Stream,
    after: int | datetime | None,
) -> Iterator[pl.DataFrame]:
    """Pages of rows above `after` in incremental-column order, as raw frames with `_position`."""
    column = stream.incremental_column
    table = sql.Identifier(config.schema_name, stream.postgres_table)
    by_time = column == "reported_at"
    cursor_value = after
    while True:
        # Labels can share a reported_at, so they page with >= and rely on row dedup.
        comparison = sql.SQL(">=") if by_time else sql.SQL(">")
        where = (
            sql.SQL("WHERE {} {} %s").format(sql.Identifier(column), comparison)
            if cursor_value is not None
            else sql.SQL("")
        )
        query = sql.SQL("SELECT * FROM {} {} ORDER BY {} LIMIT %s").format(
            table, where, sql.Identifier(column)
        )
        params = (
            [cursor_value, config.page_rows] if cursor_value is not None else [config.page_rows]
        )
        with pg.cursor() as cur:
            cur.execute(query, params)
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
        if not rows:
            return
        frame = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
        position = (
            pl.col(column).dt.epoch("us")
            if by_time
            else pl.col(column).cast(pl.Int64, strict=False)
        )
        yield frame.with_columns(position.alias(POSITION))
        last = frame[column].max()
        if len(rows) < config.page_rows or last == cursor_value:
            return
        cursor_value = last


def ingest_postgres(
    con: duckdb.DuckDBPyConnection,
    config: PostgresLedgerConfig,
    *,
    streams: Iterable[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Load the rows added to the Postgres ledger since the last run, exactly once."""
    ensure_schema(con)
    report = IngestReport()
    with psycopg.connect(config.dsn, autocommit=True) as pg:
        for stream in c.STREAMS.values():
            if streams is not None and stream.name not in streams:
                continue
            after = _watermark(con, stream)
            if after is not None and stream.incremental_column == "ledger_seq":
                after = max(0, after - config.lookback_seq)
            source = BatchSource(
                kind="postgres",
                name=f"{config.schema_name}.{stream.postgres_table}",
                position_kind="reported_at_us"
                if stream.incremental_column == "reported_at"
                else "ledger_seq",
            )
            for page_number, page in enumerate(pages(pg, config, stream, after), start=1):
                report.streams[stream.name].add(load_batch(con, stream, page, source))
                newest = page[stream.incremental_column].max()
                previous = _watermark(con, stream)
                if newest is not None and (previous is None or newest > previous):
                    _save_watermark(con, stream, newest)
                if progress is not None:
                    progress(source.name, page_number, 0)
    return report


def max_positions(config: PostgresLedgerConfig) -> dict[str, int | datetime | None]:
    """The newest incremental value of each table (what a sensor compares to its cursor)."""
    out: dict[str, int | datetime | None] = {}
    with psycopg.connect(config.dsn, autocommit=True) as pg, pg.cursor() as cur:
        for stream in c.STREAMS.values():
            cur.execute(
                sql.SQL("SELECT max({}) FROM {}").format(
                    sql.Identifier(stream.incremental_column),
                    sql.Identifier(config.schema_name, stream.postgres_table),
                )
            )
            out[stream.name] = cur.fetchone()[0]
    return out
