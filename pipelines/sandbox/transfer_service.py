"""A reference transfer service: the receiving end of decisions-v1, for demos and tests.

A real HTTP server on loopback (stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive) that does what
the app's transfer service must do with risk decisions, and can be made to misbehave:

- `POST /v1/risk-decisions` validates the record (422 naming the field), applies it once per
  `Idempotency-Key` (a repeated key returns the first response and has no second effect), and
  answers 409 for a transfer that is already final;
- `GET /v1/risk-decisions` shows what it holds; `GET /health` says it is up;
- `POST /control` (or the Python methods) fails the next N requests, adds latency, drops the next
  N responses after applying them, or takes the service down for a while.

Malformed requests get a 4xx JSON answer (`{"error": ...}`) and the connection is closed cleanly,
never a hang, a dropped connection or an HTML page: a bad `Content-Length` (400, or 413 over the
body limit, whose unread body is discarded and never parsed as a request), no `Content-Length` on
a POST or a `Transfer-Encoding` (411), a body slower than `timeout_s` (408), an unknown path (404),
a method the path does not take (405 with `Allow`), bad `/control` input (400 naming the field),
and what http.server refuses itself (a bad request line 400, 414, 431). Each connection has a
socket timeout (`timeout_s`), so a client that promises more than it sends cannot hold a worker.

State lives in the Python object, so it survives `stop()` / `start()`: like a service whose
database outlives its process. `start()` after `stop()` binds the same port again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from pipelines.decisions.record import (
    ENDPOINT,
    IDEMPOTENCY_HEADER,
    DecisionRecord,
    validation_errors,
)

FINAL_DECISIONS = ("ALLOW", "BLOCK")
_EFFECT = {"ALLOW": "ALLOWED", "HOLD": "HELD", "BLOCK": "BLOCKED"}
_MAX_BODY = 64 * 1024
DEFAULT_TIMEOUT_S = 10.0  # per connection: a read (or write) waiting longer gives up
_LINGER_MAX_S = 2.0  # after an error answer, discard what the client still sends, this long
_LINGER_MAX_BYTES = 1024 * 1024  # ... or this much, then close
_MAX_LINE = 65536  # http.server's own limit on the request line
_ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET",),
    ENDPOINT: ("GET", "POST"),
    "/control": ("POST",),
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP method (RFC 9110 token)
_DIGITS = re.compile(r"[0-9]+")
_CLOSE_AFTER = frozenset({400, 413, 422})  # a malformed decision request: answer, then close


@dataclass(frozen=True)
class _Response:
    status: int
    body: dict[str, Any]


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that can cut its open keep-alive connections, to really go down."""

    daemon_threads = True
    allow_reuse_address = True  # rebind the same port at once after stop()
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: ReferenceTransferService) -> None:
        self.service = service
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            open_now, self._open = list(self._open), set()
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def handle_error(self, request, client_address) -> None:
        pass  # a client or a stop() cutting a connection is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the outbox's client pools connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        # The socket timeout bounds every read and write: an idle keep-alive connection or a
        # client that promises more body than it sends cannot hold a worker forever.
        self.timeout = self.server.service.timeout_s
        self._length = 0
        self._linger = False
        super().setup()

    # framing -----------------------------------------------------------------------------

    def parse_request(self) -> bool:
        self._length = 0
        try:
            return self._parse_request()
        except TimeoutError:
            self.send_error(HTTPStatus.REQUEST_TIMEOUT, "timed out reading the request headers")
            return False

    def _parse_request(self) -> bool:
        if self.raw_requestline in (b"\r\n", b"\n"):
            # RFC 9112 2.2: ignore an empty line before the request line.
            self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return False
            if len(self.raw_requestline) > _MAX_LINE:
                self.command, self.request_version, self.requestline = "", "", ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return False
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) < 3:
            # http.server would close silently on an empty line and answer HTTP/0.9 (a bare body,
            # no status line) to `GET /path`.
            self.command, self.request_version = None, self.protocol_version
            what = f"request line {self.requestline[:200]!r}" if words else "empty request line"
            self.send_error(
                HTTPStatus.BAD_REQUEST,
                f"{what}: expected `METHOD /path HTTP/1.1` (HTTP/0.9 is not supported)",
            )
            return False
        if not super().parse_request():
            return False
        if not _TOKEN.fullmatch(self.command):
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad method {self.command!r}")
            return False
        return self._check_framing()

    def handle_expect_100(self) -> bool:
        # Refuse a body we would refuse anyway before inviting the client to send it.
        return self._check_framing() and super().handle_expect_100()

    def _check_framing(self) -> bool:
        """Take the body length from the headers; else answer 400/411/413 (and close)."""
        problem = self._framing_problem()
        if problem is None:
            return True
        self.send_error(*problem)
        return False

    def _framing_problem(self) -> tuple[HTTPStatus, str] | None:
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                return HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length"
            return (
                HTTPStatus.LENGTH_REQUIRED,
                "Transfer-Encoding is not supported: send the body with a Content-Length",
            )
        if not lengths:
            if self.command == "POST":
                return HTTPStatus.LENGTH_REQUIRED, "POST without a Content-Length header"
            return None
        values = {part.strip() for value in lengths for part in value.split(",")}
        shown = ", ".join(repr(v) for v in lengths)
        if not all(_DIGITS.fullmatch(v) for v in values):
            return (
                HTTPStatus.BAD_REQUEST,
                f"Content-Length {shown} is not a non-negative integer",
            )
        numbers = {v.lstrip("0") or "0" for v in values}
        if len(numbers) > 1:
            return HTTPStatus.BAD_REQUEST, f"conflicting Content-Length values {shown}"
        (number,) = numbers
        if len(number) > len(str(_MAX_BODY)) or int(number) > _MAX_BODY:
            return (
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"Content-Length {number} is over the {_MAX_BODY}-byte body limit",
            )
        self._length = int(number)
        return None

    def _read_body(self) -> bytes | None:
        """The request body, or None once a 400/408 answer has gone out (the caller returns)."""
        length, got, chunks = self._length, 0, []
        deadline = time.monotonic() + self.timeout  # a trickle of bytes cannot last forever
        try:
            while got < length:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    self._error(
                        HTTPStatus.BAD_REQUEST,
                        f"body ended after {got} of the {length} bytes of its Content-Length",
                    )
                    return None
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            self._error(
                HTTPStatus.REQUEST_TIMEOUT,
                f"timed out after {got} of the {length} body bytes promised by Content-Length",
            )
            return None
        return b"".join(chunks)

    # answers -------------------------------------------------------------------------------

    def _send(
        self,
        response: _Response,
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        data = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self._linger = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(_Response(int(status), {"error": message}), headers, close=True)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error, http.server's own too (bad request line, 414, 431...), as JSON; close."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = self.protocol_version  # else no status line goes out
        short, long = self.responses.get(code, ("Error", ""))
        text = message or f"{short}: {long}"
        self._error(code, (f"{text} ({explain})" if explain else text)[:500])

    def finish(self) -> None:
        super().finish()
        if self._linger:
            self._discard_rest()

    def _discard_rest(self) -> None:
        """Lingering close: signal the end of the answer, then read and drop what the client
        still sends (an unread body) for a while. Closing with unread data would reset the
        connection, and the client could lose the answer; none of it is parsed as a request."""
        sock = self.connection
        deadline = time.monotonic() + min(self.timeout, _LINGER_MAX_S)
        discarded = 0
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            while discarded < _LINGER_MAX_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                discarded += len(chunk)

    # routing -------------------------------------------------------------------------------

    def _route(self) -> str | None:
        """The path if it takes this method; else answer 404 or 405 (with Allow) and None."""
        path = self.path.split("?", 1)[0]
        allowed = _ROUTES.get(path)
        if allowed is None:
            self._error(HTTPStatus.NOT_FOUND, f"no such path {path}")
            return None
        if self.command not in allowed:
            self._error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"method {self.command} not allowed on {path}; allowed: {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
            return None
        return path

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method without a `do_` handler 501 HTML: answer 405 JSON (or 404).
        if name.startswith("do_"):
            return self._route
        raise AttributeError(name)

    def do_GET(self) -> None:
        service = self.server.service
        path = self._route()
        if path is None or self._read_body() is None:  # a GET body is read and ignored
            return
        if path == "/health":
            self._send(_Response(200, {"status": "ok", "port": service.port}))
        else:
            self._send(_Response(200, service.snapshot()))

    def do_POST(self) -> None:
        service = self.server.service
        path = self._route()
        if path is None:
            return
        body = self._read_body()
        if body is None:
            return
        if path == "/control":
            response = service._control(body)
            self._send(response, close=response.status >= 400)
            return
        try:
            self._decision(service, body)
        finally:
            service._handled_one()

    def _decision(self, service: ReferenceTransferService, body: bytes) -> None:
        fault = service._take_fault()
        if service.before_decision is not None:
            service.before_decision()
        if fault.latency_s:
            time.sleep(fault.latency_s)
        if fault.status is not None:
            self._send(_Response(fault.status, {"error": "injected failure"}))
            return
        response, replayed = service._receive(self.headers.get(IDEMPOTENCY_HEADER), body)
        if fault.drop_response:
            # The decision took effect but the caller never hears so: it must retry safely.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(
            response,
            {"Idempotent-Replayed": "true"} if replayed else None,
            close=response.status in _CLOSE_AFTER,
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 3600


_CONTROL_FIELDS: dict[str, tuple[Any, str]] = {
    "fail_next": (_is_count, "expected a non-negative integer"),
    "status": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599,
        "expected an HTTP error status, an integer from 400 to 599",
    ),
    "lose_responses_next": (_is_count, "expected a non-negative integer"),
    "latency_s": (_is_seconds, "expected seconds, a number from 0 to 3600"),
    "reset": (lambda v: isinstance(v, bool), "expected true or false"),
    "down_for_s": (_is_seconds, "expected seconds, a number from 0 to 3600"),
}


def _control_problems(command: dict[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a `/control` command, as (field, message) pairs."""
    problems = []
    for name, value in command.items():
        check = _CONTROL_FIELDS.get(name)
        if check is None:
            problems.append((name, f"unknown field (known: {', '.join(_CONTROL_FIELDS)})"))
        elif not check[0](value):
            problems.append((name, f"{check[1]}, got {json.dumps(value)[:80]}"))
    if "status" in command and "fail_next" not in command:
        problems.append(("status", "only goes with fail_next"))
    return problems


@dataclass(frozen=True)
class _Fault:
    status: int | None = None
    latency_s: float = 0.0
    drop_response: bool = False


class ReferenceTransferService:
    """The transfer service's decision endpoint on loopback, with knobs to make it fail."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        """`timeout_s`: how long a connection may wait on its client (idle between requests,
        or in the middle of one) before the service answers 408 or closes it."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handled_changed = threading.Condition(self._lock)
        self._down_timer: threading.Timer | None = None
        # Seams, so that tests wait for events instead of for wall-clock time: a hook run in the
        # handler thread before each decision request is handled (a test blocks it on an Event
        # or a Barrier), and what schedules `down_for`'s restart and `/control`'s outage (with a
        # stand-in for threading.Timer, a test decides when that time has passed).
        self.before_decision: Callable[[], object] | None = None
        self.timer: Callable[..., threading.Timer] = threading.Timer
        self.reset()

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> ReferenceTransferService:
        """Listen (again) on the same port; the first start picks a free port if `port` is 0."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"transfer-service-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: close the listening socket (connection refused) and cut open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def down_for(self, seconds: float) -> None:
        """Go down now and come back up on the same port after `seconds`."""
        self.stop()
        self._down_timer = self.timer(seconds, self.start)
        self._down_timer.daemon = True
        self._down_timer.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ReferenceTransferService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._down_timer is not None:
            self._down_timer.cancel()
        self.stop()

    # faults --------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next `n` decision requests with `status`, without looking at them."""
        with self._lock:
            self._fail_next, self._fail_status = n, status

    def lose_responses_next(self, n: int) -> None:
        """Apply the next `n` decisions but close the connection instead of answering."""
        with self._lock:
            self._drop_next = n

    def set_latency(self, seconds: float) -> None:
        """Wait `seconds` before handling each decision request (0 to stop)."""
        with self._lock:
            self._latency_s = seconds

    def reset(self) -> None:
        """Forget every decision and fault (the port stays)."""
        with self._lock:
            self._fail_next, self._fail_status, self._drop_next, self._latency_s = 0, 503, 0, 0.0
            self._responses: dict[str, tuple[str, _Response]] = {}
            self._in_effect: dict[str, dict[str, Any]] = {}
            self._superseded: set[str] = set()
            self._transfer_of: dict[str, str] = {}
            self._effects: list[str] = []
            self._requests: Counter[str] = Counter()
            self._handled = 0

    def _take_fault(self) -> _Fault:
        with self._lock:
            self._requests["total"] += 1
            status = None
            if self._fail_next > 0:
                self._fail_next -= 1
                self._requests["failed_injected"] += 1
                status = self._fail_status
            drop = False
            if status is None and self._drop_next > 0:
                self._drop_next -= 1
                self._requests["responses_dropped"] += 1
                drop = True
            return _Fault(status=status, latency_s=self._latency_s, drop_response=drop)

    def _control(self, body: bytes) -> _Response:
        try:
            command = json.loads(body or b"{}")
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            return _Response(400, {"error": f"control body is not valid JSON: {exc}"})
        if not isinstance(command, dict):
            return _Response(
                400,
                {"error": f"control body must be a JSON object, not {type(command).__name__}"},
            )
        problems = _control_problems(command)
        if problems:  # nothing is applied unless all of it is valid
            return _Response(
                400,
                {
                    "error": "control body: " + "; ".join(f"{f}: {m}" for f, m in problems),
                    "fields": [{"field": f, "message": m} for f, m in problems],
                },
            )
        if "fail_next" in command:
            self.fail_next(command["fail_next"], command.get("status", 503))
        if "lose_responses_next" in command:
            self.lose_responses_next(command["lose_responses_next"])
        if "latency_s" in command:
            self.set_latency(float(command["latency_s"]))
        if command.get("reset"):
            self.reset()
        if "down_for_s" in command:
            # Answer first, then go down from another thread (stop() waits for this handler).
            self.timer(0.05, self.down_for, args=(float(command["down_for_s"]),)).start()
        return _Response(200, {"ok": True, **command})

    # the decision endpoint ----------------------------------------------------------------

    def _receive(self, key: str | None, body: bytes) -> tuple[_Response, bool]:
        """Validate, deduplicate and apply one decision; return the response and whether it
        is the stored response of an earlier request with the same key."""
        if not key:
            return _Response(400, {"error": f"missing header {IDEMPOTENCY_HEADER}"}), False
        if len(body) > _MAX_BODY:
            return _Response(413, {"error": f"body over {_MAX_BODY} bytes"}), False
        try:
            record = DecisionRecord.model_validate_json(body)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors(include_url=False)):
                message = exc.errors(include_url=False)[0]["msg"]
                return _Response(
                    400,
                    {
                        "error": f"request body is not a JSON document: {message}",
                        "fields": [{"field": "(body)", "message": message}],
                    },
                ), False
            fields = validation_errors(exc)
            names = ", ".join(f["field"] for f in fields)
            return _Response(
                422, {"error": f"invalid decision record: {names}", "fields": fields}
            ), False
        if key != record.decision_id:
            return _Response(
                422,
                {
                    "error": f"{IDEMPOTENCY_HEADER} {key!r} is not the decision_id "
                    f"{record.decision_id!r}",
                    "fields": [{"field": IDEMPOTENCY_HEADER, "message": "expected decision_id"}],
                },
            ), False
        fingerprint = hashlib.sha256(
            json.dumps(record.to_json_dict(), sort_keys=True).encode()
        ).hexdigest()
        with self._lock:
            seen = self._responses.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    return _Response(
                        422,
                        {
                            "error": f"{IDEMPOTENCY_HEADER} {key!r} was used for another record",
                            "fields": [{"field": IDEMPOTENCY_HEADER, "message": "reused"}],
                        },
                    ), False
                self._requests["replayed"] += 1
                return seen[1], True
            response = self._apply(record)
            if response.status < 500:
                self._responses[key] = (fingerprint, response)
            return response, False

    def _apply(self, record: DecisionRecord) -> _Response:
        """The effect of one new decision (called under the lock)."""
        current = self._in_effect.get(record.transfer_id)
        if record.decision_id in self._superseded:
            return self._conflict(record, f"decision {record.decision_id} was superseded")
        if record.supersedes is not None:
            owner = self._transfer_of.get(record.supersedes)
            if owner is not None and owner != record.transfer_id:
                return _Response(
                    422,
                    {
                        "error": f"supersedes {record.supersedes!r} is a decision about "
                        f"transfer {owner}, not {record.transfer_id}",
                        "fields": [{"field": "supersedes", "message": "another transfer"}],
                    },
                )
            if current is not None and current["decision_id"] != record.supersedes:
                return self._conflict(record, self._why_not(current))
            # A review outcome may overtake its hold in delivery: remember the hold as
            # superseded, so the hold is refused (409) if it arrives afterwards.
            self._superseded.add(record.supersedes)
        elif current is not None:
            # A held transfer changes only by a decision that supersedes its hold (review).
            return self._conflict(record, self._why_not(current))
        self._in_effect[record.transfer_id] = record.to_json_dict()
        self._effects.append(record.decision_id)
        self._transfer_of[record.decision_id] = record.transfer_id
        return _Response(
            201,
            {
                "decision_id": record.decision_id,
                "transfer_id": record.transfer_id,
                "effect": "RELEASED"
                if record.supersedes and record.decision == "ALLOW"
                else _EFFECT[record.decision],
            },
        )

    @staticmethod
    def _why_not(current: dict[str, Any]) -> str:
        if current["decision"] in FINAL_DECISIONS:
            return f"transfer is already final ({current['decision']} {current['decision_id']})"
        return (
            f"transfer is held by {current['decision_id']}; only a decision superseding it applies"
        )

    def _conflict(self, record: DecisionRecord, why: str) -> _Response:
        current = self._in_effect.get(record.transfer_id)
        return _Response(
            409,
            {
                "error": f"transfer {record.transfer_id}: {why}",
                "transfer_id": record.transfer_id,
                "decision_in_effect": current["decision_id"] if current else None,
            },
        )

    # what it holds ---------------------------------------------------------------------------

    @property
    def effect_count(self) -> int:
        """How many decisions took effect (a repeated key never counts twice)."""
        with self._lock:
            return len(self._effects)

    def effects(self) -> list[str]:
        """The decision ids that took effect, in order."""
        with self._lock:
            return list(self._effects)

    def decisions_in_effect(self) -> dict[str, dict[str, Any]]:
        """Per transfer, the decision record in effect."""
        with self._lock:
            return {t: dict(r) for t, r in self._in_effect.items()}

    def _handled_one(self) -> None:
        with self._handled_changed:
            self._handled += 1
            self._handled_changed.notify_all()

    def wait_handled(self, n: int, timeout_s: float) -> bool:
        """Wait until `n` decision requests (since the last reset) have been handled: answered,
        failed or cut off, whether or not their caller was still listening. False if `timeout_s`
        passed first."""
        with self._handled_changed:
            return self._handled_changed.wait_for(lambda: self._handled >= n, timeout_s)

    def request_counts(self) -> dict[str, int]:
        """Decision requests seen: total, failed_injected, responses_dropped, replayed."""
        with self._lock:
            return dict(self._requests)

    def snapshot(self) -> dict[str, Any]:
        """What `GET /v1/risk-decisions` returns."""
        with self._lock:
            by_decision = Counter(r["decision"] for r in self._in_effect.values())
            return {
                "effects": len(self._effects),
                "transfers": len(self._in_effect),
                "in_effect_by_decision": dict(by_decision),
                "requests": dict(self._requests),
                "decisions_in_effect": self._in_effect,
            }


def serve(port: int = 8080, host: str = "127.0.0.1") -> None:
    """Run the reference transfer service in the foreground until interrupted."""
    service = ReferenceTransferService(host=host, port=port).start()
    print(f"reference transfer service on {service.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
