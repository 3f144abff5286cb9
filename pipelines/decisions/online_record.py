"""Online decisions in the warehouse: decisions of record beside the batch ones, and the daily
check that the online and batch paths still agree.

`load_online_decisions` copies what the decision service recorded in the operational database
(`pipelines.decisions.online_log`) into `risk.online_decisions`, after the last `seq` already
copied, so a re-run adds nothing. An online decision is the one the transfer service acted on
(before the money moved), so it is the transfer's decision of record: it replaces a batch
decision recorded for the same transfer, and the batch never sends a decision of its own for a
transfer decided online (`pipelines.decisions.scoring.recent_decision_records`).

`online_batch_parity` recomputes in batch a sample of a day's online decisions: the stored
features against the batch engine's row of the same transfer (counts exactly, other features
within 1e-9 relative), and the decision against the batch decision under the same model and
policy. Online and batch differ by nature in two ways, which the report counts but the check
cannot tell from drift: an outcome (or a label) that reached the service after a later transfer
of the same payer was decided (online it was PENDING, or unknown, at that moment; the batch
reads the final ledger), and labels that reached the ledger before they reached the service.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from sqlalchemy.engine import Engine

from pipelines.decisions.online_log import decisions_since, feature_values
from pipelines.decisions.policy import (
    confirmed_mule_vpas,
    decide,
    model_policy,
    read_allowlist,
)
from pipelines.features.definitions import FEATURE_NAMES, WHOLE_NUMBER_FEATURES
from pipelines.features.table import read_features
from pipelines.risk.labels import read_labels
from pipelines.risk.registry import ModelRegistry
from pipelines.warehouse import DECISIONS_TABLE, ONLINE_DECISIONS_TABLE, table_exists

ONLINE_TABLE = ONLINE_DECISIONS_TABLE
PARITY_WARN_BELOW = 0.999
RELATIVE_TOLERANCE = 1e-9
_FEATURE_BLOB = "features"


def ensure_online_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS risk")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {ONLINE_TABLE} (
            seq BIGINT PRIMARY KEY, decision_id VARCHAR NOT NULL, transfer_id VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL, decision VARCHAR NOT NULL,
            risk_score DOUBLE NOT NULL, reason_codes VARCHAR[], model_version VARCHAR NOT NULL,
            policy_version VARCHAR NOT NULL, decided_at TIMESTAMPTZ NOT NULL,
            fallback BOOLEAN NOT NULL, fallback_cause VARCHAR, latency_us BIGINT NOT NULL,
            {_FEATURE_BLOB} BLOB)"""
    )


def load_online_decisions(
    con: duckdb.DuckDBPyConnection, engine: Engine, *, batch: int = 50_000
) -> dict[str, int]:
    """Copy the online decisions recorded since the last copy; make them decisions of record."""
    ensure_online_table(con)
    cursor = con.sql(f"SELECT coalesce(max(seq), 0) FROM {ONLINE_TABLE}").fetchall()[0][0]
    copied = 0
    while True:
        rows, cursor = decisions_since(engine, cursor, limit=batch)
        if not rows:
            break
        frame = pl.DataFrame(
            {
                "seq": [r["seq"] for r in rows],
                "decision_id": [r["decision_id"] for r in rows],
                "transfer_id": [r["transfer_id"] for r in rows],
                "created_at": [r["created_at"] for r in rows],
                "decision": [r["decision"] for r in rows],
                "risk_score": [float(r["risk_score"]) for r in rows],
                "reason_codes": [list(r["reason_codes"]) for r in rows],
                "model_version": [r["model_version"] for r in rows],
                "policy_version": [r["policy_version"] for r in rows],
                "decided_at": [r["decided_at"] for r in rows],
                "fallback": [bool(r["fallback"]) for r in rows],
                "fallback_cause": [r["fallback_cause"] for r in rows],
                "latency_us": [int(r["latency_us"]) for r in rows],
                _FEATURE_BLOB: [r["features"] for r in rows],
            },
            schema_overrides={
                "created_at": pl.Datetime("us", "UTC"),
                "decided_at": pl.Datetime("us", "UTC"),
                "reason_codes": pl.List(pl.String),
                "fallback_cause": pl.String,
                _FEATURE_BLOB: pl.Binary,
            },
        )
        con.register("_online", frame)
        try:
            con.execute(f"INSERT INTO {ONLINE_TABLE} SELECT * FROM _online")
        finally:
            con.unregister("_online")
        copied += frame.height
    return {"copied": copied, **record_online_decisions(con)}


def record_online_decisions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Make each online decision whose transfer reached the ledger its decision of record,
    replacing a batch decision recorded before it arrived."""
    ensure_online_table(con)
    if not table_exists(con, DECISIONS_TABLE):
        from pipelines.decisions.scoring import ensure_score_tables

        ensure_score_tables(con)
    replaced = con.sql(
        f"""DELETE FROM {DECISIONS_TABLE} d USING {ONLINE_TABLE} o
            WHERE d.transfer_id = o.transfer_id
              AND (d.decided_at <> o.decided_at OR d.model_version <> o.model_version)
            RETURNING d.transfer_id"""
    ).fetchall()
    written = con.sql(
        f"""INSERT INTO {DECISIONS_TABLE}
            SELECT o.transfer_id, t.created_at, t.payer_vpa, t.payee_type, t.amount_paise,
                o.decision, o.model_version, o.decided_at
            FROM {ONLINE_TABLE} o JOIN ledger.transfers t USING (transfer_id)
            WHERE o.transfer_id NOT IN (SELECT transfer_id FROM {DECISIONS_TABLE})"""
    ).fetchall()[0][0]
    return {"of_record": int(written), "replaced_batch": len(replaced)}


@dataclass
class ParityReport:
    """How a day's online decisions compare with the batch path, on a sample."""

    day: date | None
    online: int = 0  # online decisions of the day (fallbacks excluded: they had no features)
    sampled: int = 0  # of those, sampled with their transfer's batch features available
    features_match: int = 0
    decisions_match: int = 0
    both_match: int = 0
    mismatched_features: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def share_matching(self) -> float | None:
        """Share of sampled decisions whose features and decision both match."""
        return self.both_match / self.sampled if self.sampled else None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "day": str(self.day) if self.day else None,
            "online_decisions": self.online,
            "sampled": self.sampled,
            "features_match": self.features_match,
            "decisions_match": self.decisions_match,
            "share_matching": self.share_matching,
            "mismatched_features": self.mismatched_features,
            "examples": self.examples,
        }


def _same(online: float | None, batch: float | None, whole: bool) -> bool:
    """Counts and flags exactly, other features within RELATIVE_TOLERANCE; null only as null."""
    online_null = online is None
    batch_null = batch is None or math.isnan(batch)
    if online_null or batch_null:
        return online_null and batch_null
    if whole:
        return float(online) == float(batch)
    return online == batch or math.isclose(online, batch, rel_tol=RELATIVE_TOLERANCE, abs_tol=0)


def online_batch_parity(
    con: duckdb.DuckDBPyConnection,
    registry: ModelRegistry,
    *,
    allowlist_path: Path | None = None,
    day: date | None = None,
    sample: int = 1_000,
    seed: int = 0,
) -> ParityReport:
    """Recompute in batch a sample of `day`'s online decisions (default: the latest day with
    any) and count how many match in features and decision."""
    if not table_exists(con, ONLINE_TABLE):
        return ParityReport(day=day)
    if day is None:
        day = con.sql(
            f"SELECT max(created_at)::DATE FROM {ONLINE_TABLE} WHERE NOT fallback"
        ).fetchall()[0][0]
    report = ParityReport(day=day)
    if day is None:
        return report
    online = con.sql(
        f"""SELECT transfer_id, decision, reason_codes, model_version, policy_version,
                {_FEATURE_BLOB}
            FROM {ONLINE_TABLE}
            WHERE NOT fallback AND {_FEATURE_BLOB} IS NOT NULL AND created_at::DATE = ?""",
        params=[day],
    ).pl()
    report.online = online.height
    batch = read_features(con, transfer_ids=online["transfer_id"]) if online.height else None
    if batch is None or batch.is_empty():
        return report
    online = online.join(batch.select("transfer_id"), on="transfer_id", how="semi")
    if online.height > sample:
        online = online.sample(sample, seed=seed)
    report.sampled = online.height
    batch = batch.join(online.select("transfer_id"), on="transfer_id", how="semi")
    decided = _batch_decisions(con, registry, batch, online, day, allowlist_path)
    mismatched: Counter[str] = Counter()
    by_id = {row["transfer_id"]: row for row in decided.iter_rows(named=True)}
    for row in online.iter_rows(named=True):
        stored = feature_values(row[_FEATURE_BLOB]) or {}
        other = by_id[row["transfer_id"]]
        wrong = [
            name
            for name in FEATURE_NAMES
            if not _same(stored.get(name), other[name], name in WHOLE_NUMBER_FEATURES)
        ]
        mismatched.update(wrong)
        same_decision = other["decision"] == row["decision"] and list(
            other["reason_codes"] or []
        ) == list(row["reason_codes"] or [])
        report.features_match += not wrong
        report.decisions_match += same_decision
        report.both_match += (not wrong) and same_decision
        if (wrong or not same_decision) and len(report.examples) < 5:
            report.examples.append(
                {
                    "transfer_id": row["transfer_id"],
                    "features": {n: [stored.get(n), other[n]] for n in wrong[:5]},
                    "decision": [row["decision"], other["decision"]],
                }
            )
    report.mismatched_features = dict(mismatched.most_common(10))
    return report


def _batch_decisions(
    con: duckdb.DuckDBPyConnection,
    registry: ModelRegistry,
    batch: pl.DataFrame,
    online: pl.DataFrame,
    day: date,
    allowlist_path: Path | None,
) -> pl.DataFrame:
    """The batch decision of each sampled transfer under the model and policy that decided it
    online (the policy is the model's, so its version is the one the online record names)."""
    versions = online.select("transfer_id", "model_version")
    frame = batch.join(versions, on="transfer_id")
    day_start = datetime.combine(day, time.min, tzinfo=UTC)
    labels = read_labels(con)
    transfers = con.sql("SELECT transfer_id, payee_vpa FROM ledger.transfers").pl()
    blocklist = confirmed_mule_vpas(labels, transfers, as_of=day_start)
    allowlist = read_allowlist(allowlist_path) if allowlist_path else set()
    parts = []
    for (version,), part in frame.group_by("model_version"):
        if version not in registry.versions():
            # A model no longer in the registry: its decisions cannot be recomputed.
            parts.append(part.with_columns(decision=pl.lit(None), reason_codes=pl.lit(None)))
            continue
        model = registry.load(version)
        scored = part.with_columns(
            risk_score=pl.Series(model.risk_score(part.select(FEATURE_NAMES)), dtype=pl.Float64)
        )
        policy = model_policy(registry, version)
        parts.append(decide(scored, policy, blocklist=blocklist, allowlist=allowlist))
    return pl.concat(parts, how="diagonal_relaxed")
