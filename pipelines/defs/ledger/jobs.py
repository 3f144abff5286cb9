"""The ledger ingestion job, the sensor that starts it on new data, and its daily schedule."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from pipelines.defs.resources import LedgerSourceResource
from pipelines.india_time import IST_TIME_ZONE
from pipelines.ledger import landing
from pipelines.ledger.postgres import max_positions

ledger_ingest = dg.define_asset_job(
    name="ledger_ingest",
    selection=dg.AssetSelection.groups("ledger"),
    description="Ingest new ledger rows, run the quality gates, refresh current state.",
)

ledger_daily = dg.ScheduleDefinition(
    name="ledger_daily",
    job=ledger_ingest,
    cron_schedule="0 2 * * *",
    execution_timezone=IST_TIME_ZONE,
    description="Safety net: ingest once a day even if the sensor missed something.",
)


@dg.sensor(job=ledger_ingest, minimum_interval_seconds=60)
def ledger_arrivals(
    context: dg.SensorEvaluationContext, ledger_source: LedgerSourceResource
) -> dg.SensorResult | dg.SkipReason:
    """Start an ingest when files land or the Postgres ledger has rows past the last cursor."""
    # The sensor never opens the warehouse: a run may hold DuckDB's single writer lock.
    cursor = json.loads(context.cursor) if context.cursor else {}
    files = landing.discover(Path(ledger_source.landing_dir))
    newest_file = max((f.path.stat().st_mtime_ns for f in files), default=0)
    seen_file = cursor.get("newest_file_mtime_ns", 0)
    new_files = [f.relative for f in files if f.path.stat().st_mtime_ns > seen_file]

    postgres_now: dict[str, str | None] = {}
    if ledger_source.postgres is not None:
        postgres_now = {
            k: None if v is None else str(v)
            for k, v in max_positions(ledger_source.postgres).items()
        }
    postgres_changed = postgres_now != cursor.get("postgres", {})

    next_cursor = json.dumps({"newest_file_mtime_ns": newest_file, "postgres": postgres_now})
    if not new_files and not postgres_changed:
        return dg.SkipReason("no new landing files or Postgres rows")
    reason = f"{len(new_files)} new landing file(s)" + (
        ", new Postgres rows" if postgres_changed else ""
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=hashlib.sha1(next_cursor.encode()).hexdigest(), tags={"reason": reason}
            )
        ],
        cursor=next_cursor,
    )
