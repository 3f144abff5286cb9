"""Time of the transfers contract suite (Great Expectations) on realistic valid rows.

.venv/bin/python benchmarks/bench_quality.py --rows 1000000 --repeat 3
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from pipelines.quality import suites

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' data factory
from tests.test_quality import make_transfers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = make_transfers(args.rows)
    suites.contract_suite_result("transfers", frame.head(1_000))  # GX import and context set-up
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = suites.contract_suite_result("transfers", frame)
        times.append(time.perf_counter() - started)
        assert result.success, result.metadata()
    median = statistics.median(times)
    print(f"transfers contract suite, {args.rows:,} rows: median {median:.2f} s of {times}")
    print(
        json.dumps(
            {
                "benchmark": "quality_transfers_suite",
                "rows": args.rows,
                "median_seconds": round(median, 2),
                "rows_per_second": round(args.rows / median),
            }
        )
    )


if __name__ == "__main__":
    main()
