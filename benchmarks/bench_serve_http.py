"""The decision service over HTTP on loopback, under `wrk` posting varied transfers.

    .venv/bin/python benchmarks/bench_serve_http.py                      # both backends
    .venv/bin/python benchmarks/bench_serve_http.py --seconds 60 --runs 3 --backends embedded

Needs an instance with a live model and a warehouse (`make demo` writes one in data/, the
default `--data-dir`); its files are copied into a temporary directory, so the benchmark never
writes to the instance. `wrk` and `redis-server` come from Debian (`tests/system_packages.sh`
installs redis-server; `apt-get install wrk`).

For each state backend (embedded: snapshot + log in the data dir; redis: a throwaway
`redis-server` of the benchmark's own), `upi-risk serve` is started as a subprocess, bootstraps
its state from the warehouse, and is measured:

1. steady: about `--rate` requests a second for `--seconds` (wrk is a closed loop: each of its
   connections waits `connections / rate` between requests, so the rate it reaches is reported
   beside the target); p50, p99, p99.9 and errors (socket errors and any non-200);
2. the highest rate held with p99 under 50 ms: closed loops of 1, 2, 4, ... connections with
   no wait, for `--step-seconds` each, until p99 passes 50 ms or the rate stops growing.

Each request is a new transfer (a new transfer_id) of a payer, payee and device drawn from the
ledger's last day, with a random amount and channel, created now: a decision on real state,
never an idempotent repeat. Medians over `--runs` runs. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.redis_server import free_port, redis_server

_POOL = 4_000  # (payer, payee, device) triples the requests draw from
_P99_LIMIT_MS = 50.0
_WRK_SCRIPT = r"""
local pool = {POOL}
local counter = 0
local thread_id = 0
local wait_ms = {WAIT_MS}
local channels = {"CHAT", "QR", "INTENT"}
local statuses = {}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

function delay()
  return wait_ms
end

function request()
  counter = counter + 1
  local p = pool[math.random(#pool)]
  local id = string.format("BENCH%s%02d%010d", "{RUN}", tid, counter)
  local amount = math.random(100, 500000) * 100
  local channel = p[4] == "MERCHANT" and "QR" or channels[math.random(#channels)]
  local body = string.format(
    '{"transfer_id":"%s","created_at":"%s","payer_vpa":"%s","payee_vpa":"%s",' ..
    '"payee_type":"%s","mcc":"%s","amount_paise":%d,"currency":"INR","channel":"%s",' ..
    '"payer_device_id":"%s"}',
    id, os.date("!%Y-%m-%dT%H:%M:%S") .. ".000000Z", p[1], p[2], p[4], p[5], amount,
    channel, p[3])
  return wrk.format("POST", "/v1/decisions", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 then
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"seconds":%f,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _pool(warehouse: Path) -> list[tuple[str, str, str, str, str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.sql(
            f"""SELECT payer_vpa, payee_vpa, payer_device_id, payee_type, mcc
                FROM ledger.transfers
                WHERE created_at >= (SELECT max(created_at) FROM ledger.transfers) - INTERVAL 1 DAY
                USING SAMPLE {_POOL} ROWS (reservoir, 7)"""
        ).fetchall()
    finally:
        con.close()


def _lua(pool: list[tuple[str, ...]], wait_ms: float, run: str) -> str:
    rows = ",\n".join("{" + ",".join(json.dumps(v) for v in row) + "}" for row in pool)
    return (
        _WRK_SCRIPT.replace("{POOL}", "{\n" + rows + "\n}")
        .replace("{WAIT_MS}", f"{wait_ms:.3f}")
        .replace("{RUN}", run)
    )


def _copy_instance(source: Path, into: Path) -> Path:
    """The instance's warehouse, models and settings: what `serve` reads (not the landing
    files, not the Dagster home, not its own earlier decisions or state)."""
    target = into / "instance"
    target.mkdir()
    for name in ("warehouse.duckdb", "models", "settings.toml", "allowlist.txt", "token.key"):
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name)
        elif path.exists():
            shutil.copy2(path, target / name)
    return target


@contextlib.contextmanager
def _service(data_dir: Path, backend: str, redis_url: str | None) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ)
    if redis_url:
        env["UPI_RISK_REDIS_URL"] = redis_url
    log = (data_dir / f"serve-{backend}.log").open("w")
    command = [
        str(Path(sys.executable).with_name("upi-risk")),
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--state-backend",
        backend,
    ]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"serve exited with {server.returncode}: see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            if time.perf_counter() - started > 900:
                raise TimeoutError(f"serve not ready after 900 s: see {log.name}")
            time.sleep(0.5)
        print(f"  {backend}: ready in {time.perf_counter() - started:.1f} s", flush=True)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "2s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("WRK "))
    out = json.loads(line[4:])
    out["rate"] = out["requests"] / out["seconds"]
    out["errors"] = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
    return out


def _steady(url: str, pool, work: Path, rate: float, seconds: float, run: str) -> dict:
    connections = max(2, round(rate / 100))  # each waits ~10 ms between requests
    wait_ms = max(connections * 1000.0 / rate - 1.0, 0.0)  # less ~1 ms of service time
    script = work / f"steady-{run}.lua"
    script.write_text(_lua(pool, wait_ms, run))
    return _wrk(url, script, connections, seconds)


def _highest(url: str, pool, work: Path, seconds: float, run: str) -> dict:
    best: dict[str, Any] | None = None
    steps = []
    for i, connections in enumerate((1, 2, 4, 8, 16, 32, 64)):
        script = work / f"max-{run}-{connections}.lua"
        script.write_text(_lua(pool, 0.0, f"{run}{i}"))
        got = _wrk(url, script, connections, seconds)
        steps.append(
            {"connections": connections, "rate": got["rate"], "p99_ms": got["p99_us"] / 1e3}
        )
        if got["p99_us"] / 1e3 >= _P99_LIMIT_MS or got["errors"]:
            break
        if best is not None and got["rate"] < best["rate"] * 1.02:
            best = max(best, got, key=lambda g: g["rate"])
            break
        best = got
    return {"best": best, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--backends", default="embedded,redis")
    parser.add_argument("--rate", type=float, default=1_000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    warehouse = args.data_dir / "warehouse.duckdb"
    if not warehouse.exists():
        sys.exit(f"{warehouse} not found: run `make demo` first, or pass --data-dir")
    pool = _pool(warehouse)
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            work = Path(tmp)
            instance = _copy_instance(args.data_dir.resolve(), work)
            with contextlib.ExitStack() as stack:
                redis_url = stack.enter_context(redis_server()) if backend == "redis" else None
                url = stack.enter_context(_service(instance, backend, redis_url))
                steady, highest = [], []
                for run in range(args.runs):
                    tag = f"{backend[0].upper()}{run}"
                    steady.append(_steady(url, pool, work, args.rate, args.seconds, tag))
                    highest.append(_highest(url, pool, work, args.step_seconds, tag))
                    s, h = steady[-1], highest[-1]["best"] or {}
                    print(
                        f"  {backend} run {run + 1}: {s['rate']:.0f}/s p50 {s['p50_us'] / 1e3:.2f} ms"
                        f" p99 {s['p99_us'] / 1e3:.2f} ms errors {s['errors']}; highest"
                        f" {h.get('rate', 0):.0f}/s at p99 {h.get('p99_us', 0) / 1e3:.1f} ms",
                        flush=True,
                    )
            results[backend] = {
                "target_rate": args.rate,
                "rate": statistics.median(s["rate"] for s in steady),
                "p50_ms": statistics.median(s["p50_us"] for s in steady) / 1e3,
                "p99_ms": statistics.median(s["p99_us"] for s in steady) / 1e3,
                "p999_ms": statistics.median(s["p999_us"] for s in steady) / 1e3,
                "errors": sum(s["errors"] for s in steady),
                "requests": sum(s["requests"] for s in steady),
                "highest_rate_p99_under_50ms": statistics.median(
                    (h["best"] or {}).get("rate", 0.0) for h in highest
                ),
                "runs": args.runs,
                "steps": [h["steps"] for h in highest],
            }
    print()
    print(
        f"{'backend':<10}{'rate/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}"
        f"{'max rate, p99<50ms':>20}"
    )
    for backend, r in results.items():
        print(
            f"{backend:<10}{r['rate']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['p999_ms']:>10.2f}{r['errors']:>8}{r['highest_rate_p99_under_50ms']:>20.0f}"
        )
    print(json.dumps({"bench": "serve_http", "seconds": args.seconds, "results": results}))


if __name__ == "__main__":
    main()
