"""The decision outbox on SQLite and on a real PostgreSQL server: same code, same results."""

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from pipelines.decisions import outbox as ob
from pipelines.decisions.record import review_decision_id

T0 = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)
MODEL, POLICY = "model-2026.11.1", "policy-2026.11.1"


def make_engine(kind: str, request, tmp_path) -> sa.Engine:
    """A fresh outbox: a SQLite file in tmp_path, or a new schema on the test PostgreSQL."""
    if kind == "sqlite":
        return ob.operational_engine(data_dir=tmp_path)
    dsn = request.getfixturevalue("postgres_dsn")
    schema = f"outbox_{uuid.uuid4().hex[:8]}"
    base = sa.create_engine(ob.database_url(dsn))
    with base.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine = base.execution_options(schema_translate_map={None: schema})
    ob.create_outbox_tables(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    engine = make_engine(request.param, request, tmp_path)
    yield engine
    engine.dispose()


def record(i: int, decision: str = "ALLOW", **overrides) -> dict:
    transfer_id = f"TX{i:08d}"
    out = {
        "decision_id": ob.decision_id(transfer_id, MODEL, POLICY),
        "transfer_id": transfer_id,
        "decision": decision,
        "risk_score": 0.9 if decision != "ALLOW" else 0.02,
        "reason_codes": ["RECENT_SIM_CHANGE"] if decision != "ALLOW" else [],
        "model_version": MODEL,
        "policy_version": POLICY,
        "decided_at": "2026-11-02T04:00:00Z",
        "supersedes": None,
    }
    out.update(overrides)
    return out


def test_enqueue_twice_adds_nothing(engine):
    records = [record(i) for i in range(1, 2_501)]  # more than one insert chunk
    assert ob.enqueue(engine, records, now=T0) == 2_500
    assert ob.enqueue(engine, records, now=T0) == 0
    assert ob.enqueue(engine, [*records[:10], record(9_999)], now=T0) == 1
    assert ob.status_counts(engine) == {"PENDING": 2_501, "DELIVERED": 0, "FINAL": 0, "DEAD": 0}
    row = ob.get_decision(engine, records[0]["decision_id"])
    assert row["payload"] == records[0]
    assert row["decided_at"] == T0 and row["next_attempt_at"] == T0  # aware UTC both ways
    assert row["attempts"] == 0 and row["status"] == "PENDING"


def test_enqueue_refuses_a_malformed_record_naming_the_field(engine):
    with pytest.raises(ValueError, match="risk_score"):
        ob.enqueue(engine, [record(1, risk_score=3.0)])
    with pytest.raises(ValueError, match="decided_at"):
        ob.enqueue(engine, [record(2, decided_at="2026-11-02T04:00:00")])  # no offset
    assert sum(ob.status_counts(engine).values()) == 0


def test_decision_id_is_deterministic():
    assert ob.decision_id("TX1", MODEL, POLICY) == ob.decision_id("TX1", MODEL, POLICY)
    ids = {
        ob.decision_id("TX1", MODEL, POLICY),
        ob.decision_id("TX2", MODEL, POLICY),
        ob.decision_id("TX1", "model-2", POLICY),
        ob.decision_id("TX1", MODEL, "policy-2"),
    }
    assert len(ids) == 4
    # Pinned: changing how ids are made would make every re-run send everything again.
    assert ob.decision_id("TX1", MODEL, POLICY) == "dec-6d0dfb48cc78a82ed54c6d8aaafb1f7c"


def test_supersede_a_hold(engine):
    hold = record(1, "HOLD")
    ob.enqueue(engine, [hold, record(2)], now=T0)
    release = ob.supersede(engine, hold["decision_id"], "ALLOW", decided_at=T0)
    assert release["supersedes"] == hold["decision_id"]
    assert release["decision_id"] == review_decision_id(hold["decision_id"], "ALLOW")
    assert release["transfer_id"] == hold["transfer_id"]
    assert release["reason_codes"] == ["REVIEW_RELEASED"]
    again = ob.supersede(engine, hold["decision_id"], "ALLOW", decided_at=T0)
    assert again == release
    assert ob.status_counts(engine)["PENDING"] == 3  # the same verdict twice adds nothing
    with pytest.raises(ValueError, match="expected a HOLD"):
        ob.supersede(engine, record(2)["decision_id"], "BLOCK")
    with pytest.raises(ValueError, match="not in the outbox"):
        ob.supersede(engine, "dec-nope", "BLOCK")
    with pytest.raises(ValueError, match="review outcome"):
        ob.supersede(engine, hold["decision_id"], "HOLD")


def test_dead_letters_and_replay(engine):
    records = [record(i) for i in range(1, 5)]
    ob.enqueue(engine, records, now=T0)
    with engine.begin() as conn:
        conn.execute(
            ob.decision_outbox.update()
            .where(ob.decision_outbox.c.transfer_id.in_(["TX00000001", "TX00000002"]))
            .values(status="DEAD", last_error="HTTP 422: risk_score", last_status_code=422)
        )
    dead = ob.dead_letters(engine)
    assert {d["transfer_id"] for d in dead} == {"TX00000001", "TX00000002"}
    assert all(d["last_status_code"] == 422 for d in dead)
    assert ob.replay_dead_letters(engine, ids=[records[0]["decision_id"]], now=T0) == 1
    assert ob.replay_dead_letters(engine, ids=[records[0]["decision_id"]], now=T0) == 0
    assert ob.status_counts(engine) == {"PENDING": 3, "DELIVERED": 0, "FINAL": 0, "DEAD": 1}
    assert ob.replay_dead_letters(engine, now=T0) == 1
    assert ob.dead_letters(engine) == []
    assert [e["outcome"] for e in ob.delivery_log(engine, records[0]["decision_id"])] == [
        "REPLAYED"
    ]
