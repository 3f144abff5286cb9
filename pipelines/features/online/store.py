"""Where the online feature state lives: byte records appended under string keys.

The state (`pipelines.features.online.state`) is a set of keys (one per VPA, device, ...), each
holding fixed-size binary records appended one after another. A store only appends, reads and
occasionally rewrites a key whole (compaction); it never interprets the bytes. Two backends
satisfy this protocol:

- embedded (`EmbeddedStore`): in the process, with a snapshot and an append-only log in the data
  directory; the default, for one replica;
- Redis (`RedisStore`): `APPEND` is atomic per key, so several replicas behind a load balancer
  share one state without a read-modify-write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StateStore(Protocol):
    """Byte records under string keys: append, read, rewrite, and a set-once index."""

    backend: str  # "embedded" or "redis"

    def read(self, keys: Sequence[str]) -> list[bytes]:
        """The bytes of each key, in order (b"" for a key never written)."""
        ...

    def append(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Append each item's bytes to its key; each key's append is atomic, and once this
        returns the bytes survive the process being killed."""
        ...

    def replace(self, key: str, expected: bytes, new: bytes) -> bool:
        """Set `key` to `new` if it still holds exactly `expected` (compaction); False if
        another writer changed it in between."""
        ...

    def set_if_absent(self, key: str, value: bytes) -> bytes | None:
        """Store `value` under `key` unless the key is set: None if it was stored, else the
        value already there (an index written once, e.g. transfer id -> its parties)."""
        ...

    def set_if_absent_many(self, items: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        """`set_if_absent` of each item, in order (in bulk: one round trip per many keys); a
        key given twice keeps its first value."""
        ...

    def get(self, key: str) -> bytes | None:
        """The value of a set-once key (see `set_if_absent`), or None."""
        ...

    def stats(self) -> dict[str, int]:
        """At least {"keys": number of keys, "bytes": bytes held}."""
        ...

    def clear(self) -> None:
        """Forget everything (before a rebuild)."""
        ...

    def close(self) -> None: ...
