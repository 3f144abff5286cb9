"""Adoption marts for 30 days of 1M transfers a day (30M): time and peak memory.

    .venv/bin/python benchmarks/bench_adoption.py                      # 30M transfers, 3 runs
    .venv/bin/python benchmarks/bench_adoption.py --per-day 100000 --repeat 1   # a quick look

The warehouse is generated once into --workdir with DuckDB SQL (simulating and ingesting 30M
transfers would take minutes and is measured by its own benchmarks): current-state transfers
with a skewed payer population, their account events, and a live-model decision for every
transfer. Each run builds every mart for all 30 days, as one Dagster backfill run does, in a
child process so its peak RSS is its own. Target (issue 4): 60 s or less.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = "2026-01-01"

_CHILD = """
import datetime as dt, json, resource, sys, time
from pathlib import Path
from pipelines.adoption.marts import build_marts, ledger_days
from pipelines.warehouse import warehouse
started = time.perf_counter()
with warehouse(Path(sys.argv[1])) as con:
    days = ledger_days(con)
    report = build_marts(con, days.first, days.last, token_key=b"bench-key")
print(json.dumps({"seconds": time.perf_counter() - started, "days": len(days.days),
                  "marts": report,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(db: Path, per_day: int, days: int, users: int) -> dict:
    """A warehouse of `days` x `per_day` transfers, written once and reused."""
    from pipelines.warehouse import DECISIONS_TABLE, SCORES_TABLE, warehouse

    n = per_day * days
    seconds_per_row = days * 86_400 / n
    with warehouse(db) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS risk")
        # A payer's share of traffic falls off like a power law, as in the real app; the
        # intraday curve is a rough IST day (busy 10:00-22:00), enough for the mart queries.
        con.execute(
            f"""CREATE OR REPLACE TABLE ledger.transfers AS
            SELECT printf('T%011d', i) AS transfer_id, i AS ledger_seq,
                TIMESTAMPTZ '{START} 00:00:00+00'
                    + to_microseconds(CAST(i * {seconds_per_row} * 1e6 AS BIGINT)) AS created_at,
                printf('user%d@waaxis', CAST(floor(pow(random(), 2.5) * {users}) AS BIGINT))
                    AS payer_vpa,
                CASE WHEN p2m THEN printf('shop%d@wasbi', CAST(random() * 50000 AS BIGINT))
                    ELSE printf('user%d@waaxis', CAST(random() * {users} AS BIGINT)) END
                    AS payee_vpa,
                CASE WHEN p2m THEN 'MERCHANT' ELSE 'PERSON' END AS payee_type,
                CASE WHEN p2m THEN ['5411','5812','5814','4814','4900','5541','5912','5399']
                    [1 + CAST(random() * 7.99 AS INTEGER)] ELSE '0000' END AS mcc,
                CAST(exp(random() * 8 + 8) AS BIGINT) AS amount_paise, 'INR' AS currency,
                CASE WHEN p2m THEN (['QR','QR','QR','INTENT','COLLECT'])
                    [1 + CAST(random() * 4.99 AS INTEGER)] ELSE 'CHAT' END AS channel,
                'dev' || (i % 1000003) AS payer_device_id,
                'IN-' || (['MH','UP','KA','TN','DL','WB','GJ','RJ','TG','KL'])
                    [1 + CAST(random() * 9.99 AS INTEGER)] AS payer_state,
                CASE WHEN r < 0.93 THEN 'SUCCESS' WHEN r < 0.995 THEN 'FAILED'
                    ELSE 'REVERSED' END AS status,
                CASE WHEN r < 0.93 THEN '00' WHEN r < 0.96 THEN 'Z9' WHEN r < 0.98 THEN 'ZM'
                    WHEN r < 0.995 THEN 'U30' ELSE 'RB' END AS response_code,
                NULL::VARCHAR AS note, i AS first_seq, 2::BIGINT AS events,
                1::BIGINT AS last_batch_id
            FROM (SELECT i, random() < 0.45 AS p2m, random() AS r FROM range({n}) t(i))"""
        )
        con.execute(
            f"""CREATE OR REPLACE TABLE ledger.account_events AS
            SELECT printf('E%011d', e) AS event_id, e AS ledger_seq,
                TIMESTAMPTZ '{START} 00:00:00+00' - INTERVAL 10 DAY
                    + to_microseconds(CAST(u * {40 * 86_400e6 / users} AS BIGINT))
                    + to_microseconds(CAST(k * 600e6 AS BIGINT)) AS event_time,
                printf('user%d@waaxis', u) AS vpa,
                (['REGISTERED', 'BANK_LINKED', 'DEVICE_BOUND'])[k + 1] AS event_type,
                'dev' || u AS device_id, 'IN-KA' AS state,
                'bench' AS _source, e AS _position, 1::BIGINT AS _batch_id,
                now() AS _ingested_at
            FROM (SELECT u, k, u * 3 + k AS e FROM range({users}) a(u), range(3) b(k))"""
        )
        con.execute(
            f"""CREATE OR REPLACE TABLE {SCORES_TABLE} AS
            SELECT transfer_id, created_at, 'v1' AS model_version, 'p1' AS policy_version,
                false AS shadow, s AS risk_score,
                CASE WHEN s > 0.997 THEN 'BLOCK' WHEN s > 0.99 THEN 'HOLD' ELSE 'ALLOW' END
                    AS decision,
                []::VARCHAR[] AS reason_codes, created_at + INTERVAL 1 SECOND AS scored_at
            FROM (SELECT transfer_id, created_at, random() AS s FROM ledger.transfers)"""
        )
        # The decision of record, as the scoring pass writes it beside the scores.
        con.execute(
            f"""CREATE OR REPLACE TABLE {DECISIONS_TABLE} AS
            SELECT s.transfer_id, s.created_at, t.payer_vpa, t.payee_type, t.amount_paise,
                s.decision, s.model_version, s.scored_at AS decided_at
            FROM {SCORES_TABLE} s JOIN ledger.transfers t USING (transfer_id)
            ORDER BY s.created_at"""
        )
        return {"transfers": n, "users": users, "days": days}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=None, help="Default: 3 per daily transfer.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-bench"
    )
    args = parser.parse_args()
    users = args.users or args.per_day * 3
    db = args.workdir / f"adoption-v3-{args.per_day}x{args.days}-u{users}.duckdb"
    marker = db.with_suffix(".json")
    if not marker.exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(
            f"generating {args.per_day * args.days:,} transfers into {db} (once)...",
            file=sys.stderr,
        )
        started = time.perf_counter()
        info = generate(db, args.per_day, args.days, users)
        info["generate_seconds"] = round(time.perf_counter() - started, 1)
        marker.write_text(json.dumps(info))
    info = json.loads(marker.read_text())

    runs = []
    for i in range(args.repeat):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(db)], capture_output=True, text=True, check=True
        )
        run = json.loads(out.stdout)
        runs.append(run)
        slowest = sorted(run["marts"].items(), key=lambda kv: -kv[1]["seconds"])[:3]
        print(
            f"run {i + 1}: {run['seconds']:.1f} s, peak {run['peak_rss_mb']:.0f} MB; slowest: "
            + ", ".join(f"{name} {m['seconds']:.1f} s" for name, m in slowest),
            file=sys.stderr,
        )
    seconds = statistics.median(r["seconds"] for r in runs)
    result = {
        "transfers": info["transfers"],
        "days": info["days"],
        "runs": len(runs),
        "median_seconds": round(seconds, 1),
        "transfers_per_second": round(info["transfers"] / seconds),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
        "target_seconds": 60,
        "per_mart_median_seconds": {
            name: round(statistics.median(r["marts"][name]["seconds"] for r in runs), 2)
            for name in runs[0]["marts"]
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
