"""Delivery of the outbox to the transfer service, at least once, per decisions-v1.

`POST {base_url}/v1/risk-decisions`, body = the record, header `Idempotency-Key: <decision_id>`.
2xx -> DELIVERED; 409 -> FINAL (the transfer was already final: recorded, never retried); any
other 4xx -> DEAD (dead letter: visible, replayable); 5xx, 408, 429, timeouts and refused or cut
connections -> still PENDING, retried after an exponential backoff with jitter. Nothing is
dead-lettered for being unreachable unless `max_attempts_before_dead` asks for it.

A run ends early when the service looks down (a circuit breaker opens after a run of transient
failures): the rest of the batch is deferred unsent instead of queueing behind timeouts.

Time is bounded end to end. `timeout_s` is the most one request may take in total (connect,
send, and the whole answer), not per network read: the client's sockets get at most the time
left before the request's deadline for every operation, so a receiver that trickles its answer a
byte at a time is cut off at the deadline like one that never answers (a RETRY, "ReadTimeout").
A run's `deadline_s` (and `deliver_until_drained`'s) holds too: no batch is claimed and no
request started after it, requests in flight are cut at it, and what was claimed but not sent
is given back, due at once.

Work is claimed by a lease (due rows get `next_attempt_at` pushed past the time the batch can
take), so several delivery workers can share one outbox and a crashed worker's rows come back.

Crash points (`pipelines.faults`, `UPI_RISK_CRASH_AT=delivery:<n>`) mark every commit boundary:
after each claim, deferral and record commit, and before and after each request.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpcore
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.decisions.outbox import (
    DEAD,
    DELIVERED,
    FINAL,
    PENDING,
    RETRY,
    decision_outbox,
    delivery_attempts,
)
from pipelines.decisions.record import ENDPOINT, IDEMPOTENCY_HEADER
from pipelines.faults import crash_point

# Transient by nature although 4xx: a request timeout and rate limiting are retried, not dead.
RETRYABLE_4XX = frozenset({408, 425, 429})

CRASH_POINT = "delivery"  # UPI_RISK_CRASH_AT=delivery:<n> kills the process at the n-th boundary
_crash_lock = threading.Lock()


def _boundary() -> None:
    """A commit boundary of delivery, for fault injection. Counted under a lock: requests run in
    several threads, and the n-th boundary must be the n-th one reached."""
    with _crash_lock:
        crash_point(CRASH_POINT)


@dataclass
class DeliveryReport:
    """What one delivery run did: requests sent and their outcomes, and what is left."""

    attempted: int = 0
    delivered: int = 0
    final_409: int = 0
    dead: int = 0
    retried: int = 0  # attempts that failed transiently; the decision stays PENDING
    deferred: int = 0  # claimed but not sent: the service looked down, or time ran out
    pending: int = 0  # decisions still PENDING in the outbox when the run ended
    batches: int = 0
    duration_s: float = 0.0
    drained: bool = False
    errors: Counter[str] = field(default_factory=Counter)  # "503", "ConnectError", ...

    @property
    def per_second(self) -> float:
        """Requests answered per second of the run."""
        return self.attempted / self.duration_s if self.duration_s > 0 else 0.0

    def add(self, other: DeliveryReport) -> None:
        for name in (
            "attempted",
            "delivered",
            "final_409",
            "dead",
            "retried",
            "deferred",
            "batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duration_s += other.duration_s
        self.errors.update(other.errors)
        self.pending = other.pending

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = dict(self.errors)
        out["per_second"] = round(self.per_second, 1)
        return out


@dataclass(frozen=True)
class _Outcome:
    decision_id: str
    attempt: int
    outcome: str  # DELIVERED, FINAL, DEAD or RETRY
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None


class _Breaker:
    """Opens after `limit` transient failures in a row: the service looks down or hung, and the
    rest of the batch would only queue behind connect errors or wait out timeouts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.failures >= self.limit

    def after(self, outcome: _Outcome) -> _Outcome:
        with self._lock:
            self.failures = self.failures + 1 if outcome.outcome == RETRY else 0
        return outcome


# --- A deadline for the whole request -------------------------------------------------------
# httpx's timeouts are per phase and per network read: a receiver that sends a byte now and then
# keeps a request alive forever. The client below runs on a network backend that gives every
# socket operation (connect, TLS, write, read) at most the time left before the deadline of the
# request the calling thread is making; a synchronous httpx request does all its I/O in the
# calling thread, so a thread-local deadline is the request's own.

_T = TypeVar("_T")
_request = threading.local()


@contextmanager
def _request_deadline(budget_s: float) -> Iterator[None]:
    """Within the block, this thread's requests end by `budget_s` seconds from now."""
    previous = getattr(_request, "deadline", None)
    _request.deadline = (time.monotonic() + budget_s, budget_s)
    try:
        yield
    finally:
        _request.deadline = previous


def _within(
    timeout: float | None,
    expired: type[httpcore.TimeoutException],
    operation: Callable[[float | None], _T],
) -> _T:
    """Run a socket operation with its timeout cut to the time left before the deadline."""
    deadline = getattr(_request, "deadline", None)
    if deadline is None:
        return operation(timeout)
    at, budget_s = deadline
    left = at - time.monotonic()
    message = f"the request's deadline ({budget_s:.3g} s in total) passed"
    if left <= 0:
        raise expired(message)
    if timeout is not None and timeout <= left:
        return operation(timeout)
    try:
        return operation(left)
    except expired as exc:
        raise expired(message) from exc


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _within(timeout, httpcore.ReadTimeout, lambda t: self._stream.read(max_bytes, t))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _within(timeout, httpcore.WriteTimeout, lambda t: self._stream.write(buffer, t))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _connected(
            timeout, lambda t: self._stream.start_tls(ssl_context, server_hostname, t)
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _connected(
    timeout: float | None, connect: Callable[[float | None], httpcore.NetworkStream]
) -> _DeadlineStream:
    """A stream opened by `connect(t)` within the deadline, whose reads and writes keep to it."""
    return _DeadlineStream(_within(timeout, httpcore.ConnectTimeout, connect))


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Sequence[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _connected(
            timeout,
            lambda t: self._backend.connect_tcp(host, port, t, local_address, socket_options),
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Sequence[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _connected(
            timeout, lambda t: self._backend.connect_unix_socket(path, t, socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (exception mapping, streams) on the deadline-keeping backend."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before the next try after `attempt` failed tries: base * 2^(attempt-1), capped at
    `max_s`, then jittered to between half and all of it so retries do not arrive in waves."""
    delay = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return delay * (0.5 + 0.5 * (rng or random).random())


def _classify(status: int) -> str:
    if 200 <= status < 300:
        return DELIVERED
    if status == 409:
        return FINAL
    if status >= 500 or status in RETRYABLE_4XX:
        return RETRY
    return DEAD  # other 4xx (and unexpected 1xx/3xx): the service refuses this record


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _send(client: httpx.Client, url: str, row: dict[str, Any], timeout_s: float) -> _Outcome:
    """POST one decision; the whole request (answer included) takes at most `timeout_s`."""
    decision_id, attempt = row["decision_id"], row["attempts"] + 1
    body = json.dumps(row["payload"], separators=(",", ":")).encode()
    headers = {IDEMPOTENCY_HEADER: decision_id, "Content-Type": "application/json"}
    started = time.perf_counter()
    try:
        with _request_deadline(timeout_s):
            response = client.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.TransportError as exc:  # refused, reset, timed out, cut mid-response
        return _Outcome(
            decision_id,
            attempt,
            RETRY,
            None,
            f"{type(exc).__name__}: {exc}"[:500],
            (time.perf_counter() - started) * 1000,
        )
    outcome = _classify(response.status_code)
    error = None if outcome == DELIVERED else f"HTTP {response.status_code}: {response.text[:500]}"
    return _Outcome(
        decision_id,
        attempt,
        outcome,
        response.status_code,
        error,
        (time.perf_counter() - started) * 1000,
        _retry_after(response) if outcome == RETRY else None,
    )


def _claim(engine: Engine, now: datetime, limit: int, lease_until: datetime) -> list[dict]:
    """Take up to `limit` due PENDING decisions, oldest due first, and lease them."""
    t = decision_outbox
    due = (
        sa.select(t.c.decision_id)
        .where((t.c.status == PENDING) & (t.c.next_attempt_at <= now))
        .order_by(t.c.next_attempt_at, t.c.created_at, t.c.decision_id)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)  # concurrent workers take disjoint rows
    with engine.begin() as conn:
        # One UPDATE ... RETURNING: the claim is atomic on SQLite and PostgreSQL alike.
        rows = conn.execute(
            t.update()
            .where(t.c.decision_id.in_(due.scalar_subquery()))
            .values(next_attempt_at=lease_until)
            .returning(t.c.decision_id, t.c.attempts, t.c.payload, t.c.created_at)
        ).all()
    _boundary()
    rows = sorted(rows, key=lambda r: (r.created_at, r.decision_id))
    return [dict(r._mapping) for r in rows]


def _record(
    engine: Engine,
    outcomes: list[_Outcome],
    now: datetime,
    *,
    backoff_base_s: float,
    backoff_max_s: float,
    max_attempts_before_dead: int | None,
    rng: random.Random,
) -> list[_Outcome]:
    """Write the outcomes to the outbox and the delivery log; return them as recorded (a
    RETRY past `max_attempts_before_dead` becomes DEAD)."""
    t = decision_outbox
    updates, log, recorded = [], [], []
    for o in outcomes:
        if (
            o.outcome == RETRY
            and max_attempts_before_dead
            and o.attempt >= max_attempts_before_dead
        ):
            o = _Outcome(
                o.decision_id, o.attempt, DEAD, o.status_code, o.error, o.duration_ms, None
            )
        next_at = now
        if o.outcome == RETRY:
            delay = backoff_s(o.attempt, backoff_base_s, backoff_max_s, rng)
            if o.retry_after_s is not None:
                delay = max(delay, min(o.retry_after_s, backoff_max_s))
            next_at = now + timedelta(seconds=delay)
        updates.append(
            {
                "b_id": o.decision_id,
                "b_status": PENDING if o.outcome == RETRY else o.outcome,
                "b_attempts": o.attempt,
                "b_next": next_at,
                "b_code": o.status_code,
                "b_error": o.error,
                "b_updated": now,
                "b_settled": None if o.outcome == RETRY else now,
            }
        )
        log.append(
            {
                "decision_id": o.decision_id,
                "attempt": o.attempt,
                "at": now,
                "outcome": o.outcome,
                "status_code": o.status_code,
                "error": o.error,
                "duration_ms": round(o.duration_ms, 3),
            }
        )
        recorded.append(o)
    if not updates:
        return recorded
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where((t.c.decision_id == sa.bindparam("b_id")) & (t.c.status == PENDING))
            .values(
                status=sa.bindparam("b_status"),
                attempts=sa.bindparam("b_attempts"),
                next_attempt_at=sa.bindparam("b_next"),
                last_status_code=sa.bindparam("b_code"),
                last_error=sa.bindparam("b_error"),
                updated_at=sa.bindparam("b_updated"),
                settled_at=sa.bindparam("b_settled"),
            ),
            updates,
        )
        conn.execute(delivery_attempts.insert(), log)
    _boundary()
    return recorded


def _defer(engine: Engine, decision_ids: list[str], until: datetime) -> None:
    """Give back leased decisions that were not sent, due again at `until`."""
    t = decision_outbox
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.decision_id.in_(decision_ids) & (t.c.status == PENDING))
            .values(next_attempt_at=until)
        )
    _boundary()


def _pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(decision_outbox.c.status == PENDING)
        ).scalar_one()


def next_due_at(engine: Engine) -> datetime | None:
    """When the earliest PENDING decision is due, or None if nothing is pending."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.min(decision_outbox.c.next_attempt_at)).where(
                decision_outbox.c.status == PENDING
            )
        ).scalar_one()


def _client(concurrency: int, timeout_s: float) -> httpx.Client:
    """The delivery client: pooled keep-alive connections, every request within its deadline.
    (A client passed to `deliver_pending` from elsewhere has httpx's per-read timeouts only.)"""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.Client(timeout=timeout_s, transport=_DeadlineTransport(limits))


def deliver_pending(
    engine: Engine,
    base_url: str,
    *,
    batch_size: int = 500,
    timeout_s: float = 5.0,
    max_attempts_before_dead: int | None = None,
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 300.0,
    now: datetime | None = None,
    concurrency: int = 8,
    client: httpx.Client | None = None,
    max_batches: int | None = None,
    rng: random.Random | None = None,
    deadline_s: float | None = None,
) -> DeliveryReport:
    """Send every decision due now, batch by batch, and record each outcome. When the service
    looks down (a batch failed only transiently, or max(10, 2 x concurrency) attempts in a
    row did)
    the run ends early: the rest of the batch is deferred unsent, and retries wait for their
    backoff rather than hammering the service or queueing behind timeouts.

    `timeout_s` bounds each request in total. With `deadline_s` the run ends by then: no batch
    is claimed and no request started after it, requests in flight are cut at it (RETRY), and
    decisions claimed but not sent are given back due at once."""
    started = time.perf_counter()
    stop_at = None if deadline_s is None else time.monotonic() + deadline_s
    rng = rng or random.Random()
    report = DeliveryReport()
    url = base_url.rstrip("/") + ENDPOINT
    own_client = client is None
    http = client or _client(concurrency, timeout_s)
    # Lease long enough for the whole batch to be sent even if every request times out.
    lease = timedelta(seconds=timeout_s * (batch_size / max(1, concurrency) + 1) + 30)
    breaker = _Breaker(limit=max(10, 2 * concurrency))

    def time_left() -> float:
        return float("inf") if stop_at is None else stop_at - time.monotonic()

    def attempt(row: dict[str, Any]) -> _Outcome | None:
        """Send one claimed decision, or None to give it back unsent."""
        budget = min(timeout_s, time_left())
        if breaker.open or budget <= 0:
            return None
        _boundary()  # about to send
        outcome = _send(http, url, row, budget)
        _boundary()  # answered (or failed), not yet recorded
        return breaker.after(outcome)

    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="deliver") as pool:
            while max_batches is None or report.batches < max_batches:
                if time_left() <= 0:
                    break
                at = now or datetime.now(UTC)
                rows = _claim(engine, at, batch_size, at + lease)
                if not rows:
                    break
                results = list(pool.map(attempt, rows))
                outcomes = [o for o in results if o is not None]
                deferred = [
                    r["decision_id"] for r, o in zip(rows, results, strict=True) if o is None
                ]
                done_at = now or datetime.now(UTC)
                if deferred:
                    # The service looks down: wait for a backoff. Out of time: due at once.
                    wait = backoff_s(1, backoff_base_s, backoff_max_s, rng) if breaker.open else 0
                    _defer(engine, deferred, done_at + timedelta(seconds=wait))
                    report.deferred += len(deferred)
                recorded = _record(
                    engine,
                    outcomes,
                    done_at,
                    backoff_base_s=backoff_base_s,
                    backoff_max_s=backoff_max_s,
                    max_attempts_before_dead=max_attempts_before_dead,
                    rng=rng,
                )
                report.batches += 1
                report.attempted += len(recorded)
                kinds = Counter(o.outcome for o in recorded)
                report.delivered += kinds[DELIVERED]
                report.final_409 += kinds[FINAL]
                report.dead += kinds[DEAD]
                report.retried += kinds[RETRY]
                report.errors.update(
                    str(o.status_code) if o.status_code else (o.error or "").split(":", 1)[0]
                    for o in recorded
                    if o.outcome != DELIVERED
                )
                if deferred or kinds[RETRY] == len(recorded):
                    break  # the service looks down (or time is up): the rest wait
    finally:
        if own_client:
            http.close()
    report.pending = _pending_count(engine)
    report.drained = report.pending == 0
    report.duration_s = time.perf_counter() - started
    return report


def deliver_until_drained(
    engine: Engine,
    base_url: str,
    deadline_s: float,
    *,
    poll_s: float = 0.05,
    max_wait_s: float = 1.0,
    concurrency: int = 8,
    timeout_s: float = 5.0,
    sleep: Callable[[float], object] = time.sleep,
    **options: Any,
) -> DeliveryReport:
    """Deliver, wait for the next decision to fall due, deliver again, until nothing is PENDING
    or `deadline_s` seconds have passed; return the runs' combined report (`drained` says which).
    The deadline holds however the service answers: requests in flight are cut at it.
    `sleep` does the waiting between runs (a test can make things happen while it waits)."""
    started = time.monotonic()
    total = DeliveryReport()
    with _client(concurrency, timeout_s) as http:
        while True:
            run = deliver_pending(
                engine,
                base_url,
                concurrency=concurrency,
                timeout_s=timeout_s,
                client=http,
                deadline_s=deadline_s - (time.monotonic() - started),
                **options,
            )
            total.add(run)
            left = deadline_s - (time.monotonic() - started)
            if run.pending == 0 or left <= 0:
                break
            due = next_due_at(engine)
            wait = (due - datetime.now(UTC)).total_seconds() if due else poll_s
            sleep(min(max(wait, poll_s), max_wait_s, left))
    total.drained = total.pending == 0
    total.duration_s = time.monotonic() - started
    return total
