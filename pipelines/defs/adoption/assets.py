"""Adoption marts as daily-partitioned assets, and the dashboards built from them."""

import datetime as dt
import os
import warnings

import dagster as dg

from pipelines.adoption import marts
from pipelines.defs.ledger.assets import accounts, transfers
from pipelines.defs.resources import WAREHOUSE_POOL, AdoptionResource, WarehouseResource
from pipelines.defs.risk.assets import transfer_scores

# Single-run backfills are what make a range of days one query per mart; the API is beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

GROUP = "adoption"
ADOPTION_START_ENV = "UPI_RISK_ADOPTION_START"
# A partition is an India calendar day. Today's partition is open (end_offset=1) so the
# dashboards can show the day so far; earlier days are rebuilt when late rows arrive.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get(ADOPTION_START_ENV, "2024-01-01"),
    timezone="Asia/Kolkata",
    end_offset=1,
)


def _lookback(days: int) -> dg.TimeWindowPartitionMapping:
    return dg.TimeWindowPartitionMapping(start_offset=-days)


_PAYER_DAYS = dg.AssetKey("payer_days")
# What each mart reads, beyond its own partition: rolling windows read earlier days.
_DEPS: dict[str, list] = {
    "daily_users": [accounts, _PAYER_DAYS],
    "activation_funnel": [transfers, accounts],
    "payer_days": [transfers, transfer_scores],
    "daily_active": [dg.AssetDep(_PAYER_DAYS, partition_mapping=_lookback(29))],
    "daily_volume": [transfers],
    "ticket_sizes": [transfers],
    "ticket_quantiles": [transfers],
    "daily_outcomes": [transfers],
    "weekly_retention": [dg.AssetDep(_PAYER_DAYS, partition_mapping=_lookback(6))],
    "daily_friction": [transfers, transfer_scores],
    "friction_retention": [dg.AssetDep(_PAYER_DAYS, partition_mapping=_lookback(13))],
}


def partition_days(context: dg.AssetExecutionContext) -> marts.DayRange:
    """The IST days of the partitions this run materializes (one, or a backfilled range)."""
    window = context.partition_time_window
    return marts.DayRange(window.start.date(), (window.end - dt.timedelta(days=1)).date())


def _mart_asset(name: str) -> dg.AssetsDefinition:
    mart = marts.MARTS[name]

    @dg.asset(
        name=name,
        group_name=GROUP,
        partitions_def=daily_partitions,
        # A backfill of many days is one run and one query per mart, not one run per day.
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        deps=_DEPS[name],
        description=mart.description or f"Adoption mart `{marts.SCHEMA}.{name}`.",
    )
    def _mart(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, adoption: AdoptionResource
    ) -> dg.MaterializeResult:
        days = partition_days(context)
        with warehouse.connect() as con:
            written = marts.build_mart(con, name, days, token_key=adoption.token_key)
        return dg.MaterializeResult(
            metadata={
                "rows_written": written,
                "first_day": str(days.first),
                "last_day": str(days.last),
                "table": f"{marts.SCHEMA}.{name}",
            }
        )

    return _mart


mart_assets = [_mart_asset(name) for name in marts.MARTS]


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"html"},
    deps=[asset.key for asset in mart_assets],
)
def adoption_dashboards(
    warehouse: WarehouseResource, adoption: AdoptionResource
) -> dg.MaterializeResult:
    """Overview and drill-down pages (geography, merchants, cohorts, funnel, risk friction):
    self-contained HTML that opens from disk with no network."""
    from pipelines.adoption.dashboards import write_dashboards

    with warehouse.connect(read_only=True) as con:
        as_of = marts.last_complete_day(con)
        pages = write_dashboards(con, adoption.dashboards_dir, as_of=as_of)
    return dg.MaterializeResult(
        metadata={
            "pages": len(pages),
            "as_of": str(as_of),
            **{f"page_{name}": dg.MetadataValue.path(str(path)) for name, path in pages.items()},
            "overview": dg.MetadataValue.url(pages["overview"].resolve().as_uri()),
        }
    )
