"""The reference transfer service on loopback: validation, idempotency, finality, outages."""

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipelines.sandbox.transfer_service import ReferenceTransferService
from tests.factories import DECISION_RECORD

RECORD = DECISION_RECORD


class ManualTimers:
    """Stands in for threading.Timer in the service (`service.timer = ManualTimers()`): a timer
    that is started runs when the test calls `pass_time()`, not after a wall-clock wait."""

    def __init__(self) -> None:
        self.started: list[threading.Timer] = []

    def __call__(
        self, interval: float, function: Callable[..., Any], args=None, kwargs=None
    ) -> threading.Timer:
        return _FiledTimer(self.started, interval, function, args, kwargs)

    def pass_time(self) -> list[float]:
        """Run the timers started so far, unless cancelled; return their intervals."""
        due, self.started[:] = list(self.started), []
        for timer in due:
            if not timer.finished.is_set():
                timer.function(*timer.args, **timer.kwargs)
        return [timer.interval for timer in due]


class _FiledTimer(threading.Timer):
    def __init__(self, filed: list[threading.Timer], *args: Any) -> None:
        super().__init__(*args)
        self.filed = filed

    def start(self) -> None:  # filed with its ManualTimers: no thread, no wait
        self.filed.append(self)


@pytest.fixture
def service():
    with ReferenceTransferService() as svc:
        yield svc


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as http:
        yield http


def post(client, service, record, key=None):
    headers = {"Idempotency-Key": key if key is not None else record["decision_id"]}
    return client.post(f"{service.url}/v1/risk-decisions", json=record, headers=headers)


def test_malformed_record_is_422_naming_the_field(service, client):
    bad = {**RECORD, "risk_score": 1.7, "decided_at": "2026-11-02T04:00:00"}
    response = post(client, service, bad)
    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert fields == {"risk_score", "decided_at"}
    missing = {k: v for k, v in RECORD.items() if k != "transfer_id"}
    assert post(client, service, missing).json()["fields"][0]["field"] == "transfer_id"
    assert post(client, service, RECORD, key="another-key").status_code == 422
    no_key = client.post(f"{service.url}/v1/risk-decisions", json=RECORD)
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["error"]
    assert service.effect_count == 0
    # Unknown fields are ignored: the contract may grow optional fields.
    assert post(client, service, {**RECORD, "new_optional_field": 1}).status_code == 201


def test_same_key_twice_same_response_one_effect(service, client):
    first = post(client, service, RECORD)
    second = post(client, service, RECORD)
    assert first.status_code == second.status_code == 201
    assert (
        first.json()
        == second.json()
        == {
            "decision_id": "dec-1",
            "transfer_id": "TX00000001",
            "effect": "HELD",
        }
    )
    assert second.headers["Idempotent-Replayed"] == "true"
    assert service.effect_count == 1
    reused = post(client, service, {**RECORD, "risk_score": 0.5})
    assert reused.status_code == 422  # same key, another record


def test_final_transfer_409_and_review_supersedes_the_hold(service, client):
    post(client, service, RECORD)
    rescored = {**RECORD, "decision_id": "dec-2", "decision": "ALLOW"}
    assert post(client, service, rescored).status_code == 409  # a hold changes only by review
    release = {**RECORD, "decision_id": "rev-1", "decision": "ALLOW", "supersedes": "dec-1"}
    response = post(client, service, release)
    assert response.status_code == 201 and response.json()["effect"] == "RELEASED"
    assert service.decisions_in_effect()["TX00000001"]["decision_id"] == "rev-1"
    late_block = {**release, "decision_id": "rev-2", "decision": "BLOCK"}
    conflict = post(client, service, late_block)
    assert conflict.status_code == 409 and conflict.json()["decision_in_effect"] == "rev-1"
    other = {**RECORD, "decision_id": "dec-9", "transfer_id": "TX9", "supersedes": "dec-1"}
    assert post(client, service, other).json()["fields"][0]["field"] == "supersedes"
    assert service.effects() == ["dec-1", "rev-1"]
    listing = client.get(f"{service.url}/v1/risk-decisions").json()
    assert listing["effects"] == 2
    assert listing["decisions_in_effect"]["TX00000001"]["supersedes"] == "dec-1"


def test_review_outcome_overtaking_its_hold_wins(service, client):
    release = {**RECORD, "decision_id": "rev-1", "decision": "ALLOW", "supersedes": "dec-1"}
    assert post(client, service, release).status_code == 201
    assert post(client, service, RECORD).status_code == 409  # the hold arrives late
    assert service.decisions_in_effect()["TX00000001"]["decision"] == "ALLOW"


def test_faults_down_and_up_on_the_same_port(service, client):
    service.fail_next(2, status=503)
    assert [post(client, service, RECORD).status_code for _ in range(3)] == [503, 503, 201]
    port = service.port
    service.stop()
    with pytest.raises(httpx.ConnectError):
        client.get(f"{service.url}/health")
    service.start()
    assert service.port == port
    assert client.get(f"{service.url}/health").json()["status"] == "ok"
    assert service.effect_count == 1  # state survives a restart
    service.lose_responses_next(1)
    second = {**RECORD, "decision_id": "dec-3", "transfer_id": "TX3"}
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, service, second)
    assert service.effect_count == 2  # applied, though the caller never heard
    assert post(client, service, second).headers["Idempotent-Replayed"] == "true"
    assert service.effect_count == 2


def test_control_endpoint(service, client):
    control = f"{service.url}/control"
    assert client.post(control, json={"fail_next": 1, "status": 500}).status_code == 200
    assert post(client, service, RECORD).status_code == 500
    client.post(control, json={"latency_s": 0.3})
    started = time.monotonic()
    assert post(client, service, RECORD).status_code == 201
    assert time.monotonic() - started >= 0.3  # a lower bound: a loaded machine only adds to it
    client.post(control, json={"latency_s": 0})
    service.timer = timers = ManualTimers()
    port = service.port
    client.post(control, json={"down_for_s": 0.4})
    timers.pass_time()  # the answer has gone out: now the service goes down...
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/health")
    assert timers.pass_time() == [0.4]  # ...and is back 0.4 s later, on the same port
    assert service.port == port
    assert httpx.get(f"{service.url}/health").status_code == 200
