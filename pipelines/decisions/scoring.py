"""The scoring pass: score every new transfer, decide it, and keep the decision of record.

The live model's score and the policy's decision of each transfer go to `risk.transfer_scores`
(challengers' scores too, in shadow); the first live decision of a transfer is its decision of
record (`risk.decisions`), which the adoption marts and the outbox read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl

from pipelines.decisions.online_record import ONLINE_TABLE
from pipelines.decisions.policy import confirmed_mule_vpas, decide, live_policy
from pipelines.decisions.record import decision_id, iso_utc
from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.table import read_features
from pipelines.risk import reasons as rc
from pipelines.risk.labels import read_labels
from pipelines.risk.registry import ModelRegistry
from pipelines.settings import Settings
from pipelines.warehouse import DECISIONS_TABLE, SCORES_TABLE, table_exists


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
    settings: Settings,
    *,
    decided_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """decisions-v1 records of the live model for transfers within the delivery window."""
    live = registry.live_version()
    # A transfer decided online already has the decision the transfer service acted on.
    online = (
        f"AND transfer_id NOT IN (SELECT transfer_id FROM {ONLINE_TABLE})"
        if table_exists(con, ONLINE_TABLE)
        else ""
    )
    frame = con.sql(
        f"""SELECT transfer_id, risk_score, decision, reason_codes, policy_version
            FROM {SCORES_TABLE}
            WHERE model_version = ? AND NOT shadow
              AND created_at >= (SELECT max(created_at) FROM ledger.transfers) - to_microseconds(?)
              {online}
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


def decision_records(
    frame: pl.DataFrame,
    model_version: str,
    policy_version: str,
    decided_at: datetime,
    *,
    score_column: str = "risk_score",
) -> list[dict[str, Any]]:
    """decisions-v1 records for the rows of a decided frame, with deterministic decision ids
    (the same transfer, model and policy always give the same id)."""
    rc.check_columns(
        frame, ["transfer_id", "decision", score_column, "reason_codes"], "decision_records"
    )
    if decided_at.tzinfo is None:
        raise ValueError(f"decided_at {decided_at!r} is naive: expected a timezone-aware UTC time")
    repeated = frame.height - frame["transfer_id"].n_unique()
    if repeated:
        raise ValueError(f"transfer_id repeats in {repeated} rows: expected one row a transfer")
    at = iso_utc(decided_at)
    columns = [frame[name].to_list() for name in ("transfer_id", "decision", score_column)]
    codes_column = frame["reason_codes"].to_list()
    return [
        {
            "decision_id": decision_id(transfer, model_version, policy_version),
            "transfer_id": transfer,
            "decision": decision,
            "risk_score": float(score),
            "reason_codes": codes or [],
            "model_version": model_version,
            "policy_version": policy_version,
            "decided_at": at,
            "supersedes": None,
        }
        for transfer, decision, score, codes in zip(*columns, codes_column, strict=True)
    ]
