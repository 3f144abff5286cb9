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


def run_backtest_cli(ledger: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """`upi-risk backtest` on `ledger` into `out`: tests from 2025-07-01, 5 days, a 3-day gap."""
    command = (sys.executable, "-m", "pipelines.cli", "backtest")
    window = ("--test-start", "2025-07-01", "--test-days", "5", "--delay-days", "3")
    return subprocess.run(
        [*command, "--ledger", str(ledger), "--out", str(out), *window, *options],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_backtest_on_a_foreign_ledger(tmp_path):
    ledger = tmp_path / "their-ledger"
    made = write_foreign_ledger(ledger)
    out = tmp_path / "backtest"
    result = run_backtest_cli(ledger, out, "--folds", "2", "--maturity-days", "5")
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


# --- the delayed-label protocol (the Fraud Detection Handbook's), on a hand-built case ---------

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def _at(day: int, hour: int = 12) -> dt.datetime:
    """June `day` 2025 at `hour` IST, in UTC."""
    return dt.datetime(2025, 6, day, hour, tzinfo=IST).astimezone(dt.UTC)


class ScoreColumn:
    """A 'model' whose risk score is the `score` column: the ranking is set by hand."""

    def get_params(self, deep: bool = True) -> dict:
        return {}

    def set_params(self, **params) -> "ScoreColumn":
        return self

    def fit(self, X, y, sample_time=None, calibration_mask=None) -> "ScoreColumn":
        return self

    def risk_score(self, X: pl.DataFrame):
        return X["score"].to_numpy()


def _hand_built() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train 10-12 June IST, delay 13-14, test 15-17. Payers:
    A: a fraud in the training window reported on the 12th -> known from the first test day.
    B: a fraud on the 15th reported on the 16th at 10:00 -> kept on the 15th and 16th, dropped
       on the 17th.
    C: a fraud in the training window reported only on the 16th at 10:00 -> dropped on every
       test day (the protocol takes the training window's frauds as known), though the model
       did not train on it.
    D: a fraud before the training window (reported before it) -> never dropped.
    E, F: legitimate."""
    rows = [  # payer, day, hour, score, fraud, reported (day, hour) or None
        ("d", 5, 12, 0.0, 1, (6, 12)),
        ("a", 11, 12, 0.0, 1, (12, 12)),
        ("e", 11, 12, 0.0, 0, None),
        ("c", 12, 12, 0.0, 1, (16, 10)),
        ("f", 12, 12, 0.0, 0, None),
        ("e", 13, 12, 0.0, 0, None),  # delay period: neither trained on nor tested
        ("a", 15, 12, 0.9, 0, None),
        ("b", 15, 12, 0.8, 1, (16, 10)),
        ("c", 15, 12, 0.7, 0, None),
        ("d", 15, 12, 0.6, 0, None),
        ("e", 15, 12, 0.5, 0, None),
        ("a", 16, 12, 0.9, 0, None),
        ("b", 16, 12, 0.8, 1, (20, 12)),
        ("c", 16, 12, 0.3, 0, None),
        ("e", 16, 12, 0.85, 0, None),
        ("f", 16, 12, 0.1, 0, None),
        ("a", 17, 12, 0.9, 0, None),
        ("b", 17, 12, 0.95, 1, (25, 12)),
        ("c", 17, 12, 0.8, 0, None),
        ("d", 17, 12, 0.7, 1, (25, 12)),
        ("e", 17, 12, 0.2, 0, None),
        ("f", 17, 12, 0.6, 0, None),
    ]
    features = pl.DataFrame(
        {
            "transfer_id": [f"T{i:03d}" for i in range(len(rows))],
            "created_at": [_at(d, h) for _, d, h, *_ in rows],
            "payer_vpa": [f"{p}{p}@bank" for p, *_ in rows],
            "amount_paise": [10_000] * len(rows),
            "score": [s for *_, s, _, _ in rows],
        }
    )
    labels = pl.DataFrame(
        {
            "transfer_id": [f"T{i:03d}" for i, r in enumerate(rows) if r[5]],
            "label": "FRAUD",
            "fraud_type": "ACCOUNT_TAKEOVER",
            "source": "VICTIM_REPORT",
            "reported_at": [_at(*r[5]) for r in rows if r[5]],
        }
    )
    return features, labels


def _kept(frame: pl.DataFrame) -> list[tuple[str, int]]:
    days = frame["created_at"].dt.convert_time_zone("Asia/Kolkata").dt.day()
    return sorted(zip(frame["payer_vpa"].str.slice(0, 1).to_list(), days.to_list(), strict=True))


def test_delayed_labels_drop_payers_known_as_compromised_on_later_days():
    from pipelines.risk.evaluation import (
        delayed_label_folds,
        delayed_label_test_set,
        delayed_label_training_set,
    )
    from pipelines.risk.labels import evaluation_targets

    features, labels = _hand_built()
    (fold,) = delayed_label_folds(
        test_start=dt.date(2025, 6, 15), test_days=3, delay_days=2, folds=1, train_days=3
    )
    assert fold.test_start == _at(15, 0) and fold.train_end == _at(13, 0)
    assert fold.train_start == _at(10, 0) and fold.test_end == _at(18, 0)

    train = delayed_label_training_set(features, labels, fold)
    # The training window only; labels as known when the delay ends: C's is not known yet.
    assert _kept(train) == [("a", 11), ("c", 12), ("e", 11), ("f", 12)]
    assert dict(zip(train["payer_vpa"], train["y"], strict=True)) == {
        "aa@bank": 1,
        "cc@bank": 0,
        "ee@bank": 0,
        "ff@bank": 0,
    }
    assert train["matured"].all()

    judged = evaluation_targets(features.select("transfer_id"), labels)
    test, dropped = delayed_label_test_set(features, judged, labels, fold)
    assert _kept(test) == [
        ("b", 15),
        ("b", 16),
        ("d", 15),
        ("d", 17),
        ("e", 15),
        ("e", 16),
        ("e", 17),
        ("f", 16),
        ("f", 17),
    ]
    assert dropped == {"transfers": 7, "payers": 3}


def test_card_precision_at_k_by_hand():
    """k = 2. Kept transfers by day (score, fraud):
    15th: B .8 F, D .6, E .5            -> top 2 B, D: 1 hit -> 1/2; B found.
    16th: B .8 F, E .85, F .1           -> B already found, left out: E, F -> 0.
    17th: D .7 F, E .2, F .6            -> D, F: 1 hit -> 1/2.
    card precision@2 = (0.5 + 0 + 0.5) / 3; precision@2 without the removal = (0.5 + 0.5 + 0.5) / 3.
    """
    from pipelines.risk.evaluation import DELAYED_LABELS, backtest
    from pipelines.risk.metrics import card_precision_at_k

    features, labels = _hand_built()
    result = backtest(
        features,
        labels,
        ["score"],
        test_start=dt.datetime(2025, 6, 15, tzinfo=dt.UTC),
        test_days=3,
        delay_days=2,
        folds=1,
        train_days=3,
        review_capacity=2,
        hold_rate=0.1,
        models={"by_hand": ScoreColumn()},
        protocol=DELAYED_LABELS,
    )
    (fold,) = result.metrics["models"]["by_hand"]["folds"]
    assert fold["card_precision_at_k"] == pytest.approx(1 / 3)
    assert fold["precision_at_k"] == pytest.approx(0.5)
    assert fold["n_transfers"] == 9 and fold["n_frauds"] == 3
    assert fold["dropped_transfers"] == 7 and fold["train_frauds"] == 1
    assert result.metrics["protocol"]["name"] == DELAYED_LABELS
    # Published definition: always / k, even on a day with fewer payers than k.
    one_day = pl.DataFrame(
        {
            "created_at": [_at(15)],
            "payer_vpa": ["bb@bank"],
            "y": [1],
            "risk_score": [0.5],
        }
    )
    assert card_precision_at_k(one_day, 4)["card_precision_at_k"] == 0.25


def test_backtest_refuses_an_unknown_protocol():
    from pipelines.risk.evaluation import backtest

    features, labels = _hand_built()
    with pytest.raises(ValueError, match="protocol must be one of"):
        backtest(
            features,
            labels,
            ["score"],
            test_start=dt.datetime(2025, 6, 15, tzinfo=dt.UTC),
            test_days=3,
            delay_days=2,
            folds=1,
            models={"by_hand": ScoreColumn()},
            protocol="labels-known-tomorrow",
        )


def test_the_cli_offers_the_evaluations_protocols():
    from pipelines.cli.commands import backtest as command
    from pipelines.risk.evaluation import PROTOCOLS

    (option,) = [p for p in command.params if p.name == "protocol"]
    assert tuple(option.type.choices) == PROTOCOLS
    assert option.default == "labels-known-now"


def test_backtest_with_the_delayed_label_protocol(tmp_path):
    ledger = tmp_path / "their-ledger"
    write_foreign_ledger(ledger)
    out = tmp_path / "backtest"
    result = run_backtest_cli(
        ledger, out, "--protocol", "delayed-labels", "--train-days", "14", "--folds", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "protocol: delayed-labels" in result.stdout
    assert "card_precision_at_k" in result.stdout and "dropped_transfers" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == "delayed-labels"
    assert metrics["window"]["protocol"] == "delayed-labels"
    folds = metrics["models"]["gbdt"]["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    # Days are IST days: fold 0's test window opens at IST midnight of the 1st.
    assert folds[0]["test_start"] == "2025-06-30T18:30:00+00:00"
    for fold in folds:
        assert fold["dropped_transfers"] > 0  # takeover victims reported before the test days
        assert 0 <= fold["card_precision_at_k"] <= 1
        assert fold["average_precision"] > 0.3
