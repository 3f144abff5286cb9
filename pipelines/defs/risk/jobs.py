"""Risk jobs: daily retraining behind the promotion gate, and scoring as transfers arrive."""

import dagster as dg

from pipelines.defs.ledger.assets import transfers
from pipelines.defs.risk.assets import (
    decision_delivery,
    decision_outbox,
    live_model,
    risk_model,
    transfer_features,
    transfer_scores,
)
from pipelines.india_time import IST_TIME_ZONE

risk_training = dg.define_asset_job(
    name="risk_training",
    selection=dg.AssetSelection.assets(transfer_features, risk_model, live_model),
    description="Train a candidate, evaluate it against the baseline, promote it if it beats live.",
)

risk_scoring = dg.define_asset_job(
    name="risk_scoring",
    selection=dg.AssetSelection.assets(
        transfer_features, transfer_scores, decision_outbox, decision_delivery
    ),
    description="Score new transfers, decide, queue and deliver the decisions.",
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
