"""Adoption jobs: the marts for a range of days, the dashboards, and their daily schedules."""

import datetime as dt

import dagster as dg

from pipelines.defs.adoption.assets import adoption_dashboards, mart_assets
from pipelines.defs.ledger.assets import transfers
from pipelines.defs.ledger.partitions import partition_range_tags, registered_days
from pipelines.india_time import IST_TIME_ZONE

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


@dg.schedule(job=adoption_marts, cron_schedule="30 2 * * *", execution_timezone=IST_TIME_ZONE)
def adoption_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Close yesterday (its late rows have arrived) and open today, after the nightly ingest."""
    today = context.scheduled_execution_time.date()
    days = registered_days(context.instance, today - dt.timedelta(days=1), today)
    if days is None:
        return dg.SkipReason(f"the ledger holds no transfer of {today} or the day before (IST)")
    return dg.RunRequest(
        run_key=f"adoption-{today.isoformat()}", tags=partition_range_tags(days.first, days.last)
    )


adoption_dashboards_daily = dg.ScheduleDefinition(
    name="adoption_dashboards_daily",
    job=adoption_reports,
    cron_schedule="0 3 * * *",
    execution_timezone=IST_TIME_ZONE,
)


@dg.asset_sensor(asset_key=transfers.key, job=adoption_marts, minimum_interval_seconds=60)
def adoption_on_ledger_change(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    """Rebuild the days whose transfers an ingest changed (late rows make old days stale)."""
    materialization = asset_event.asset_materialization
    span = materialization.metadata.get("changed_days") if materialization else None
    changed = getattr(span, "value", span) or ""
    if not changed:
        return dg.SkipReason("the ledger refresh changed no transfers")
    first, last = (dt.date.fromisoformat(d) for d in changed.split("/"))
    days = registered_days(context.instance, first, last)
    if days is None:
        return dg.SkipReason(f"the changed days {changed} are not partitions of the ledger's days")
    return dg.RunRequest(
        run_key=f"adoption-ledger-{asset_event.run_id}",
        tags=partition_range_tags(days.first, days.last),
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[adoption_marts],
    request_job=adoption_reports,
)
def dashboards_after_marts(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """Write the dashboards again whenever a marts run succeeds."""
    return dg.RunRequest(run_key=f"dashboards-{context.dagster_run.run_id}")
