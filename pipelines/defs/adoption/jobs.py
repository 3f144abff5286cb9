"""Adoption jobs: the marts for a range of days, the dashboards, and their daily schedules."""

import datetime as dt

import dagster as dg

from pipelines.defs.adoption.assets import adoption_dashboards, daily_partitions, mart_assets
from pipelines.defs.ledger.assets import transfers
from pipelines.india_time import ist_day

adoption_marts = dg.define_asset_job(
    name="adoption_marts",
    selection=dg.AssetSelection.assets(*mart_assets),
    description="Rebuild the adoption marts for a day or a range of days (one run per range).",
)

adoption_reports = dg.define_asset_job(
    name="adoption_reports",
    selection=dg.AssetSelection.assets(adoption_dashboards),
    description="Write the adoption dashboards from the marts.",
)


def partition_range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Run tags that make one run materialize every daily partition from `first` to `last`,
    clipped to the partitions that exist (from the start date to today in India)."""
    first = max(first, daily_partitions.start.date())
    last = min(last, ist_day(dt.datetime.now(dt.UTC)))
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


@dg.schedule(job=adoption_marts, cron_schedule="30 2 * * *", execution_timezone="Asia/Kolkata")
def adoption_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Close yesterday (its late rows have arrived) and open today, after the nightly ingest."""
    today = context.scheduled_execution_time.date()
    yesterday = today - dt.timedelta(days=1)
    return dg.RunRequest(
        run_key=f"adoption-{today.isoformat()}", tags=partition_range_tags(yesterday, today)
    )


adoption_dashboards_daily = dg.ScheduleDefinition(
    name="adoption_dashboards_daily",
    job=adoption_reports,
    cron_schedule="0 3 * * *",
    execution_timezone="Asia/Kolkata",
)


@dg.asset_sensor(asset_key=transfers.key, job=adoption_marts, minimum_interval_seconds=60)
def adoption_on_ledger_change(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    """Rebuild the days whose transfers an ingest changed (late rows make old days stale)."""
    materialization = asset_event.asset_materialization
    span = materialization.metadata.get("changed_days") if materialization else None
    days = getattr(span, "value", span) or ""
    if not days:
        return dg.SkipReason("the ledger refresh changed no transfers")
    first, last = (dt.date.fromisoformat(d) for d in days.split("/"))
    return dg.RunRequest(
        run_key=f"adoption-ledger-{asset_event.run_id}", tags=partition_range_tags(first, last)
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[adoption_marts],
    request_job=adoption_reports,
)
def dashboards_after_marts(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """Write the dashboards again whenever a marts run succeeds."""
    return dg.RunRequest(run_key=f"dashboards-{context.dagster_run.run_id}")
