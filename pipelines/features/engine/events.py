"""Account events merged into the sorted transfers: the latest event of a kind before each one.

Events are few, so each is merged into the sorted transfers once: it is the latest of its
kind for the positions from the first one after it to the next event of its key and kind (or
the key's end). Hours since it are then written span by span, without a join.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.features.engine.inputs import HOUR
from pipelines.features.engine.sorted_keys import Clock, Groups, lower_bounds


@dataclass
class Spans:
    """Per event: it is the latest of its kind for positions [start, stop) of its key."""

    start: np.ndarray
    stop: np.ndarray
    time: np.ndarray  # the event's time

    def hours(self, g: Groups) -> tuple[np.ndarray, np.ndarray]:
        """The positions with an event strictly before them, and the hours since the latest."""
        length = np.maximum(self.stop - self.start, 0)
        event = np.repeat(np.arange(self.start.size), length)
        offset = self.start - (np.cumsum(length) - length)
        pos = np.arange(event.size) + np.repeat(offset, length)
        return pos, (g.time[pos] - self.time[event]) / HOUR


def event_spans(
    g: Groups,
    enc: np.ndarray,
    clock: Clock,
    ev_key: np.ndarray,
    ev_time: np.ndarray,
    ev_kind: np.ndarray,
    kinds: list[int],
) -> list[Spans]:
    """Per kind: where each event of that kind is the latest one strictly before a position."""
    keep = ev_key >= 0
    ev_key, ev_time, ev_kind = ev_key[keep], ev_time[keep], ev_kind[keep]
    order = np.lexsort((ev_time, ev_key))
    ev_key, ev_time, ev_kind = ev_key[order], ev_time[order], ev_kind[order]
    (after,) = lower_bounds(clock, g.gid, enc, [(ev_key, clock.encode(ev_key, ev_time) + 1)])
    end = g.end[ev_key]
    spans = []
    for kind in kinds:
        sel = np.flatnonzero(ev_kind == kind)
        key, start, stop = ev_key[sel], after[sel], end[sel].copy()
        same = key[1:] == key[:-1]
        stop[:-1][same] = np.minimum(stop[:-1][same], start[1:][same])
        spans.append(Spans(start, stop, ev_time[sel]))
    return spans
