"""Delivery from the outbox to the real reference transfer service on loopback, through outages,
failures, lost responses, conflicts and dead letters, on SQLite and on PostgreSQL."""

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from pipelines.decisions import outbox as ob
from pipelines.decisions.delivery import deliver_pending, deliver_until_drained
from pipelines.sandbox.transfer_service import ReferenceTransferService
from tests.test_decisions_outbox import T0, make_engine, record
from tests.test_decisions_service import ManualTimers

HOUR = dt.timedelta(hours=1)
FAST = {"backoff_base_s": 10.0, "backoff_max_s": 60.0, "timeout_s": 2.0}
HANG_GUARD_S = 10.0  # only turns a deadlock into a failure: nothing here waits this long


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    engine = make_engine(request.param, request, tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def service():
    with ReferenceTransferService() as svc:
        yield svc


def attempts_by_decision(engine) -> dict[str, int]:
    t = ob.decision_outbox
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.c.decision_id, t.c.attempts)).all())


def log_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(ob.delivery_attempts)).scalar()


def test_down_then_failing_then_up_every_decision_takes_effect_once(engine, service):
    records = [record(i, "HOLD" if i % 10 == 0 else "ALLOW") for i in range(1, 61)]
    assert ob.enqueue(engine, records, now=T0) == 60
    service.stop()  # connection refused

    down = deliver_pending(engine, service.url, batch_size=100, now=T0, **FAST)
    # After 2 x concurrency refusals in a row the circuit opens: the rest are deferred unsent.
    assert down.attempted >= 16 and down.attempted + down.deferred == 60
    assert (down.retried, down.delivered, down.pending) == (down.attempted, 0, 60)
    assert down.errors == {"ConnectError": down.attempted}
    assert ob.dead_letters(engine) == []  # nothing is dead-lettered for being unreachable
    for r in records:
        due = ob.get_decision(engine, r["decision_id"])["next_attempt_at"]
        assert T0 + dt.timedelta(seconds=5) <= due <= T0 + dt.timedelta(seconds=10)  # backoff
    assert deliver_pending(engine, service.url, now=T0, **FAST).attempted == 0  # not due yet

    service.start()
    service.fail_next(10, status=503)
    failing = deliver_pending(engine, service.url, batch_size=100, now=T0 + HOUR, **FAST)
    assert (failing.attempted, failing.delivered, failing.retried) == (60, 50, 10)
    assert failing.errors == {"503": 10} and failing.pending == 10

    up = deliver_pending(engine, service.url, batch_size=100, now=T0 + 2 * HOUR, **FAST)
    assert (up.attempted, up.delivered, up.retried, up.pending) == (10, 10, 0, 0)

    assert service.effect_count == 60  # every decision took effect exactly once
    in_effect = service.decisions_in_effect()
    assert {t: r["decision_id"] for t, r in in_effect.items()} == {
        r["transfer_id"]: r["decision_id"] for r in records
    }
    attempts = attempts_by_decision(engine)
    assert sum(attempts.values()) == log_rows(engine) == down.attempted + 60 + 10
    assert max(attempts.values()) <= 3
    assert ob.status_counts(engine) == {"PENDING": 0, "DELIVERED": 60, "FINAL": 0, "DEAD": 0}


def test_requests_are_in_flight_at_once_up_to_the_concurrency(engine, service):
    ob.enqueue(engine, [record(i) for i in range(1, 9)], now=T0)
    # The service holds each request until 4 are in flight at once: sent one after another,
    # the first would wait in vain and the barrier break.
    in_flight = threading.Barrier(4, timeout=HANG_GUARD_S)
    service.before_decision = in_flight.wait
    report = deliver_pending(
        engine, service.url, now=T0, concurrency=4, **{**FAST, "timeout_s": HANG_GUARD_S}
    )
    assert not in_flight.broken
    assert (report.attempted, report.delivered, report.pending) == (8, 8, 0)
    assert service.effect_count == 8


def test_a_hung_service_does_not_stall_the_run(engine, service):
    ob.enqueue(engine, [record(i) for i in range(1, 101)], now=T0)
    released = threading.Event()
    service.before_decision = released.wait  # hung: no answer until the run has given up
    try:
        # A deadline long enough that, on a loaded machine, connecting and sending still fit in
        # it: the request reaches the service and times out waiting for the answer (a shorter
        # one once gave a WriteTimeout, and the request never reached the service).
        hung = deliver_pending(
            engine, service.url, batch_size=100, now=T0, concurrency=4, **{**FAST, "timeout_s": 1.0}
        )
    finally:
        released.set()
    # The circuit breaker ended the run: not 100 requests each waiting out its timeout.
    assert hung.retried == hung.attempted <= 20 and hung.attempted + hung.deferred == 100
    assert hung.errors == {"ReadTimeout": hung.attempted}
    # The requests the client gave up on land at the service late, and take effect.
    assert service.wait_handled(hung.attempted, timeout_s=HANG_GUARD_S)
    assert service.effect_count == hung.attempted
    after = deliver_pending(engine, service.url, batch_size=100, now=T0 + HOUR, **FAST)
    assert after.delivered == 100 and after.pending == 0
    assert service.effect_count == 100
    assert service.request_counts()["replayed"] == hung.attempted  # resent: no second effect


def test_a_batch_that_only_fails_ends_the_run(engine, service):
    ob.enqueue(engine, [record(i) for i in range(1, 31)], now=T0)
    service.stop()
    report = deliver_pending(engine, service.url, batch_size=10, now=T0, **FAST)
    assert (report.batches, report.attempted, report.retried, report.pending) == (1, 10, 10, 30)


def test_deliver_until_drained_rides_out_an_outage(engine, service):
    ob.enqueue(engine, [record(i) for i in range(1, 201)])
    service.timer = timers = ManualTimers()
    service.down_for(0.6)
    service.fail_next(30, status=503)

    def sleep(seconds: float) -> None:  # the outage is over once delivery has waited
        timers.pass_time()
        time.sleep(seconds)

    report = deliver_until_drained(
        engine,
        service.url,
        deadline_s=30,
        backoff_base_s=0.05,
        backoff_max_s=0.3,
        timeout_s=2,
        sleep=sleep,
    )
    assert report.drained and report.pending == 0
    assert report.delivered == 200 and report.retried >= 30
    assert report.errors["ConnectError"] >= 1 and report.errors["503"] == 30
    assert report.attempted == report.delivered + report.retried
    assert service.effect_count == 200


def test_a_lost_response_is_resent_and_has_one_effect(engine, service):
    ob.enqueue(engine, [record(i) for i in range(1, 11)], now=T0)
    service.lose_responses_next(3)
    first = deliver_pending(engine, service.url, now=T0, **FAST)
    assert (first.delivered, first.retried) == (7, 3)
    assert first.errors == {"RemoteProtocolError": 3}
    assert service.effect_count == 10  # applied, but 3 answers never came back
    second = deliver_pending(engine, service.url, now=T0 + HOUR, **FAST)
    assert (second.attempted, second.delivered) == (3, 3)
    assert service.effect_count == 10
    assert service.request_counts()["replayed"] == 3


def test_409_is_final_and_not_retried(engine, service):
    ob.enqueue(engine, [record(1)], now=T0)
    assert deliver_pending(engine, service.url, now=T0, **FAST).delivered == 1
    rescored = record(1, model_version="model-2026.12.1")
    rescored["decision_id"] = ob.decision_id("TX00000001", "model-2026.12.1", "policy-2026.11.1")
    ob.enqueue(engine, [rescored], now=T0)
    report = deliver_pending(engine, service.url, now=T0, **FAST)
    assert (report.attempted, report.final_409, report.retried, report.pending) == (1, 1, 0, 0)
    row = ob.get_decision(engine, rescored["decision_id"])
    assert row["status"] == "FINAL" and row["last_status_code"] == 409
    assert deliver_pending(engine, service.url, now=T0 + 10 * HOUR, **FAST).attempted == 0
    assert [e["outcome"] for e in ob.delivery_log(engine, rescored["decision_id"])] == ["FINAL"]
    assert service.effect_count == 1


def test_4xx_is_dead_lettered_and_comes_back_after_replay(engine, service):
    good, broken = record(1), record(2)
    ob.enqueue(engine, [good, broken], now=T0)
    # A row the service refuses as malformed (as if written by an older producer).
    t = ob.decision_outbox
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.decision_id == broken["decision_id"])
            .values(payload={**broken, "risk_score": 1.5})
        )
    report = deliver_pending(engine, service.url, now=T0, **FAST)
    assert (report.delivered, report.dead, report.retried) == (1, 1, 0)
    [dead] = ob.dead_letters(engine)
    assert dead["decision_id"] == broken["decision_id"] and dead["last_status_code"] == 422
    assert "risk_score" in dead["last_error"]
    assert deliver_pending(engine, service.url, now=T0 + HOUR, **FAST).attempted == 0

    with engine.begin() as conn:  # repaired, then replayed
        conn.execute(
            t.update().where(t.c.decision_id == broken["decision_id"]).values(payload=broken)
        )
    assert ob.replay_dead_letters(engine, now=T0 + HOUR) == 1
    again = deliver_pending(engine, service.url, now=T0 + HOUR, **FAST)
    assert again.delivered == 1 and ob.dead_letters(engine) == []

    ob.enqueue(engine, [record(3), record(4)], now=T0)
    service.fail_next(2, status=400)
    assert deliver_pending(engine, service.url, now=T0 + HOUR, **FAST).dead == 2
    assert len(ob.dead_letters(engine)) == 2
    assert ob.replay_dead_letters(engine, now=T0 + 2 * HOUR) == 2
    assert deliver_pending(engine, service.url, now=T0 + 2 * HOUR, **FAST).delivered == 2
    assert service.effect_count == 4
    assert [e["outcome"] for e in ob.delivery_log(engine, record(3)["decision_id"])] == [
        "DEAD",
        "REPLAYED",
        "DELIVERED",
    ]


def test_max_attempts_before_dead_is_opt_in(engine, service):
    ob.enqueue(engine, [record(1)], now=T0)
    service.stop()
    options = {**FAST, "max_attempts_before_dead": 2}
    assert deliver_pending(engine, service.url, now=T0, **options).retried == 1
    assert deliver_pending(engine, service.url, now=T0 + HOUR, **options).dead == 1
    assert ob.dead_letters(engine)[0]["attempts"] == 2


def test_review_outcome_supersedes_the_hold_at_the_service(engine, service):
    hold = record(1, "HOLD")
    ob.enqueue(engine, [hold], now=T0)
    deliver_pending(engine, service.url, now=T0, **FAST)
    assert service.decisions_in_effect()["TX00000001"]["decision"] == "HOLD"

    release = ob.supersede(engine, hold["decision_id"], "ALLOW", decided_at=T0 + HOUR, now=T0)
    report = deliver_pending(engine, service.url, now=T0 + HOUR, **FAST)
    assert report.delivered == 1
    in_effect = service.decisions_in_effect()["TX00000001"]
    assert in_effect["decision_id"] == release["decision_id"]
    assert in_effect["decision"] == "ALLOW" and in_effect["supersedes"] == hold["decision_id"]

    ob.supersede(engine, hold["decision_id"], "BLOCK", decided_at=T0 + 2 * HOUR, now=T0)
    assert deliver_pending(engine, service.url, now=T0 + 2 * HOUR, **FAST).final_409 == 1
    assert service.effect_count == 2


def test_a_large_outbox_drains_with_one_request_per_decision(tmp_path, service):
    # How fast is a benchmark's question (on a loaded machine any figure here flakes); this
    # test says that a large outbox drains, in batches, one request and one effect a decision.
    engine = ob.operational_engine(data_dir=tmp_path)
    n = 3_000
    ob.enqueue(engine, [record(i) for i in range(1, n + 1)])
    report = deliver_until_drained(engine, service.url, deadline_s=120)  # a deadlock guard
    engine.dispose()
    assert report.drained and report.delivered == report.attempted == n
    assert (report.retried, report.deferred) == (0, 0)
    assert service.effect_count == service.request_counts()["total"] == n


def test_policy_to_service_and_a_rerun_sends_nothing_new(tmp_path, service):
    from pipelines.decisions.policy import Policy, decide
    from pipelines.decisions.scoring import decision_records
    from tests.test_policy import frame, row

    policy = Policy(version="policy-2026.11.1", hold_threshold=0.8)
    scored = frame(
        row(1, risk_score=0.1),
        row(2, risk_score=0.9, payer_hours_since_sim_change=3.0),
        row(3, payee_vpa="mule.1@wasbi"),
        row(4, amount_paise=20_000_000),
    )
    engine = ob.operational_engine(data_dir=tmp_path)
    for _ in range(2):  # scoring runs twice over the same transfers
        decided = decide(scored, policy, blocklist={"mule.1@wasbi"}, allowlist=set())
        records = decision_records(decided, "model-7", policy.version, T0)
        ob.enqueue(engine, records, now=T0)
        deliver_pending(engine, service.url, now=T0, **FAST)
    engine.dispose()
    in_effect = service.decisions_in_effect()
    assert {t: (r["decision"], r["reason_codes"]) for t, r in in_effect.items()} == {
        "TX00000001": ("ALLOW", []),
        "TX00000002": ("HOLD", ["RECENT_SIM_CHANGE"]),
        "TX00000003": ("BLOCK", ["BLOCKLISTED_PAYEE"]),
        "TX00000004": ("BLOCK", ["OVER_UPI_LIMIT"]),
    }
    assert service.effect_count == 4 and service.request_counts()["total"] == 4
