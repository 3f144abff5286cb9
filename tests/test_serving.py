"""The real-time decision service over a real HTTP server on loopback: decide, repeat,
conflict, malformed input, later facts, health and metrics, fallback, hot swap.

The helpers at the top are shared with test_serving_durability.py."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import uvicorn

from pipelines.decisions.online_log import (
    decision_record,
    feature_values,
    find_decision,
    online_engine,
)
from pipelines.decisions.record import DecisionRecord, decision_id
from pipelines.features.definitions import FEATURE_NAMES
from pipelines.risk.model import LogisticRiskModel
from pipelines.risk.registry import ModelRegistry
from pipelines.serving.app import create_app
from pipelines.serving.runtime import Runtime, build_runtime
from pipelines.settings import DataDir, Settings

WINDOW = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 8, tzinfo=dt.UTC))


def trained_model(seed: int = 0) -> LogisticRiskModel:
    """A real risk model over the whole feature catalogue (fitted in a fraction of a second):
    fraud when the amount is large, so a score moves with `amount_paise`."""
    rng = np.random.default_rng(seed)
    n = 3_000
    matrix = rng.normal(size=(n, len(FEATURE_NAMES)))
    matrix[:, FEATURE_NAMES.index("amount_log")] = amount = rng.uniform(2.0, 12.0, n)
    target = (amount + rng.normal(scale=0.5, size=n) > 10.5).astype(int)  # over ~₹36,000
    return LogisticRiskModel(random_state=seed).fit(
        pl.DataFrame(matrix, schema=list(FEATURE_NAMES)), target
    )


def register(registry: ModelRegistry, model: Any, *, promote: bool = True, **metrics: Any) -> str:
    """Register `model` (live if `promote`); return its version."""
    manifest = registry.register(
        model,
        kind="logistic",
        feature_names=FEATURE_NAMES,
        training_window=(None, WINDOW[0]),
        test_window=WINDOW,
        metrics={"average_precision": 0.5, "hold_threshold": 0.9, **metrics},
    )
    if promote:
        registry.promote(manifest["version"], force=True)
    return manifest["version"]


def instance(root: Path, **settings: Any) -> Settings:
    """An instance directory (so `upi-risk serve` accepts it) and its settings."""
    DataDir.resolve(root).ensure()
    return Settings(data_dir=root, **settings)


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        return sock.getsockname()[1]


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[str, Runtime]]:
    """`upi-risk serve`'s app on a real uvicorn server in a thread, on a free loopback port:
    (base URL, runtime). Stopped, and the state closed, on exit."""
    runtime = build_runtime(settings)
    sock = free_socket()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime.service),
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", runtime
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        runtime.close()


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def transfer_body(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid decision request (a P2P transfer of 500 rupees), created a few days ago."""
    created = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
    body = {
        "transfer_id": f"TX{i:08d}",
        "created_at": iso(created + dt.timedelta(seconds=i)),
        "payer_vpa": f"payer.{i % 7}@waaxis",
        "payee_vpa": f"payee.{i % 5}@wasbi",
        "payee_type": "PERSON",
        "mcc": "0000",
        "amount_paise": 50_000,
        "currency": "INR",
        "channel": "CHAT",
        "payer_device_id": f"dev{i % 7}",
        "payer_state": "IN-KA",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    head = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(head + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def without(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


# --- models that misbehave (loadable: they score the warm-up's empty transfer) ----------------


class BrokenModel:
    """Raises on every real transfer."""

    def risk_score_one(self, values: Mapping[str, float | None]) -> float:
        if values:
            raise RuntimeError("model exploded")
        return 0.0


class SlowModel:
    """Answers a real transfer long after any deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def risk_score_one(self, values: Mapping[str, float | None]) -> float:
        if values:
            time.sleep(self.seconds)
        return 0.0


class UnloadableModel:
    """Fails the warm-up: the service must refuse to swap it in."""

    def risk_score_one(self, values: Mapping[str, float | None]) -> float:
        raise RuntimeError("cannot score anything")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> LogisticRiskModel:
    return trained_model(0)


@pytest.fixture
def live(tmp_path, model) -> tuple[Settings, str]:
    """An instance whose registry has `model` live: (settings, version)."""
    settings = instance(tmp_path / "instance", registry_poll_seconds=0.05)
    return settings, register(ModelRegistry(settings.paths.models), model)


def post(client: httpx.Client, body: Any, path: str = "/v1/decisions") -> httpx.Response:
    return client.post(path, json=body)


# --- the decision, its repeat, its conflict -------------------------------------------------


def test_decide_then_repeat_then_conflict(live):
    settings, version = live
    with serving(settings) as (url, runtime), httpx.Client(base_url=url) as client:
        body = transfer_body(1)
        first = post(client, body)
        assert first.status_code == 200, first.text
        record = DecisionRecord.model_validate_json(first.content)
        assert record.transfer_id == "TX00000001"
        assert (record.model_version, record.policy_version) == (version, f"policy-{version}")
        assert record.decision_id == decision_id("TX00000001", version, f"policy-{version}")
        assert record.decision == "ALLOW" and record.reason_codes == []
        assert 0.0 <= record.risk_score <= 1.0
        state_after_first = runtime.state.stats()

        # The same request again, its keys in another order and its time in another offset:
        # the same bytes back, and the state takes nothing new.
        created = dt.datetime.fromisoformat(body["created_at"])
        again = dict(reversed(list(body.items())))
        again["created_at"] = created.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
        again["created_at"] = again["created_at"].isoformat()
        repeat = post(client, again)
        assert repeat.status_code == 200 and repeat.content == first.content
        assert runtime.state.stats() == state_after_first

        conflict = post(client, {**body, "amount_paise": 50_001})
        assert conflict.status_code == 409
        assert "TX00000001" in conflict.json()["detail"]
        assert runtime.state.stats() == state_after_first

        # The operational record holds the decision, its request and the features it used.
        row = find_decision(online_engine(settings.operational_database_url), "TX00000001")
        assert decision_record(row).to_json_dict() == first.json()
        assert row["request"]["amount_paise"] == 50_000 and not row["fallback"]
        assert set(feature_values(row["features"])) == set(FEATURE_NAMES)
        assert runtime.state.has_transfer("TX00000001")


def test_hard_rules_and_score_thresholds(live, model):
    settings, _ = live
    settings.paths.allowlist.write_text("# trusted\npayee.9@wasbi\npayer.1@waaxis->payee.8@wasbi\n")
    with serving(settings) as (url, _runtime), httpx.Client(base_url=url) as client:
        over = post(client, transfer_body(10, amount_paise=10_000_001)).json()
        assert (over["decision"], over["reason_codes"]) == ("BLOCK", ["OVER_UPI_LIMIT"])
        # A verified merchant category may take up to 5 lakh.
        merchant = transfer_body(
            11, payee_type="MERCHANT", mcc="6300", channel="QR", amount_paise=40_000_000
        )
        assert post(client, merchant).json()["reason_codes"] != ["OVER_UPI_LIMIT"]
        allowed = post(client, transfer_body(12, payee_vpa="payee.9@wasbi", amount_paise=9_000_000))
        assert (allowed.json()["decision"], allowed.json()["reason_codes"]) == (
            "ALLOW",
            ["ALLOWLISTED"],
        )
        # The model holds a large amount (its score is above the live policy's threshold).
        held = post(client, transfer_body(13, amount_paise=9_000_000)).json()
        assert held["decision"] == "HOLD" and held["reason_codes"]
        assert held["risk_score"] >= 0.9


MALFORMED = {
    "missing field": (lambda b: without(b, "payee_vpa"), 422, "payee_vpa"),
    "bad VPA": (lambda b: {**b, "payer_vpa": "Not A VPA"}, 422, "payer_vpa"),
    "zero amount": (lambda b: {**b, "amount_paise": 0}, 422, "amount_paise"),
    "amount as text": (lambda b: {**b, "amount_paise": "50000"}, 422, "amount_paise"),
    "fractional amount": (lambda b: {**b, "amount_paise": 500.5}, 422, "amount_paise"),
    "id of wrong type": (lambda b: {**b, "transfer_id": 12345}, 422, "transfer_id"),
    "id too long": (lambda b: {**b, "transfer_id": "T" * 36}, 422, "transfer_id"),
    "unknown channel": (lambda b: {**b, "channel": "SMS"}, 422, "channel"),
    "naive time": (lambda b: {**b, "created_at": "2026-03-02T06:30:00"}, 422, "created_at"),
    "before UPI": (lambda b: {**b, "created_at": "2015-01-01T00:00:00Z"}, 422, "created_at"),
    "merchant code on a person": (lambda b: {**b, "mcc": "5411"}, 422, "mcc"),
    "collect to a person": (lambda b: {**b, "channel": "COLLECT"}, 422, "channel"),
    "long note": (lambda b: {**b, "note": "x" * 51}, 422, "note"),
    "not an object": (lambda b: [b], 422, "(record)"),
}


def test_malformed_requests_name_the_field_and_decide_nothing(live):
    settings, _ = live
    with serving(settings) as (url, runtime), httpx.Client(base_url=url) as client:
        for name, (breaks, status, field) in MALFORMED.items():
            response = post(client, breaks(transfer_body(20)))
            assert response.status_code == status, (name, response.text)
            fields = [error["field"] for error in response.json()["detail"]]
            assert field in fields, (name, response.text)
        for raw, field in ((b"{not json", "(record)"), (b"", "(record)")):
            response = client.post(
                "/v1/decisions", content=raw, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["field"] == field
        # Too large to be a transfer: refused before it is read whole (413), in the same shape.
        huge = {**transfer_body(20), "note": "x" * 200_000}
        response = post(client, huge)
        assert response.status_code == 413
        assert response.json()["detail"][0]["field"] == "(body)"
        assert not runtime.state.has_transfer("TX00000020")
        assert find_decision(runtime.service.decision_log.engine, "TX00000020") is None
        # Still serving after all that.
        assert post(client, transfer_body(20)).status_code == 200


# --- what the state learns later ------------------------------------------------------------


def test_outcomes_events_and_labels_change_later_features(live):
    settings, _ = live
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
    payer, payee, device = "alice@okaxis", "mule.7@ybl", "dev-alice"

    def body(tid: str, at: dt.datetime, **extra: Any) -> dict[str, Any]:
        return transfer_body(
            0,
            transfer_id=tid,
            created_at=iso(at),
            payer_vpa=payer,
            payee_vpa=payee,
            payer_device_id=device,
            **extra,
        )

    with serving(settings) as (url, runtime), httpx.Client(base_url=url) as client:
        engine = runtime.service.decision_log.engine

        def features(tid: str) -> dict[str, float | None]:
            return feature_values(find_decision(engine, tid)["features"])

        assert post(client, body("A1", base)).status_code == 200
        first = features("A1")
        assert first["payer_count_24h"] == 0 and first["payer_failed_pin_24h"] == 0

        outcome = client.post(
            "/v1/transfers/A1/outcome", json={"status": "FAILED", "response_code": "ZM"}
        )
        assert outcome.status_code == 200, outcome.text
        assert (
            client.post("/v1/transfers/NOPE1/outcome", json={"status": "SUCCESS"}).status_code
            == 404
        )
        bad = client.post("/v1/transfers/A1/outcome", json={"status": "DONE"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"
        bad_id = client.post("/v1/transfers/bad-id!/outcome", json={"status": "SUCCESS"})
        assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["field"] == "transfer_id"

        event = {
            "vpa": payer,
            "event_type": "SIM_CHANGED",
            "event_time": iso(base + dt.timedelta(minutes=1)),
        }
        assert client.post("/v1/account-events", json=event).json() == {"applied": 1, "unknown": 0}
        bad_event = client.post(
            "/v1/account-events", json={"items": [event, {**event, "vpa": "x"}]}
        )
        assert bad_event.status_code == 422
        assert bad_event.json()["detail"][0]["field"] == "items.1.vpa"

        assert post(client, body("A2", base + dt.timedelta(minutes=2))).status_code == 200
        second = features("A2")
        assert second["payer_count_24h"] == 1  # A1 counts
        assert second["payer_failed_pin_24h"] == 1  # its outcome: a wrong PIN
        assert second["payer_hours_since_sim_change"] is not None
        assert first["payer_hours_since_sim_change"] is None

        # A bank-confirmed mule report on A1 puts its payee on the block list from the next
        # UTC day on (the block list in force at the start of the transfer's day, as in batch).
        label = {
            "transfer_id": "A1",
            "label": "FRAUD",
            "fraud_type": "MULE",
            "source": "BANK_CONFIRMED",
            "reported_at": iso(base + dt.timedelta(minutes=3)),
        }
        batch = {"items": [label, {**label, "transfer_id": "NEVERSEEN1"}]}
        assert client.post("/v1/labels", json=batch).json() == {"applied": 1, "unknown": 1}
        next_day = base.replace(hour=0, minute=0, second=0) + dt.timedelta(days=1, hours=1)
        blocked = post(client, body("A3", next_day)).json()
        assert (blocked["decision"], blocked["reason_codes"]) == ("BLOCK", ["BLOCKLISTED_PAYEE"])
        assert features("A3")["payee_fraud_reports"] == 1


# --- health, readiness, metrics, docs -------------------------------------------------------


def test_health_ready_metrics_and_docs(live):
    settings, version = live
    with serving(settings) as (url, _runtime), httpx.Client(base_url=url) as client:
        assert client.get("/health").json() == {"status": "alive"}
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_version"] == version
        post(client, transfer_body(30))
        post(client, transfer_body(31, amount_paise=20_000_000))
        post(client, without(transfer_body(32), "payer_vpa"))
        text = client.get("/metrics").text
        assert metric(text, "upi_risk_requests_total", endpoint="/v1/decisions", status="200") == 2
        assert metric(text, "upi_risk_requests_total", endpoint="/v1/decisions", status="422") == 1
        assert (
            metric(text, "upi_risk_decisions_total", decision="BLOCK", reason_code="OVER_UPI_LIMIT")
            == 1
        )
        assert metric(text, "upi_risk_decisions_total", decision="ALLOW", reason_code="NONE") == 1
        assert metric(text, "upi_risk_decision_latency_seconds_bucket", le="0.0005") >= 0
        assert metric(text, "upi_risk_decision_latency_seconds_count") == 2
        assert (
            metric(
                text,
                "upi_risk_model_info",
                model_version=version,
                policy_version=f"policy-{version}",
            )
            == 1
        )
        assert metric(text, "upi_risk_state_keys") > 0 and metric(text, "upi_risk_state_bytes") > 0
        assert metric(text, "upi_risk_record_batch_size_count") == 2
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = client.get("/openapi.json").json()
        body = spec["paths"]["/v1/decisions"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["$ref"].endswith("/TransferRequest")
        assert "amount_paise" in spec["components"]["schemas"]["TransferRequest"]["properties"]
        assert "oneOf" in str(spec["paths"]["/v1/labels"]["post"]["requestBody"])


def test_without_a_model_not_ready_and_the_fallback_decides(tmp_path):
    settings = instance(tmp_path / "instance")
    with serving(settings) as (url, _runtime), httpx.Client(base_url=url) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert any(m.startswith("model") for m in ready.json()["missing"])
        decided = post(client, transfer_body(40)).json()
        assert (decided["decision"], decided["reason_codes"]) == ("ALLOW", ["MODEL_UNAVAILABLE"])
        assert (decided["model_version"], decided["policy_version"]) == ("none", "policy-none")
        assert (
            metric(client.get("/metrics").text, "upi_risk_fallbacks_total", cause="no_model") == 1
        )


# --- fallback: a model that fails, a model that is late -------------------------------------


@pytest.mark.parametrize(
    ("bad_model", "cause", "fallback"),
    [
        (BrokenModel(), "model_error", "ALLOW"),
        (SlowModel(0.5), "deadline", "ALLOW"),
        (SlowModel(0.5), "deadline", "HOLD"),
    ],
    ids=["broken", "slow", "slow-hold"],
)
def test_the_fallback_decides_within_the_deadline(tmp_path, bad_model, cause, fallback):
    settings = instance(tmp_path / "instance", decision_deadline_ms=50, decision_fallback=fallback)
    version = register(ModelRegistry(settings.paths.models), bad_model)
    with serving(settings) as (url, _runtime), httpx.Client(base_url=url) as client:
        assert client.get("/ready").status_code == 200
        for i in range(3):
            started = time.perf_counter()
            response = post(client, transfer_body(50 + i))
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            decided = response.json()
            assert (decided["decision"], decided["reason_codes"]) == (
                fallback,
                ["MODEL_UNAVAILABLE"],
            )
            assert decided["model_version"] == version  # the live model, which did not answer
            # The deadline, plus the commit and loopback HTTP (generous on a busy machine).
            assert elapsed < 0.05 + 0.15, elapsed
        # The hard rules need no model: an over-limit amount is still blocked.
        over = post(client, transfer_body(60, amount_paise=10_000_001)).json()
        assert (over["decision"], over["reason_codes"]) == ("BLOCK", ["OVER_UPI_LIMIT"])
        text = client.get("/metrics").text
        assert metric(text, "upi_risk_fallbacks_total", cause=cause) == 4
        assert (
            metric(
                text, "upi_risk_decisions_total", decision=fallback, reason_code="MODEL_UNAVAILABLE"
            )
            == 3
        )


# --- hot swap -------------------------------------------------------------------------------


def test_hot_swap_under_load(tmp_path, model):
    settings = instance(tmp_path / "instance", registry_poll_seconds=0.05)
    registry = ModelRegistry(settings.paths.models)
    old = register(registry, model)
    new = register(registry, trained_model(1), promote=False, hold_threshold=0.5)
    pairs = {(old, f"policy-{old}"), (new, f"policy-{new}")}
    seen: list[tuple[str, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(url: str, offset: int) -> None:
        with httpx.Client(base_url=url) as client:
            i = offset
            while not stop.is_set():
                try:
                    response = post(client, transfer_body(1_000 + i))
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        seen.append(
                            (response.json()["model_version"], response.json()["policy_version"])
                        )
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                i += 2

    with serving(settings) as (url, _runtime):
        threads = [threading.Thread(target=client_loop, args=(url, k)) for k in (0, 1)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            # A model that cannot score is refused: the live one keeps deciding.
            broken = register(registry, UnloadableModel())
            time.sleep(0.3)
            registry.promote(new, force=True)
            deadline = time.monotonic() + 10
            while (not seen or seen[-1][0] != new) and time.monotonic() < deadline:
                time.sleep(0.02)
            swapped_at = len(seen)
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        text = httpx.get(f"{url}/metrics").text
    assert failures == []
    assert set(seen) <= pairs, set(seen) - pairs
    assert (old, f"policy-{old}") in seen[:swapped_at]
    assert len(seen) > swapped_at and set(seen[swapped_at + 2 :]) == {(new, f"policy-{new}")}
    assert broken not in {m for m, _ in seen}
    assert metric(text, "upi_risk_model_load_failures_total") >= 1
    assert metric(text, "upi_risk_model_swaps_total") == 2  # none -> old -> new


def test_a_decision_that_cannot_be_recorded_is_a_503_not_an_answer(live):
    settings, _ = live
    with serving(settings) as (url, runtime), httpx.Client(base_url=url) as client:
        runtime.service.decision_log.close()  # the operational database "goes away"
        response = post(client, transfer_body(70))
        assert response.status_code == 503
        assert "recording the decision is unavailable" in response.json()["detail"]
        assert not runtime.state.has_transfer("TX00000070")
        runtime.service.decision_log.start()  # back: the same request is decided
        assert post(client, transfer_body(70)).status_code == 200


def test_a_failing_state_leaves_the_hard_rules_and_the_fallback(live, monkeypatch):
    settings, _ = live
    with serving(settings) as (url, runtime), httpx.Client(base_url=url) as client:

        def unavailable(*_args: Any, **_kwargs: Any) -> Any:
            raise ConnectionError("state store unreachable")

        monkeypatch.setattr(runtime.state, "features", unavailable)
        decided = post(client, transfer_body(80)).json()
        assert (decided["decision"], decided["reason_codes"]) == ("ALLOW", ["MODEL_UNAVAILABLE"])
        over = post(client, transfer_body(81, amount_paise=10_000_001)).json()
        assert over["reason_codes"] == ["OVER_UPI_LIMIT"]
        text = client.get("/metrics").text
        assert metric(text, "upi_risk_fallbacks_total", cause="state_error") == 2


def test_redis_state_backend(tmp_path, model, redis_url):
    # A database of the server's own (/9), and ids of this run: other tests keep to prefixes.
    run = uuid.uuid4().hex[:10]
    settings = instance(
        tmp_path / "instance", state_backend="redis", redis_url=redis_url.rsplit("/", 1)[0] + "/9"
    )
    register(ModelRegistry(settings.paths.models), model)
    payer = f"redis.{run}@okaxis"
    with serving(settings) as (url, runtime), httpx.Client(base_url=url) as client:
        assert runtime.store.backend == "redis"
        first = transfer_body(90, transfer_id=f"R{run}A", payer_vpa=payer)
        second = transfer_body(91, transfer_id=f"R{run}B", payer_vpa=payer)
        assert post(client, first).status_code == 200
        assert post(client, second).status_code == 200
        row = find_decision(runtime.service.decision_log.engine, f"R{run}B")
        assert feature_values(row["features"])["payer_count_24h"] == 1
        assert runtime.state.has_transfer(f"R{run}A")
