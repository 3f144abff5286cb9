"""The Redis state store: the state in one Redis server, shared by every replica that uses it.

Each record key is the Redis string `<prefix>r:<key>`, grown with `APPEND` (atomic per key, so
replicas append to one key without a read-modify-write); each set-once key is
`<prefix>i:<key>`; `<prefix>stats` is a hash of the number of record keys and their bytes,
kept by the writes themselves so that `stats()` is one command however large the state. The
two namespaces are apart so that they behave like the embedded store's two dicts. Stores with
different prefixes share a server safely as long as no prefix begins with another
(`clear()` of "a:" would take "a:b:" with it).

Needs Redis 7 or later (`SET ... NX GET`). Every call is one round trip (an `append` that
creates a key takes a second one, to count it). Connection errors and timeouts are raised as
`redis.exceptions.ConnectionError` / `TimeoutError` (both `redis.exceptions.RedisError`), after
`socket_timeout_s` at most: no retries here, the caller decides what a request does without its
state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Compare-and-set of a whole record key, atomic in the server (no WATCH and retry loop); keeps
# the stats hash (KEYS[2]) right. A missing key holds "" and setting "" deletes the key.
_REPLACE = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
local new = ARGV[2]
if new == '' then
  if current ~= '' then
    redis.call('DEL', KEYS[1])
    redis.call('HINCRBY', KEYS[2], 'keys', -1)
  end
else
  redis.call('SET', KEYS[1], new)
  if current == '' then redis.call('HINCRBY', KEYS[2], 'keys', 1) end
end
redis.call('HINCRBY', KEYS[2], 'bytes', #new - #current)
return 1
"""

# Keys per MGET: one MGET of a whole bootstrap's keys keeps the server busy past the socket
# timeout before its first reply byte; pipelined chunks stream back within it.
_MGET_KEYS = 1000


class RedisStore:
    """The state in Redis under `prefix`; several stores on one server share it."""

    backend = "redis"

    def __init__(
        self, url: str, *, prefix: str = "upi-risk:", socket_timeout_s: float | None = 0.05
    ) -> None:
        self.prefix = prefix
        self.socket_timeout_s = socket_timeout_s
        self._records = prefix + "r:"
        self._index = prefix + "i:"
        self._stats = prefix + "stats"
        # redis-py retries a failed command 3 times with backoff by default: seconds, not the
        # socket timeout, before the caller hears of it.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._replace = self._client.register_script(_REPLACE)

    def read(self, keys: Sequence[str]) -> list[bytes]:
        names = [self._records + key for key in keys]
        if len(names) <= _MGET_KEYS:
            values = self._client.mget(names) if names else []
        else:
            pipe = self._client.pipeline(transaction=False)
            for start in range(0, len(names), _MGET_KEYS):
                pipe.mget(names[start : start + _MGET_KEYS])
            values = [value for chunk in pipe.execute() for value in chunk]
        return [value or b"" for value in values]

    def append(self, items: Sequence[tuple[str, bytes]]) -> None:
        items = [(key, value) for key, value in items if value]  # APPEND "" would create a key
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for key, value in items:
            pipe.append(self._records + key, value)
        pipe.hincrby(self._stats, "bytes", sum(len(value) for _, value in items))
        lengths = pipe.execute()
        # APPEND returns the new length: just this value's length means the key was created.
        created = sum(
            1 for (_, value), length in zip(items, lengths, strict=False) if length == len(value)
        )
        if created:
            self._client.hincrby(self._stats, "keys", created)

    def replace(self, key: str, expected: bytes, new: bytes) -> bool:
        return bool(self._replace(keys=[self._records + key, self._stats], args=[expected, new]))

    def set_if_absent(self, key: str, value: bytes) -> bytes | None:
        # SET NX GET (Redis 7): stores unless the key exists, and returns what was there.
        return self._client.set(self._index + key, value, nx=True, get=True)

    def set_if_absent_many(self, items: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        # Pipelined in chunks: one round trip per chunk, each reply well within the timeout.
        found: list[bytes | None] = []
        for start in range(0, len(items), _MGET_KEYS):
            pipe = self._client.pipeline(transaction=False)
            for key, value in items[start : start + _MGET_KEYS]:
                pipe.set(self._index + key, value, nx=True, get=True)
            found += pipe.execute()
        return found

    def get(self, key: str) -> bytes | None:
        return self._client.get(self._index + key)

    def stats(self) -> dict[str, int]:
        """Record keys and bytes under the prefix (from the counters, not a scan), and
        `db_keys`: every key in the database, other prefixes' and set-once keys included."""
        pipe = self._client.pipeline(transaction=False)
        pipe.hmget(self._stats, ["keys", "bytes"])
        pipe.dbsize()
        (keys, size), db_keys = pipe.execute()
        return {"keys": int(keys or 0), "bytes": int(size or 0), "db_keys": int(db_keys)}

    def clear(self) -> None:
        """Delete every key under the prefix (SCAN + UNLINK); other prefixes are left alone."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*"
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._client.unlink(*batch)
                batch = []
        if batch:
            self._client.unlink(*batch)

    def close(self) -> None:
        self._client.close()
