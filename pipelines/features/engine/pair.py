"""Features of the (payer, payee) pair, and the pair facts behind distinct-counterparty counts.

Distinct counts in a window use each pair's previous and next occurrence, so they need no
sort of their own: see `pair_features` for how, and `distinct` for the count.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

import numpy as np

from pipelines.features.engine.inputs import DAY, HOUR, Inputs, bit
from pipelines.features.engine.output import Out
from pipelines.features.engine.sorted_keys import Groups, group
from pipelines.features.engine.windows import range_sum

DISTINCT_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}  # distinct counterparties
# One byte of facts about each transfer's pair, for first-payee and distinct counts.
PAIR_FIRST = 1
_FAR = {w: 1 << (1 + 2 * i) for i, w in enumerate(DISTINCT_WINDOWS)}
_REPEAT = {w: 1 << (2 + 2 * i) for i, w in enumerate(DISTINCT_WINDOWS)}


def pair_features(payer: Groups, payee: Groups, inp: Inputs, out: Out) -> np.ndarray:
    """Pair features; returns per row the pair facts the payer and payee features need.

    Facts: PAIR_FIRST, and for each distinct-count window w the FAR and REPEAT marks. Each
    occurrence j of a (payer, payee) pair covers the query times (t_j, t_j + w]; cut at the
    pair's next occurrence the pieces are disjoint, so the distinct counterparties in
    [t - w, t) are the pieces covering t = (rows before t) - (pieces ended before t). A piece
    ends at t_j + w when the next occurrence is that late or never (FAR marks row j: ended
    before t iff j is before the window), else at the next occurrence (REPEAT marks that next
    row: ended before t iff it is before t). Both counts are then prefix sums.
    """
    pair = pair_groups(payer, payee, inp.t)
    start, tie, perm, time = pair.start, pair.tie, pair.perm, pair.time
    prior = tie - start
    amount = inp.amount[perm]
    sums = range_sum(pair, amount, start, tie, out.kernels)
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

    facts = window_facts(pair, DISTINCT_WINDOWS)
    facts |= none.view(np.uint8)  # PAIR_FIRST
    return pair.to_rows(facts)


def window_facts(pair: Groups, windows: Iterable[str]) -> np.ndarray:
    """The FAR and REPEAT marks of `windows` (of DISTINCT_WINDOWS) for each position of a
    grouping by (entity, counterparty), as `pair_features` explains them."""
    time = pair.time
    n = time.size
    gap = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)  # gap[p]: from p - 1 to p
    np.subtract(time[1:], time[:-1], out=gap[1:n])
    gap[1:n][pair.gid[1:] != pair.gid[:-1]] = np.iinfo(np.int64).max
    facts = np.zeros(n, dtype=np.uint8)
    for w in windows:
        span = DISTINCT_WINDOWS[w]
        facts |= (gap[1:] >= span).view(np.uint8) * np.uint8(_FAR[w])
        facts |= (gap[:-1] < span).view(np.uint8) * np.uint8(_REPEAT[w])
    return facts


def pair_groups(a: Groups, b: Groups, t: np.ndarray) -> Groups:
    """Rows grouped by the pair of their keys in groupings `a` and `b`."""
    key = a.to_rows(a.gid)
    key *= b.first.size
    key += b.to_rows(b.gid)
    # Multiplying by an odd constant is a bijection whose top bits spread consecutive ids.
    return group(key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15), key, t)


def distinct(
    g: Groups, facts: np.ndarray, w: str, lo: np.ndarray, kernels: ModuleType | None
) -> np.ndarray:
    """Distinct counterparties in positions [lo, tie) from the pair facts (see pair_features)."""
    start, tie = g.start, g.tie
    out = tie - start
    out -= range_sum(g, bit(facts, _REPEAT[w]), start, tie, kernels)
    out -= range_sum(g, bit(facts, _FAR[w]), start, lo, kernels)
    return out
