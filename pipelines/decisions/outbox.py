"""The decision outbox: every decision is stored here before it is sent, and stays until settled.

Operational state, so it lives in the transactional database (SQLAlchemy Core; a SQLite file by
default, PostgreSQL in production, same code). A decision's `decision_id` is its primary key and
its idempotency key: enqueueing the same decision twice adds nothing. Delivery
(`pipelines.decisions.delivery`) moves rows from PENDING to DELIVERED (2xx), FINAL (409: the
transfer was already final) or DEAD (any other 4xx: kept, visible, replayable); 5xx and network
failures leave a row PENDING for a later attempt. Every attempt is appended to the delivery log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from pipelines.decisions.record import (
    DECISION_ID_MAX,
    REVIEW_OUTCOMES,
    DecisionRecord,
    decision_id,
    review_decision_id,
)
from pipelines.risk.reasons import review_reason
from pipelines.settings import DataDir

__all__ = [
    "STATUSES",
    "attempt_counts",
    "create_outbox_tables",
    "database_url",
    "dead_letters",
    "decision_id",
    "delivery_log",
    "enqueue",
    "get_decision",
    "operational_engine",
    "replay_dead_letters",
    "status_counts",
    "supersede",
]

PENDING, DELIVERED, FINAL, DEAD = "PENDING", "DELIVERED", "FINAL", "DEAD"
STATUSES = (PENDING, DELIVERED, FINAL, DEAD)
# Delivery-log outcomes: the four statuses' transitions plus RETRY (still pending) and REPLAYED.
RETRY, REPLAYED = "RETRY", "REPLAYED"
_CHUNK = 1_000


class UtcDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no offset: store UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: expected a timezone-aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

_ID = sa.String(DECISION_ID_MAX)

decision_outbox = sa.Table(
    "decision_outbox",
    metadata,
    sa.Column("decision_id", _ID, primary_key=True),
    sa.Column("transfer_id", sa.String(35), nullable=False, index=True),
    sa.Column("decision", sa.String(5), nullable=False),
    sa.Column("risk_score", sa.Float, nullable=False),
    sa.Column("reason_codes", sa.JSON, nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("policy_version", sa.String(128), nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=False),
    sa.Column("supersedes", _ID, nullable=True, index=True),
    sa.Column("payload", sa.JSON, nullable=False),  # the exact decisions-v1 record sent
    sa.Column("status", sa.String(9), nullable=False, default=PENDING),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("settled_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("decision IN ('ALLOW', 'HOLD', 'BLOCK')", name="ck_outbox_decision"),
    sa.CheckConstraint(
        "status IN ('PENDING', 'DELIVERED', 'FINAL', 'DEAD')", name="ck_outbox_status"
    ),
    # Delivery claims due work with this index: status first, then the due time.
    sa.Index("ix_outbox_due", "status", "next_attempt_at"),
)

delivery_attempts = sa.Table(
    "decision_delivery_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("decision_id", _ID, nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("outcome", sa.String(9), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=True),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def database_url(url_or_dsn: str) -> str:
    """A SQLAlchemy URL: a bare `postgresql://` DSN gets the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url_or_dsn.startswith(prefix):
            return "postgresql+psycopg://" + url_or_dsn[len(prefix) :]
    return url_or_dsn


def operational_engine(url: str | None = None, data_dir: DataDir | Path | None = None) -> Engine:
    """The operational database: `url` if given (PostgreSQL in production), else the SQLite
    file `<data_dir>/operational.sqlite`; the outbox tables are created if missing."""
    if url is None:
        root = data_dir if isinstance(data_dir, DataDir) else DataDir.resolve(data_dir)
        root.root.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{root.operational_db}"
    url = database_url(url)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    create_outbox_tables(engine)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the review UI read while delivery writes; wait rather than fail on a busy file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_outbox_tables(engine: Engine) -> None:
    """Create the outbox and its delivery log if they do not exist."""
    metadata.create_all(engine, checkfirst=True)


def _insert(engine_or_conn: Engine | sa.Connection, table: sa.Table):
    name = engine_or_conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(
        f"operational database {name!r} is not supported: expected sqlite or postgresql"
    )


def _row(record: Mapping[str, Any] | DecisionRecord, now: datetime) -> dict[str, Any]:
    valid = record if isinstance(record, DecisionRecord) else DecisionRecord.model_validate(record)
    payload = valid.to_json_dict()
    return {
        "decision_id": valid.decision_id,
        "transfer_id": valid.transfer_id,
        "decision": valid.decision,
        "risk_score": valid.risk_score,
        "reason_codes": list(valid.reason_codes),
        "model_version": valid.model_version,
        "policy_version": valid.policy_version,
        "decided_at": valid.decided_at,
        "supersedes": valid.supersedes,
        "payload": payload,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def enqueue(
    engine: Engine,
    records: Iterable[Mapping[str, Any] | DecisionRecord],
    *,
    now: datetime | None = None,
) -> int:
    """Add decisions to the outbox, due now; a decision_id already there is left as it is.
    Return how many were new. Every record is validated against decisions-v1 first."""
    now = now or _utcnow()
    new = 0
    stmt = _insert(engine, decision_outbox).on_conflict_do_nothing(index_elements=["decision_id"])
    stmt = stmt.returning(decision_outbox.c.decision_id)
    chunk: list[dict[str, Any]] = []

    def flush(conn: sa.Connection) -> int:
        if not chunk:
            return 0
        # RETURNING with ON CONFLICT DO NOTHING yields only the rows actually inserted.
        inserted = len(conn.execute(stmt, chunk).all())
        chunk.clear()
        return inserted

    with engine.begin() as conn:
        for record in records:
            chunk.append(_row(record, now))
            if len(chunk) >= _CHUNK:
                new += flush(conn)
        new += flush(conn)
    return new


def get_decision(engine: Engine, decision_id: str) -> dict[str, Any] | None:
    """The outbox row of a decision, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(decision_outbox).where(decision_outbox.c.decision_id == decision_id)
        ).first()
    return dict(row._mapping) if row else None


def supersede(
    engine: Engine,
    hold_decision_id: str,
    new_decision: str,
    *,
    reason_codes: Sequence[str] | None = None,
    decided_at: datetime | None = None,
    policy_version: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Enqueue a review outcome for a held transfer: a new decision (ALLOW releases the hold,
    BLOCK declines it) with `supersedes` = the hold. The id is derived from the hold and the
    outcome, so recording the same verdict twice adds nothing. Return the new record."""
    if new_decision not in REVIEW_OUTCOMES:
        raise ValueError(
            f"review outcome {new_decision!r}: expected one of {list(REVIEW_OUTCOMES)}"
        )
    hold = get_decision(engine, hold_decision_id)
    if hold is None:
        raise ValueError(f"decision {hold_decision_id!r} is not in the outbox")
    if hold["decision"] != "HOLD":
        raise ValueError(
            f"decision {hold_decision_id!r} is a {hold['decision']}, expected a HOLD to supersede"
        )
    codes = list(reason_codes) if reason_codes is not None else [review_reason(new_decision)]
    record = DecisionRecord(
        decision_id=review_decision_id(hold_decision_id, new_decision),
        transfer_id=hold["transfer_id"],
        decision=new_decision,
        risk_score=hold["risk_score"],
        reason_codes=codes,
        model_version=hold["model_version"],
        policy_version=policy_version or hold["policy_version"],
        decided_at=decided_at or _utcnow(),
        supersedes=hold_decision_id,
    )
    enqueue(engine, [record], now=now)
    return record.to_json_dict()


def status_counts(engine: Engine) -> dict[str, int]:
    """How many decisions the outbox holds in each status (every status present, maybe 0)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(decision_outbox.c.status, sa.func.count()).group_by(decision_outbox.c.status)
        ).all()
    counts = Counter({status: 0 for status in STATUSES})
    counts.update({status: n for status, n in rows})
    return dict(counts)


def dead_letters(engine: Engine, *, limit: int | None = 1_000) -> list[dict[str, Any]]:
    """Decisions the transfer service refused as malformed (a 4xx other than 409), oldest first."""
    query = (
        sa.select(decision_outbox)
        .where(decision_outbox.c.status == DEAD)
        .order_by(decision_outbox.c.updated_at, decision_outbox.c.decision_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def replay_dead_letters(
    engine: Engine, ids: Iterable[str] | None = None, *, now: datetime | None = None
) -> int:
    """Put dead letters (all, or those in `ids`) back to PENDING, due now; return how many.
    Attempts restart from 0; the delivery log keeps the history and records the replay."""
    now = now or _utcnow()
    where = decision_outbox.c.status == DEAD
    if ids is not None:
        wanted = list(ids)
        if not wanted:
            return 0
        where = where & decision_outbox.c.decision_id.in_(wanted)
    with engine.begin() as conn:
        replayed = [
            r.decision_id
            for r in conn.execute(
                sa.select(decision_outbox.c.decision_id).where(where).with_for_update()
            )
        ]
        if not replayed:
            return 0
        for start in range(0, len(replayed), _CHUNK):
            part = replayed[start : start + _CHUNK]
            conn.execute(
                decision_outbox.update()
                .where(decision_outbox.c.decision_id.in_(part) & (decision_outbox.c.status == DEAD))
                .values(status=PENDING, attempts=0, next_attempt_at=now, updated_at=now)
            )
        conn.execute(
            delivery_attempts.insert(),
            [{"decision_id": d, "attempt": 0, "at": now, "outcome": REPLAYED} for d in replayed],
        )
    return len(replayed)


def delivery_log(engine: Engine, decision_id: str) -> list[dict[str, Any]]:
    """Every delivery attempt (and replay) of one decision, in order."""
    query = (
        sa.select(delivery_attempts)
        .where(delivery_attempts.c.decision_id == decision_id)
        .order_by(delivery_attempts.c.id)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def attempt_counts(engine: Engine) -> dict[str, int]:
    """Delivery-log rows by outcome: DELIVERED, FINAL, DEAD, RETRY, REPLAYED."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(delivery_attempts.c.outcome, sa.func.count()).group_by(
                delivery_attempts.c.outcome
            )
        ).all()
    return {outcome: n for outcome, n in rows}
