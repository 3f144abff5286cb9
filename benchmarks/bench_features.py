"""Point-in-time features on ~10M transfers: the engine against idiomatic Polars and DuckDB SQL.

    .venv/bin/python benchmarks/bench_features.py                      # 10M transfers
    .venv/bin/python benchmarks/bench_features.py --users 20000        # a quick look
    .venv/bin/python benchmarks/bench_features.py --users 650000 --transfers-scale 0.4  # ~2M
    .venv/bin/python benchmarks/bench_features.py --engine-code /tmp/before   # before/after

Builds once, in --workdir, a warehouse from simulated landing data (1.3M users x 30 days gives
~10M transfers; the landing data is shared with bench_ingest.py). Then, each run in its own
child process so that its peak RSS is its own, the sides in turns so that a noisy spell on the
shared machine hits each alike:
  engine: `load_inputs` + `compute_features` on every transfer, --runs times;
  Polars: the same `load_inputs`, then the features as Polars rolling windows and as-of joins
      (`pipelines.features.reference_polars`), --polars-runs times;
  SQL: the features as one DuckDB query with RANGE window frames and ASOF joins
      (`pipelines.features.reference_sql`), --sql-runs times (slow);
  other engine: with --engine-code DIR, the engine of another checkout, --runs times.
Children start with the environment a feature job should have (`JOB_ENVIRONMENT`, see
pipelines/features/engine/memory.py), or with this one's as it is with --bare-env.
Each writes the features of a fixed random sample of transfers; the benchmark checks that
every side agrees with the engine on every feature. Reports medians of the compute seconds
(inputs loaded), their ratios to the engine's, CPU seconds and peak memory, as a table and a
JSON line. Target (issue): the engine in 15 s or less for 10M transfers, 10x or more faster
than the SQL.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import ensure_landing  # the landing data both benchmarks share

# argv: warehouse, cutoff ("" for all), sample parquet, output parquet, "engine" or "polars".
_IN_MEMORY = """
import json, resource, sys, time
from datetime import datetime
from pathlib import Path
import polars as pl
from pipelines.features.engine import compute_features, load_inputs
from pipelines.warehouse import connect
db, cutoff, sample, out_path = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
if sys.argv[5] == "polars":
    from pipelines.features.reference_polars import compute_features_polars as compute_features
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

_SQL = """
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


def run_child(
    code: str,
    db: Path,
    cutoff: str,
    sample: Path,
    out: Path,
    args: list[str],
    env: dict,
    code_dir: Path | None,
) -> dict:
    """Run `code` in a child process with `env`, in `code_dir` when it imports another
    checkout (python -c puts its working directory first on the path)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(db), cutoff, str(sample), str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=code_dir,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def compare(engine: Path, other: Path, rel: float = 1e-6) -> dict:
    """Feature by feature: how many sampled transfers differ beyond `rel` (nulls must match)."""
    import polars as pl

    from pipelines.features.definitions import FEATURE_NAMES

    a = pl.read_parquet(engine).sort("transfer_id")
    b = pl.read_parquet(other).sort("transfer_id")
    if not a["transfer_id"].equals(b["transfer_id"]):
        raise AssertionError(f"the engine and {other.stem} returned different sampled transfers")
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


def job_environment() -> dict[str, str]:
    from pipelines.features.engine import JOB_ENVIRONMENT

    return JOB_ENVIRONMENT


def _environment(code_dir: Path | None, bare: bool) -> dict:
    """A child's environment: this one's plus the feature job's settings (os.environ is only
    read), and the other checkout first on the path for --engine-code."""
    env = dict(os.environ) | ({} if bare else job_environment())
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir)
    return env


def _summary(runs: list[dict]) -> dict:
    return {
        "runs": len(runs),
        "median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
        "seconds": [round(r["seconds"], 2) for r in runs],
        "median_cpu_seconds": round(
            statistics.median(r["cpu_user"] + r["cpu_sys"] for r in runs), 1
        ),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
    }


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
    parser.add_argument("--polars-runs", type=int, default=3, help="Polars runs (0 to skip)")
    parser.add_argument(
        "--sql-runs", "--baseline-runs", type=int, default=3, help="SQL runs (0 to skip)"
    )
    parser.add_argument("--sample", type=int, default=20_000, help="transfers compared")
    parser.add_argument(
        "--engine-code",
        type=Path,
        help="another checkout of the project whose engine runs beside this one",
    )
    parser.add_argument("--bare-env", action="store_true", help="children without JOB_ENVIRONMENT")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-bench"
    )
    args = parser.parse_args()

    db, info = ensure_warehouse(args.workdir, args.users, args.days, args.seed)
    cutoff = cutoff_for(db, args.transfers_scale)
    # name, child code, its arguments, runs wanted, checkout (None: this one)
    sides = [
        ("engine", _IN_MEMORY, ["engine"], args.runs, None),
        ("Polars", _IN_MEMORY, ["polars"], args.polars_runs, None),
        ("SQL", _SQL, [], args.sql_runs, None),
    ]
    if args.engine_code:
        other = args.engine_code.resolve()
        sides.append(("other engine", _IN_MEMORY, ["engine"], args.runs, other))
    runs: dict[str, list[dict]] = {name: [] for name, *_ in sides}
    with tempfile.TemporaryDirectory(prefix="upi-risk-features-") as tmp:
        tmp = Path(tmp)
        sample = tmp / "sample.parquet"
        write_sample(db, sample, args.sample)
        outputs = {name: tmp / f"{name.replace(' ', '_')}.parquet" for name in runs}
        for i in range(max(wanted for *_, wanted, _ in sides)):
            turn = sides[i % len(sides) :] + sides[: i % len(sides)]
            for name, code, child_args, wanted, code_dir in turn:
                if i >= wanted:
                    continue
                env = _environment(code_dir, args.bare_env)
                out = outputs[name]
                run = run_child(code, db, cutoff, sample, out, child_args, env, code_dir)
                runs[name].append(run)
                load = f", {run['load_seconds']:.2f} s load" if "load_seconds" in run else ""
                print(
                    f"{name} run {i + 1}: {run['seconds']:.2f} s compute "
                    f"(cpu {run['cpu_user']:.1f} user + {run['cpu_sys']:.1f} sys){load}, "
                    f"peak {run['peak_rss_mb']:,.0f} MB",
                    file=sys.stderr,
                )
        agreement = {
            name: compare(outputs["engine"], outputs[name])
            for name, done in runs.items()
            if done and name != "engine"
        }

    engine = runs["engine"]
    engine_s = statistics.median(r["seconds"] for r in engine)
    load_s = statistics.median(r["load_seconds"] for r in engine)
    sides_out = {name: _summary(done) for name, done in runs.items() if done}
    engine_cpu = sides_out["engine"]["median_cpu_seconds"]
    for summary in sides_out.values():
        summary["ratio_to_engine"] = round(summary["median_seconds"] / engine_s, 1)
        summary["cpu_ratio_to_engine"] = round(summary["median_cpu_seconds"] / engine_cpu, 1)
    if runs["SQL"]:  # the SQL reads the warehouse itself: against the engine with its load
        sides_out["SQL"]["ratio_to_engine_with_load"] = round(
            sides_out["SQL"]["median_seconds"] / (engine_s + load_s), 1
        )
    result = {
        "benchmark": "features_point_in_time",
        "transfers": engine[0]["rows"],
        "warehouse": info,
        "child_environment": {} if args.bare_env else job_environment(),
        "engine_load_median_seconds": round(load_s, 2),
        "sides": sides_out,
        "agreement": agreement,
        "target": "engine 15 s or less on 10M transfers; 10x or more faster than the SQL",
    }
    print(f"{'':22} {'median s':>9} {'x engine':>9} {'cpu s':>7} {'x engine':>9} {'peak MB':>8}")
    for name, s in sides_out.items():
        print(
            f"{name:22} {s['median_seconds']:>9.2f} {s['ratio_to_engine']:>9.1f} "
            f"{s['median_cpu_seconds']:>7.1f} {s['cpu_ratio_to_engine']:>9.1f} "
            f"{s['peak_rss_mb']:>8,}"
        )
    print(f"{'engine load (DuckDB)':22} {load_s:>9.2f}")
    if runs["SQL"]:
        print(f"SQL vs engine with its load: {sides_out['SQL']['ratio_to_engine_with_load']}x")
    for name, check in agreement.items():
        verdict = "all features equal" if not check["differing"] else check["differing"]
        print(f"{name} on {check['sampled']:,} sampled transfers: {verdict}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
