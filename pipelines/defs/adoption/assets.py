"""Adoption marts as assets partitioned by the ledger's days, and the dashboards built from them."""

import warnings

import dagster as dg

from pipelines.adoption import marts
from pipelines.defs.ledger.assets import accounts, transfers
from pipelines.defs.ledger.partitions import ledger_day_partitions, partition_days
from pipelines.defs.resources import WAREHOUSE_POOL, AdoptionResource, WarehouseResource
from pipelines.defs.risk.assets import online_decisions, transfer_scores
from pipelines.warehouse import DECISIONS_TABLE

# Single-run backfills are what make a range of days one query per mart; the API is beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

GROUP = "adoption"
# The asset that writes each table a mart reads; the marts write their own. Account events are
# waited for through `accounts`, the current state built from them.
_WRITTEN_BY = {
    marts.LEDGER_TRANSFERS: transfers.key,
    marts.ACCOUNT_EVENTS: accounts.key,
    DECISIONS_TABLE: transfer_scores.key,
    marts.ONLINE_DECISIONS: online_decisions.key,
}


def _upstream(table: str) -> dg.AssetKey:
    if table in _WRITTEN_BY:
        return _WRITTEN_BY[table]
    schema, name = table.split(".")
    if schema != marts.SCHEMA or name not in marts.MARTS:
        raise KeyError(f"no asset writes {table!r}, which an adoption mart reads")
    return dg.AssetKey(name)


def _mart_asset(name: str) -> dg.AssetsDefinition:
    mart = marts.MARTS[name]

    # A mart reads its upstream marts one partition to one: dynamic partitions have no offset
    # mapping, so a rolling window's earlier days (lookback_days) are read from the table.
    @dg.asset(
        name=name,
        group_name=GROUP,
        partitions_def=ledger_day_partitions,
        # A backfill of many days is one run and one query per mart, not one run per day.
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        deps=[_upstream(table) for table in mart.reads],
        description=mart.description or f"Adoption mart `{marts.SCHEMA}.{name}`.",
        metadata={"table": f"{marts.SCHEMA}.{name}", "lookback_days": mart.lookback_days},
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
