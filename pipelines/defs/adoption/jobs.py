"""Adoption jobs: the marts for a range of days, the dashboards, and their daily schedules."""

import datetime as dt

import dagster as dg

from pipelines.defs.adoption.assets import adoption_dashboards, mart_assets

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
    """Run tags that make one run materialize every daily partition from `first` to `last`."""
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
