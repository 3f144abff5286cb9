"""Point-in-time features of transfers: one engine for a batch of millions and for one transfer.

Point-in-time rule: a feature of transfer t uses only what was known strictly before
t.created_at:
- other transfers with created_at < t.created_at: transfers created at the same microsecond
  (ties) are excluded, and so is t itself;
- account events with event_time < t.created_at;
- labels with reported_at < t.created_at, and only about transfers that are themselves prior.

A prior transfer's outcome is its final status, SUCCESS or FAILED, because the switch settles a
transfer within seconds of creating it. REVERSED arrives hours later, so for features a REVERSED
transfer counts as the SUCCESS it was when it settled: the reversal is never used. A transfer
still PENDING in the ledger counts as attempted but neither succeeded nor failed.

Choices the catalogue (`definitions.py`) states in one line each:
- "attempted" counts and amounts include every status; "successful" means SUCCESS or REVERSED;
- a window "24h" is [t - 24h, t); lifetime features use every prior transfer in the input;
- `payer_new_device` looks at the payer's prior transfers only: a DEVICE_BOUND event does not
  make a device "seen", because a takeover binds the new device just before paying;
- `payer_hours_since_*` and `payee_account_age_hours` use the latest matching event before t;
- a transfer counts in `payee_fraud_reports` once its first FRAUD label is reported; LEGIT
  labels are not used;
- `payer_amount_zscore_30d` uses the sample standard deviation.

How it is fast: every key (payer, payee, pair) is one sort of the rows by (key, created_at);
a row's prior window is then a slice [lo, tie) of its key's run, where `tie` is the first row
of the key at the same created_at and `lo` the first row at or after created_at - window.
Counts are index differences, sums are differences of prefix sums, and `lo` is a binary search
of sorted (key, time) integers. Distinct counts in a window use each (payer, payee) pair's
previous and next occurrence, so they need no extra sort; account events and fraud reports,
being few, are merged into the sorted transfers. Strings are keyed by two independent 64-bit
hashes (a 128-bit key); nothing else is approximate. Everything is numpy over whole columns.
Big batches (a million rows or more) run the payee side on a second thread (see _compute),
and numba kernels (`_kernels.py`) replace five numpy or Polars steps: they find window starts
in one pass per key, sum a window by sliding it along each key instead of differencing prefix
sums, keep a sorted buffer per key for the rolling median, write the hours since account
events without expanding them per position, and write columns back to row order. Fresh memory
costs 1-3 s per GB in page faults on the 2-core VM, so the engine keeps temporaries few (see
_big_batch_memory), and spare threads map the output block (see _populated_block) and load
the kernels while the inputs are read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, cached_property
from types import ModuleType
from typing import Any, TypeVar

import duckdb
import numpy as np
import polars as pl
from numpy._core import multiarray as _multiarray

from pipelines.features.definitions import FEATURE_NAMES

_T = TypeVar("_T")

SECOND = 1_000_000  # created_at is handled as int64 microseconds since the epoch, UTC
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
IST_OFFSET = 5 * HOUR + 30 * MINUTE
LONGEST_WINDOW = timedelta(days=30)  # history a caller must load before the first target
FRAUD_RATE_PRIOR = 10  # transfers of smoothing in payee_fraud_rate_reported

TRANSFER_COLUMNS = (
    "transfer_id",
    "created_at",
    "payer_vpa",
    "payee_vpa",
    "payee_type",
    "amount_paise",
    "channel",
    "payer_device_id",
    "status",
    "response_code",
)
ACCOUNT_EVENT_COLUMNS = ("vpa", "event_type", "event_time")
LABEL_COLUMNS = ("transfer_id", "label", "reported_at")

_PAYER_WINDOWS = {"5m": 5 * MINUTE, "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
_PAYEE_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "8d": 8 * DAY}
_DISTINCT_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}  # distinct counterparties
_PAYER_EVENTS = {
    "payer_hours_since_registration": "REGISTERED",
    "payer_hours_since_device_bound": "DEVICE_BOUND",
    "payer_hours_since_sim_change": "SIM_CHANGED",
    "payer_hours_since_pin_reset": "PIN_RESET",
}
_CHANNELS = ("CHAT", "QR", "INTENT", "COLLECT")
_PIN_CODES = ("ZM", "Z6")
_FUNDS_CODES = ("Z9",)
_SEEDS = (0x5EED_0001, 0x5EED_0002)  # two independent hashes: a 128-bit key per string
_BLOCK_LIMIT = 1 << 62  # encoded (key, time) values stay below this
_MERGE_CHUNK = 1 << 14  # queries per binary-search chunk
_BIG_BATCH = 1_000_000  # rows from which the engine keeps freed memory while computing

# One byte of facts per transfer, gathered once per key order instead of one array each.
OK, FAILED, PIN_FAIL, FUNDS_FAIL, NIGHT, MERCHANT = (1 << i for i in range(6))
# ...and one byte of facts about its (payer, payee) pair, for first-payee and distinct counts.
PAIR_FIRST = 1
_FAR = {w: 1 << (1 + 2 * i) for i, w in enumerate(_DISTINCT_WINDOWS)}
_REPEAT = {w: 1 << (2 + 2 * i) for i, w in enumerate(_DISTINCT_WINDOWS)}


# --- inputs -------------------------------------------------------------------------------


def _require(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}; expected at least {columns}")


def _micros(series: pl.Series) -> np.ndarray:
    """Datetimes as int64 microseconds since the epoch, UTC (naive values are taken as UTC)."""
    if not isinstance(series.dtype, pl.Datetime):
        raise ValueError(f"column {series.name} is {series.dtype}; expected a Datetime")
    return series.dt.cast_time_unit("us").to_physical().to_numpy().astype(np.int64, copy=False)


def _hash_exprs(column: str) -> list[pl.Expr]:
    return [pl.col(column).hash(seed=s).alias(f"{column}_{i}") for i, s in enumerate(_SEEDS)]


def _hashes(frame: pl.DataFrame, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """<column>_<i> -> uint64 hash i of each value of the column.

    One at a time and copied into numpy: Polars' allocator faults fresh memory in 4 KB pages,
    ten times slower here than numpy's huge pages, and reuses what it freed.
    """
    out = {}
    for column in columns:
        for expr in _hash_exprs(column):
            hashed = frame.select(expr).to_series()
            out[hashed.name] = hashed.to_numpy().copy()
            del hashed
    return out


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit hash of two integer columns (splitmix64 finaliser), to order composite keys."""
    x = a.astype(np.uint64)
    x *= np.uint64(0x9E3779B97F4A7C15)
    x += b.astype(np.uint64, copy=False)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x ^= x >> np.uint64(shift)
        x *= np.uint64(factor)
    x ^= x >> np.uint64(31)
    return x


def _prefix(values: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """Prefix sums with a leading 0: the sum of values[lo:hi] is out[hi] - out[lo]."""
    out = np.empty(values.size + 1, dtype=dtype)
    out[0] = 0
    np.cumsum(values, dtype=dtype, out=out[1:])
    return out


def _bit(flags: np.ndarray, mask: int) -> np.ndarray:
    return (flags & mask).astype(bool)


@dataclass
class _Inputs:
    """Transfers in created_at order as numpy columns, plus what features need of the labels."""

    transfer_id: pl.Series
    t: np.ndarray  # int64 microseconds
    amount: np.ndarray  # int64 paise
    flags: np.ndarray  # uint8 of OK, FAILED, ...
    channel: np.ndarray  # uint8 index into _CHANNELS (4 if unknown)
    hour: np.ndarray  # int8 hour of day in IST
    hashes: dict[str, np.ndarray]  # <column>_<0|1> -> uint64
    fraud_rows: np.ndarray  # rows with a FRAUD label, ascending
    fraud_known_at: np.ndarray  # for each: max(created_at, first FRAUD report)


def _inputs(transfers: pl.DataFrame, labels: pl.DataFrame) -> _Inputs:
    _require(transfers, TRANSFER_COLUMNS, "transfers")
    _require(labels, LABEL_COLUMNS, "labels")
    if transfers.height >= 2**31 - 1:
        raise ValueError(f"{transfers.height:,} transfers: split the batch below 2**31 rows")
    frame = transfers.select(TRANSFER_COLUMNS)
    nulls = [c for c in TRANSFER_COLUMNS if c != "response_code" and frame[c].null_count()]
    if nulls:
        raise ValueError(f"transfers: required columns {nulls} contain nulls")
    t = _micros(frame["created_at"])
    if t.size and not bool(np.all(t[1:] >= t[:-1])):
        order = np.argsort(t, kind="stable")  # ties keep the input order
        frame = frame[order]
        t = t[order]
    status, code = pl.col("status"), pl.col("response_code")
    failed = status == "FAILED"
    facts = frame.select(
        (
            status.is_in(["SUCCESS", "REVERSED"]).cast(pl.UInt8) * OK
            + failed.cast(pl.UInt8) * FAILED
            + (failed & code.is_in(_PIN_CODES)).fill_null(False).cast(pl.UInt8) * PIN_FAIL
            + (failed & code.is_in(_FUNDS_CODES)).fill_null(False).cast(pl.UInt8) * FUNDS_FAIL
            + (pl.col("payee_type") == "MERCHANT").cast(pl.UInt8) * MERCHANT
        )
        .cast(pl.UInt8)
        .alias("flags"),
        pl.col("channel")
        .replace_strict(dict(zip(_CHANNELS, range(4), strict=True)), default=4)
        .cast(pl.UInt8)
        .alias("channel"),
    )
    hour = ((t + IST_OFFSET) // HOUR % 24).astype(np.int8)
    flags = facts["flags"].to_numpy().copy()
    flags |= np.where(hour < 5, NIGHT, 0).astype(np.uint8)

    hit, fraud_known_at = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    reports = (
        labels.lazy()
        .filter(pl.col("label") == "FRAUD")
        .group_by("transfer_id")
        .agg(pl.col("reported_at").min())
        .collect()
    )
    if reports.height:
        hit = np.flatnonzero(frame["transfer_id"].is_in(reports["transfer_id"].implode()))
        joined = (
            frame[hit]
            .select("transfer_id")
            .join(reports, on="transfer_id", how="left", maintain_order="left")
        )
        fraud_known_at = np.maximum(t[hit], _micros(joined["reported_at"]))

    return _Inputs(
        transfer_id=frame["transfer_id"],
        t=t,
        amount=frame["amount_paise"].cast(pl.Int64).to_numpy(),
        flags=flags,
        channel=facts["channel"].to_numpy(),
        hour=hour,
        hashes=_hashes(frame, ("payer_vpa", "payee_vpa", "payer_device_id")),
        fraud_rows=hit,
        fraud_known_at=fraud_known_at,
    )


# --- sorted keys ----------------------------------------------------------------------------


@dataclass
class _Groups:
    """Rows sorted by (key, created_at): row order, dense key ids, key starts, tie starts."""

    perm: np.ndarray  # sorted position -> row (rows are in created_at order)
    gid: np.ndarray  # dense key id of each position, ascending
    first: np.ndarray  # position of each key's first row
    tie: np.ndarray  # first position with the same key and created_at: rows before are prior
    time: np.ndarray  # created_at of each position

    @cached_property
    def start(self) -> np.ndarray:
        """Per position: its key's first position."""
        return self.first[self.gid]

    @property
    def end(self) -> np.ndarray:
        """Per key: the position after its last row."""
        return np.append(self.first[1:], self.perm.size)

    @cached_property
    def bounds(self) -> np.ndarray:
        """Each key's first position, then the number of positions."""
        return np.append(self.first, self.perm.size)

    def to_rows(self, values: np.ndarray) -> np.ndarray:
        out = np.empty(values.size, dtype=values.dtype)
        out[self.perm] = values
        return out


def _group(fold: np.ndarray, check: np.ndarray, t: np.ndarray) -> _Groups:
    """Sort rows by key, then created_at; rows share a key when `fold` and `check` are equal.

    Rows must be in created_at order within each key. One np.sort of (top bits of `fold`, row
    number) packed in 64 bits does the work and keeps each key's rows in order. Runs whose
    truncated fold is equal but whose check differs (keys colliding in the top bits: about one
    a sort at a million keys) are re-sorted exactly. Key order is that of (fold, check).
    """
    n = t.size
    bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = fold & ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    boundary = (packed[1:] ^ packed[:-1]) > low  # the truncated folds differ
    packed &= low
    perm = packed.view(np.intp)
    del packed
    checked = check[perm]
    collide = checked[1:] != checked[:-1]
    del checked
    collide &= ~boundary
    if collide.any():
        _separate(perm, boundary, collide, fold, check)
    new = np.empty(n, dtype=bool)
    new[:1] = True
    np.logical_or(boundary, collide, out=new[1:])
    del boundary, collide
    gid = np.cumsum(new, dtype=np.intp)
    gid -= 1
    first = np.flatnonzero(new)
    time = t[perm]
    new[1:] |= time[1:] != time[:-1]
    tie = np.arange(n)
    tie *= new
    np.maximum.accumulate(tie, out=tie)
    return _Groups(perm=perm, gid=gid, first=first, tie=tie, time=time)


def _separate(
    perm: np.ndarray, boundary: np.ndarray, collide: np.ndarray, fold: np.ndarray, check: np.ndarray
) -> None:
    """Re-sort each run holding a collision by (fold, check, row); mark its key boundaries."""
    starts = np.concatenate([[0], np.flatnonzero(boundary) + 1, [perm.size]])
    for run in np.unique(np.searchsorted(starts, np.flatnonzero(collide) + 1, side="right") - 1):
        s, e = int(starts[run]), int(starts[run + 1])
        rows = perm[s:e]
        rows = rows[np.lexsort((rows, check[rows], fold[rows]))]
        perm[s:e] = rows
        collide[s : e - 1] = (check[rows[1:]] != check[rows[:-1]]) | (
            fold[rows[1:]] != fold[rows[:-1]]
        )


@dataclass
class _Keys:
    """The two hashes of each key of a grouping, in key order (ascending), to look keys up."""

    h0: np.ndarray
    h1: np.ndarray

    @classmethod
    def of(cls, groups: _Groups, h0: np.ndarray, h1: np.ndarray) -> _Keys:
        rows = groups.perm[groups.first]
        return cls(h0[rows], h1[rows])

    def find(self, h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
        """The key id of each (h0, h1); -1 where it is not a key."""
        if self.h0.size == 0:
            return np.full(h0.size, -1, dtype=np.intp)
        ordered = h0.size < 2 or bool(np.all(h0[1:] >= h0[:-1]))
        at = _searchsorted_sorted(self.h0, h0) if ordered else np.searchsorted(self.h0, h0)
        np.minimum(at, self.h0.size - 1, out=at)
        same0 = self.h0[at] == h0
        hit = same0 & (self.h1[at] == h1)
        for i in np.flatnonzero(same0 & ~hit):  # keys sharing a whole first hash: never seen
            j = int(at[i])
            while j < self.h0.size and self.h0[j] == h0[i] and self.h1[j] != h1[i]:
                j += 1
            if j < self.h0.size and self.h0[j] == h0[i]:
                at[i], hit[i] = j, True
        return np.where(hit, at, -1)


@dataclass(frozen=True)
class _Clock:
    """Encodes (key, time) as one sortable int64: key * width + clipped time, per key block.

    Times are clipped to a microsecond either side of the transfers' span: every query time
    lies inside it, so clipping never changes an order between a query and a data point, and
    the encoding plus one microsecond still sorts below the next key. Keys are split in
    blocks of `per` so that key * width stays below _BLOCK_LIMIT.
    """

    low: int
    width: int

    @classmethod
    def around(cls, t: np.ndarray, margin: int = 0) -> _Clock:
        return cls(low=int(t[0]) - 1, width=int(t[-1]) - int(t[0]) + 4 + margin)

    @property
    def per(self) -> int:
        return max(1, _BLOCK_LIMIT // self.width)

    def encode(self, key: np.ndarray, time: np.ndarray) -> np.ndarray:
        out = np.clip(time, self.low, self.low + self.width - 2)
        out -= self.low
        out += self.base(key)
        return out

    def base(self, key: np.ndarray) -> np.ndarray:
        """The encoding of (key, earliest time): where a key's run begins. Keys are sorted."""
        if key.size and int(key[-1]) >= self.per:  # else key % per is key: skip a pass
            key = key % self.per
        return key.astype(np.int64) * self.width


def _searchsorted_sorted(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """np.searchsorted(data, queries) for sorted queries, a chunk of queries at a time.

    Each chunk's answers lie in a short stretch of data that binary search keeps in cache:
    about 40% faster than one call over 10M rows here.
    """
    out = np.zeros(queries.size, dtype=np.intp)
    if queries.size == 0 or data.size == 0:
        return out
    n, c = queries.size, _MERGE_CHUNK
    first = np.searchsorted(data, queries[::c])
    last = np.searchsorted(
        data, queries[np.minimum(np.arange(c - 1, n + c - 1, c), n - 1)], "right"
    )
    for i, s0 in enumerate(range(0, n, c)):
        a, b = int(first[i]), int(last[i])
        np.add(np.searchsorted(data[a:b], queries[s0 : s0 + c]), a, out=out[s0 : s0 + c])
    return out


def _lower_bounds(
    clock: _Clock,
    d_key: np.ndarray,
    d_enc: np.ndarray,
    queries: list[tuple[np.ndarray, np.ndarray]],
) -> list[np.ndarray]:
    """For each query set (keys, encoded), the index of the first data point >= each query.

    Data and every query set are sorted by (key, time) and encoded by `clock`, block by block
    of keys: a merge of sorted integers.
    """
    top = max([int(d_key[-1]) if d_key.size else 0] + [int(q[-1]) for q, _ in queries if q.size])
    if top < clock.per:
        return [_searchsorted_sorted(d_enc, q_enc) for _, q_enc in queries]
    outs = []
    for q_key, q_enc in queries:
        out = np.empty(q_key.size, dtype=np.intp)
        for k0 in range(0, top + 1, clock.per):
            edges = np.array([k0, k0 + clock.per])
            d0, d1 = np.searchsorted(d_key, edges.astype(d_key.dtype))
            q0, q1 = np.searchsorted(q_key, edges.astype(q_key.dtype))
            out[q0:q1] = _searchsorted_sorted(d_enc[d0:d1], q_enc[q0:q1]) + d0
        outs.append(out)
    return outs


def _rolling_median_prior(
    clock: _Clock, key: np.ndarray, time: np.ndarray, values: np.ndarray, window: int
) -> np.ndarray:
    """Median of the non-NaN values of the same key with time in [time - window, time)."""
    wide = _Clock(clock.low, clock.width + window)  # keys further apart than a window
    out = np.empty(values.size, dtype=np.float64)
    for k0 in range(0, int(key[-1]) + 1, wide.per):
        s0, s1 = np.searchsorted(key, np.array([k0, k0 + wide.per], dtype=key.dtype))
        frame = pl.DataFrame(
            {"by": wide.encode(key[s0:s1], time[s0:s1]), "x": values[s0:s1]}, nan_to_null=True
        )
        median = frame.select(pl.col("x").rolling_median_by("by", f"{window}i", closed="left"))
        out[s0:s1] = median.to_series().fill_null(np.nan).to_numpy()
    return out


# --- the engine -----------------------------------------------------------------------------


class _BigBatchMemory:
    """Memory settings for big batches, process-wide while any runs, restored after the last.

    - Large numpy temporaries come from the malloc heap (glibc only). By default each one is
      mmap'ed and handed back to the kernel when freed, so the next one is faulted in again.
      Fresh memory costs 1-3 s per GB in page faults on the project's 2-core VM; keeping
      freed blocks in the heap reuses pages already mapped, and malloc_trim hands them back
      at the end. This holds for the main thread only: glibc serves other threads' blocks
      over 64 MB by mmap whatever the settings.
    - numpy stops asking for transparent huge pages. A huge-page fault may first compact
      memory to find 2 MB free; on the VM that doubled the kernel time of a 10M-row batch
      (13-15 s of system time with them, about 5 s without).

    Batches running at once in one process share the settings: the first sets them, the last
    to finish restores them.
    """

    _M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._huge_pages_asked: bool | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
            if self._running == 1:
                self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._restore()

    def _apply(self) -> None:
        libc = _libc()
        if libc is not None:
            libc.mallopt(self._M_MMAP_MAX, 0)
            libc.mallopt(self._M_TRIM_THRESHOLD, 2**31 - 1)
        huge_pages = getattr(_multiarray, "_set_madvise_hugepage", None)
        self._huge_pages_asked = huge_pages(False) if huge_pages else None

    def _restore(self) -> None:
        huge_pages = getattr(_multiarray, "_set_madvise_hugepage", None)
        if huge_pages and self._huge_pages_asked is not None:
            huge_pages(self._huge_pages_asked)
        libc = _libc()
        if libc is not None:
            libc.mallopt(self._M_MMAP_MAX, 65536)  # glibc's defaults
            libc.mallopt(self._M_TRIM_THRESHOLD, 128 * 1024)
            libc.malloc_trim(0)


_big_batch_memory = _BigBatchMemory()


def _populated_block(n: int) -> np.ndarray:
    """A zeroed (features x n) float64 block whose pages are mapped before features are written.

    Faulting the 3.5 GB of a 10M-row block in page by page as features are written cost the
    computing threads 5-7 s of system time here. Run on a thread of its own, this maps it
    in about 1 s while the inputs are read, 64 MB at a time (MADV_POPULATE_WRITE, Linux
    5.14+) so that the other threads' own mappings never wait long behind it.
    """
    shape = (len(FEATURE_NAMES), n)
    libc = _libc()
    if libc is None or n == 0:
        return np.empty(shape)
    size = 8 * shape[0] * n
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block = np.frombuffer(buffer, dtype=np.float64).reshape(shape)
    base, step = block.ctypes.data, 64 << 20
    populate_write = getattr(mmap, "MADV_POPULATE_WRITE", 23)
    for start in range(0, size, step):
        length = ctypes.c_size_t(min(step, size - start))
        if libc.madvise(ctypes.c_void_p(base + start), length, populate_write) != 0:
            break  # an older kernel: the pages fault in as they are written
    return block


def _big_batch_kernels() -> ModuleType:
    """The numba kernels, loaded (numba's import and the cached machine code take ~1 s)."""
    from pipelines.features import _kernels

    return _kernels


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library, when it is glibc-like (mallopt, malloc_trim, madvise); else None."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    needed = ("mallopt", "malloc_trim", "madvise")
    return libc if libc is not None and all(hasattr(libc, f) for f in needed) else None


class _Out:
    """Feature columns in created_at order: one block allocated up front, each row written once.

    Temporaries freed while computing then reuse the same heap space instead of new pages.
    """

    def __init__(
        self, n: int, block: np.ndarray | None = None, kernels: ModuleType | None = None
    ) -> None:
        self.block = np.empty((len(FEATURE_NAMES), n)) if block is None else block
        self.kernels = kernels  # the numba kernels, for big batches
        self.rows = {name: i for i, name in enumerate(FEATURE_NAMES)}
        self.done: set[str] = set()

    def column(self, name: str) -> np.ndarray:
        self.done.add(name)
        return self.block[self.rows[name]]

    def put(self, name: str, values: np.ndarray, perm: np.ndarray | None = None) -> None:
        """Values in created_at order, or in the order `perm` maps to it."""
        if perm is None:
            self.column(name)[:] = values
        elif self.kernels is not None:
            self.kernels.scatter(self.column(name), perm, values)
        else:
            self.column(name)[perm] = values

    def put_hours_since(self, name: str, g: _Groups, spans: _Spans) -> None:
        """Hours since the latest event of `spans` before each transfer; null if none."""
        column = self.column(name)
        column.fill(np.nan)
        if self.kernels is not None:
            self.kernels.hours_since(column, g.perm, g.time, spans.start, spans.stop, spans.time)
            return
        pos, hours = spans.hours(g)
        column[g.perm[pos]] = hours


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.true_divide(num, den)
    out[den == 0] = np.nan
    return out


def _in_window(prefix: np.ndarray, tie: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Sum of the values at positions [lo, tie) given their prefix sums."""
    out = prefix[tie]
    out -= prefix[lo]
    return out


def _range_sums(
    g: _Groups,
    values: np.ndarray,
    ranges: Iterable[tuple[np.ndarray, np.ndarray]],
    kernels: ModuleType | None = None,
) -> Iterator[np.ndarray]:
    """For each (lo, hi): per position, the int64 sum of `values` (in position order) over
    positions [lo, hi) of its key; lo and hi do not decrease along a key (window starts, ties,
    key starts). Without kernels the prefix sums are taken once for all the ranges."""
    prefix = _prefix(values) if kernels is None else None
    for lo, hi in ranges:
        if prefix is not None:
            yield _in_window(prefix, hi, lo)
            continue
        out = np.empty(values.size, dtype=np.int64)
        kernels.range_sums(g.bounds, lo, hi, values, out)
        yield out


def _range_sum(
    g: _Groups,
    values: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    kernels: ModuleType | None = None,
) -> np.ndarray:
    """_range_sums for one range."""
    (out,) = _range_sums(g, values, [(lo, hi)], kernels)
    return out


def _transfer_features(inp: _Inputs, out: _Out) -> None:
    out.put("amount_log", np.log1p(inp.amount / 100))
    out.put("payee_is_merchant", _bit(inp.flags, MERCHANT))
    for i, name in enumerate(_CHANNELS):
        out.put(f"channel_{name.lower()}", inp.channel == i)
    out.put("hour_ist", inp.hour)
    out.put("is_night_ist", inp.hour < 5)


def _pair_features(payer: _Groups, payee: _Groups, inp: _Inputs, out: _Out) -> np.ndarray:
    """Pair features; returns per row the pair facts the payer and payee features need.

    Facts: PAIR_FIRST, and for each distinct-count window w the FAR and REPEAT marks. Each
    occurrence j of a (payer, payee) pair covers the query times (t_j, t_j + w]; cut at the
    pair's next occurrence the pieces are disjoint, so the distinct counterparties in
    [t - w, t) are the pieces covering t = (rows before t) - (pieces ended before t). A piece
    ends at t_j + w when the next occurrence is that late or never (FAR marks row j: ended
    before t iff j is before the window), else at the next occurrence (REPEAT marks that next
    row: ended before t iff it is before t). Both counts are then prefix sums.
    """
    key = payer.to_rows(payer.gid)
    key *= payee.first.size
    key += payee.to_rows(payee.gid)
    # Multiplying by an odd constant is a bijection whose top bits spread consecutive ids.
    pair = _group(key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15), key, inp.t)
    del key
    start, tie, perm, time = pair.start, pair.tie, pair.perm, pair.time
    prior = tie - start
    amount = inp.amount[perm]
    sums = _range_sum(pair, amount, start, tie, out.kernels)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = amount / (sums / prior)
        days = (time - time[tie - 1]) / DAY
    del sums, amount
    none = prior == 0
    ratio[none] = np.nan
    days[none] = np.nan
    out.put("pair_prior_count", prior, perm)
    out.put("pair_is_first", out.column("pair_prior_count") == 0)  # row order: no scatter
    out.put("pair_amount_ratio_mean", ratio, perm)
    out.put("pair_days_since_last", days, perm)
    del ratio, days, prior

    n = time.size
    gap = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)  # gap[p]: from p - 1 to p
    np.subtract(time[1:], time[:-1], out=gap[1:n])
    gap[1:n][pair.gid[1:] != pair.gid[:-1]] = np.iinfo(np.int64).max
    facts = none.view(np.uint8).copy()  # PAIR_FIRST
    for w, span in _DISTINCT_WINDOWS.items():
        facts |= (gap[1:] >= span).view(np.uint8) * np.uint8(_FAR[w])
        facts |= (gap[:-1] < span).view(np.uint8) * np.uint8(_REPEAT[w])
    return pair.to_rows(facts)


def _new_device(payer: _Groups, inp: _Inputs) -> np.ndarray:
    """Per payer position: 1 if no earlier transfer of the payer used this device.

    Within a payer's transfers a device's first use starts a run of equal devices, so only run
    heads are grouped by (payer, device); the rest of a run is new only if tied with its head.
    """
    device = inp.hashes["payer_device_id_0"][payer.perm]
    other = inp.hashes["payer_device_id_1"][payer.perm]
    head = np.empty(device.size, dtype=bool)
    head[:1] = True
    np.not_equal(device[1:], device[:-1], out=head[1:])
    head[1:] |= other[1:] != other[:-1]
    head[payer.first] = True
    heads = np.flatnonzero(head)
    key = payer.gid[heads]
    sub = _group(_mix(key, device[heads]), _mix(key, other[heads]), payer.time[heads])
    del device, other
    head_new = sub.to_rows(sub.tie == sub.start)
    run = np.cumsum(head) - 1
    return head_new[run] & (payer.time == payer.time[heads][run])


@dataclass
class _Spans:
    """Per event: it is the latest of its kind for positions [start, stop) of its key."""

    start: np.ndarray
    stop: np.ndarray
    time: np.ndarray  # the event's time

    def hours(self, g: _Groups) -> tuple[np.ndarray, np.ndarray]:
        """The positions with an event strictly before them, and the hours since the latest."""
        length = np.maximum(self.stop - self.start, 0)
        event = np.repeat(np.arange(self.start.size), length)
        offset = self.start - (np.cumsum(length) - length)
        pos = np.arange(event.size) + np.repeat(offset, length)
        return pos, (g.time[pos] - self.time[event]) / HOUR


def _event_spans(
    g: _Groups,
    enc: np.ndarray,
    clock: _Clock,
    ev_key: np.ndarray,
    ev_time: np.ndarray,
    ev_kind: np.ndarray,
    kinds: list[int],
) -> list[_Spans]:
    """Per kind: where each event of that kind is the latest one strictly before a position.

    Events are few, so each is merged into the sorted transfers once: it is the latest for the
    positions from the first one after it to the next event of its key and kind (or the key's
    end).
    """
    keep = ev_key >= 0
    ev_key, ev_time, ev_kind = ev_key[keep], ev_time[keep], ev_kind[keep]
    order = np.lexsort((ev_time, ev_key))
    ev_key, ev_time, ev_kind = ev_key[order], ev_time[order], ev_kind[order]
    (after,) = _lower_bounds(clock, g.gid, enc, [(ev_key, clock.encode(ev_key, ev_time) + 1)])
    end = g.end[ev_key]
    spans = []
    for kind in kinds:
        sel = np.flatnonzero(ev_kind == kind)
        key, start, stop = ev_key[sel], after[sel], end[sel].copy()
        same = key[1:] == key[:-1]
        stop[:-1][same] = np.minimum(stop[:-1][same], start[1:][same])
        spans.append(_Spans(start, stop, ev_time[sel]))
    return spans


def _zscore(
    g: _Groups, amount: np.ndarray, ok: np.ndarray, lo: np.ndarray, kernels: ModuleType | None
) -> np.ndarray:
    """(amount - mean) / sample std of the key's successful amounts in positions [lo, tie).

    Exact in integer paise: with s1, s2 the window's sums of deviations from the key's first
    amount and of their squares, cnt * s2 - s1**2 is the sum of squared pairwise differences,
    0 exactly when all amounts are equal (null, not noise). Differences of wrapping int64
    prefix sums are exact while the window's own sums fit; rows where a product might not
    are redone with Python integers, and windows whose s2 itself might not fit (thousands of
    near-limit amounts in 30 days) in floating point.
    """
    tie = g.tie
    own = amount - amount[g.start]
    dev = np.where(ok, own, 0)
    cnt = _range_sum(g, ok, lo, tie, kernels)
    s1 = _range_sum(g, dev, lo, tie, kernels)
    top = float(np.abs(dev).max()) if dev.size else 0.0
    most = float(cnt.max()) if cnt.size else 0.0
    with np.errstate(over="ignore"):
        np.multiply(dev, dev, out=dev)
        s2 = _range_sum(g, dev, lo, tie, kernels)
        del dev
        q = cnt * s2
        q -= s1 * s1
    if most * most * top * top >= 2.0**62:  # a product might overflow somewhere: find where
        s1f, s2f, cntf = s1.astype(np.float64), s2.astype(np.float64), cnt.astype(np.float64)
        floaty = cntf * top * top >= 2.0**62
        if floaty.any():
            dev_f = np.where(ok, own, 0).astype(np.float64)
            squares_f = _prefix(dev_f * dev_f, np.float64)
            s2f[floaty] = (squares_f[tie] - squares_f[lo])[floaty]
            s2[floaty] = 0
        wide = ~floaty & ((cntf * s2f >= 2.0**62) | (s1f * s1f >= 2.0**62))
        qf = q.astype(np.float64)
        for i in np.flatnonzero(wide):
            qf[i] = float(int(cnt[i]) * int(s2[i]) - int(s1[i]) ** 2)
        rough = cntf[floaty] * s2f[floaty] - s1f[floaty] ** 2
        qf[floaty] = np.where(rough > 1e-9 * cntf[floaty] * s2f[floaty], rough, 0.0)
    else:
        qf = q.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (own - s1 / cnt) / np.sqrt(qf / (cnt * (cnt - 1.0)))
    z[~(qf > 0)] = np.nan
    return z


def _window_bounds(
    clock: _Clock,
    g: _Groups,
    enc: np.ndarray,
    spans: dict[str, int],
    kernels: ModuleType | None = None,
) -> dict[str, np.ndarray]:
    """Per window: the first position of the key at or after created_at - span."""
    if kernels is not None:
        lo = {w: np.empty(g.gid.size, dtype=np.intp) for w in spans}
        for w, span in spans.items():
            kernels.window_starts(g.time, g.bounds, span, lo[w])
        return lo
    base = clock.base(g.gid)
    lo = {}
    for w, span in spans.items():
        q = enc - span
        np.maximum(q, base, out=q)  # times before the transfers' span clip to the key's start
        (lo[w],) = _lower_bounds(clock, g.gid, enc, [(g.gid, q)])
        del q
    return lo


def _payer_features(
    g: _Groups,
    inp: _Inputs,
    clock: _Clock,
    events: _EventTable,
    keys: _Keys,
    out: _Out,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Payer features but those of counterparties; returns the encoded positions, the prefix
    sums of money sent and the 24-hour window starts."""
    key, perm, tie = g.gid, g.perm, g.tie
    n = key.size
    enc = clock.encode(key, g.time)
    lo = _window_bounds(clock, g, enc, _PAYER_WINDOWS, out.kernels)
    amount = inp.amount[perm]
    work, ratio = np.empty(n, dtype=np.int64), np.empty(n)
    windows = _range_sums(g, amount, ((lo[w], tie) for w in _PAYER_WINDOWS), out.kernels)
    for w, sums in zip(_PAYER_WINDOWS, windows, strict=True):
        np.copyto(ratio, np.subtract(tie, lo[w], out=work))  # scatters cast slowly: cast first
        out.put(f"payer_count_{w}", ratio, perm)
        out.put(f"payer_amount_{w}", np.divide(sums, 100, out=ratio), perm)
        del sums
    lo24, lo30 = lo["24h"], lo["30d"]
    del lo
    flags = inp.flags[perm]
    ok = _bit(flags, OK)
    good = amount.astype(np.float64)
    good[~ok] = np.nan
    if out.kernels is not None:
        median = np.empty(n)
        out.kernels.rolling_median_prior(g.bounds, g.time, good, 30 * DAY, median)
    else:
        median = _rolling_median_prior(clock, key, g.time, good, 30 * DAY)
    del good
    out.put("payer_amount_ratio_median_30d", np.divide(amount, median, out=ratio), perm)
    del median
    out.put("payer_amount_zscore_30d", _zscore(g, amount, ok, lo30, out.kernels), perm)

    kinds = [_EVENT_CODE[k] for k in _PAYER_EVENTS.values()]
    ev_key = keys.find(events.h0, events.h1)
    spans = _event_spans(g, enc, clock, ev_key, events.time, events.kind, kinds)
    for name, span in zip(_PAYER_EVENTS, spans, strict=True):
        out.put_hours_since(name, g, span)
    del spans, ev_key

    for name, mask in (("pin", PIN_FAIL), ("funds", FUNDS_FAIL)):
        fails = _range_sum(g, _bit(flags, mask), lo24, tie, out.kernels)
        out.put(f"payer_failed_{name}_24h", fails, perm)
    night = _range_sum(g, _bit(flags, NIGHT), lo30, tie, out.kernels)
    out.put("payer_night_share_30d", _ratio(night, tie - lo30), perm)
    del night, fails, flags
    amount[~ok] = 0
    return enc, _prefix(amount), lo24


def _payer_counterparty_features(
    g: _Groups, facts: np.ndarray, lo24: np.ndarray, out: _Out
) -> None:
    """The payer's distinct and first-time payees over 24 hours, from the pair facts."""
    perm, tie = g.perm, g.tie
    pf = facts[perm]
    distinct = _distinct(g, pf, "24h", lo24, out.kernels)
    out.put("payer_distinct_payees_24h", distinct, perm)
    firsts = _range_sum(g, _bit(pf, PAIR_FIRST), lo24, tie, out.kernels)
    del pf
    out.put("payer_new_payee_share_24h", _ratio(firsts, tie - lo24), perm)


def _distinct(
    g: _Groups, facts: np.ndarray, w: str, lo: np.ndarray, kernels: ModuleType | None
) -> np.ndarray:
    """Distinct counterparties in positions [lo, tie) from the pair facts (see _pair_features)."""
    start, tie = g.start, g.tie
    out = tie - start
    out -= _range_sum(g, _bit(facts, _REPEAT[w]), start, tie, kernels)
    out -= _range_sum(g, _bit(facts, _FAR[w]), start, lo, kernels)
    return out


def _payee_features(
    g: _Groups,
    payer: _Groups,
    inp: _Inputs,
    facts: np.ndarray,
    clock: _Clock,
    events: _EventTable,
    keys: _Keys,
    payer_keys: _Keys,
    out: _Out,
) -> _Onward:
    """Payee features but pass-through; returns what pass-through needs of them."""
    key, perm, tie, start = g.gid, g.perm, g.tie, g.start
    enc = clock.encode(key, g.time)
    lo = _window_bounds(clock, g, enc, _PAYEE_WINDOWS, out.kernels)

    pf = facts[perm]
    for w in _DISTINCT_WINDOWS:
        out.put(f"payee_distinct_payers_{w}", _distinct(g, pf, w, lo[w], out.kernels), perm)
    del pf
    flags = inp.flags[perm]
    received = inp.amount[perm]
    received[~_bit(flags, OK)] = 0
    inbound = _range_sum(g, received, lo["24h"], tie, out.kernels)
    del received
    out.put("payee_inbound_amount_24h", inbound / 100, perm)

    # Account age: latest registration, else first appearance as payee or payer (which is
    # prior exactly when it is before t).
    as_payer = payer_keys.find(keys.h0, keys.h1)[key]
    known = np.flatnonzero(as_payer >= 0)
    as_payer = as_payer[known]
    seen = g.time[g.first][key]
    seen[known] = np.minimum(seen[known], payer.time[payer.first][as_payer])
    ev_key = keys.find(events.h0, events.h1)
    code = _EVENT_CODE["REGISTERED"]
    (span,) = _event_spans(g, enc, clock, ev_key, events.time, events.kind, [code])
    pos, hours = span.hours(g)
    age = (g.time - seen) / HOUR
    age[seen >= g.time] = np.nan
    age[pos] = hours
    out.put("payee_account_age_hours", age, perm)
    del seen, age, pos, hours, ev_key

    count24 = tie - lo["24h"]
    out.put("payee_volume_spike", count24 / ((lo["24h"] - lo["8d"]) / 7 + 1), perm)
    frauds = _fraud_reports(g, enc, clock, inp.fraud_rows, inp.fraud_known_at)
    out.put("payee_fraud_reports", frauds, perm)
    out.put("payee_fraud_rate_reported", frauds / (tie - start + FRAUD_RATE_PRIOR), perm)
    lo7 = lo["7d"]
    fails = _range_sum(g, _bit(flags, FAILED), lo7, tie, out.kernels)
    out.put("payee_decline_rate_7d", _ratio(fails, tie - lo7), perm)
    return _Onward(known=known, as_payer=as_payer, inbound=inbound)


@dataclass
class _Onward:
    """Per payee position: the positions whose payee also pays (`known`), its payer key id
    there (`as_payer`), and the money it received over 24 hours (`inbound`, all positions)."""

    known: np.ndarray
    as_payer: np.ndarray
    inbound: np.ndarray


def _passthrough(
    g: _Groups,
    payer: _Groups,
    payer_enc: np.ndarray,
    sent: np.ndarray,
    onward: _Onward,
    clock: _Clock,
    out: _Out,
) -> None:
    """payee_passthrough_24h: what the payee sent on over the 24 hours before, as a payer."""
    q_key, q_time = onward.as_payer, g.time[onward.known]
    hi, lo_sent = _lower_bounds(
        clock,
        payer.gid,
        payer_enc,
        [(q_key, clock.encode(q_key, q_time)), (q_key, clock.encode(q_key, q_time - DAY))],
    )
    outbound = np.zeros(g.gid.size, dtype=np.int64)
    outbound[onward.known] = sent[hi] - sent[lo_sent]
    out.put("payee_passthrough_24h", _ratio(outbound, onward.inbound), g.perm)


def _fraud_reports(
    g: _Groups, enc: np.ndarray, clock: _Clock, rows: np.ndarray, known_at: np.ndarray
) -> np.ndarray:
    """Per position: prior transfers of the key whose fraud was known before this one.

    Each reported transfer counts from the first position of its key after max(its
    created_at, its first FRAUD report); a count past the key's last row is dropped.
    """
    counts = np.zeros(g.gid.size + 1, dtype=np.int64)
    if rows.size:
        marked = np.zeros(g.gid.size, dtype=bool)
        marked[rows] = True
        reported = np.flatnonzero(marked[g.perm])
        key = g.gid[reported]
        when = known_at[np.searchsorted(rows, g.perm[reported])]
        order = np.lexsort((when, key))
        key, when = key[order], when[order]
        (after,) = _lower_bounds(clock, g.gid, enc, [(key, clock.encode(key, when) + 1)])
        inside = after < g.end[key]
        counts += np.bincount(after[inside], minlength=counts.size)
    running = np.cumsum(counts)
    return running[:-1] - (running[g.start] - counts[g.start])


@dataclass
class _EventTable:
    """Account events of the kinds features use: hashes of the VPA, kind code, time."""

    h0: np.ndarray
    h1: np.ndarray
    kind: np.ndarray
    time: np.ndarray


_EVENT_CODE = {kind: i for i, kind in enumerate(sorted(set(_PAYER_EVENTS.values())))}


def _event_table(account_events: pl.DataFrame) -> _EventTable:
    _require(account_events, ACCOUNT_EVENT_COLUMNS, "account_events")
    frame = (
        account_events.lazy()
        .filter(pl.col("event_type").is_in(list(_EVENT_CODE)) & pl.col("event_time").is_not_null())
        .select(
            *_hash_exprs("vpa"),
            pl.col("event_type").replace_strict(_EVENT_CODE, return_dtype=pl.Int8).alias("kind"),
            pl.col("event_time").dt.cast_time_unit("us").to_physical().alias("time"),
        )
        .collect()
    )
    h0 = frame["vpa_0"].to_numpy()
    order = np.argsort(h0)  # key lookups by sorted hashes merge instead of jumping around
    return _EventTable(
        h0=h0[order],
        h1=frame["vpa_1"].to_numpy()[order],
        kind=frame["kind"].to_numpy()[order],
        time=frame["time"].to_numpy()[order],
    )


def _compute(
    inp: _Inputs,
    account_events: pl.DataFrame,
    big: tuple[Future[np.ndarray], Future[ModuleType]] | None = None,
) -> np.ndarray:
    """Every feature, one row of the returned block per FEATURE_NAMES, in created_at order.

    The payer side runs on this thread and, in big batches, the payee side on a second one, in
    three steps joined in turn (each side needs the other's result of the step before). numpy,
    Polars and the kernels release the GIL in their loops, so the two sides share the cores.
    """
    t, h = inp.t, inp.hashes
    clock = _Clock.around(t)
    out = _Out(t.size) if big is None else _Out(t.size, big[0].result(), big[1].result())
    with _Inline() if big is None else ThreadPoolExecutor(max_workers=1) as pool:

        def payee_group() -> tuple[_Groups, _EventTable]:
            return _group(h["payee_vpa_0"], h["payee_vpa_1"], t), _event_table(account_events)

        payee_side = pool.submit(payee_group)
        _transfer_features(inp, out)
        payer = _group(h["payer_vpa_0"], h["payer_vpa_1"], t)
        payer_keys = _Keys.of(payer, h.pop("payer_vpa_0"), h.pop("payer_vpa_1"))
        payee, events = payee_side.result()
        payee_keys = _Keys.of(payee, h.pop("payee_vpa_0"), h.pop("payee_vpa_1"))

        def payee_features() -> tuple[np.ndarray, _Onward]:
            facts = _pair_features(payer, payee, inp, out)
            onward = _payee_features(
                payee, payer, inp, facts, clock, events, payee_keys, payer_keys, out
            )
            return facts, onward

        payee_side = pool.submit(payee_features)
        payer_enc, sent, lo24 = _payer_features(payer, inp, clock, events, payer_keys, out)
        out.put("payer_new_device", _new_device(payer, inp), payer.perm)
        facts, onward = payee_side.result()
        h.clear()

        payee_side = pool.submit(_passthrough, payee, payer, payer_enc, sent, onward, clock, out)
        _payer_counterparty_features(payer, facts, lo24, out)
        payee_side.result()
    missing = set(FEATURE_NAMES) ^ out.done
    assert not missing, f"features computed and catalogued differ: {sorted(missing)}"
    return out.block


class _Inline:
    """An executor that runs each task when submitted: small batches (the single-transfer
    path above all) gain nothing from a second thread but its start-up."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        done: Future[_T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # handed to the caller, as a pool would
            done.set_exception(exc)
        return done


def compute_features(
    transfers: pl.DataFrame,
    account_events: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    targets: pl.Series | None = None,
) -> pl.DataFrame:
    """Every feature of FEATURE_NAMES for each transfer, point in time (see the module doc).

    `transfers` has at least TRANSFER_COLUMNS, one row per transfer_id (its current state, as
    in ledger.transfers). Returns transfer_id plus one Float64 column per feature, null where
    unknown, one row per transfer in created_at order (ties in input order). `targets` limits
    the output to those transfer_ids; every transfer still counts as history.
    """
    big = transfers.height >= _BIG_BATCH
    # Only big batches gain from the memory settings, and they are process-wide.
    with _big_batch_memory() if big else nullcontext(), ThreadPoolExecutor(2) as pool:
        ready = None
        if big:  # made ready while the inputs are read
            ready = pool.submit(_populated_block, transfers.height), pool.submit(_big_batch_kernels)
        inp = _inputs(transfers, labels)
        if inp.t.size == 0:
            return pl.DataFrame(
                schema={"transfer_id": pl.String, **dict.fromkeys(FEATURE_NAMES, pl.Float64)}
            )
        block = _compute(inp, account_events, ready)
    frame = pl.DataFrame(
        [
            inp.transfer_id,
            *(pl.Series(name, block[i], nan_to_null=True) for i, name in enumerate(FEATURE_NAMES)),
        ]
    )
    if targets is not None:
        frame = frame.filter(pl.col("transfer_id").is_in(targets.implode()))
    return frame


def features_for_transfer(
    transfer: dict,
    history: pl.DataFrame,
    account_events: pl.DataFrame,
    labels: pl.DataFrame,
) -> dict[str, float | None]:
    """The features of one incoming transfer, from the same engine as the batch.

    `transfer` holds at least TRANSFER_COLUMNS except status and response_code (it has no
    outcome yet). Rows of `history` at or after its created_at, and the transfer itself if
    present, are ignored; only the payer's and payee's rows are read.
    """
    missing = [c for c in TRANSFER_COLUMNS if c not in transfer and c not in _OUTCOME]
    if missing:
        raise ValueError(f"transfer lacks {missing}; expected {TRANSFER_COLUMNS}")
    created = transfer["created_at"]
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    cutoff = _epoch_us(created)
    row = {c: transfer.get(c) for c in TRANSFER_COLUMNS} | {"created_at": created}
    row["status"] = row["status"] or "PENDING"
    one = pl.DataFrame([row], schema=_TRANSFER_SCHEMA)
    payer, payee = transfer["payer_vpa"], transfer["payee_vpa"]
    relevant = (
        history.lazy()
        .select(TRANSFER_COLUMNS)
        .filter(
            (pl.col("created_at").dt.epoch("us") < cutoff)
            & (pl.col("transfer_id") != transfer["transfer_id"])
            & (pl.col("payer_vpa").is_in([payer, payee]) | (pl.col("payee_vpa") == payee))
        )
        .with_columns(_as_utc("created_at"))
        .cast(_TRANSFER_SCHEMA)
        .collect()
    )
    events = account_events.select(ACCOUNT_EVENT_COLUMNS).filter(
        pl.col("vpa").is_in([payer, payee]) & (pl.col("event_time").dt.epoch("us") < cutoff)
    )
    ids = pl.concat([relevant["transfer_id"], one["transfer_id"]])
    known = labels.select(LABEL_COLUMNS).filter(
        pl.col("transfer_id").is_in(ids.implode()) & (pl.col("reported_at").dt.epoch("us") < cutoff)
    )
    frame = compute_features(pl.concat([relevant, one]), events, known, targets=one["transfer_id"])
    return {name: frame[name][0] for name in FEATURE_NAMES}


_OUTCOME = ("status", "response_code")


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _as_utc(column: str) -> pl.Expr:
    """A Datetime column as Datetime(us, UTC), whatever its unit or zone (naive = UTC)."""
    return pl.from_epoch(pl.col(column).dt.epoch("us"), time_unit="us").dt.replace_time_zone("UTC")


_TRANSFER_SCHEMA = {
    "transfer_id": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "payer_vpa": pl.String,
    "payee_vpa": pl.String,
    "payee_type": pl.String,
    "amount_paise": pl.Int64,
    "channel": pl.String,
    "payer_device_id": pl.String,
    "status": pl.String,
    "response_code": pl.String,
}


def load_inputs(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(transfers, account_events, labels) from the warehouse, with the columns features use.

    `since` keeps transfers created at or after it, and the labels of those transfers (account
    events are all kept: registrations are old). Windowed features of transfers less than
    LONGEST_WINDOW after `since`, and lifetime ones (pair_prior_count, payer_new_device, ...),
    then see only that much history: pass `since` = first target - LONGEST_WINDOW or earlier.
    `until` keeps what was known before it (transfers created, events happened, labels
    reported): the warehouse as of that moment, e.g. for a backtest.
    """
    transfer_where = ["true"]
    if since is not None:
        transfer_where.append("created_at >= $since")
    if until is not None:
        transfer_where.append("created_at < $until")
    bounds = {k: v for k, v in {"since": since, "until": until}.items() if v is not None}
    where = " AND ".join(transfer_where)
    transfers = con.sql(
        f"SELECT {', '.join(TRANSFER_COLUMNS)} FROM ledger.transfers WHERE {where} "
        "ORDER BY created_at, first_seq",
        params=bounds,
    ).pl()
    account_events = con.sql(
        f"SELECT {', '.join(ACCOUNT_EVENT_COLUMNS)} FROM ledger.account_events "
        + ("WHERE event_time < $until" if until is not None else ""),
        params={"until": until} if until is not None else None,
    ).pl()
    label_where = ["true"]
    if since is not None:
        label_where.append(
            "transfer_id IN (SELECT transfer_id FROM ledger.transfers WHERE created_at >= $since)"
        )
    if until is not None:
        label_where.append("reported_at < $until")
    labels = con.sql(
        f"SELECT {', '.join(LABEL_COLUMNS)} FROM ledger.labels WHERE {' AND '.join(label_where)}",
        params=bounds,
    ).pl()
    return transfers, account_events, labels
