"""Ingestion throughput and peak memory: landing Parquet of ~10M simulated transfers into a fresh warehouse.

    .venv/bin/python benchmarks/bench_ingest.py                  # 10M transfers, 3 runs
    .venv/bin/python benchmarks/bench_ingest.py --users 20000 --repeat 2   # a quick look

The landing data is simulated once into --workdir and reused. Each run ingests every file into
an empty warehouse in a child process, so its peak RSS is the run's own. Targets (issue 2):
1M rows/s or more, 4 GB peak or less.
"""

import argparse
import json
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
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-bench"
    )
    args = parser.parse_args()

    landing, sim = ensure_landing(args.workdir, args.users, args.days, args.seed)
    parquet_bytes = sum(p.stat().st_size for p in landing.rglob("*.parquet"))
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="upi-risk-ingest-") as tmp:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(landing), str(Path(tmp) / "warehouse.duckdb")],
                check=True,
                capture_output=True,
                text=True,
            )
        run = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"run {i + 1}: {run['seconds']:.2f} s, {run['rows_in'] / run['seconds']:,.0f} rows/s, "
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
    print(f"{'transfers':>14} {'ledger rows':>12} {'median s':>9} {'rows/s':>12} {'peak MB':>8}")
    print(
        f"{result['transfers']:>14,} {rows:>12,} {seconds:>9.2f} "
        f"{result['rows_per_second']:>12,} {result['peak_rss_mb_max']:>8,}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
