"""Rows sorted by (key, created_at), and lookups in them by merging sorted integers.

Every key (payer, payee, pair) is one sort of the rows by (key, created_at): a row's prior
window is then a slice [lo, tie) of its key's run, where `tie` is the first row of the key at
the same created_at and `lo` the first row at or after created_at - window. `lo` is a binary
search of (key, time) encoded as one sortable integer (`Clock`). Strings are keyed by two
independent 64-bit hashes (a 128-bit key); nothing else is approximate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

_BLOCK_LIMIT = 1 << 62  # encoded (key, time) values stay below this
_MERGE_CHUNK = 1 << 14  # queries per binary-search chunk


@dataclass
class Groups:
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


def group(fold: np.ndarray, check: np.ndarray, t: np.ndarray) -> Groups:
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
    return Groups(perm=perm, gid=gid, first=first, tie=tie, time=time)


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


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit hash of two integer columns (splitmix64 finaliser), to order composite keys."""
    x = a.astype(np.uint64)
    x *= np.uint64(0x9E3779B97F4A7C15)
    x += b.astype(np.uint64, copy=False)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x ^= x >> np.uint64(shift)
        x *= np.uint64(factor)
    x ^= x >> np.uint64(31)
    return x


@dataclass
class Keys:
    """The two hashes of each key of a grouping, in key order (ascending), to look keys up."""

    h0: np.ndarray
    h1: np.ndarray

    @classmethod
    def of(cls, groups: Groups, h0: np.ndarray, h1: np.ndarray) -> Keys:
        rows = groups.perm[groups.first]
        return cls(h0[rows], h1[rows])

    def find(self, h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
        """The key id of each (h0, h1); -1 where it is not a key."""
        if self.h0.size == 0:
            return np.full(h0.size, -1, dtype=np.intp)
        ordered = h0.size < 2 or bool(np.all(h0[1:] >= h0[:-1]))
        at = searchsorted_sorted(self.h0, h0) if ordered else np.searchsorted(self.h0, h0)
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
class Clock:
    """Encodes (key, time) as one sortable int64: key * width + clipped time, per key block.

    Times are clipped to a microsecond either side of the transfers' span: every query time
    lies inside it, so clipping never changes an order between a query and a data point, and
    the encoding plus one microsecond still sorts below the next key. Keys are split in
    blocks of `per` so that key * width stays below _BLOCK_LIMIT.
    """

    low: int
    width: int

    @classmethod
    def around(cls, t: np.ndarray, margin: int = 0) -> Clock:
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


def searchsorted_sorted(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
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


def lower_bounds(
    clock: Clock,
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
        return [searchsorted_sorted(d_enc, q_enc) for _, q_enc in queries]
    outs = []
    for q_key, q_enc in queries:
        out = np.empty(q_key.size, dtype=np.intp)
        for k0 in range(0, top + 1, clock.per):
            edges = np.array([k0, k0 + clock.per])
            d0, d1 = np.searchsorted(d_key, edges.astype(d_key.dtype))
            q0, q1 = np.searchsorted(q_key, edges.astype(q_key.dtype))
            out[q0:q1] = searchsorted_sorted(d_enc[d0:d1], q_enc[q0:q1]) + d0
        outs.append(out)
    return outs
