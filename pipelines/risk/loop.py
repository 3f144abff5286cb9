"""The risk loop end to end: train a candidate, gate its promotion, score, decide, hand off.

Each step is a plain function the Dagster assets and the CLI call; models, policy, features and
outbox come from their own modules.

The candidate is trained exactly as fold 0 of the prequential evaluation (labels known at the
start of the delay gap), so the live model and a candidate can be compared on a test window
neither has seen. Production therefore scores with a model whose training data ends
`test_days + delay_days` before the newest transfer: the price of an honest promotion gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.table import read_features
from pipelines.risk.evaluation import (
    BacktestResult,
    backtest,
    fit_on_training_set,
    fold_test_set,
    fold_training_set,
    prequential_folds,
    window_metrics,
)
from pipelines.risk.labels import evaluation_targets
from pipelines.risk.model import GradientBoostingRiskModel
from pipelines.risk.policy import Policy, confirmed_mule_vpas, decide, decision_records
from pipelines.risk.registry import ModelRegistry, PromotionDecision
from pipelines.risk.settings import LoopSettings  # re-exported: existing importers use loop
from pipelines.warehouse import DECISIONS_TABLE, table_exists

LABEL_COLUMNS = "transfer_id, label, fraud_type, source, reported_at"
SCORES_TABLE = "risk.transfer_scores"


@dataclass
class TrainingOutcome:
    """A registered candidate, the live model's metrics on its test window, the evaluation."""

    version: str
    evaluation: BacktestResult
    candidate_metrics: dict[str, Any]
    live_version: str | None
    live_metrics: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    def promotion(self, registry: ModelRegistry, *, dry_run: bool = False) -> PromotionDecision:
        """Promote the candidate if it beats the live model on its test window."""
        return registry.promote(self.version, live_metrics=self.live_metrics, dry_run=dry_run)


def read_labels(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The ledger's labels, as reported."""
    return con.sql(f"SELECT {LABEL_COLUMNS} FROM ledger.labels").pl()


def latest_test_start(features: pl.DataFrame, settings: LoopSettings) -> datetime:
    """Fold 0's test window: the latest whole days that leave `delay_days` for labels after it."""
    last: datetime = features["created_at"].max()
    day = (last - timedelta(days=settings.test_days + settings.delay_days)).date()
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def train_candidate(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    registry: ModelRegistry,
    settings: LoopSettings,
    *,
    truth: pl.DataFrame | None = None,
) -> TrainingOutcome:
    """Evaluate model vs baseline prequentially and register fold 0's model as a candidate."""
    test_start = latest_test_start(features, settings)
    evaluation = backtest(
        features,
        labels,
        FEATURE_NAMES,
        test_start=test_start,
        test_days=settings.test_days,
        delay_days=settings.delay_days,
        folds=settings.folds,
        maturity_days=settings.maturity_days,
        review_capacity=settings.review_capacity,
        hold_rate=settings.hold_rate,
        truth=truth,
        random_state=settings.random_state,
    )
    fold = prequential_folds(
        test_start=test_start,
        test_days=settings.test_days,
        delay_days=settings.delay_days,
        folds=1,
    )[0]
    train = fold_training_set(features, labels, fold, maturity_days=settings.maturity_days)
    if train.is_empty() or train["y"].sum() == 0:
        raise ValueError(
            f"no frauds known by {fold.train_end:%Y-%m-%d} to train on: the ledger needs more "
            "history before the test window, or smaller --delay-days / --maturity-days"
        )
    # The backtest fitted this very model (same fold, same estimator) as its fold 0.
    model = evaluation.fitted.get(fold.index, {}).get("gbdt")
    if model is None or evaluation.folds[0] != fold:
        model = fit_on_training_set(
            GradientBoostingRiskModel(random_state=settings.random_state), train, FEATURE_NAMES
        )
    judged = evaluation_targets(features.select("transfer_id"), labels, truth=truth)
    test = fold_test_set(features, judged, fold)
    metrics = _window_metrics(model, test, settings)
    live_metrics = None
    live = registry.live_version()
    if live is not None:
        live_metrics = _window_metrics(registry.load(live), test, settings)
    manifest = registry.register(
        model,
        kind="gbdt",
        feature_names=FEATURE_NAMES,
        training_window=(fold.train_start, fold.train_end),
        test_window=(fold.test_start, fold.test_end),
        metrics=metrics,
        label_policy={
            "maturity_days": settings.maturity_days,
            "delay_days": settings.delay_days,
            "labels_known_at": fold.train_end.isoformat(),
            "judged_by": "ground truth" if truth is not None else "ledger labels",
        },
        notes="Trained as fold 0 of the prequential evaluation; calibrated on its latest slice.",
    )
    return TrainingOutcome(
        version=manifest["version"],
        evaluation=evaluation,
        candidate_metrics=metrics,
        live_version=live,
        live_metrics=live_metrics,
        extra={"train_rows": train.height, "train_frauds": int(train["y"].sum())},
    )


def _window_metrics(model: Any, test: pl.DataFrame, settings: LoopSettings) -> dict[str, Any]:
    scored = test.with_columns(
        risk_score=pl.Series(model.risk_score(test.select(FEATURE_NAMES)), dtype=pl.Float64)
    )
    return window_metrics(
        scored, review_capacity=settings.review_capacity, hold_rate=settings.hold_rate
    )


def live_policy(registry: ModelRegistry) -> Policy:
    """The policy in force: the live model's hold threshold for the target hold rate, raised
    where that would hold more a day than the review team can review (both measured on the
    model's test window), so that holds do not pile up unreviewed."""
    live = registry.live_version()
    if live is None:
        raise LookupError(f"no live model in {registry.root}: train one first")
    metrics = registry.manifest(live)["metrics"]
    threshold = metrics.get("hold_threshold")
    if threshold is None or not np.isfinite(threshold) or not 0 < threshold <= 1:
        threshold = 0.5
    capacity = metrics.get("capacity_threshold")
    if capacity is not None and np.isfinite(capacity):
        threshold = min(max(threshold, capacity), 1.0)
    return Policy(
        version=f"policy-{live}",
        hold_threshold=float(threshold),
        review_capacity=int(metrics.get("review_capacity") or 100),
    )


def read_allowlist(path: Path) -> set[str]:
    """Allow-list entries (a payee VPA, or `payer->payee`), one a line; `#` starts a comment."""
    if not path.exists():
        return set()
    entries = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {entry for entry in entries if entry}


def ensure_score_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS risk")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {SCORES_TABLE} (
            transfer_id VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            model_version VARCHAR NOT NULL, policy_version VARCHAR NOT NULL,
            shadow BOOLEAN NOT NULL, risk_score DOUBLE NOT NULL, decision VARCHAR NOT NULL,
            reason_codes VARCHAR[], scored_at TIMESTAMPTZ NOT NULL)"""
    )
    created = not table_exists(con, DECISIONS_TABLE)
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {DECISIONS_TABLE} (
            transfer_id VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            payer_vpa VARCHAR NOT NULL, payee_type VARCHAR NOT NULL, amount_paise BIGINT NOT NULL,
            decision VARCHAR NOT NULL, model_version VARCHAR NOT NULL,
            decided_at TIMESTAMPTZ NOT NULL)"""
    )
    if created:
        record_decisions(con)


def record_decisions(
    con: duckdb.DuckDBPyConnection, *, scored_since: datetime | None = None
) -> int:
    """Add the decision of record of every transfer that has a live score and none recorded;
    `scored_since` limits the work to the scores of one scoring pass."""
    since = "" if scored_since is None else "AND scored_at >= ?"
    # The payer, payee type and amount ride along so that daily aggregates of decisions
    # (the adoption marts' risk friction) need no join back to the ledger.
    written = con.sql(
        f"""INSERT INTO {DECISIONS_TABLE}
            SELECT d.transfer_id, d.created_at, t.payer_vpa, t.payee_type, t.amount_paise,
                d.decision, d.model_version, d.decided_at
            FROM (
                SELECT transfer_id, arg_min(created_at, scored_at) AS created_at,
                    arg_min(decision, scored_at) AS decision,
                    arg_min(model_version, scored_at) AS model_version,
                    min(scored_at) AS decided_at
                FROM {SCORES_TABLE}
                WHERE NOT shadow {since}
                    AND transfer_id NOT IN (SELECT transfer_id FROM {DECISIONS_TABLE})
                GROUP BY transfer_id) d
            JOIN ledger.transfers t USING (transfer_id)""",
        params=[] if scored_since is None else [scored_since],
    ).fetchall()[0][0]
    return int(written)


def score_new_transfers(
    con: duckdb.DuckDBPyConnection,
    registry: ModelRegistry,
    *,
    now: datetime | None = None,
    allowlist: set[str] | None = None,
) -> dict[str, Any]:
    """Score every transfer the live model has not scored (and the challengers, in shadow).

    Decisions use the block list as it stood at the start of each transfer's day, so a batch
    over history is as point-in-time as scoring on arrival.
    """
    now = now or datetime.now(UTC)
    ensure_score_tables(con)
    policy = live_policy(registry)
    live = registry.live_version()
    versions = [(live, False)] + [(v, True) for v in registry.challengers()]
    labels = read_labels(con)
    written: dict[str, int] = {}
    features = read_features(con)
    for version, shadow in versions:
        done = con.sql(
            f"SELECT transfer_id FROM {SCORES_TABLE} WHERE model_version = ?", params=[version]
        ).pl()
        todo = features.join(done, on="transfer_id", how="anti")
        if todo.is_empty():
            written[version] = 0
            continue
        model = registry.load(version)
        scored = todo.with_columns(
            risk_score=pl.Series(model.risk_score(todo.select(FEATURE_NAMES)), dtype=pl.Float64)
        )
        decided = []
        for (day,), part in scored.group_by(pl.col("created_at").dt.date(), maintain_order=True):
            day_start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
            blocklist = confirmed_mule_vpas(labels, features, as_of=day_start)
            decided.append(decide(part, policy, blocklist=blocklist, allowlist=allowlist or set()))
        frame = pl.concat(decided).select(
            "transfer_id",
            "created_at",
            model_version=pl.lit(version),
            policy_version=pl.lit(policy.version),
            shadow=pl.lit(shadow),
            risk_score="risk_score",
            decision="decision",
            reason_codes="reason_codes",
            scored_at=pl.lit(now),
        )
        con.register("_scores", frame)
        try:
            con.execute(f"INSERT INTO {SCORES_TABLE} SELECT * FROM _scores")
        finally:
            con.unregister("_scores")
        written[version] = frame.height
    record_decisions(con, scored_since=now)
    summary = con.sql(
        f"""SELECT decision, count(*) AS transfers FROM {SCORES_TABLE}
            WHERE model_version = ? GROUP BY 1 ORDER BY 1""",
        params=[live],
    ).pl()
    return {
        "live": live,
        "policy": policy.version,
        "hold_threshold": policy.hold_threshold,
        "scored": written,
        "decisions": dict(summary.iter_rows()),
    }


def recent_decision_records(
    con: duckdb.DuckDBPyConnection,
    registry: ModelRegistry,
    settings: LoopSettings,
    *,
    decided_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """decisions-v1 records of the live model for transfers within the delivery window."""
    live = registry.live_version()
    frame = con.sql(
        f"""SELECT transfer_id, risk_score, decision, reason_codes, policy_version
            FROM {SCORES_TABLE}
            WHERE model_version = ? AND NOT shadow
              AND created_at >= (SELECT max(created_at) FROM ledger.transfers) - to_microseconds(?)
            ORDER BY created_at""",
        params=[live, int(settings.delivery_window_hours * 3600 * 1_000_000)],
    ).pl()
    if frame.is_empty():
        return []
    return decision_records(
        frame,
        model_version=live,
        policy_version=frame["policy_version"][0],
        decided_at=decided_at or datetime.now(UTC),
    )
