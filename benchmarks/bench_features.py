"""Point-in-time features on ~10M transfers: the engine against plain DuckDB SQL window frames.

    .venv/bin/python benchmarks/bench_features.py                      # 10M transfers
    .venv/bin/python benchmarks/bench_features.py --users 20000        # a quick look
    .venv/bin/python benchmarks/bench_features.py --transfers-scale 0.2 --baseline-runs 1

Builds once, in --workdir, a warehouse from simulated landing data (1.3M users x 30 days gives
~10M transfers; the landing data is shared with bench_ingest.py). Then, each in its own child
process so that its peak RSS is its own:
  (a) engine: `load_inputs` + `compute_features` on every transfer, --runs times;
  (b) baseline: the same features as one DuckDB query with RANGE window frames and ASOF joins
      (`pipelines.features.reference_sql`), --baseline-runs times (slow).
Both write the features of a fixed random sample of transfers; the benchmark checks that they
agree on every feature. Reports medians, the ratio and peak memory as a table and a JSON line.
Target (issue): the engine in 15 s or less for 10M transfers, 10x or more faster than (b).
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import ensure_landing  # the landing data both benchmarks share

_ENGINE = """
import json, resource, sys, time
from datetime import datetime
from pathlib import Path
import polars as pl
from pipelines.features.engine import compute_features, load_inputs
from pipelines.warehouse import connect
db, cutoff, sample, out_path = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
con = connect(db, read_only=True)
started = time.perf_counter()
until = datetime.fromisoformat(cutoff) if cutoff else None
transfers, events, labels = load_inputs(con, until=until)
con.close()
loaded = time.perf_counter()
cpu = resource.getrusage(resource.RUSAGE_SELF)
features = compute_features(transfers, events, labels)
done = time.perf_counter()
cpu2 = resource.getrusage(resource.RUSAGE_SELF)
features.join(pl.read_parquet(sample), on="transfer_id", how="semi").write_parquet(out_path)
print(json.dumps({"load_seconds": loaded - started, "seconds": done - loaded,
                  "cpu_user": cpu2.ru_utime - cpu.ru_utime, "cpu_sys": cpu2.ru_stime - cpu.ru_stime,
                  "rows": features.height,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_BASELINE = """
import json, resource, sys, time
from pathlib import Path
import polars as pl
from pipelines.features.reference_sql import compute_features_sql
from pipelines.warehouse import connect
db, cutoff, sample, out_path = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
con = connect(db, read_only=True)
transfers = "ledger.transfers"
if cutoff:
    transfers = f"(SELECT * FROM ledger.transfers WHERE created_at < '{cutoff}'::TIMESTAMPTZ)"
started = time.perf_counter()
cpu = resource.getrusage(resource.RUSAGE_SELF)
features = compute_features_sql(con, transfers)
done = time.perf_counter()
cpu2 = resource.getrusage(resource.RUSAGE_SELF)
features.join(pl.read_parquet(sample), on="transfer_id", how="semi").write_parquet(out_path)
print(json.dumps({"seconds": done - started, "rows": features.height,
                  "cpu_user": cpu2.ru_utime - cpu.ru_utime, "cpu_sys": cpu2.ru_stime - cpu.ru_stime,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_warehouse(workdir: Path, users: int, days: int, seed: int) -> tuple[Path, dict]:
    """A warehouse with ledger.transfers built from that landing data, made once."""
    from pipelines.ledger.current import refresh_transfers
    from pipelines.ledger.ingest import ingest_landing
    from pipelines.warehouse import scalar, warehouse

    target = workdir / f"features-users{users}-days{days}-seed{seed}"
    db, marker = target / "warehouse.duckdb", target / "warehouse.json"
    if marker.exists() and db.exists():
        return db, json.loads(marker.read_text())
    landing, _ = ensure_landing(workdir, users, days, seed)
    target.mkdir(parents=True, exist_ok=True)
    building = target / "warehouse.building.duckdb"
    building.unlink(missing_ok=True)
    print(f"ingesting {landing} into {db} (once)...", file=sys.stderr)
    started = time.perf_counter()
    with warehouse(building) as con:
        ingest_landing(con, landing)
        refresh_transfers(con)
        info = {
            name: scalar(con, f"SELECT count(*) FROM ledger.{name}")
            for name in ("transfers", "account_events", "labels")
        }
    info["build_seconds"] = time.perf_counter() - started
    building.rename(db)
    marker.write_text(json.dumps(info))
    return db, info


def cutoff_for(db: Path, scale: float) -> str:
    """The created_at before which `scale` of the transfers lie ("" for all of them).

    A cut in time rather than a sample of rows keeps every window complete.
    """
    if scale >= 1:
        return ""
    from pipelines.warehouse import connect

    con = connect(db, read_only=True)
    try:
        ((bound,),) = con.sql(
            "SELECT quantile_disc(created_at, ?) FROM ledger.transfers", params=[scale]
        ).fetchall()
    finally:
        con.close()
    return bound.isoformat()


def write_sample(db: Path, path: Path, size: int) -> None:
    from pipelines.warehouse import connect

    con = connect(db, read_only=True)
    try:
        con.sql(
            f"SELECT transfer_id FROM ledger.transfers USING SAMPLE reservoir({size} ROWS) "
            "REPEATABLE (7)"
        ).pl().write_parquet(path)
    finally:
        con.close()


def run_child(code: str, db: Path, cutoff: str, sample: Path, out: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(db), cutoff, str(sample), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def compare(engine: Path, baseline: Path, rel: float = 1e-6) -> dict:
    """Feature by feature: how many sampled transfers differ beyond `rel` (nulls must match)."""
    import polars as pl

    from pipelines.features.definitions import FEATURE_NAMES

    a = pl.read_parquet(engine).sort("transfer_id")
    b = pl.read_parquet(baseline).sort("transfer_id")
    if not a["transfer_id"].equals(b["transfer_id"]):
        raise AssertionError("the engine and the baseline returned different sampled transfers")
    differ = {}
    for name in FEATURE_NAMES:
        bad = 0
        for x, y in zip(a[name].to_list(), b[name].to_list(), strict=True):
            if (x is None) != (y is None) or (
                x is not None and not math.isclose(x, y, rel_tol=rel, abs_tol=1e-9)
            ):
                bad += 1
        if bad:
            differ[name] = bad
    return {"sampled": a.height, "features": len(FEATURE_NAMES), "differing": differ}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_300_000, help="1.3M x 30 days ~ 10M")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--transfers-scale",
        type=float,
        default=1.0,
        help="use the transfers of the first fraction of the period (0-1]",
    )
    parser.add_argument("--runs", type=int, default=3, help="engine runs")
    parser.add_argument("--baseline-runs", type=int, default=1, help="SQL runs (0 to skip)")
    parser.add_argument("--sample", type=int, default=20_000, help="transfers compared")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-bench"
    )
    args = parser.parse_args()

    db, info = ensure_warehouse(args.workdir, args.users, args.days, args.seed)
    cutoff = cutoff_for(db, args.transfers_scale)
    with tempfile.TemporaryDirectory(prefix="upi-risk-features-") as tmp:
        tmp = Path(tmp)
        sample = tmp / "sample.parquet"
        write_sample(db, sample, args.sample)
        engine_runs, baseline_runs = [], []
        for i in range(args.runs):
            run = run_child(_ENGINE, db, cutoff, sample, tmp / "engine.parquet")
            engine_runs.append(run)
            print(
                f"engine run {i + 1}: {run['seconds']:.2f} s compute "
                f"(cpu {run['cpu_user']:.1f} user + {run['cpu_sys']:.1f} sys), "
                f"{run['load_seconds']:.2f} s load, peak {run['peak_rss_mb']:,.0f} MB",
                file=sys.stderr,
            )
        for i in range(args.baseline_runs):
            run = run_child(_BASELINE, db, cutoff, sample, tmp / "baseline.parquet")
            baseline_runs.append(run)
            print(
                f"SQL baseline run {i + 1}: {run['seconds']:.2f} s "
                f"(cpu {run['cpu_user']:.1f} user + {run['cpu_sys']:.1f} sys), "
                f"peak {run['peak_rss_mb']:,.0f} MB",
                file=sys.stderr,
            )
        agreement = (
            compare(tmp / "engine.parquet", tmp / "baseline.parquet") if baseline_runs else None
        )

    engine_s = statistics.median(r["seconds"] for r in engine_runs)
    load_s = statistics.median(r["load_seconds"] for r in engine_runs)
    sql_s = statistics.median(r["seconds"] for r in baseline_runs) if baseline_runs else None
    result = {
        "benchmark": "features_point_in_time",
        "transfers": engine_runs[0]["rows"],
        "warehouse": info,
        "engine_runs": len(engine_runs),
        "engine_median_seconds": round(engine_s, 2),
        "engine_seconds": [round(r["seconds"], 2) for r in engine_runs],
        "engine_cpu_seconds": [round(r["cpu_user"] + r["cpu_sys"], 1) for r in engine_runs],
        "engine_load_median_seconds": round(load_s, 2),
        "engine_peak_rss_mb": round(max(r["peak_rss_mb"] for r in engine_runs)),
        "baseline_runs": len(baseline_runs),
        "baseline_median_seconds": None if sql_s is None else round(sql_s, 2),
        "baseline_peak_rss_mb": (
            round(max(r["peak_rss_mb"] for r in baseline_runs)) if baseline_runs else None
        ),
        "ratio": None if sql_s is None else round(sql_s / engine_s, 1),
        "ratio_with_load": None if sql_s is None else round(sql_s / (engine_s + load_s), 1),
        "agreement": agreement,
        "target": "engine 15 s or less on 10M transfers; 10x or more faster than the SQL",
    }
    print(f"{'':24} {'median s':>9} {'peak MB':>9}")
    print(f"{'engine compute':24} {engine_s:>9.2f} {result['engine_peak_rss_mb']:>9,}")
    print(f"{'engine load (DuckDB)':24} {load_s:>9.2f}")
    if sql_s is not None:
        print(f"{'SQL window frames':24} {sql_s:>9.2f} {result['baseline_peak_rss_mb']:>9,}")
        print(f"ratio {result['ratio']}x (with load {result['ratio_with_load']}x)")
        print(
            f"agreement on {agreement['sampled']:,} sampled transfers: "
            f"{'all features equal' if not agreement['differing'] else agreement['differing']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
