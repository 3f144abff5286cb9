"""Recent fraud reports on an entity's transfers (the payer's, the payee's, the device's): the
catalogue's `<entity>_fraud_reports_<w>`, `<entity>_fraud_rate_<w>` and
`<entity>_days_since_fraud_report`.

Reported frauds are few (well under 1% of transfers), so each is merged into its key's sorted
positions once: a fraud known at K (its first report, or its created_at if reported earlier)
about a transfer created at c counts in the window reports of the positions with time in
(K, K + w], and in the window rate of those with time in (K, c + w]. Both are runs of the
key's positions, found by binary search, and added up as +1 / -1 marks and one prefix sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.features import definitions
from pipelines.features.engine.events import event_spans
from pipelines.features.engine.inputs import DAY, Inputs
from pipelines.features.engine.output import Out
from pipelines.features.engine.sorted_keys import Clock, Groups, lower_bounds
from pipelines.features.engine.windows import ratio

# The catalogue names the windows in days ("1d", "7d", "30d"); here each is its span.
LABEL_WINDOWS = {w: int(w.removesuffix("d")) * DAY for w in definitions.LABEL_WINDOWS}


@dataclass
class Frauds:
    """The reported frauds among a grouping's positions, sorted by (key, known_at)."""

    key: np.ndarray
    created: np.ndarray
    known: np.ndarray

    @classmethod
    def of(cls, g: Groups, inp: Inputs) -> Frauds:
        if inp.fraud_rows.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty.astype(g.gid.dtype), empty, empty)
        marked = np.zeros(g.gid.size, dtype=bool)
        marked[inp.fraud_rows] = True
        pos = np.flatnonzero(marked[g.perm])
        known = inp.fraud_known_at[np.searchsorted(inp.fraud_rows, g.perm[pos])]
        key, created = g.gid[pos], g.time[pos]
        order = np.lexsort((known, key))
        return cls(key[order], created[order], known[order])


def label_features(
    entity: str,
    g: Groups,
    enc: np.ndarray,
    clock: Clock,
    inp: Inputs,
    lo: dict[str, np.ndarray],
    out: Out,
) -> None:
    """The label features of `entity` ("payer", "payee" or "device") in grouping `g`.

    `enc` is g's encoded (key, time) and `lo[w]` its window starts for each LABEL_WINDOWS span
    (the first position at or after time - span).
    """
    frauds = Frauds.of(g, inp)
    n = g.gid.size
    key = frauds.key
    (after,) = _first_after(clock, g, enc, key, frauds.known)  # time > K: the fraud is known
    by_created = np.lexsort((frauds.created, key))
    for w, span in LABEL_WINDOWS.items():
        (reports_end,) = _first_after(clock, g, enc, key, frauds.known + span)
        out.put(f"{entity}_fraud_reports_{w}", _runs(n, after, reports_end), g.perm)
        # Runs (K, c + w]: empty when the fraud was reported a window or more after it was made.
        (made_end,) = _first_after(
            clock, g, enc, key[by_created], frauds.created[by_created] + span
        )
        rate_end = np.empty_like(made_end)
        rate_end[by_created] = made_end
        known_made = _runs(n, after, np.maximum(rate_end, after))
        out.put(f"{entity}_fraud_rate_{w}", ratio(known_made, g.tie - lo[w]), g.perm)
    name = f"{entity}_days_since_fraud_report"
    (span,) = event_spans(g, enc, clock, key, frauds.known, np.zeros(key.size, np.int8), [0])
    out.put_hours_since(name, g, span)
    column = out.column(name)
    column /= 24


def _first_after(
    clock: Clock, g: Groups, enc: np.ndarray, key: np.ndarray, time: np.ndarray
) -> list[np.ndarray]:
    """Per (key, time), sorted by key then time: the first position of the key after time."""
    return lower_bounds(clock, g.gid, enc, [(key, clock.encode(key, time) + 1)])


def _runs(n: int, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Per position, how many runs [start, stop) cover it (runs stay inside their key)."""
    marks = np.bincount(start, minlength=n + 1)
    marks -= np.bincount(stop, minlength=n + 1)
    return np.cumsum(marks[:n])
