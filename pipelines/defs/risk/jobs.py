"""Risk jobs: daily retraining behind the promotion gate, and scoring as transfers arrive."""

import json

import dagster as dg
import duckdb
import httpx

from pipelines.defs.ledger.assets import labels, transfers
from pipelines.defs.resources import WarehouseResource
from pipelines.defs.risk.assets import (
    decision_delivery,
    decision_outbox,
    live_model,
    online_decisions,
    risk_model,
    transfer_features,
    transfer_scores,
)
from pipelines.india_time import IST_TIME_ZONE
from pipelines.settings import Settings

risk_training = dg.define_asset_job(
    name="risk_training",
    selection=dg.AssetSelection.assets(transfer_features, risk_model, live_model),
    description="Train a candidate, evaluate it against the baseline, promote it if it beats live.",
)

risk_scoring = dg.define_asset_job(
    name="risk_scoring",
    selection=dg.AssetSelection.assets(
        transfer_features, online_decisions, transfer_scores, decision_outbox, decision_delivery
    ),
    description="Load the online decisions, score the rest, decide, queue and deliver.",
)

risk_daily_retraining = dg.ScheduleDefinition(
    name="risk_daily_retraining",
    job=risk_training,
    cron_schedule="0 3 * * *",
    execution_timezone=IST_TIME_ZONE,
)


@dg.asset_sensor(asset_key=transfers.key, job=risk_scoring, minimum_interval_seconds=30)
def score_new_transfers_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest:
    """Score transfers as soon as a ledger run has refreshed them."""
    return dg.RunRequest(run_key=f"scoring-{asset_event.run_id}")


@dg.asset_sensor(asset_key=labels.key, minimum_interval_seconds=30)
def forward_ledger_updates_sensor(
    context: dg.SensorEvaluationContext,
    asset_event: dg.EventLogEntry,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.SkipReason:
    """After an ingestion, post the labels and account events it loaded to the running
    decision service (`decision_service_url`), so its state knows them (see
    `pipelines.decisions.forwarding` for why a sensor)."""
    from pipelines.decisions.forwarding import forward_ledger_updates

    if not settings.decision_service_url:
        return dg.SkipReason("no decision_service_url set: nothing to forward to")
    cursor = json.loads(context.cursor) if context.cursor else {}
    try:
        with warehouse.connect(read_only=True) as con:
            done = forward_ledger_updates(con, settings.decision_service_url, cursor)
    except (httpx.HTTPError, duckdb.Error) as exc:
        # The cursor stays: the next ingestion (or evaluation) sends the same rows again.
        return dg.SkipReason(f"forwarding to {settings.decision_service_url} failed: {exc}")
    context.update_cursor(json.dumps(done.cursor))
    return dg.SkipReason(
        f"forwarded {done.sent} to {settings.decision_service_url}"
        f" ({done.unknown_transfers} labels about transfers the service does not hold)"
    )
