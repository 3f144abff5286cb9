"""Durability of online decisions: the group-committed record (SQLite and PostgreSQL), and
`upi-risk serve` killed with SIGKILL while requests are in flight, then restarted."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from pipelines.decisions.online_log import (
    OnlineDecisionLog,
    decisions_since,
    feature_values,
    find_decision,
    online_engine,
    pack_features,
)
from pipelines.decisions.record import DecisionRecord, decision_id
from pipelines.faults import CRASH_AT_ENV
from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.online.embedded import EmbeddedStore
from pipelines.features.online.state import OnlineFeatureState
from pipelines.risk.registry import ModelRegistry
from tests.test_serving import free_port, instance, iso, register, trained_model, transfer_body


def _row(tid: str, fingerprint: str = "a" * 64) -> dict[str, Any]:
    record = DecisionRecord(
        decision_id=decision_id(tid, "m1", "policy-m1"),
        transfer_id=tid,
        decision="ALLOW",
        risk_score=0.01,
        reason_codes=[],
        model_version="m1",
        policy_version="policy-m1",
        decided_at=dt.datetime.now(dt.UTC),
    )
    return {
        **record.model_dump(),
        "request_sha256": fingerprint,
        "request": {"transfer_id": tid},
        "created_at": dt.datetime.now(dt.UTC),
        "features": pack_features({"amount_log": 6.2, "payer_count_24h": None}),
        "fallback": False,
        "fallback_cause": None,
        "latency_us": 900,
    }


def _group_commit(url: str) -> None:
    engine = online_engine(url)
    log = OnlineDecisionLog(engine).start()
    try:
        threads, per_thread = 16, 25
        with ThreadPoolExecutor(threads) as pool:
            results = list(
                pool.map(
                    lambda i: log.record(_row(f"GC{i}")),
                    range(threads * per_thread),
                )
            )
        assert all(r.inserted for r in results)
        # Grouped: fewer transactions than decisions.
        assert log.batches < threads * per_thread

        # Concurrent decisions of one transfer: one is stored, every caller gets that one.
        with ThreadPoolExecutor(8) as pool:
            racing = list(pool.map(lambda k: log.record(_row("RACE1", f"{k:064d}")), range(8)))
        assert sum(r.inserted for r in racing) == 1
        stored = find_decision(engine, "RACE1")
        assert {r.row["request_sha256"] for r in racing} == {stored["request_sha256"]}
        # Recorded before: the stored row comes back, nothing is written.
        again = log.record(_row("GC0", "b" * 64))
        assert not again.inserted and again.row["request_sha256"] == "a" * 64
    finally:
        log.close()

    # Read back in commit order by cursor, in pages, missing nothing.
    seen, cursor = [], 0
    while True:
        rows, cursor = decisions_since(engine, cursor, limit=37)
        if not rows:
            break
        seen += rows
    assert len(seen) == threads * per_thread + 1
    assert [r["seq"] for r in seen] == sorted(r["seq"] for r in seen)
    assert len({r["transfer_id"] for r in seen}) == len(seen)
    values = feature_values(seen[0]["features"])
    assert list(values) == list(FEATURE_NAMES)
    assert values["amount_log"] == 6.2 and values["payer_count_24h"] is None
    assert decisions_since(engine, cursor) == ([], cursor)
    engine.dispose()


def test_group_commit_on_sqlite(tmp_path):
    _group_commit(f"sqlite:///{tmp_path / 'operational.sqlite'}")
    with sa.create_engine(f"sqlite:///{tmp_path / 'operational.sqlite'}").connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.postgres
def test_group_commit_on_postgres(postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS online_log_test")
        conn.execute("CREATE DATABASE online_log_test")
    _group_commit(postgres_dsn.rsplit("/", 1)[0] + "/online_log_test")


def test_a_failed_commit_reaches_every_waiter_and_the_writer_carries_on(tmp_path):
    engine = online_engine(f"sqlite:///{tmp_path / 'operational.sqlite'}")
    log = OnlineDecisionLog(engine).start()
    try:
        bad = _row("BAD1")
        bad["decision"] = "MAYBE"  # refused by the table's check constraint
        with pytest.raises(sa.exc.IntegrityError):
            log.record(bad)
        assert log.record(_row("GOOD1")).inserted
    finally:
        log.close()


# --- kill -9 ----------------------------------------------------------------------------------


def _serve(data_dir: Path, port: int, *, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(data_dir / "dagster")}
    env.pop("UPI_RISK_DATA_DIR", None)
    env.pop(CRASH_AT_ENV, None)
    if crash_at is not None:
        env[CRASH_AT_ENV] = crash_at
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become ready")


# The process kills itself (SIGKILL, `pipelines.faults`) right after recording its 120th
# decision and before the state takes that transfer: the worst moment, with the other clients'
# requests in flight at every stage.
CRASH_AT = "online-decision:120"


@pytest.mark.slow
def test_kill_9_loses_no_decision_given_and_no_transfer_the_features_count(tmp_path):
    settings = instance(tmp_path / "instance")
    register(ModelRegistry(settings.paths.models), trained_model(0))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
    payer = "crash.payer@okaxis"

    def body(i: int) -> dict[str, Any]:
        # One payer, so that a later transfer's features count every one recorded.
        return transfer_body(
            i,
            transfer_id=f"K{i:06d}",
            created_at=iso(base + dt.timedelta(milliseconds=i)),
            payer_vpa=payer,
            payer_device_id="crash-device",
        )

    answered: dict[str, bytes] = {}
    refused: list[str] = []
    lock = threading.Lock()
    server = _serve(settings.data_dir, port, crash_at=CRASH_AT)
    try:
        _wait_ready(url, server)

        def client(offset: int) -> None:
            with httpx.Client(base_url=url, timeout=5) as http:
                for i in range(offset, 2_000, 8):
                    try:
                        response = http.post("/v1/decisions", json=body(i))
                    except httpx.HTTPError:
                        return  # the server is gone
                    with lock:
                        if response.status_code != 200:
                            refused.append(response.text)
                            return
                        answered[f"K{i:06d}"] = response.content

        clients = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for thread in clients:
            thread.start()
        assert server.wait(30) == -signal.SIGKILL
        killed_at = time.time()
        for thread in clients:
            thread.join(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert refused == []
    assert 100 <= len(answered) < 120  # answers stop at the crash

    # Every decision a client received is in the operational record, exactly as sent.
    engine = online_engine(settings.operational_database_url)
    recorded, _ = decisions_since(engine, 0, limit=10_000)
    by_id = {row["transfer_id"]: row for row in recorded}
    assert len(recorded) >= 120 and set(answered) <= set(by_id)
    for tid, content in answered.items():
        assert DecisionRecord.model_validate_json(content).decision_id == by_id[tid]["decision_id"]
    engine.dispose()

    # What the killed process left in the state. A kill inside `record_transfer`, between its
    # set-once index and its records, leaves a transfer indexed without records: the state
    # then says it has it and reconciling cannot tell (features/online/state.py writes the
    # index first on purpose). Counted here and allowed, with a warning, until the state
    # writes both at once; then assert `lost == 0`.
    later = transfer_body(
        0,
        transfer_id="KLATER1",
        created_at=iso(base + dt.timedelta(minutes=1)),
        payer_vpa=payer,
        payer_device_id="crash-device",
    )
    left = OnlineFeatureState(EmbeddedStore(settings.paths.online_state))
    try:
        indexed = sum(left.has_transfer(tid) for tid in by_id)
        counted = left.features({**later, "created_at": base + dt.timedelta(minutes=1)})
        lost = indexed - int(counted["payer_count_24h"])
        assert 0 <= lost < 8  # at most the eight clients' transfers inside it at the kill
        if lost:
            warnings.warn(
                f"{lost} transfer(s) indexed without their records: the kill fell inside "
                "OnlineFeatureState.record_transfer",
                stacklevel=1,
            )
    finally:
        left.store.close()

    # Restarted: the state has every recorded transfer (the payer's next transfer counts them
    # all, including any recorded whose answer the kill cut off), and a repeat is answered
    # with the decision given before.
    server = _serve(settings.data_dir, port)
    try:
        _wait_ready(url, server)
        restored = int(re.search(r"(\d+) recorded transfers restored", server.stdout.readline())[1])
        assert restored >= 1  # at least the transfer of the decision it died after
        with httpx.Client(base_url=url, timeout=5) as http:
            tid = next(iter(answered))
            repeat = http.post("/v1/decisions", json=body(int(tid[1:])))
            assert repeat.status_code == 200 and repeat.content == answered[tid]
            assert http.post("/v1/decisions", json=later).status_code == 200
        engine = online_engine(settings.operational_database_url)
        features = feature_values(find_decision(engine, "KLATER1")["features"])
        assert features["payer_count_24h"] == len(recorded) - lost
        engine.dispose()
        # A clean stop finishes and snapshots the state: one file, and only an empty log.
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, server.stdout.read()
        state_dir = settings.paths.online_state
        assert (state_dir / "state.snapshot").stat().st_mtime > killed_at
        assert [p.stat().st_size for p in state_dir.glob("state-*.log")] == [0]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
