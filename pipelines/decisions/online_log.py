"""The durable record of online decisions: every decision `upi-risk serve` answers is here first.

Operational state, so it lives in the operational database next to the outbox (SQLAlchemy Core;
a SQLite file by default, PostgreSQL in production). One row per transfer: `transfer_id` is
unique, so a transfer is decided once, and a repeated request finds its decision here
(idempotency); `request_sha256` tells a repeat from a different transfer under the same id.

Writes are GROUP COMMITTED: request threads hand their row to `OnlineDecisionLog.record`, which
queues it for one writer thread; the writer commits everything pending in one transaction
(SQLite: WAL, synchronous=FULL, so a commit is on disk) and only then wakes the threads. A
decision is therefore durable before its response leaves, at one fsync per batch rather than per
request. `seq` numbers rows in commit order (each batch holds the table's write lock while it
numbers its rows), so a reader that remembers the last `seq` it saw misses nothing
(`decisions_since`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from pipelines.decisions.outbox import UtcDateTime, database_url
from pipelines.decisions.record import DECISION_ID_MAX, DecisionRecord
from pipelines.features.definitions import FEATURE_NAMES

__all__ = [
    "OnlineDecisionLog",
    "Recorded",
    "create_online_tables",
    "decision_record",
    "decisions_since",
    "feature_values",
    "find_decision",
    "online_engine",
    "pack_features",
]

metadata = sa.MetaData()

online_decisions = sa.Table(
    "online_decisions",
    metadata,
    sa.Column("decision_id", sa.String(DECISION_ID_MAX), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    sa.Column("transfer_id", sa.String(35), nullable=False, unique=True),
    sa.Column("request_sha256", sa.String(64), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),  # the canonical request, as the client sent it
    sa.Column("created_at", UtcDateTime, nullable=False),  # the request's, or when it arrived
    sa.Column("decision", sa.String(5), nullable=False),
    sa.Column("risk_score", sa.Float, nullable=False),
    sa.Column("reason_codes", sa.JSON, nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("policy_version", sa.String(128), nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=False),
    sa.Column("supersedes", sa.String(DECISION_ID_MAX), nullable=True),
    # The catalogue's features in FEATURE_NAMES order as float64 (NaN: unknown); null when the
    # fallback decided without them.
    sa.Column("features", sa.LargeBinary, nullable=True),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("fallback_cause", sa.String(32), nullable=True),
    sa.Column("latency_us", sa.Integer, nullable=False),
    sa.CheckConstraint("decision IN ('ALLOW', 'HOLD', 'BLOCK')", name="ck_online_decision"),
)

_FEATURE_BYTES = 8 * len(FEATURE_NAMES)


def online_engine(url: str) -> Engine:
    """An engine on the operational database for the online log (table created if missing).

    SQLite: WAL, synchronous=FULL (a commit survives power loss, not only a crash) and
    BEGIN IMMEDIATE, so the writer holds the write lock from the start of a batch.
    """
    engine = sa.create_engine(database_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    create_online_tables(engine)
    return engine


def _sqlite_connect(dbapi_connection, _record) -> None:
    # The driver's own implicit BEGIN is off: `_sqlite_begin` says how a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Readers issue single SELECTs, each consistent on its own: no transaction to open.
    if conn.info.get("writer"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_online_tables(engine: Engine) -> None:
    """Create the online decision table if it does not exist."""
    metadata.create_all(engine, checkfirst=True)


def pack_features(values: Mapping[str, float | None] | None) -> bytes | None:
    """The catalogue's features as float64 bytes in FEATURE_NAMES order (None -> NaN)."""
    if values is None:
        return None
    return np.array(
        [np.nan if (v := values.get(name)) is None else v for name in FEATURE_NAMES],
        dtype=np.float64,
    ).tobytes()


def feature_values(packed: bytes | None) -> dict[str, float | None] | None:
    """The features `pack_features` stored, by name (NaN back to None)."""
    if packed is None:
        return None
    if len(packed) != _FEATURE_BYTES:
        raise ValueError(
            f"stored features are {len(packed)} bytes: expected {_FEATURE_BYTES} "
            f"({len(FEATURE_NAMES)} float64), a catalogue of another size"
        )
    array = np.frombuffer(packed, dtype=np.float64)
    return {
        name: None if np.isnan(v) else float(v)
        for name, v in zip(FEATURE_NAMES, array, strict=True)
    }


def decision_record(row: Mapping[str, Any]) -> DecisionRecord:
    """The decisions-v1 record of a stored row."""
    return DecisionRecord(
        decision_id=row["decision_id"],
        transfer_id=row["transfer_id"],
        decision=row["decision"],
        risk_score=float(row["risk_score"]),
        reason_codes=list(row["reason_codes"]),
        model_version=row["model_version"],
        policy_version=row["policy_version"],
        decided_at=row["decided_at"],
        supersedes=row["supersedes"],
    )


def find_decision(engine: Engine, transfer_id: str) -> dict[str, Any] | None:
    """The stored decision of a transfer, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(online_decisions).where(online_decisions.c.transfer_id == transfer_id)
        ).first()
    return dict(row._mapping) if row else None


def decisions_since(
    engine: Engine, cursor: int = 0, *, limit: int = 10_000
) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` decisions recorded after `cursor` (a `seq`; 0: from the start), in commit
    order, and the cursor to pass next time (unchanged when there is nothing new)."""
    with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(online_decisions)
                .where(online_decisions.c.seq > cursor)
                .order_by(online_decisions.c.seq)
                .limit(limit)
            )
        ]
    return rows, (rows[-1]["seq"] if rows else cursor)


@dataclass(frozen=True)
class Recorded:
    """What recording a row did: `inserted`, or the row already stored for its transfer."""

    inserted: bool
    row: dict[str, Any]


class OnlineDecisionLog:
    """Group-committed writes of online decisions (see the module docstring).

    `record` blocks until the row's transaction committed (or failed) and returns what is
    stored for the transfer: the row itself, or the one recorded before it (a concurrent or
    earlier decision of the same transfer), which the caller compares by `request_sha256`.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 256) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._pending: queue.SimpleQueue[tuple[dict[str, Any], Future] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # commits made, for metrics
        self.last_batch_size = 0
        self.on_commit: Any = None  # optional callback(batch_size, seconds)

    def start(self) -> OnlineDecisionLog:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._write_loop, name="online-decision-writer", daemon=True
                )
                self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is pending, then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._pending.put(None)
            thread.join(timeout)

    def record(self, row: Mapping[str, Any], *, timeout: float = 10.0) -> Recorded:
        """Store `row` durably (group commit); raise if the database refuses it or does not
        commit within `timeout` seconds (the row may still commit later: a repeat finds it)."""
        if self._thread is None:
            raise RuntimeError("the online decision log is not started")
        done: Future[Recorded] = Future()
        self._pending.put((dict(row), done))
        return done.result(timeout=timeout)

    def _write_loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[dict[str, Any], Future]]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self._write(batch)
        except Exception as exc:  # every waiter learns; the writer keeps serving the next batch
            for _, done in batch:
                done.set_exception(exc)
            return
        self.batches += 1
        self.last_batch_size = len(batch)
        if self.on_commit is not None:
            self.on_commit(len(batch), time.perf_counter() - started)
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            done.set_result(outcome)

    def _write(self, batch: list[tuple[dict[str, Any], Future]]) -> list[Recorded]:
        # The first row of a transfer in the batch is the one inserted; a later one, like a row
        # of a transfer recorded earlier, gets the stored row back.
        first: dict[str, dict[str, Any]] = {}
        for row, _ in batch:
            first.setdefault(row["transfer_id"], row)
        with self.engine.connect() as conn:
            conn.info["writer"] = True
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        # Replicas number their batches one at a time: seq is in commit order.
                        conn.exec_driver_sql(
                            "LOCK TABLE online_decisions IN SHARE ROW EXCLUSIVE MODE"
                        )
                    top = conn.execute(sa.select(sa.func.max(online_decisions.c.seq))).scalar()
                    rows = list(first.values())
                    for i, row in enumerate(rows, start=(top or 0) + 1):
                        row["seq"] = i
                    stmt = (
                        _insert(conn)
                        .on_conflict_do_nothing(index_elements=["transfer_id"])
                        .returning(online_decisions.c.transfer_id)
                    )
                    inserted = set(conn.execute(stmt, rows).scalars().all())
                    stored = {}
                    others = {row["transfer_id"] for row, _ in batch} - inserted
                    if others:
                        stored = {
                            r.transfer_id: dict(r._mapping)
                            for r in conn.execute(
                                sa.select(online_decisions).where(
                                    online_decisions.c.transfer_id.in_(sorted(others))
                                )
                            )
                        }
            finally:
                conn.info.pop("writer", None)
        outcomes = []
        for row, _ in batch:
            tid = row["transfer_id"]
            if tid in inserted and first[tid] is row:
                outcomes.append(Recorded(True, row))
            else:
                outcomes.append(Recorded(False, stored.get(tid) or first[tid]))
        return outcomes


def _insert(conn: sa.Connection):
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(online_decisions)
    if name == "sqlite":
        return sqlite.insert(online_decisions)
    raise ValueError(
        f"operational database {name!r} is not supported: expected sqlite or postgresql"
    )
