"""The online state's records: one fixed-size binary layout for every fact a key holds.

A key's bytes are records of `RECORD` one after another, so reading a key is one
`np.frombuffer`. Each record carries its own times, so a query "as of t" filters by time and
gets the same answer whatever order the records were appended in. What each kind uses:

    kind         time           time2           amount  other          aux       n      tx
    OUT          created_at     -               paise   payee hash     device    -      transfer
    IN           created_at     -               paise   payer hash     -         -      transfer
    DEVICE_USE   created_at     -               -       -              -         -      transfer
    OUTCOME      created_at     -               -       -              -         -      transfer
    EVENT        event_time     -               -       -              -         -      -
    FRAUD        reported_at    created_at      -       -              -         -      transfer
    PAIR         last created   first created   sum     counterpart    -         count  -
    DEVICE_SEEN  first use      -               -       device hash    -         -      -

`flags` holds the status bits (`OK`, `FAILED`, `PIN_FAIL`, `FUNDS_FAIL`, as the batch engine's
`inputs` defines them) and `NIGHT` / `MERCHANT` for transfers; an OUTCOME's status bits replace
its transfer's; a FRAUD's role (`AS_PAYER`, `AS_PAYEE`, `AS_DEVICE`) and `MULE_CONFIRMED`; a
PAIR's direction (`AS_PAYER` for the VPA's payees, `AS_PAYEE` for its payers). `code` is an
EVENT's kind (`inputs.EVENT_CODE`). PAIR and DEVICE_SEEN are summaries that compaction writes
in place of transfers older than the window (`compute.compact`).
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

import numpy as np

from pipelines.features.engine.inputs import (
    FAILED,
    FUNDS_FAIL,
    HOUR,
    MERCHANT,
    NIGHT,
    OK,
    PIN_FAIL,
)
from pipelines.india_time import IST_OFFSET_US

RECORD = np.dtype(
    [
        ("kind", "u1"),
        ("flags", "u1"),
        ("code", "<u2"),
        ("n", "<u4"),
        ("time", "<i8"),
        ("time2", "<i8"),
        ("amount", "<i8"),
        ("other", "<u8"),
        ("aux", "<u8"),
        ("tx", "<u8"),
    ]
)

OUT, IN, DEVICE_USE, OUTCOME, EVENT, FRAUD, PAIR, DEVICE_SEEN = range(1, 9)
TRANSFER_KINDS = (OUT, IN, DEVICE_USE)

STATUS_BITS = OK | FAILED | PIN_FAIL | FUNDS_FAIL
# FRAUD and PAIR records: whose transfer it is, seen from the key.
AS_PAYER, AS_PAYEE, AS_DEVICE, MULE_CONFIRMED = 1, 2, 4, 8

_PIN_CODES = frozenset(("ZM", "Z6"))  # as the batch engine's inputs.py
_FUNDS_CODES = frozenset(("Z9",))

__all__ = [
    "AS_DEVICE",
    "AS_PAYEE",
    "AS_PAYER",
    "DEVICE_SEEN",
    "DEVICE_USE",
    "EVENT",
    "FRAUD",
    "IN",
    "MERCHANT",
    "MULE_CONFIRMED",
    "NIGHT",
    "OUT",
    "OUTCOME",
    "PAIR",
    "RECORD",
    "STATUS_BITS",
    "TRANSFER_KINDS",
    "device_key",
    "index_key",
    "night_bit",
    "records",
    "stable_hash",
    "stable_hashes",
    "status_bits",
    "vpa_key",
]


def vpa_key(vpa: str) -> str:
    """The key of a VPA: its transfers as payer and payee, events, fraud reports."""
    return f"v:{vpa}"


def device_key(device_id: str) -> str:
    """The key of a device: the transfers made from it and their fraud reports."""
    return f"d:{device_id}"


def index_key(transfer_id: str) -> str:
    """The set-once key of a transfer: its parties and created_at (`state.TransferIndex`)."""
    return f"t:{transfer_id}"


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text`, the same in every process (Python's `hash` is randomised, and
    replicas share one Redis)."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "little")


def stable_hashes(texts: Iterable[str]) -> np.ndarray:
    """`stable_hash` of each text, as uint64."""
    joined = b"".join(blake2b(s.encode(), digest_size=8).digest() for s in texts)
    return np.frombuffer(joined, dtype="<u8").astype(np.uint64)


def status_bits(status: str | None, response_code: str | None) -> int:
    """The status bits of a transfer's outcome: REVERSED counts as the SUCCESS it was when it
    settled, PENDING (or no outcome yet) as neither succeeded nor failed."""
    if status in ("SUCCESS", "REVERSED"):
        return OK
    if status == "FAILED":
        return (
            FAILED
            | (PIN_FAIL if response_code in _PIN_CODES else 0)
            | (FUNDS_FAIL if response_code in _FUNDS_CODES else 0)
        )
    return 0


def night_bit(created_us: int | np.ndarray) -> int | np.ndarray:
    """NIGHT where created_at is 00:00-05:00 IST, as the batch's `is_night_ist`."""
    hour = (created_us + IST_OFFSET_US) // HOUR % 24
    if isinstance(hour, np.ndarray):
        return np.where(hour < 5, NIGHT, 0).astype(np.uint8)
    return NIGHT if hour < 5 else 0


def records(n: int) -> np.ndarray:
    """`n` zeroed records."""
    return np.zeros(n, dtype=RECORD)
