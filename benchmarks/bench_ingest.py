"""Ingestion throughput and peak memory: landing Parquet of ~10M simulated transfers into a fresh warehouse.

    .venv/bin/python benchmarks/bench_ingest.py                  # 10M transfers, 3 runs
    .venv/bin/python benchmarks/bench_ingest.py --users 20000 --repeat 2   # a quick look

The landing data is simulated once into --workdir and reused. Each run ingests every file into
an empty warehouse in a child process, so its peak RSS is the run's own. Targets (issue 2):
1M rows/s or more, 4 GB peak or less.

Beside it, as the ceiling of this machine, DuckDB's own bulk append of the same files: one
`INSERT ... SELECT * FROM read_parquet(...)` per stream into an empty file, with no contract
checks, no dedup and no lineage (`--floor-runs 0` skips it).

`--baseline-code DIR` runs the ingestion of another checkout of the project (say, the commit
before a change: `git worktree add /tmp/before HEAD~1`) in the same interleaved loop, so a
change's cost is measured side by side against the same bare append.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from pipelines.ledger.ingest import ingest_landing
from pipelines.warehouse import warehouse
landing, db = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
with warehouse(db) as con:
    report = ingest_landing(con, landing)
seconds = time.perf_counter() - started
total = report.total()
print(json.dumps({"seconds": seconds, "rows_in": total.rows_in, "loaded": total.loaded,
                  "transfers_rows": report.streams["transfers"].rows_in,
                  "balanced": total.balanced,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_FLOOR = """
import json, resource, sys, time
import duckdb
landing, db = sys.argv[1], sys.argv[2]
started = time.perf_counter()
con = duckdb.connect(db)
con.execute("SET preserve_insertion_order = false")
rows = 0
for stream in ("transfers", "accounts", "labels"):
    files = f"read_parquet('{landing}/{stream}/**/*.parquet', hive_partitioning = false)"
    con.execute(f"CREATE TABLE {stream} AS SELECT * FROM {files} LIMIT 0")
    rows += con.execute(f"INSERT INTO {stream} SELECT * FROM {files}").fetchall()[0][0]
con.execute("CHECKPOINT")
con.close()
print(json.dumps({"seconds": time.perf_counter() - started, "rows_in": rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, landing: Path, code_dir: Path | None = None) -> dict:
    """Run `code` on the landing data and a fresh warehouse file in a child process, importing
    the project from `code_dir` when given."""
    env = dict(os.environ)
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir)
    with tempfile.TemporaryDirectory(prefix="upi-risk-ingest-") as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, str(landing), str(Path(tmp) / "warehouse.duckdb")],
            check=True,
            capture_output=True,
            text=True,
            cwd=code_dir,
            env=env,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_landing(workdir: Path, users: int, days: int, seed: int) -> tuple[Path, dict]:
    """Simulate the landing data once per (users, days, seed) and reuse it."""
    from pipelines.sandbox.simulator import SimulationConfig, simulate

    target = workdir / f"users{users}-days{days}-seed{seed}"
    marker = target / "summary.json"
    if marker.exists():
        return target / "landing", json.loads(marker.read_text())
    shutil.rmtree(target, ignore_errors=True)
    print(f"simulating {users:,} users x {days} days into {target} (once)...", file=sys.stderr)
    started = time.perf_counter()
    summary = simulate(
        SimulationConfig(users=users, days=days, seed=seed), target / "landing", target / "truth"
    )
    info = {k: v for k, v in vars(summary).items() if isinstance(v, int | float)}
    info["simulate_seconds"] = time.perf_counter() - started
    marker.write_text(json.dumps(info))
    return target / "landing", info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--users",
        type=int,
        default=1_300_000,
        help="simulated users (1.3M x 30 days ~ 10M transfers)",
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--floor-runs", type=int, default=3, help="DuckDB bulk-append runs")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-bench"
    )
    parser.add_argument(
        "--baseline-code",
        type=Path,
        help="another checkout of the project whose ingestion runs beside this one",
    )
    args = parser.parse_args()

    landing, sim = ensure_landing(args.workdir, args.users, args.days, args.seed)
    parquet_bytes = sum(p.stat().st_size for p in landing.rglob("*.parquet"))
    runs, floor, baseline = [], [], []
    sides = [("ingest", _CHILD, runs, args.repeat, None)]
    if args.baseline_code:
        sides.append(("baseline ingest", _CHILD, baseline, args.repeat, args.baseline_code))
    sides.append(("duckdb bulk append", _FLOOR, floor, args.floor_runs, None))
    # Interleaved, so that a noisy spell on the shared machine hits every side alike, and in
    # turns of order, so that no side always runs right after another's file is deleted.
    for i in range(max(args.repeat, args.floor_runs)):
        for name, code, done, wanted, code_dir in sides[i % len(sides) :] + sides[: i % len(sides)]:
            if i < wanted:
                done.append(run := _child(code, landing, code_dir))
                print(
                    f"{name} run {i + 1}: {run['seconds']:.2f} s, "
                    f"{run['rows_in'] / run['seconds']:,.0f} rows/s, "
                    f"peak {run['peak_rss_mb']:,.0f} MB",
                    file=sys.stderr,
                )
    seconds = statistics.median(r["seconds"] for r in runs)
    rows = runs[0]["rows_in"]
    result = {
        "benchmark": "ingest_landing_parquet",
        "transfers": sim.get("transfers"),
        "rows_in": rows,
        "transfer_rows": runs[0]["transfers_rows"],
        "parquet_mb": round(parquet_bytes / 1e6, 1),
        "runs": len(runs),
        "median_seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "transfers_per_second": round(sim.get("transfers", 0) / seconds),
        "peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in runs)),
        "balanced": all(r["balanced"] for r in runs),
        "target": "1,000,000 rows/s or more, 4,096 MB peak or less",
    }
    if floor:
        floor_seconds = statistics.median(r["seconds"] for r in floor)
        if floor[0]["rows_in"] != rows:
            raise SystemExit(f"bulk append read {floor[0]['rows_in']:,} rows, ingest {rows:,}")
        result["duckdb_bulk_append_median_seconds"] = round(floor_seconds, 2)
        result["duckdb_bulk_append_rows_per_second"] = round(rows / floor_seconds)
        result["ingest_over_bulk_append"] = round(seconds / floor_seconds, 2)
        result["bulk_append_rate_share"] = round(floor_seconds / seconds, 2)
    if baseline:
        baseline_seconds = statistics.median(r["seconds"] for r in baseline)
        result["baseline_median_seconds"] = round(baseline_seconds, 2)
        if floor:
            result["baseline_bulk_append_rate_share"] = round(floor_seconds / baseline_seconds, 2)
    print(f"{'':26} {'median s':>9} {'rows/s':>12} {'peak MB':>8}")
    print(
        f"{'ingest_landing':26} {seconds:>9.2f} {result['rows_per_second']:>12,} "
        f"{result['peak_rss_mb_max']:>8,}"
    )
    if floor:
        print(
            f"{'DuckDB bulk append, bare':26} {floor_seconds:>9.2f} "
            f"{result['duckdb_bulk_append_rows_per_second']:>12,} "
            f"{round(max(r['peak_rss_mb'] for r in floor)):>8,}"
        )
        print(
            f"ingest takes {result['ingest_over_bulk_append']}x the bare append "
            f"(runs at {result['bulk_append_rate_share']} of its rate)"
        )
    if baseline:
        print(f"{'baseline ingest_landing':26} {baseline_seconds:>9.2f}")
        if floor:
            print(
                f"baseline runs at {result['baseline_bulk_append_rate_share']} "
                "of the bare append's rate"
            )
    print(f"{result['transfers']:,} transfers = {rows:,} ledger rows")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
