"""The reference transfer service against malformed HTTP, on raw loopback sockets.

Every malformed request gets one 4xx answer with a JSON body naming the problem, then the
connection closes cleanly (the client reads b"", not a reset, and never waits forever), and the
service goes on serving good requests. An oversized body is never parsed as a request.
"""

import itertools
import json
import select
import socket
import time
from collections.abc import Iterable

import httpx
import pytest

from pipelines.sandbox.transfer_service import _MAX_BODY, ReferenceTransferService
from tests.factories import DECISION_RECORD

SERVER_TIMEOUT_S = 1.0  # the service's socket timeout in these tests
HANG_GUARD_S = 8.0  # how long a test waits for an answer and a close before calling it a hang
ENDPOINT = "/v1/risk-decisions"

RECORD = DECISION_RECORD
_good = itertools.count(1)


@pytest.fixture
def service():
    with ReferenceTransferService(timeout_s=SERVER_TIMEOUT_S) as svc:
        yield svc


def record(decision_id: str, **changes: object) -> bytes:
    transfer = "TX" + "".join(c for c in decision_id if c.isalnum())
    return json.dumps({**RECORD, "decision_id": decision_id, "transfer_id": transfer, **changes})


def req(
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | str = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    body = body.encode() if isinstance(body, str) else body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post(path: str, body: bytes | str, *headers: tuple[str, str]) -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return req("POST", path, [*headers, ("Content-Length", str(len(body)))], body)


def exchange(port: int, raw: bytes, *, trickle: bool = False) -> bytes:
    """Send `raw` and read until the server closes: fail on a hang or a reset connection.

    With `trickle`, then send one more body byte at a time until the server answers."""
    deadline = time.monotonic() + HANG_GUARD_S
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as sock:
        try:
            sock.sendall(raw)
            while trickle and time.monotonic() < deadline:
                sock.sendall(b"x")
                if select.select([sock], [], [], 0.2)[0]:
                    break
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(65536)
                if not chunk:
                    return received
                received += chunk
        except TimeoutError:
            pytest.fail(f"no answer and close within {HANG_GUARD_S} s; got {received[:400]!r}")
        except ConnectionError as exc:
            pytest.fail(f"connection not closed cleanly ({exc!r}); got {received[:400]!r}")


def responses(data: bytes, *, head: bool = False) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in `data`: (status, headers with lower-case names, body)."""
    out = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        assert head_end >= 0, f"not an HTTP response: {data[:400]!r}"
        status_line, *lines = data[:head_end].decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1."), f"no status line: {data[:400]!r}"
        status = int(status_line.split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
        length = 0 if head or status < 200 else int(headers.get("content-length", "0"))
        body, data = data[head_end + 4 : head_end + 4 + length], data[head_end + 4 + length :]
        assert len(body) == length, f"body cut short: {body[:400]!r}"
        out.append((status, headers, body))
    return out


def one_json_error(data: bytes, status: int, *words: str) -> tuple[dict[str, str], dict]:
    """The single answer in `data` is `status`, JSON, with an error naming each of `words`."""
    answers = responses(data)
    assert len(answers) == 1, f"expected one answer, got {[a[0] for a in answers]}: {data!r}"
    got, headers, body = answers[0]
    assert got == status, f"expected {status}, got {got}: {body[:400]!r}"
    assert headers.get("content-type") == "application/json", headers
    payload = json.loads(body)
    for word in words:
        assert word.lower() in payload["error"].lower(), payload
    return headers, payload


def assert_still_serving(service: ReferenceTransferService) -> None:
    """A good request on a new connection is still answered and applied."""
    decision_id = f"dec-ok-{next(_good)}"
    with httpx.Client(base_url=service.url, timeout=HANG_GUARD_S) as client:
        assert client.get("/health").json()["status"] == "ok"
        response = client.post(
            ENDPOINT,
            content=record(decision_id),
            headers={"Idempotency-Key": decision_id, "Content-Type": "application/json"},
        )
    assert response.status_code == 201, response.text
    assert service.effects()[-1] == decision_id


KEY = ("Idempotency-Key", "dec-1")
GOOD = record("dec-1")
CASES = [
    # Content-Length
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Content-Length", "-5")], GOOD),
        400,
        ["Content-Length"],
        id="negative-content-length",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Content-Length", "12abc")], GOOD),
        400,
        ["Content-Length"],
        id="non-numeric-content-length",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Content-Length", "5"), ("Content-Length", "6")], "x" * 6),
        400,
        ["Content-Length"],
        id="conflicting-content-lengths",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY]),
        411,
        ["Content-Length"],
        id="post-without-content-length",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Content-Length", str(10**9))], GOOD),
        413,
        ["Content-Length"],
        id="content-length-over-the-limit",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Content-Length", "1000000"), ("Expect", "100-continue")]),
        413,
        ["Content-Length"],
        id="expect-100-continue-over-the-limit",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Content-Length", "100")], b"0123456789"),
        408,
        ["timed out", "Content-Length"],
        id="body-shorter-than-content-length",
    ),
    pytest.param(
        req("POST", ENDPOINT, [KEY, ("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
        411,
        ["Transfer-Encoding"],
        id="chunked-body",
    ),
    pytest.param(
        req(
            "POST",
            ENDPOINT,
            [KEY, ("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            b"0\r\n\r\n",
        ),
        400,
        ["Transfer-Encoding", "Content-Length"],
        id="transfer-encoding-and-content-length",
    ),
    # the request line and headers, as http.server itself refuses them
    pytest.param(b"GARBAGE\r\n\r\n", 400, ["request line"], id="one-word-request-line"),
    pytest.param(b"GET /a b HTTP/1.1\r\n\r\n", 400, ["request"], id="four-word-request-line"),
    pytest.param(b"GET /health HTTP/x.y\r\n\r\n", 400, ["version"], id="bad-http-version"),
    pytest.param(b"GET /health\r\n", 400, ["HTTP/0.9"], id="http-0.9-request"),
    pytest.param(b"   \r\n\r\n", 400, ["empty request line"], id="blank-request-line"),
    pytest.param(req("G(T", "/health"), 400, ["method"], id="bad-method-token"),
    pytest.param(
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, ["URI"], id="request-line-too-long"
    ),
    pytest.param(
        req("GET", "/health", [("X-Big", "a" * 70_000)]), 431, ["header"], id="header-too-long"
    ),
    pytest.param(
        req("GET", "/health", [(f"X-H{i}", "1") for i in range(120)]),
        431,
        ["headers"],
        id="too-many-headers",
    ),
    pytest.param(
        b"POST /v1/risk-decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        408,
        ["headers"],
        id="headers-never-finished",
    ),
    # paths and methods
    pytest.param(req("GET", "/nope"), 404, ["/nope"], id="get-unknown-path"),
    pytest.param(post("/nope", GOOD, KEY), 404, ["/nope"], id="post-unknown-path"),
    pytest.param(post(ENDPOINT, GOOD, KEY).replace(b"POST", b"PUT", 1), 405, ["PUT"], id="put"),
    pytest.param(req("DELETE", ENDPOINT, [KEY]), 405, ["DELETE"], id="delete"),
    pytest.param(post("/control", "{}").replace(b"POST", b"PATCH", 1), 405, ["PATCH"], id="patch"),
    pytest.param(req("BREW", "/health"), 405, ["BREW"], id="unknown-method"),
    pytest.param(req("GET", "/control"), 405, ["GET"], id="get-control"),
    pytest.param(post("/health", "{}"), 405, ["POST"], id="post-health"),
    # /control input
    pytest.param(post("/control", "{not json"), 400, ["JSON"], id="control-bad-json"),
    pytest.param(post("/control", b"\xff\xfe{}"), 400, ["JSON"], id="control-not-utf8"),
    pytest.param(post("/control", "[1, 2]"), 400, ["object"], id="control-not-an-object"),
    pytest.param(
        post("/control", '{"fail_next": "x"}'), 400, ["fail_next"], id="control-count-not-int"
    ),
    pytest.param(
        post("/control", '{"lose_responses_next": true}'),
        400,
        ["lose_responses_next"],
        id="control-count-bool",
    ),
    pytest.param(
        post("/control", '{"fail_next": 3, "latency_s": -1}'),
        400,
        ["latency_s"],
        id="control-negative-latency-applies-nothing",
    ),
    pytest.param(
        post("/control", '{"fail_next": 1, "status": 99}'),
        400,
        ["status"],
        id="control-status-out-of-range",
    ),
    pytest.param(
        post("/control", '{"down_for_s": "soon"}'), 400, ["down_for_s"], id="control-down-for-str"
    ),
    pytest.param(
        post("/control", '{"fial_next": 2}'),
        400,
        ["fial_next", "unknown"],
        id="control-unknown-field",
    ),
    # the decision endpoint's body
    pytest.param(post(ENDPOINT, '{"decision_id": ', KEY), 400, ["JSON"], id="decision-bad-json"),
    pytest.param(
        post(ENDPOINT, record("dec-1", risk_score="high"), KEY),
        422,
        ["risk_score"],
        id="decision-field-wrong-type",
    ),
    pytest.param(post(ENDPOINT, GOOD), 400, ["Idempotency-Key"], id="decision-without-key"),
]


@pytest.mark.parametrize(("raw", "status", "words"), CASES)
def test_malformed_request_gets_4xx_json_and_a_clean_close(service, raw, status, words):
    data = exchange(service.port, raw)
    headers, _ = one_json_error(data, status, *words)
    assert headers.get("connection", "").lower() == "close"
    if status == 405:
        assert headers["allow"] in {"GET", "POST", "GET, POST"}
        assert raw.split(b" ", 1)[0].decode() not in headers["allow"]
    if status == 413:
        assert b"100 Continue" not in data  # refused before the body was invited
    assert service.effect_count == 0
    assert_still_serving(service)


def test_head_gets_405_json_headers_without_a_body(service):
    data = exchange(service.port, req("HEAD", "/health"))
    ((status, headers, body),) = responses(data, head=True)
    assert (status, headers["content-type"], headers["allow"], body) == (
        405,
        "application/json",
        "GET",
        b"",
    )
    assert_still_serving(service)


def test_oversized_body_is_refused_and_never_parsed_as_a_request(service):
    smuggled = post(ENDPOINT, record("dec-smuggled"), ("Idempotency-Key", "dec-smuggled"))
    # A valid request at the start of the body and one just past the body limit: neither may
    # be answered or applied, whatever part of the body the server reads before refusing it.
    body = smuggled + b" " * (_MAX_BODY + 1 - len(smuggled)) + smuggled
    raw = post(ENDPOINT, body, ("Idempotency-Key", "dec-big"))
    data = exchange(service.port, raw)
    one_json_error(data, 413, "Content-Length", str(_MAX_BODY))
    assert service.effect_count == 0
    assert "dec-smuggled" not in json.dumps(service.snapshot())
    assert_still_serving(service)
    assert "dec-smuggled" not in service.effects()


def test_a_body_trickled_slower_than_the_timeout_gets_408(service):
    # Each byte arrives well within the socket timeout; the whole body does not.
    raw = req("POST", ENDPOINT, [KEY, ("Content-Length", str(_MAX_BODY))])
    one_json_error(exchange(service.port, raw, trickle=True), 408, "timed out")
    assert_still_serving(service)


def test_an_idle_connection_is_closed(service):
    assert exchange(service.port, b"") == b""  # closed without an answer: it asked nothing
    assert_still_serving(service)


def test_an_empty_line_before_a_request_is_ignored(service):
    data = exchange(service.port, b"\r\n" + req("GET", "/health", [("Connection", "close")]))
    ((status, _, body),) = responses(data)
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_good_requests_keep_the_connection_alive(service):
    raw = (
        req("GET", "/health")
        + post(ENDPOINT, record("dec-7"), ("Idempotency-Key", "dec-7"))
        + req("GET", "/health", [("Connection", "close")])
    )
    answers = responses(exchange(service.port, raw))
    assert [status for status, _, _ in answers] == [200, 201, 200]
    assert service.effects() == ["dec-7"]


def test_socket_timeout_defaults_to_ten_seconds_and_must_be_positive():
    assert ReferenceTransferService().timeout_s == 10.0
    with pytest.raises(ValueError, match="timeout_s"):
        ReferenceTransferService(timeout_s=0)
