"""Ledger assets: the three ingested streams and the current state built from them."""

from pathlib import Path

import dagster as dg
import polars as pl

from pipelines.defs.ledger.partitions import register_ledger_days
from pipelines.defs.metadata import markdown_table
from pipelines.defs.resources import WAREHOUSE_POOL, LedgerSourceResource, WarehouseResource
from pipelines.india_time import changed_days
from pipelines.ledger import contract as c
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import IngestReport, ingest_landing
from pipelines.ledger.postgres import ingest_postgres
from pipelines.warehouse import EVENT_TABLES, scalar

GROUP = "ledger"


def rows_version(rows: int, schema: str | None = None) -> dg.DataVersion:
    """The data version of an append-only table (or of what is derived from one alone): its row
    count, and the version of its `schema` where its columns can change. A run that loads
    nothing new leaves it, and so what is downstream stays in sync."""
    return dg.DataVersion(f"rows-{rows}" if schema is None else f"rows-{rows}-{schema}")


def ingest_stream(
    context: dg.AssetExecutionContext,
    stream_name: str,
    warehouse: WarehouseResource,
    ledger_source: LedgerSourceResource,
) -> dg.MaterializeResult:
    """Load what is new for one stream from every configured source; report the row accounting."""
    stream = c.stream(stream_name)
    with warehouse.connect() as con:
        first_batch = scalar(con, "SELECT coalesce(max(batch_id), 0) FROM ledger.ingested_sources")
        report = ingest_landing(
            con,
            Path(ledger_source.landing_dir),
            streams=[stream_name],
            progress=lambda name, done, total: context.log.debug(f"{done}/{total} {name}"),
        )
        if ledger_source.postgres is not None:
            from_postgres: IngestReport = ingest_postgres(
                con, ledger_source.postgres, streams=[stream_name]
            )
            report.streams[stream_name].add(from_postgres.streams[stream_name])
        last_batch = scalar(con, "SELECT coalesce(max(batch_id), 0) FROM ledger.ingested_sources")
        table = EVENT_TABLES[stream_name]
        row_count = scalar(con, f"SELECT count(*) FROM {table}")
        quarantined = con.sql(
            """SELECT source, position_kind, position, reason FROM ledger.quarantine
               WHERE stream = ? AND batch_id > ? ORDER BY batch_id, position LIMIT 20""",
            params=[stream_name, first_batch],
        ).pl()
    counts = report.streams[stream_name]
    context.log.info(f"{stream_name}: {counts.as_dict()}")
    return dg.MaterializeResult(
        data_version=rows_version(row_count),
        metadata={
            "rows_in": counts.rows_in,
            "loaded": counts.loaded,
            "duplicates": counts.duplicates,
            "quarantined": counts.quarantined,
            "balanced": counts.balanced,
            "files_rejected": counts.files_rejected,
            "files_skipped": counts.files_skipped,
            # Files in the landing folder that are not ledger files: named, never read.
            "files_ignored": dg.MetadataValue.json(counts.files_ignored[:100]),
            "batches": counts.batches,
            "quarantine_reasons": dg.MetadataValue.json(counts.as_dict()["reasons"]),
            "quarantine_examples": dg.MetadataValue.md(markdown_table(quarantined)),
            "dagster/row_count": row_count,
            "table": table,
            # Asset checks validate exactly the rows of this run: batches in (first, last].
            "first_batch_id": first_batch,
            "last_batch_id": last_batch,
            "contract": c.CONTRACT_VERSION,
            "fields": dg.MetadataValue.md(
                markdown_table(
                    pl.DataFrame(
                        [(f.name, str(f.dtype), f.required, f.meaning) for f in stream.fields],
                        schema=["field", "type", "required", "meaning"],
                        orient="row",
                    )
                )
            ),
        },
    )


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"})
def transfer_events(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ledger_source: LedgerSourceResource,
) -> dg.MaterializeResult:
    """Every accepted state row of every transfer (ledger-v1 `transfers` stream)."""
    return ingest_stream(context, "transfers", warehouse, ledger_source)


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"})
def account_events(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ledger_source: LedgerSourceResource,
) -> dg.MaterializeResult:
    """User lifecycle events (ledger-v1 `accounts` stream)."""
    return ingest_stream(context, "accounts", warehouse, ledger_source)


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"})
def labels(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ledger_source: LedgerSourceResource,
) -> dg.MaterializeResult:
    """Fraud outcomes as they were reported, late (ledger-v1 `labels` stream)."""
    return ingest_stream(context, "labels", warehouse, ledger_source)


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"}, deps=[transfer_events])
def transfers(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """One row per transfer: its latest state. The India days it covers become the adoption
    marts' partitions (before any run asks for them)."""
    with warehouse.connect() as con:
        result = refresh_transfers(con)
        register_ledger_days(context.instance, con)
        by_status = con.sql(
            "SELECT status, count(*) AS transfers FROM ledger.transfers GROUP BY 1 ORDER BY 2 DESC"
        ).pl()
        events = scalar(con, f"SELECT count(*) FROM {EVENT_TABLES['transfers']}")
    return dg.MaterializeResult(
        data_version=rows_version(events),
        metadata={
            "dagster/row_count": result["transfers"],
            "changed": result["changed"],
            # Read by the adoption sensor: the India days whose marts the changes made stale.
            "changed_days": changed_days(result["changed_from"], result["changed_until"]),
            "by_status": dg.MetadataValue.md(markdown_table(by_status)),
            "table": "ledger.transfers",
        },
    )


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"}, deps=[account_events])
def accounts(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per VPA: registration, bank link, device, SIM and PIN milestones."""
    with warehouse.connect() as con:
        result = refresh_accounts(con)
        events = scalar(con, f"SELECT count(*) FROM {EVENT_TABLES['accounts']}")
    return dg.MaterializeResult(
        data_version=rows_version(events),
        metadata={"dagster/row_count": result["accounts"], "table": "ledger.accounts"},
    )
