"""Quality gates on the ledger streams: Great Expectations suites run as Dagster asset checks.

Each contract check validates the rows its asset loaded in the latest run; a contract-breaking
failure is an ERROR that blocks downstream assets, a softer finding is a WARN. Freshness looks
at the newest event of the whole table.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from pipelines.defs.ledger.assets import account_events, labels, transfer_events
from pipelines.defs.resources import WAREHOUSE_POOL, LedgerSourceResource, WarehouseResource
from pipelines.ledger import contract as c
from pipelines.quality.suites import SuiteResult, contract_suite_result, freshness_result
from pipelines.warehouse import EVENT_TABLES

_TIME_COLUMN = {"transfers": "created_at", "accounts": "event_time", "labels": "reported_at"}


def _batch_range(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> tuple[int, int]:
    event = context.instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return 0, 0
    metadata = event.asset_materialization.metadata
    first = metadata.get("first_batch_id")
    last = metadata.get("last_batch_id")
    return (int(first.value) if first else 0, int(last.value) if last else 0)


def _check_result(result: SuiteResult, extra: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=result.success,
        severity=dg.AssetCheckSeverity.ERROR if result.blocked else dg.AssetCheckSeverity.WARN,
        metadata={**extra, **result.metadata()},
    )


def contract_check(
    context: dg.AssetCheckExecutionContext,
    stream_name: str,
    asset_key: dg.AssetKey,
    warehouse: WarehouseResource,
) -> dg.AssetCheckResult:
    """Run the stream's contract suite on the rows its latest materialization loaded."""
    first, last = _batch_range(context, asset_key)
    table = EVENT_TABLES[stream_name]
    columns = ", ".join(c.stream(stream_name).columns)
    with warehouse.connect(read_only=True) as con:
        rows = con.sql(
            f"SELECT {columns} FROM {table} WHERE _batch_id > ? AND _batch_id <= ?",
            params=[first, last],
        ).pl()
        created = None
        if stream_name == "labels":
            created = con.sql(
                """SELECT transfer_id, min(created_at) AS created_at FROM ledger.transfer_events
                   WHERE transfer_id IN (SELECT transfer_id FROM ledger.labels
                                         WHERE _batch_id > ? AND _batch_id <= ?)
                   GROUP BY transfer_id""",
                params=[first, last],
            ).pl()
    result = contract_suite_result(stream_name, rows, transfers_created_at=created)
    return _check_result(result, {"batches": f"{first + 1}..{last}", "rows_checked": rows.height})


def freshness_check(
    stream_name: str, warehouse: WarehouseResource, ledger_source: LedgerSourceResource
) -> dg.AssetCheckResult:
    """Warn when the newest event of the stream is older than the allowed age."""
    column = _TIME_COLUMN[stream_name]
    with warehouse.connect(read_only=True) as con:
        newest = con.sql(f"SELECT max({column}) AS {column} FROM {EVENT_TABLES[stream_name]}").pl()
    newest = newest.filter(pl.col(column).is_not_null())
    hours = (
        ledger_source.label_freshness_hours
        if stream_name == "labels"
        else ledger_source.freshness_hours
    )
    result = freshness_result(
        stream_name, newest, now=datetime.now(UTC), max_age=timedelta(hours=hours)
    )
    return _check_result(result, {"max_age_hours": hours})


@dg.asset_check(asset=transfer_events, blocking=True, pool=WAREHOUSE_POOL)
def transfer_events_contract(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Types, VPA format, enums, amount bounds by payee type, key and ledger_seq uniqueness."""
    return contract_check(context, "transfers", transfer_events.key, warehouse)


@dg.asset_check(asset=account_events, blocking=True, pool=WAREHOUSE_POOL)
def account_events_contract(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Types, VPA format, event types, event_id uniqueness."""
    return contract_check(context, "accounts", account_events.key, warehouse)


@dg.asset_check(asset=labels, blocking=True, pool=WAREHOUSE_POOL)
def labels_contract(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Types, enums, uniqueness, and every label reported after its transfer."""
    return contract_check(context, "labels", labels.key, warehouse)


@dg.asset_check(asset=transfer_events, pool=WAREHOUSE_POOL)
def transfer_events_freshness(
    warehouse: WarehouseResource, ledger_source: LedgerSourceResource
) -> dg.AssetCheckResult:
    """The newest transfer is recent enough."""
    return freshness_check("transfers", warehouse, ledger_source)


@dg.asset_check(asset=account_events, pool=WAREHOUSE_POOL)
def account_events_freshness(
    warehouse: WarehouseResource, ledger_source: LedgerSourceResource
) -> dg.AssetCheckResult:
    """The newest account event is recent enough."""
    return freshness_check("accounts", warehouse, ledger_source)


@dg.asset_check(asset=labels, pool=WAREHOUSE_POOL)
def labels_freshness(
    warehouse: WarehouseResource, ledger_source: LedgerSourceResource
) -> dg.AssetCheckResult:
    """The newest label is recent enough."""
    return freshness_check("labels", warehouse, ledger_source)
