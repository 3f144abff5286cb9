"""Delivery under faults: a receiver that trickles its answer is cut off at the deadline, and a
delivery process killed at any commit boundary, then run again, ends as a clean run ends."""

import json
import multiprocessing
import os
import re
import signal
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from pipelines.decisions import outbox as ob
from pipelines.decisions.delivery import deliver_pending, deliver_until_drained
from pipelines.decisions.record import IDEMPOTENCY_HEADER
from pipelines.faults import CRASH_AT_ENV
from tests.test_decisions_outbox import T0, record

HOUR = timedelta(hours=1)
TRICKLE_S = 0.2  # a trickling receiver sends one byte this often...
TRICKLE_BYTES = 60  # ...of at least this many: 12 s for an answer, far past any deadline here


# --- A receiver on loopback ----------------------------------------------------------------


class Receiver:
    """A decisions-v1 receiver on loopback that takes effect once per Idempotency-Key (a repeated
    key gets the first answer again and has no second effect), like the reference transfer
    service, and counts per decision (from the body, not the key) what it applied. `answers`
    gives some decisions another status than 201; `trickle` ("headers" or "body") makes it send
    that part of every answer one byte per TRICKLE_S, after applying the decision."""

    def __init__(self) -> None:
        self.answers: dict[str, int] = {}
        self.trickle: str | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reset()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.receiver = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests: Counter[str] = Counter()  # per Idempotency-Key
            self.applied: Counter[str] = Counter()  # per decision_id in the body
            self.answered: dict[str, tuple[int, bytes]] = {}

    def receive(self, key: str, record: dict[str, Any]) -> tuple[int, bytes]:
        with self.lock:
            self.requests[key] += 1
            if key in self.answered:
                return self.answered[key]
            status = self.answers.get(record["decision_id"], 201)
            if status == 201:
                self.applied[record["decision_id"]] += 1
            answer = status, json.dumps({"decision_id": record["decision_id"]}).encode()
            self.answered[key] = answer
            return answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each trickled byte leaves at once

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, data = receiver.receive(self.headers.get(IDEMPOTENCY_HEADER, ""), json.loads(body))
        trickle = receiver.trickle
        if trickle == "body":
            data = data.ljust(TRICKLE_BYTES)  # JSON may end in blanks
        head = f"HTTP/1.1 {status} {self.responses[status][0]}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        if trickle == "headers":
            head += f"X-Pad: {'.' * TRICKLE_BYTES}\r\n"
        answer = (head + "\r\n").encode() + data
        at_once = {None: len(answer), "body": len(head) + 2, "headers": 0}[trickle]
        try:
            self.wfile.write(answer[:at_once])
            for i in range(at_once, len(answer)):
                if receiver.stopping.wait(TRICKLE_S):
                    break
                self.wfile.write(answer[i : i + 1])
        except OSError:  # the client gave up and closed the connection
            self.close_connection = True


@pytest.fixture
def receiver():
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    receiver.stopping.set()
    receiver.server.shutdown()
    receiver.server.server_close()
    thread.join(5)


@pytest.fixture
def engine(tmp_path):
    engine = ob.operational_engine(data_dir=tmp_path)
    yield engine
    engine.dispose()


def log_outcomes(engine, decision_id: str) -> list[str]:
    return [e["outcome"] for e in ob.delivery_log(engine, decision_id)]


def request_budget_s(error: str) -> float:
    """The time a request was given, from the error of one cut off at its deadline."""
    found = re.fullmatch(
        r"ReadTimeout: the request's deadline \(([0-9.]+) s in total\) passed", error
    )
    assert found, error
    return float(found[1])


# --- The deadline against a trickling receiver -----------------------------------------------


@pytest.mark.parametrize("trickle", ["headers", "body"])
def test_a_trickled_answer_is_cut_at_the_request_deadline_and_retried(engine, receiver, trickle):
    records = [record(i) for i in range(1, 4)]
    ob.enqueue(engine, records, now=T0)
    receiver.trickle = trickle  # every answer would take 60 x 0.2 s = 12 s

    cut = deliver_pending(
        engine,
        receiver.url,
        now=T0,
        concurrency=3,
        timeout_s=0.5,  # for the whole request, though every read gets a byte in 0.2 s
        backoff_base_s=10.0,
        backoff_max_s=60.0,
    )
    assert (cut.attempted, cut.retried, cut.delivered, cut.pending) == (3, 3, 0, 3)
    assert cut.errors == {"ReadTimeout": 3}
    for r in records:  # abandoned as a timeout, recorded, kept for a retry after its backoff
        row = ob.get_decision(engine, r["decision_id"])
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("PENDING", 1, None)
        # Cut by the 0.5 s deadline of the whole request, not by a per-read timeout (never hit).
        assert request_budget_s(row["last_error"]) == 0.5
        assert T0 + timedelta(seconds=5) <= row["next_attempt_at"] <= T0 + timedelta(seconds=10)
        assert log_outcomes(engine, r["decision_id"]) == ["RETRY"]

    receiver.trickle = None
    again = deliver_pending(engine, receiver.url, now=T0 + HOUR, timeout_s=2.0)
    assert (again.attempted, again.delivered, again.pending) == (3, 3, 0)
    for r in records:
        assert ob.get_decision(engine, r["decision_id"])["attempts"] == 2
        assert log_outcomes(engine, r["decision_id"]) == ["RETRY", "DELIVERED"]
    # The cut-off requests had taken effect; their retries were recognised by the key.
    assert receiver.requests == {r["decision_id"]: 2 for r in records}
    assert receiver.applied == {r["decision_id"]: 1 for r in records}


def test_the_delivery_deadline_holds_against_a_trickling_receiver(engine, receiver):
    records = [record(i) for i in range(1, 11)]
    ob.enqueue(engine, records)
    receiver.trickle = "body"

    report = deliver_until_drained(
        engine,
        receiver.url,
        deadline_s=1.5,  # shorter than one request's timeout: the deadline cuts them
        timeout_s=2.0,
        concurrency=5,
        backoff_base_s=10.0,
        backoff_max_s=60.0,
    )
    assert not report.drained and report.pending == 10 and report.delivered == 0
    # Requests in flight at the deadline were cut; the rest were never sent.
    assert 1 <= report.attempted <= 5 and report.retried == report.attempted
    assert report.attempted + report.deferred == 10
    assert report.errors == {"ReadTimeout": report.attempted}
    rows = [ob.get_decision(engine, r["decision_id"]) for r in records]
    assert all(row["status"] == "PENDING" for row in rows)
    sent = [row for row in rows if row["attempts"] == 1]
    unsent = [row for row in rows if row["attempts"] == 0]
    assert len(sent) == report.attempted and len(unsent) == report.deferred
    assert all(log_outcomes(engine, row["decision_id"]) == ["RETRY"] for row in sent)
    # What cut them was the run's 1.5 s deadline, not their own 2 s timeout.
    assert all(request_budget_s(row["last_error"]) <= 1.5 for row in sent)
    # Given back unsent because time was up, not because the service failed: due at once.
    assert all(row["next_attempt_at"] <= datetime.now(UTC) for row in unsent)

    receiver.trickle = None
    after = deliver_pending(engine, receiver.url, now=datetime.now(UTC) + HOUR, timeout_s=2.0)
    assert (after.delivered, after.pending) == (10, 0)
    assert receiver.applied == {r["decision_id"]: 1 for r in records}


# --- Killed at every commit boundary ---------------------------------------------------------

# One request at a time, so the n-th boundary is the same one in every run. 5 decisions in
# batches of 2, 2 and 1: per batch a claim, before and after each request, a record; then a last
# claim that finds nothing: 3 + 2 x 5 + 3 + 1 = 17 boundaries.
RUN = {"batch_size": 2, "concurrency": 1, "timeout_s": 5.0, "backoff_base_s": 10.0}
BOUNDARIES = 17


def _deliver(db: str, url: str, crash_at: str | None) -> None:
    """In a child process: one delivery run over the outbox in `db`, killed at `crash_at`."""
    if crash_at:
        os.environ[CRASH_AT_ENV] = crash_at
    else:
        os.environ.pop(CRASH_AT_ENV, None)
    engine = ob.operational_engine(f"sqlite:///{db}")
    deliver_pending(engine, url, now=T0, **RUN)
    engine.dispose()


def _outcome(engine) -> dict[str, tuple]:
    """Per decision: status, attempts, last status code and error, and the delivery log."""
    t = ob.decision_outbox
    query = sa.select(t.c.decision_id, t.c.status, t.c.attempts, t.c.last_status_code)
    with engine.connect() as conn:
        rows = conn.execute(query.add_columns(t.c.last_error)).all()
    return {r[0]: (*r[1:], tuple(log_outcomes(engine, r[0]))) for r in rows}


def test_killed_at_every_commit_boundary_a_rerun_ends_as_a_clean_run(tmp_path, receiver):
    records = [record(i, "HOLD" if i == 2 else "ALLOW") for i in range(1, 6)]
    ids = [r["decision_id"] for r in records]
    receiver.answers = {ids[2]: 409, ids[3]: 422}  # one FINAL and one dead letter among them

    def fresh(name: str) -> sa.Engine:
        engine = ob.operational_engine(f"sqlite:///{tmp_path / name}")
        assert ob.enqueue(engine, records, now=T0) == len(records)
        return engine

    clean = fresh("clean.sqlite")
    deliver_pending(clean, receiver.url, now=T0, **RUN)
    expected = _outcome(clean)
    clean.dispose()
    assert Counter(v[0] for v in expected.values()) == {"DELIVERED": 3, "FINAL": 1, "DEAD": 1}
    applied = {ids[0]: 1, ids[1]: 1, ids[4]: 1}
    assert receiver.applied == applied

    # Children fork from a server that has imported delivery once: a run costs ms, not seconds.
    forks = multiprocessing.get_context("forkserver")
    forks.set_forkserver_preload(["pipelines.decisions.delivery", __name__])
    crashes = 0
    for n in range(1, BOUNDARIES + 2):
        receiver.reset()
        db = tmp_path / f"crash-{n}.sqlite"
        engine = fresh(db.name)
        child = forks.Process(target=_deliver, args=(str(db), receiver.url, f"delivery:{n}"))
        child.start()
        child.join(60)
        if child.exitcode is None:
            child.kill()
            pytest.fail(f"delivery hung (crash point {n})")
        if child.exitcode == 0:  # fewer than n boundaries: the run went through
            assert _outcome(engine) == expected
            assert receiver.applied == applied
            engine.dispose()
            break
        assert child.exitcode == -signal.SIGKILL, f"crash point {n}: exit {child.exitcode}"
        crashes += 1

        # Run again, without a crash, later (the dead run's leases have run out).
        rerun = deliver_pending(engine, receiver.url, now=T0 + HOUR, **RUN)
        assert rerun.pending == 0, f"crash point {n}"
        assert _outcome(engine) == expected, f"crash point {n}"
        engine.dispose()
        assert set(receiver.requests) == set(ids), f"crash point {n}"  # every decision sent
        assert receiver.applied == applied, f"crash point {n}"  # none applied twice
        # Only what was sent and not yet recorded when the run died is sent again.
        assert sum(receiver.requests.values()) <= len(ids) + RUN["batch_size"]
    assert crashes == BOUNDARIES
