"""`upi-risk backtest` on a ledger the project did not write: NDJSON files from another producer."""

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.slow

START = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def write_foreign_ledger(root: Path, *, days: int = 40, seed: int = 11) -> dict[str, int]:
    """A tiny ledger-v1 producer of its own: other handles, other ids, NDJSON, one file per week.

    Fraud here is one pattern only (a takeover: a new device pays a first-time payee a large
    amount at night), reported 1-10 days later for most cases.
    """
    rng = random.Random(seed)
    users = [f"user{i:04d}@okbank" for i in range(400)]
    shops = [f"shop{i:03d}@okmerchant" for i in range(30)]
    devices = {u: f"phone-{i}" for i, u in enumerate(users)}
    transfers, labels, accounts = [], [], []
    seq = 0
    for i, user in enumerate(users):
        accounts.append(
            {
                "event_id": f"acc-{i}",
                "ledger_seq": i + 1,
                "event_time": (START - dt.timedelta(days=30)).isoformat(),
                "vpa": user,
                "event_type": "REGISTERED",
                "device_id": devices[user],
                "state": "IN-KA",
            }
        )
    frauds = 0
    for day in range(days):
        for _ in range(300):
            seq += 1
            payer = rng.choice(users)
            fraud = rng.random() < 0.01
            to_shop = rng.random() < 0.4 and not fraud
            created = START + dt.timedelta(days=day, seconds=rng.randrange(6 * 3600, 23 * 3600))
            payee = rng.choice(shops) if to_shop else rng.choice(users)
            amount = rng.randrange(2_000, 200_000)
            device = devices[payer]
            if fraud:
                frauds += 1
                created = START + dt.timedelta(days=day, seconds=rng.randrange(0, 4 * 3600))
                payee = f"newpayee{seq}@okbank"
                amount = rng.randrange(2_000_000, 9_000_000)
                device = f"unknown-{seq}"
            row = {
                "transfer_id": f"FX{seq:010d}",
                "ledger_seq": seq,
                "created_at": created.isoformat(),
                "payer_vpa": payer,
                "payee_vpa": payee,
                "payee_type": "MERCHANT" if to_shop else "PERSON",
                "mcc": "5411" if to_shop else "0000",
                "amount_paise": amount,
                "currency": "INR",
                "channel": "QR" if to_shop else "CHAT",
                "payer_device_id": device,
                "status": "SUCCESS",
                "response_code": "00",
            }
            transfers.append(row)
            if fraud and rng.random() < 0.85:
                labels.append(
                    {
                        "transfer_id": row["transfer_id"],
                        "label": "FRAUD",
                        "fraud_type": "ACCOUNT_TAKEOVER",
                        "source": "VICTIM_REPORT",
                        "reported_at": (
                            created + dt.timedelta(days=rng.uniform(1, 10))
                        ).isoformat(),
                    }
                )
    for stream, rows in (("transfers", transfers), ("accounts", accounts), ("labels", labels)):
        folder = root / stream
        folder.mkdir(parents=True)
        for week in range(0, len(rows), 2_000):
            lines = "\n".join(json.dumps(r) for r in rows[week : week + 2_000])
            (folder / f"export-{week // 2_000:03d}.ndjson").write_text(lines + "\n")
    return {"transfers": len(transfers), "frauds": frauds, "labels": len(labels)}


def test_backtest_on_a_foreign_ledger(tmp_path):
    ledger = tmp_path / "their-ledger"
    made = write_foreign_ledger(ledger)
    out = tmp_path / "backtest"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "backtest",
            "--ledger",
            str(ledger),
            "--out",
            str(out),
            "--test-start",
            "2025-07-01",
            "--test-days",
            "5",
            "--delay-days",
            "3",
            "--folds",
            "2",
            "--maturity-days",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "average_precision" in result.stdout and "logistic" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ingest"]["transfers"]["loaded"] == made["transfers"]
    folds = metrics["models"]["gbdt"]["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    assert folds[0]["test_start"].startswith("2025-07-01")
    assert folds[1]["test_start"].startswith("2025-06-26")
    # The one pattern in this ledger is easy: both models must find it.
    assert metrics["models"]["gbdt"]["mean"]["average_precision"] > 0.5
    scores = pl.read_parquet(out / "scores.parquet")
    assert scores.columns == ["transfer_id", "risk_score", "decision", "fold"]
    in_windows = 2 * 5 * 300
    assert abs(scores.height - in_windows) < in_windows * 0.05
    assert scores["risk_score"].is_between(0, 1).all()
    assert set(scores["decision"].unique()) <= {"ALLOW", "HOLD"}


def test_backtest_refuses_a_directory_that_is_not_a_ledger(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "backtest",
            "--ledger",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "no transfers/ folder" in result.stderr
