"""The embedded state store: the state in this process's memory, kept on disk as a snapshot plus
an append-only log.

Reads never touch the disk. With a directory, every change (`append`, `replace`,
`set_if_absent`, `clear`) is first written to the log as one framed entry with one `os.write` on
an unbuffered descriptor, so once the call returns the change is in the kernel and survives the
process being killed (`kill -9`); it survives a power loss only after `sync()` (or with
`fsync_each=True`). `snapshot()` writes the whole state to a new file and drops the log it
covers, so a restart loads one file and replays a short log.

Files in the directory:
- `state.snapshot`: the state when the snapshot began, and the number of the first log that is
  not in it (format below);
- `state-<n>.log`: entries `<u32 payload length><u32 CRC32 of payload><payload>`, where the
  payload is one op byte (A append, R replace, S set-once, C clear) and then its items, each
  `<u32 key length><u32 value length><key utf-8><value>`;
- `lock`: held (flock) while a store has the directory open, so two processes never write one
  log.

A snapshot starts a new log (under the lock, so no change falls between them) and then copies
the state key by key in short locked chunks: writers wait milliseconds, never the whole write.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import sys
import threading
import zlib
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "state.snapshot"
LOCK_NAME = "lock"
_LOG_NAME = re.compile(r"^state-(\d{8})\.log$")

_FRAME = struct.Struct("<II")  # payload length, CRC32 of the payload
_ITEM = struct.Struct("<II")  # key length, value length
_APPEND, _REPLACE, _SET_ONCE, _CLEAR = b"A", b"R", b"S", b"C"

# Snapshot: magic, next log number, number of record keys, number of set-once keys; then per
# section (records, then set-once) the key lengths (u32 array), value lengths (u64 array), all
# keys, all values; then the CRC32 of everything before it. Lengths first and blobs after, so
# loading is two array reads and one slice per key instead of a parse per field.
_SNAPSHOT_MAGIC = b"UPIRSNP1"
_SNAPSHOT_HEADER = struct.Struct("<8sQQQ")
_CRC = struct.Struct("<I")
_CHUNK_KEYS = 4096  # keys copied per hold of the lock while a snapshot is written

_fsync = getattr(os, "fdatasync", os.fsync)  # file data and size; no other metadata needed


def _log_name(number: int) -> str:
    return f"state-{number:08d}.log"


def _entry(op: bytes, items: Iterable[tuple[str, bytes]]) -> bytes:
    parts = [op]
    for key, value in items:
        k = key.encode()
        parts += (_ITEM.pack(len(k), len(value)), k, value)
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _entry_items(payload: memoryview) -> Iterable[tuple[str, bytes]]:
    pos = 1
    while pos < len(payload):
        klen, vlen = _ITEM.unpack_from(payload, pos)
        pos += _ITEM.size
        key = str(payload[pos : pos + klen], "utf-8")
        pos += klen
        yield key, bytes(payload[pos : pos + vlen])
        pos += vlen


def _little_endian(lengths: array) -> array:
    # The file is little-endian whatever the machine: swap on a big-endian one.
    if sys.byteorder == "big":
        lengths.byteswap()
    return lengths


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a log that a snapshot has just deleted
        return 0


def _fsync_directory(directory: Path) -> None:
    # A created or renamed file survives a power loss only once its directory entry is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EmbeddedStore:
    """The state in memory, thread-safe; with `directory`, durable through a log and snapshots."""

    backend = "embedded"

    def __init__(self, directory: Path | None = None, *, fsync_each: bool = False) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.fsync_each = fsync_each
        self._lock = threading.Lock()  # the state and the log, together
        self._snapshot_lock = threading.Lock()  # one snapshot at a time
        self._data: dict[str, bytearray] = {}
        self._index: dict[str, bytes] = {}
        self._bytes = 0
        self._index_bytes = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._log_number = 0
        self._log_size = 0
        self._closed = False
        if self.directory is not None:
            self._open()

    # -- the protocol ---------------------------------------------------------------------

    def read(self, keys: Sequence[str]) -> list[bytes]:
        with self._lock:
            get = self._data.get
            return [bytes(get(key, b"")) for key in keys]

    def append(self, items: Sequence[tuple[str, bytes]]) -> None:
        entry = _entry(_APPEND, items) if self.directory is not None else b""
        with self._lock:
            self._write(entry)
            self._apply_append(items)

    def replace(self, key: str, expected: bytes, new: bytes) -> bool:
        with self._lock:
            if self._data.get(key, b"") != expected:
                return False
            if self.directory is not None:
                self._write(_entry(_REPLACE, [(key, new)]))
            self._apply_replace(key, new)
            return True

    def set_if_absent(self, key: str, value: bytes) -> bytes | None:
        with self._lock:
            old = self._index.get(key)
            if old is not None:
                return old
            if self.directory is not None:
                self._write(_entry(_SET_ONCE, [(key, value)]))
            self._apply_set_once(key, value)
            return None

    def set_if_absent_many(self, items: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        with self._lock:
            found: list[bytes | None] = []
            stored: dict[str, bytes] = {}
            for key, value in items:
                old = self._index.get(key, stored.get(key))
                found.append(old)
                if old is None:
                    stored[key] = value
            if self.directory is not None and stored:
                self._write(_entry(_SET_ONCE, stored.items()))
            for key, value in stored.items():
                self._apply_set_once(key, value)
            return found

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._index.get(key)

    def stats(self) -> dict[str, int]:
        with self._lock:
            stats = {
                "keys": len(self._data),
                "bytes": self._bytes,
                "index_keys": len(self._index),
                "index_bytes": self._index_bytes,
            }
        if self.directory is not None:
            stats["log_bytes"] = sum(_size(path) for path, _ in self._logs())
            stats["snapshot_bytes"] = _size(self.directory / SNAPSHOT_NAME)
        return stats

    def clear(self) -> None:
        with self._lock:
            if self.directory is not None:
                self._write(_entry(_CLEAR, []))
            self._apply_clear()
        # The clear entry already makes it durable; the snapshot only gives the disk back.
        self.snapshot()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                _fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # -- durability -----------------------------------------------------------------------

    def sync(self) -> None:
        """Flush the log to the disk: every change made so far then survives a power loss."""
        with self._lock:
            if self._fd is not None:
                _fsync(self._fd)

    def snapshot(self) -> None:
        """Write the whole state to `state.snapshot` and delete the logs it covers (nothing
        to do in memory only). Writers are held only while a new log starts and while each
        chunk of keys is copied."""
        if self.directory is None:
            return
        with self._snapshot_lock:
            with self._lock:
                self._check_open()
                covered = self._log_number
                self._start_log(covered + 1)
                # The objects, not copies: `append` only extends a bytearray and `replace` puts
                # a new one in the dict, so the first `length` bytes of each stay as they were.
                records = [(key, buf, len(buf)) for key, buf in self._data.items()]
                index = list(self._index.items())
            path = self.directory / SNAPSHOT_NAME
            tmp = path.with_name(SNAPSHOT_NAME + ".tmp")
            try:
                self._write_snapshot(tmp, covered + 1, records, index)
                os.replace(tmp, path)
                _fsync_directory(self.directory)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            for old, number in self._logs():
                if number <= covered:
                    old.unlink()

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the embedded state store on {self.directory} is closed")

    def _write(self, entry: bytes) -> None:
        """Append `entry` to the log (caller holds the lock); nothing to do in memory only."""
        if self.directory is None:
            return
        self._check_open()
        assert self._fd is not None
        written = os.write(self._fd, entry)
        if written != len(entry):
            # A short write (disk full): cut it off, or the next entries would follow garbage.
            os.ftruncate(self._fd, self._log_size)
            raise OSError(
                f"{self.directory / _log_name(self._log_number)}: wrote {written} of "
                f"{len(entry)} bytes of a log entry (disk full?)"
            )
        self._log_size += written
        if self.fsync_each:
            _fsync(self._fd)

    def _apply_append(self, items: Iterable[tuple[str, bytes]]) -> None:
        data = self._data
        for key, value in items:
            if not value:
                continue  # an empty append creates no key (as with the Redis store)
            buf = data.get(key)
            if buf is None:
                data[key] = bytearray(value)
            else:
                buf += value
            self._bytes += len(value)

    def _apply_replace(self, key: str, new: bytes) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        if new:
            self._data[key] = bytearray(new)  # a new object: see `snapshot`
            self._bytes += len(new)

    def _apply_set_once(self, key: str, value: bytes) -> None:
        if key not in self._index:
            self._index[key] = bytes(value)
            self._index_bytes += len(value)

    def _apply_clear(self) -> None:
        self._data = {}
        self._index = {}
        self._bytes = 0
        self._index_bytes = 0

    def _logs(self) -> list[tuple[Path, int]]:
        assert self.directory is not None
        found = []
        for path in self.directory.iterdir():
            match = _LOG_NAME.match(path.name)
            if match:
                found.append((path, int(match.group(1))))
        return sorted(found, key=lambda item: item[1])

    def _open(self) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise RuntimeError(
                f"the state directory {self.directory} is open in another process "
                f"(it holds {self.directory / LOCK_NAME}); one store per directory"
            ) from None
        self._lock_fd = lock_fd
        (self.directory / (SNAPSHOT_NAME + ".tmp")).unlink(missing_ok=True)  # a crashed snapshot
        first_log = self._load_snapshot()
        self._log_number = first_log
        for path, number in self._logs():
            if number < first_log:
                path.unlink()  # in the snapshot already: its deletion was interrupted
            else:
                self._replay(path)
                self._log_number = number  # writes go on in the last log
        path = self.directory / _log_name(self._log_number)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._log_size = os.fstat(self._fd).st_size
        _fsync_directory(self.directory)

    def _start_log(self, number: int) -> None:
        """Switch writes to log `number` (caller holds the lock)."""
        assert self.directory is not None and self._fd is not None
        fd = os.open(
            self.directory / _log_name(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        _fsync_directory(self.directory)
        _fsync(self._fd)
        os.close(self._fd)
        self._fd, self._log_number, self._log_size = fd, number, 0

    def _replay(self, path: Path) -> None:
        data = path.read_bytes()
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            problem = None
            if pos + _FRAME.size > len(data):
                problem = "a torn entry header"
            else:
                length, crc = _FRAME.unpack_from(data, pos)
                end = pos + _FRAME.size + length
                if end > len(data):
                    problem = (
                        f"a torn entry ({length} bytes announced, {len(data) - pos - 8} there)"
                    )
                elif zlib.crc32(view[pos + _FRAME.size : end]) != crc:
                    problem = "an entry whose CRC32 does not match"
            if problem is not None:
                log.warning(
                    "%s: dropping %s at offset %d (the last %d bytes of the log); "
                    "everything before it is kept",
                    path,
                    problem,
                    pos,
                    len(data) - pos,
                )
                with path.open("r+b") as f:
                    f.truncate(pos)
                    _fsync(f.fileno())
                return
            payload = view[pos + _FRAME.size : end]
            self._apply_entry(payload, path, pos)
            pos = end

    def _apply_entry(self, payload: memoryview, path: Path, offset: int) -> None:
        op = bytes(payload[:1])
        if op == _APPEND:
            self._apply_append(_entry_items(payload))
        elif op == _REPLACE:
            for key, value in _entry_items(payload):
                self._apply_replace(key, value)
        elif op == _SET_ONCE:
            for key, value in _entry_items(payload):
                self._apply_set_once(key, value)
        elif op == _CLEAR:
            self._apply_clear()
        else:
            raise ValueError(
                f"{path}: entry at offset {offset} has op {op!r}; expected one of "
                "A (append), R (replace), S (set-once), C (clear) - a log of a newer version?"
            )

    def _write_snapshot(
        self,
        path: Path,
        first_log: int,
        records: list[tuple[str, bytearray, int]],
        index: list[tuple[str, bytes]],
    ) -> None:
        record_keys = [key.encode() for key, _, _ in records]
        index_keys = [key.encode() for key, _ in index]
        with path.open("wb") as f:
            crc = 0

            def put(chunk: bytes) -> None:
                nonlocal crc
                crc = zlib.crc32(chunk, crc)
                f.write(chunk)

            put(_SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, first_log, len(records), len(index)))
            put(_little_endian(array("I", map(len, record_keys))).tobytes())
            put(_little_endian(array("Q", (length for _, _, length in records))).tobytes())
            put(b"".join(record_keys))
            for start in range(0, len(records), _CHUNK_KEYS):
                chunk = records[start : start + _CHUNK_KEYS]
                with self._lock:
                    values = b"".join([buf[:length] for _, buf, length in chunk])
                put(values)
            put(_little_endian(array("I", map(len, index_keys))).tobytes())
            put(_little_endian(array("Q", (len(value) for _, value in index))).tobytes())
            put(b"".join(index_keys))
            put(b"".join(value for _, value in index))
            f.write(_CRC.pack(crc))
            f.flush()
            os.fsync(f.fileno())

    def _load_snapshot(self) -> int:
        """Load `state.snapshot` if there is one; the number of the first log not in it."""
        assert self.directory is not None
        path = self.directory / SNAPSHOT_NAME
        if not path.exists():
            return 1
        # A bytearray, so that each record key is a slice of it: no copy through a memoryview.
        data = bytearray(path.stat().st_size)
        with path.open("rb") as f:
            f.readinto(data)
        if len(data) < _SNAPSHOT_HEADER.size + _CRC.size:
            raise ValueError(f"{path}: {len(data)} bytes, too short for a state snapshot")
        magic, first_log, n_records, n_index = _SNAPSHOT_HEADER.unpack_from(data)
        if magic != _SNAPSHOT_MAGIC:
            raise ValueError(f"{path}: starts with {magic!r}, expected {_SNAPSHOT_MAGIC!r}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        with memoryview(data) as view:
            intact = zlib.crc32(view[: len(data) - _CRC.size]) == crc
        if not intact:
            # Written whole and renamed into place, so this is damage on the disk, not a crash:
            # refuse rather than start from a partial state.
            raise ValueError(f"{path}: CRC32 does not match; the snapshot is damaged")
        pos = _SNAPSHOT_HEADER.size
        self._data, pos = _load_section(data, pos, n_records)
        index, pos = _load_section(data, pos, n_index)
        self._index = {key: bytes(value) for key, value in index.items()}
        self._bytes = sum(map(len, self._data.values()))
        self._index_bytes = sum(map(len, self._index.values()))
        return first_log


def _load_section(data: bytearray, pos: int, count: int) -> tuple[dict[str, bytearray], int]:
    """One section of a snapshot at `pos`: its keys and values, and where it ends."""
    key_lengths = array("I", data[pos : pos + 4 * count])
    pos += 4 * count
    value_lengths = array("Q", data[pos : pos + 8 * count])
    pos += 8 * count
    _little_endian(key_lengths)
    _little_endian(value_lengths)
    key_ends = list(accumulate(key_lengths, initial=0))
    keys_blob = bytes(data[pos : pos + key_ends[-1]])
    value_ends = list(accumulate(value_lengths, initial=pos + key_ends[-1]))
    # map and zip, not a loop per key: with millions of keys, that loop is most of the load.
    keys_text = keys_blob.decode()
    if len(keys_text) == len(keys_blob):  # one byte per character: slice the text
        keys = map(keys_text.__getitem__, map(slice, key_ends, key_ends[1:]))
    else:
        keys = map(bytes.decode, map(keys_blob.__getitem__, map(slice, key_ends, key_ends[1:])))
    values = map(data.__getitem__, map(slice, value_ends, value_ends[1:]))
    return dict(zip(keys, values, strict=True)), value_ends[-1]
