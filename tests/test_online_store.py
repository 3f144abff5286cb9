"""The online state stores against one contract: embedded in memory, embedded on disk, and Redis
(a real server started by the tests); then what only one backend has (restart, torn log,
kill -9; shared state and timeouts)."""

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from pipelines.features.online.embedded import SNAPSHOT_NAME, EmbeddedStore
from pipelines.features.online.redis_store import RedisStore
from tests.redis_server import free_port, redis_server

RECORD = struct.Struct("<IIq28x")  # 40 bytes, like the state's records: writer, sequence, value


def record(writer: int, seq: int) -> bytes:
    return RECORD.pack(writer, seq, writer * 1_000_000 + seq)


def records(blob: bytes) -> list[tuple[int, int]]:
    assert len(blob) % RECORD.size == 0, f"{len(blob)} bytes is not a whole number of records"
    return [RECORD.unpack_from(blob, at)[:2] for at in range(0, len(blob), RECORD.size)]


def log_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("state-*.log"))


@pytest.fixture(params=["memory", "disk", "redis"])
def store(request, tmp_path):
    if request.param == "memory":
        made = EmbeddedStore()
    elif request.param == "disk":
        made = EmbeddedStore(tmp_path / "state")
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}:", socket_timeout_s=2.0)
    yield made
    made.clear()
    made.close()


def in_threads(n: int, work) -> list:
    """Run `work(i)` in n threads released together; their results in order of i."""
    results: list = [None] * n
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


# -- the contract -------------------------------------------------------------------------


def test_appends_read_back_in_order_and_missing_keys_are_empty(store):
    store.append([("vpa:a", b"1"), ("dev:b", b"x"), ("vpa:a", b"2")])
    store.append([("vpa:a", b"3")])
    assert store.read(["vpa:a", "never", "dev:b"]) == [b"123", b"", b"x"]
    assert store.read([]) == []
    assert store.get("never") is None
    assert store.stats()["keys"] == 2
    assert store.stats()["bytes"] == 4


def test_a_read_of_thousands_of_keys_keeps_their_order(store):
    # Redis reads more than 1000 keys in several MGETs (a bootstrap's checks do).
    keys = [f"vpa:{i}" for i in range(2500)]
    store.append([(key, key.encode()) for key in keys[::2]])
    assert store.read(keys[::-1]) == [
        key.encode() if i % 2 == 0 else b"" for i, key in reversed(list(enumerate(keys)))
    ]


def test_an_empty_append_creates_no_key(store):
    store.append([("vpa:a", b""), ("vpa:b", b"1")])
    assert store.stats()["keys"] == 1


def test_set_if_absent_many_stores_only_absent_keys_and_returns_what_was_there(store):
    store.set_if_absent("t:1", b"before")
    items = [("t:1", b"new"), ("t:2", b"two"), ("t:3", b"three"), ("t:2", b"again")]
    assert store.set_if_absent_many(items) == [b"before", None, None, b"two"]
    assert [store.get(f"t:{i}") for i in (1, 2, 3)] == [b"before", b"two", b"three"]
    assert store.set_if_absent_many([]) == []
    assert store.read(["t:2"]) == [b""]  # set-once keys, not record keys


def test_set_if_absent_from_many_threads_has_exactly_one_winner(store):
    results = in_threads(16, lambda i: store.set_if_absent("t:1", f"party-{i}".encode()))
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    stored = f"party-{winners[0]}".encode()
    assert all(result == stored for result in results if result is not None)
    assert store.get("t:1") == stored
    # The set-once keys are apart from the record keys.
    assert store.read(["t:1"]) == [b""]


def test_replace_is_a_compare_and_set(store):
    store.append([("vpa:a", b"old1"), ("vpa:a", b"old2")])
    (current,) = store.read(["vpa:a"])
    store.append([("vpa:a", b"late")])  # another writer, after the compactor read
    assert store.replace("vpa:a", current, b"compacted") is False
    assert store.read(["vpa:a"]) == [b"old1old2late"]
    assert store.replace("vpa:a", b"old1old2late", b"compacted") is True
    assert store.read(["vpa:a"]) == [b"compacted"]
    assert store.stats()["bytes"] == len(b"compacted")
    # A missing key holds b"", and replacing with b"" deletes the key.
    assert store.replace("vpa:new", b"", b"n") is True
    assert store.replace("vpa:a", b"compacted", b"") is True
    assert store.read(["vpa:a", "vpa:new"]) == [b"", b"n"]
    assert store.stats()["keys"] == 1


def test_concurrent_appends_from_8_threads_lose_nothing(store):
    per_thread = 300

    def write(writer: int) -> None:
        for seq in range(per_thread):
            rec = record(writer, seq)
            store.append([("shared", rec), (f"own:{writer}", rec), ("shared2", rec)])

    in_threads(8, write)
    shared, shared2, *own = store.read(["shared", "shared2", *(f"own:{w}" for w in range(8))])
    for blob in (shared, shared2):
        found = records(blob)
        assert len(found) == 8 * per_thread
        for writer in range(8):  # each writer's records whole and in its order
            assert [s for w, s in found if w == writer] == list(range(per_thread))
    for writer, blob in enumerate(own):
        assert records(blob) == [(writer, seq) for seq in range(per_thread)]
    assert store.stats()["keys"] == 10
    assert store.stats()["bytes"] == 3 * 8 * per_thread * RECORD.size


def test_clear_forgets_everything(store):
    store.append([("vpa:a", b"1")])
    store.set_if_absent("t:1", b"x")
    store.clear()
    assert store.read(["vpa:a"]) == [b""]
    assert store.get("t:1") is None
    assert store.stats()["keys"] == 0
    assert store.stats()["bytes"] == 0


# -- embedded on disk ---------------------------------------------------------------------


def fill(store: EmbeddedStore, start: int, n: int) -> None:
    for seq in range(start, start + n):
        store.append([(f"vpa:{seq % 7}", record(1, seq)), (f"dev:{seq % 3}", record(2, seq))])


def everything(store: EmbeddedStore) -> tuple:
    keys = [f"vpa:{i}" for i in range(7)] + [f"dev:{i}" for i in range(3)]
    stats = {k: v for k, v in store.stats().items() if k in ("keys", "bytes", "index_keys")}
    return store.read(keys), [store.get(f"t:{i}") for i in range(5)], stats


def test_a_restart_from_snapshot_and_log_has_the_state_before(tmp_path):
    directory = tmp_path / "state"
    store = EmbeddedStore(directory)
    fill(store, 0, 200)
    store.set_if_absent("t:1", b"one")
    store.replace("vpa:3", store.read(["vpa:3"])[0], b"compacted")
    store.snapshot()
    assert len(log_files(directory)) == 1  # the covered log is gone, a new one started
    fill(store, 200, 50)  # in the log only
    store.set_if_absent("t:2", b"two")
    store.replace("dev:0", store.read(["dev:0"])[0], b"")
    before = everything(store)
    store.close()

    reopened = EmbeddedStore(directory)
    assert everything(reopened) == before
    # And it goes on where it stopped, across a second restart.
    fill(reopened, 250, 10)
    after = everything(reopened)
    reopened.close()
    again = EmbeddedStore(directory)
    assert everything(again) == after
    again.close()


def test_a_snapshot_taken_while_threads_write_loses_nothing(tmp_path):
    directory = tmp_path / "state"
    store = EmbeddedStore(directory)
    fill(store, 0, 2000)

    def work(i: int) -> None:
        if i == 0:
            for _ in range(3):
                store.snapshot()
        else:
            for seq in range(500):
                store.append([(f"w:{i}", record(i, seq)), ("shared", record(i, seq))])

    in_threads(5, work)
    keys = ["shared", *(f"w:{i}" for i in range(1, 5)), *(f"vpa:{i}" for i in range(7))]
    before = store.read(keys)
    store.close()
    reopened = EmbeddedStore(directory)
    assert reopened.read(keys) == before
    assert len(records(before[0])) == 4 * 500
    reopened.close()


@pytest.mark.parametrize("damage", ["torn", "corrupt"])
def test_a_torn_or_corrupt_last_log_entry_is_dropped_and_the_rest_kept(tmp_path, caplog, damage):
    directory = tmp_path / "state"
    store = EmbeddedStore(directory)
    fill(store, 0, 100)
    store.close()
    (log,) = log_files(directory)
    size = log.stat().st_size
    with log.open("r+b") as f:
        if damage == "torn":
            f.truncate(size - 5)  # the process died inside its last write
        else:
            f.seek(size - 3)
            f.write(b"\xff\xff\xff")
    entry_size = size // 100  # every entry of `fill` has the same size
    with caplog.at_level(logging.WARNING):
        reopened = EmbeddedStore(directory)
    [warning] = [r.getMessage() for r in caplog.records]
    assert str(log) in warning
    assert f"offset {size - entry_size}" in warning
    reference = EmbeddedStore()
    fill(reference, 0, 99)
    assert everything(reopened) == everything(reference)
    # The tail was cut off, so what is appended now is read back after the next restart.
    fill(reopened, 99, 1)
    reopened.close()
    caplog.clear()
    again = EmbeddedStore(directory)
    fill(reference, 99, 1)
    assert everything(again) == everything(reference)
    assert not caplog.records
    again.close()


def test_a_damaged_snapshot_is_refused_by_name(tmp_path):
    directory = tmp_path / "state"
    store = EmbeddedStore(directory)
    fill(store, 0, 10)
    store.snapshot()
    store.close()
    snapshot = directory / SNAPSHOT_NAME
    data = bytearray(snapshot.read_bytes())
    data[40] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"state\.snapshot: CRC32 does not match"):
        EmbeddedStore(directory)


def test_one_directory_is_open_in_one_store_at_a_time(tmp_path):
    store = EmbeddedStore(tmp_path / "state")
    with pytest.raises(RuntimeError, match="open in another process"):
        EmbeddedStore(tmp_path / "state")
    store.close()
    EmbeddedStore(tmp_path / "state").close()


_WRITER = """
import struct, sys
from pathlib import Path
from pipelines.features.online.embedded import EmbeddedStore
store = EmbeddedStore(Path(sys.argv[1]))
print("open", flush=True)
seq = 0
while True:
    rec = struct.pack("<IIq28x", 7, seq, seq)
    store.append([(f"vpa:{seq % 13}", rec), (f"seq:{seq}", rec)])
    print(seq, flush=True)
    seq += 1
"""


def test_every_append_that_returned_survives_kill_9(tmp_path):
    directory = tmp_path / "state"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "open\n"
    for _ in range(3000):  # let it run a while, then kill it mid-stream
        writer.stdout.readline()
    os.kill(writer.pid, signal.SIGKILL)
    rest = writer.stdout.read()
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    printed = 3000 + sum(1 for line in rest.splitlines() if line.strip().isdigit())
    assert printed >= 3000

    reopened = EmbeddedStore(directory)
    found = reopened.read([f"seq:{seq}" for seq in range(printed)])
    assert all(found), [seq for seq, blob in enumerate(found) if not blob][:5]
    per_key = reopened.read([f"vpa:{k}" for k in range(13)])
    seen = sorted(s for blob in per_key for _, s in records(blob))
    assert seen[:printed] == list(range(printed))  # and perhaps one more, not yet printed
    reopened.close()


# -- Redis ----------------------------------------------------------------------------------


def test_two_redis_stores_on_one_server_share_the_state(redis_url):
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    a = RedisStore(redis_url, prefix=prefix)
    b = RedisStore(redis_url, prefix=prefix)
    other = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    a.append([("vpa:x", b"ab")])
    b.append([("vpa:x", b"cd")])
    other.append([("vpa:x", b"zz")])
    assert a.read(["vpa:x"]) == b.read(["vpa:x"]) == [b"abcd"]
    assert a.set_if_absent("t:1", b"from a") is None
    assert b.set_if_absent("t:1", b"from b") == b"from a"
    assert b.replace("vpa:x", b"abcd", b"c") is True
    assert a.read(["vpa:x"]) == [b"c"]
    assert a.stats()["keys"] == 1
    a.clear()  # only its own prefix
    assert b.read(["vpa:x"]) == [b""]
    assert other.read(["vpa:x"]) == [b"zz"]
    other.clear()
    for store in (a, b, other):
        store.close()


def test_an_unreachable_redis_raises_promptly():
    closed = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.05)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        closed.read(["vpa:x"])
    assert time.monotonic() - started < 0.5
    # A server that takes the connection and never answers: the socket timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        hung = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.05)
        for call in (lambda: hung.read(["vpa:x"]), lambda: hung.append([("vpa:x", b"1")])):
            started = time.monotonic()
            with pytest.raises(redis.RedisError):
                call()
            assert time.monotonic() - started < 0.5


def test_a_stopped_redis_raises_promptly():
    with redis_server() as url:
        store = RedisStore(url, socket_timeout_s=0.05)
        store.append([("vpa:x", b"1")])
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.read(["vpa:x"])
    with pytest.raises(redis.ConnectionError):
        store.append([("vpa:x", b"2")])
    assert time.monotonic() - started < 0.5
    store.close()
