"""One online decision in process, warm state: the online feature state against today's path.

    .venv/bin/python benchmarks/bench_online.py                        # 100k decisions, ~5M history
    .venv/bin/python benchmarks/bench_online.py --users 20000 --decisions 20000   # a quick look
    .venv/bin/python benchmarks/bench_online.py --bootstrap-users 1300000        # + 10M bootstrap

Uses the warehouses `bench_features.py` builds once in --workdir from simulated landing data
(650k users x 30 days: ~5M transfers; 1.3M users: ~10M).

Decision latency: the state is built (`build_state`) from every transfer before the last
--decisions ones, with their account events and labels as known then; a model is trained on
the batch features of a sample of the earlier transfers. Then the last --decisions transfers are
decided one by one in time order, as the service does: state lookup + features + model +
policy + reason codes (timed), then the transfer and its outcome recorded (timed apart). The
baseline, beside it on --baseline-decisions of the same transfers: `features_for_transfer` on
the history frames plus scikit-learn's `predict_proba` (the model's own estimator) and the
batch `decide` on a one-row frame. Medians of --runs passes over the transfers (each pass on a
fresh state), p50 and p99 of each.

Bootstrap (with --bootstrap-users): in a child process, so that its peak memory is its own,
`bootstrap_from_warehouse` of that warehouse into the embedded store: seconds, peak RSS, the
state's bytes, and memory per million active payers (payers with a transfer in the state).

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from bench_features import ensure_warehouse

from pipelines.decisions.policy import Policy, decide, decide_one
from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.engine import compute_features, features_for_transfer
from pipelines.features.online import OnlineFeatureState, build_state
from pipelines.features.online.embedded import EmbeddedStore
from pipelines.risk.model import GradientBoostingRiskModel
from pipelines.warehouse import connect

_POLICY_HOLD = 0.5


def _frames(db: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    con = connect(db, read_only=True)
    try:
        transfers = con.sql(
            "SELECT transfer_id, created_at, payer_vpa, payee_vpa, payee_type, mcc, amount_paise,"
            " channel, payer_device_id, status, response_code FROM ledger.transfers"
            " ORDER BY created_at, first_seq"
        ).pl()
        events = con.sql("SELECT vpa, event_type, event_time FROM ledger.account_events").pl()
        labels = con.sql(
            "SELECT transfer_id, label, fraud_type, source, reported_at FROM ledger.labels"
        ).pl()
    finally:
        con.close()
    return transfers, events, labels


def _model(history: pl.DataFrame, events, labels, rows: int, seed: int):
    """A model trained on the batch features of the last `rows` transfers of the history."""
    feats = compute_features(history, events, labels, targets=history["transfer_id"].tail(rows))
    fraud = labels.filter(pl.col("label") == "FRAUD")["transfer_id"].unique()
    frame = feats.join(history.select("transfer_id", "created_at"), on="transfer_id")
    y = frame["transfer_id"].is_in(fraud.implode()).cast(pl.Int8).to_numpy()
    model = GradientBoostingRiskModel(param_grid=None, random_state=seed)
    model.fit(frame.select(FEATURE_NAMES), y, sample_time=frame["created_at"].to_numpy())
    return model


def _online_pass(
    history, events, labels, todo: list[dict], model, policy
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per decision: seconds to decide, seconds to record; and the state's build seconds."""
    started = time.perf_counter()
    state: OnlineFeatureState = build_state(EmbeddedStore(), history, events, labels)
    built = time.perf_counter() - started
    decide_s = np.empty(len(todo))
    record_s = np.empty(len(todo))
    for i, transfer in enumerate(todo):
        t0 = time.perf_counter()
        values = state.features(transfer)
        score = model.risk_score_one(values)
        day = transfer["created_at"].replace(hour=0, minute=0, second=0, microsecond=0)
        blocked = state.payee_blocklisted(transfer["payee_vpa"], day)
        decide_one(
            {**transfer, **values}, policy, score=score, blocklisted=blocked, allowlist=set()
        )
        t1 = time.perf_counter()
        state.record_transfer(transfer)
        state.record_outcome(transfer["transfer_id"], transfer["status"], transfer["response_code"])
        record_s[i] = time.perf_counter() - t1
        decide_s[i] = t1 - t0
    return decide_s, record_s, built


def _baseline(history, events, labels, todo: list[dict], model, policy) -> np.ndarray:
    out = np.empty(len(todo))
    for i, transfer in enumerate(todo):
        t0 = time.perf_counter()
        values = features_for_transfer(transfer, history, events, labels)
        row = np.array([[np.nan if (v := values[n]) is None else v for n in FEATURE_NAMES]])
        model.base_.predict_proba(row)
        one = pl.DataFrame([{**transfer, **values, "risk_score": 0.1}])
        decide(one, policy, blocklist=set(), allowlist=set())
        out[i] = time.perf_counter() - t0
    return out


def _bootstrap_child(db: str) -> None:
    """In a child: bootstrap the embedded state from the warehouse; print one JSON line."""
    from pipelines.features.online import bootstrap_from_warehouse

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    con = connect(Path(db), read_only=True)
    started = time.perf_counter()
    state = bootstrap_from_warehouse(con, EmbeddedStore())
    seconds = time.perf_counter() - started
    payers = con.sql(
        "SELECT count(DISTINCT payer_vpa) FROM ledger.transfers WHERE created_at >= "
        "(SELECT max(created_at) FROM ledger.transfers) - INTERVAL 30 DAY"
    ).fetchall()[0][0]
    transfers = con.sql("SELECT count(*) FROM ledger.transfers").fetchall()[0][0]
    con.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = state.stats()
    print(
        json.dumps(
            {
                "transfers": transfers,
                "seconds": seconds,
                "peak_rss_gb": peak / 1024**2,
                "rss_before_gb": before / 1024**2,
                "state_bytes": stats.get("bytes"),
                "state_keys": stats.get("keys"),
                "active_payers": payers,
                "state_mb_per_million_payers": (stats.get("bytes") or 0) / 1e6 / payers * 1e6,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-bench"
    )
    parser.add_argument("--users", type=int, default=650_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--baseline-decisions", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap-users", type=int, default=None)
    parser.add_argument("--bootstrap-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bootstrap_child:
        _bootstrap_child(args.bootstrap_child)
        return

    db, info = ensure_warehouse(args.workdir, args.users, args.days, args.seed)
    transfers, events, labels = _frames(db)
    history, last = transfers.head(-args.decisions), transfers.tail(args.decisions)
    cut = last["created_at"][0]
    known_events = events.filter(pl.col("event_time") < cut)
    known_labels = labels.filter(pl.col("reported_at") < cut)
    print(f"{history.height:,} transfers of history, {last.height:,} to decide", flush=True)
    model = _model(history, known_events, known_labels, args.train_rows, args.seed)
    policy = Policy(version="policy-bench", hold_threshold=_POLICY_HOLD)
    todo = last.to_dicts()
    for transfer in todo:
        transfer["created_at"] = transfer["created_at"].astimezone(UTC)

    passes = []
    for run in range(args.runs):
        decide_s, record_s, built = _online_pass(
            history, known_events, known_labels, todo, model, policy
        )
        passes.append(
            {
                "p50_us": float(np.percentile(decide_s, 50) * 1e6),
                "p99_us": float(np.percentile(decide_s, 99) * 1e6),
                "max_us": float(decide_s.max() * 1e6),
                "record_p50_us": float(np.percentile(record_s, 50) * 1e6),
                "record_p99_us": float(np.percentile(record_s, 99) * 1e6),
                "build_s": built,
            }
        )
        print(f"  online pass {run + 1}: {passes[-1]}", flush=True)
    sample = [todo[i] for i in np.linspace(0, len(todo) - 1, args.baseline_decisions).astype(int)]
    baseline = [
        _baseline(history, known_events, known_labels, sample, model, policy)
        for _ in range(args.runs)
    ]
    online = {k: statistics.median(p[k] for p in passes) for k in passes[0]}
    base = {
        "p50_us": statistics.median(float(np.percentile(b, 50) * 1e6) for b in baseline),
        "p99_us": statistics.median(float(np.percentile(b, 99) * 1e6) for b in baseline),
    }
    result: dict[str, Any] = {
        "bench": "online_decision",
        "history_transfers": history.height,
        "decisions": len(todo),
        "online": online,
        "baseline": base,
        "speedup_p50": base["p50_us"] / online["p50_us"],
        "speedup_p99": base["p99_us"] / online["p99_us"],
        "warehouse": info,
        "at": datetime.now(UTC).isoformat(),
    }
    print()
    print(f"{'path':<58}{'p50 us':>10}{'p99 us':>10}")
    print(
        f"{'online state + features + model + policy + reasons':<58}"
        f"{online['p50_us']:>10.0f}{online['p99_us']:>10.0f}"
    )
    print(
        f"{'  recording the transfer and its outcome (apart)':<58}"
        f"{online['record_p50_us']:>10.0f}{online['record_p99_us']:>10.0f}"
    )
    print(
        f"{'baseline: features_for_transfer + predict_proba + decide':<58}"
        f"{base['p50_us']:>10.0f}{base['p99_us']:>10.0f}"
    )
    print(
        f"speedup: {result['speedup_p50']:.0f}x at p50, {result['speedup_p99']:.0f}x at p99; "
        f"state built from {history.height:,} transfers in {online['build_s']:.1f} s"
    )

    if args.bootstrap_users:
        big, _ = ensure_warehouse(args.workdir, args.bootstrap_users, args.days, args.seed)
        done = subprocess.run(
            [sys.executable, __file__, "--bootstrap-child", str(big)],
            capture_output=True,
            text=True,
            check=True,
        )
        boot = json.loads(done.stdout.splitlines()[-1])
        result["bootstrap"] = boot
        print(
            f"bootstrap of {boot['transfers']:,} transfers: {boot['seconds']:.1f} s, peak RSS "
            f"{boot['peak_rss_gb']:.2f} GB, state {boot['state_bytes'] / 1e9:.2f} GB for "
            f"{boot['active_payers']:,} active payers "
            f"({boot['state_mb_per_million_payers']:.0f} MB per million)"
        )
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
