"""Per-call latency of the online state stores: what one decision pays to read and update its
state, on each backend.

    .venv/bin/python benchmarks/bench_state_store.py                  # all backends, 5 runs
    .venv/bin/python benchmarks/bench_state_store.py --runs 3 --calls 10000 --snapshot-keys 0

Each backend is filled with --keys keys of --records records of 40 bytes (the state's record
size); then, per run, --calls timed calls of each operation the decision service makes:
  read 3: `read` of 3 random keys (what `features()` does per transfer);
  append 3: `append` of one 40-byte record to each of 3 random keys (one decided transfer).
Backends: embedded in memory; embedded with its log on disk (no fsync: durable across a
process kill); the same with fsync_each=True (durable across a power loss); Redis, a
`redis-server` of its own on 127.0.0.1 started like the tests' (tests/redis_server.py). Reports
the medians over --runs runs of each run's p50 and p99, in microseconds, as a table and a JSON
line. Then, with --snapshot-keys, how long the embedded store takes to write a snapshot of that
many keys and to start from it.
"""

import argparse
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' redis-server helper
from pipelines.features.online.embedded import EmbeddedStore
from pipelines.features.online.redis_store import RedisStore
from tests.redis_server import redis_server

RECORD_BYTES = 40


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000


def timed(call: Callable[[int], object], calls: int) -> tuple[float, float]:
    """p50 and p99 in microseconds of `call(i)` for i in range(calls), after a warm-up."""
    for i in range(min(1000, calls)):
        call(i)
    ns = []
    clock = time.perf_counter_ns
    gc.disable()  # a collection inside one timed call is not the store's latency
    try:
        for i in range(calls):
            started = clock()
            call(i)
            ns.append(clock() - started)
    finally:
        gc.enable()
    ns.sort()
    return percentile(ns, 0.50), percentile(ns, 0.99)


def fill(store, keys: int, records: int) -> list[str]:
    names = [f"vpa:{i:07d}@bank" for i in range(keys)]
    blob = bytes(range(RECORD_BYTES)) * records
    for start in range(0, keys, 100):
        store.append([(name, blob) for name in names[start : start + 100]])
    return names


def measure(store, keys: int, records: int, calls: int, runs: int, seed: int) -> dict:
    names = fill(store, keys, records)
    rng = random.Random(seed)
    record = bytes(RECORD_BYTES)
    per_run = {"read 3": [], "append 3": []}
    for _ in range(runs):
        picks = [rng.sample(names, 3) for _ in range(calls + 1000)]
        per_run["read 3"].append(timed(lambda i, picks=picks: store.read(picks[i]), calls))
        per_run["append 3"].append(
            timed(lambda i, picks=picks: store.append([(key, record) for key in picks[i]]), calls)
        )
    return {
        op: {
            "p50_us": statistics.median(p50 for p50, _ in results),
            "p99_us": statistics.median(p99 for _, p99 in results),
        }
        for op, results in per_run.items()
    }


@contextmanager
def backend(name: str, workdir: Path) -> Iterator:
    if name == "redis":
        with redis_server() as url:
            store = RedisStore(url, socket_timeout_s=1.0)
            try:
                yield store
            finally:
                store.close()
        return
    directory = None if name == "embedded (memory)" else Path(tempfile.mkdtemp(dir=workdir))
    store = EmbeddedStore(directory, fsync_each=name == "embedded (disk, fsync each)")
    try:
        yield store
    finally:
        store.close()
        if directory is not None:
            shutil.rmtree(directory)


def snapshot_times(keys: int, records: int, workdir: Path) -> dict:
    directory = Path(tempfile.mkdtemp(dir=workdir))
    store = EmbeddedStore(directory)
    fill(store, keys, records)
    started = time.perf_counter()
    store.snapshot()
    written = time.perf_counter() - started
    size = store.stats()["snapshot_bytes"]
    store.close()
    del store
    gc.collect()
    started = time.perf_counter()
    reopened = EmbeddedStore(directory)
    loaded = time.perf_counter() - started
    assert reopened.stats()["keys"] == keys
    reopened.close()
    shutil.rmtree(directory)
    return {"keys": keys, "mb": size / 1e6, "write_s": written, "load_s": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=20_000, help="keys in the state")
    parser.add_argument("--records", type=int, default=50, help="40-byte records per key")
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per run (>= 10k)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fsync-calls", type=int, default=2_000, help="calls with fsync_each")
    parser.add_argument("--snapshot-keys", type=int, default=1_000_000, help="0 to skip")
    parser.add_argument("--snapshot-records", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="for the logs (default: tmp)")
    args = parser.parse_args()

    own_workdir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="upi-risk-bench-state-"))
    workdir.mkdir(parents=True, exist_ok=True)
    names = [
        "embedded (memory)",
        "embedded (disk log)",
        "embedded (disk, fsync each)",
        "redis",
    ]
    results = {}
    for name in names:
        calls = args.fsync_calls if "fsync" in name else args.calls
        with backend(name, workdir) as store:
            results[name] = measure(store, args.keys, args.records, calls, args.runs, seed=7)
            results[name]["calls"] = calls

    print(
        f"\n{args.keys} keys x {args.records} records of {RECORD_BYTES} B; medians of "
        f"{args.runs} runs' percentiles, microseconds per call"
    )
    print(
        f"{'backend':<30} {'calls':>7} {'read3 p50':>10} {'read3 p99':>10} "
        f"{'append3 p50':>12} {'append3 p99':>12}"
    )
    for name, r in results.items():
        read, append = r["read 3"], r["append 3"]
        print(
            f"{name:<30} {r['calls']:>7} {read['p50_us']:>10.1f} {read['p99_us']:>10.1f} "
            f"{append['p50_us']:>12.1f} {append['p99_us']:>12.1f}"
        )
    line = {"latency": results}
    if args.snapshot_keys:
        snap = snapshot_times(args.snapshot_keys, args.snapshot_records, workdir)
        print(
            f"\nembedded snapshot of {snap['keys']} keys x {args.snapshot_records} records "
            f"({snap['mb']:.0f} MB): written in {snap['write_s']:.2f} s, "
            f"loaded at start in {snap['load_s']:.2f} s"
        )
        line["snapshot"] = snap
    print(json.dumps(line))
    if own_workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
