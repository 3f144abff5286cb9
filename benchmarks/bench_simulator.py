"""Benchmark the UPI traffic simulator: seconds, transfers per second and peak memory.

    .venv/bin/python benchmarks/bench_simulator.py                 # ~0.8M transfers, 3 runs
    .venv/bin/python benchmarks/bench_simulator.py --users 1000000 --days 30 --repeat 1

Each run writes into a fresh temporary directory, removed afterwards. Prints a table and one
JSON line (for CI logs and trend tracking).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from pipelines.sandbox.simulator import SimulationConfig, SimulationSummary, simulate


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _run_once(config: SimulationConfig) -> SimulationSummary:
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        return simulate(config, Path(tmp) / "landing", Path(tmp) / "truth")


def main(argv: list[str] | None = None) -> int:
    """Run the simulator `--repeat` times and report the median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="population (default 100k)")
    parser.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    config = SimulationConfig(users=args.users, days=args.days, seed=args.seed)
    runs = [_run_once(config) for _ in range(max(args.repeat, 1))]
    seconds = [r.seconds for r in runs]
    median = statistics.median(seconds)
    last = runs[-1]
    result = {
        "benchmark": "simulator",
        "users": args.users,
        "days": args.days,
        "repeat": len(runs),
        "transfers": last.transfers,
        "transfer_events": last.transfer_events,
        "account_events": last.account_events,
        "labels": last.labels,
        "files": last.files,
        "seconds_median": round(median, 3),
        "seconds_min": round(min(seconds), 3),
        "seconds_max": round(max(seconds), 3),
        "transfers_per_second": round(last.transfers / median) if median else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    rows = [
        ("users x days", f"{args.users:,} x {args.days}"),
        ("transfers", f"{last.transfers:,}"),
        ("transfer events (rows)", f"{last.transfer_events:,}"),
        ("account events", f"{last.account_events:,}"),
        ("labels landed", f"{last.labels:,}"),
        ("files", f"{last.files:,}"),
        ("runs", ", ".join(f"{s:.2f}s" for s in seconds)),
        ("median seconds", f"{median:.2f}"),
        ("transfers / s", f"{result['transfers_per_second']:,}"),
        ("peak RSS (MB)", f"{result['peak_rss_mb']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
