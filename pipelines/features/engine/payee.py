"""Features of the payee's history: fan-in, money received and passed on, account age, volume
spikes, fraud reports on earlier transfers to it, and declines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.features.engine.events import event_spans
from pipelines.features.engine.inputs import (
    DAY,
    EVENT_CODE,
    FAILED,
    HOUR,
    OK,
    EventTable,
    Inputs,
    bit,
)
from pipelines.features.engine.labels import label_features
from pipelines.features.engine.output import Out
from pipelines.features.engine.pair import DISTINCT_WINDOWS, PAIR_FIRST, distinct
from pipelines.features.engine.sorted_keys import Clock, Groups, Keys, lower_bounds
from pipelines.features.engine.windows import range_sum, ratio, window_bounds

PAYEE_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "8d": 8 * DAY, "30d": 30 * DAY}
FRAUD_RATE_PRIOR = 10  # transfers of smoothing in payee_fraud_rate_reported


@dataclass
class Onward:
    """Per payee position: the positions whose payee also pays (`known`), its payer key id
    there (`as_payer`), and the money it received over 24 hours (`inbound`, all positions)."""

    known: np.ndarray
    as_payer: np.ndarray
    inbound: np.ndarray


def payee_features(
    g: Groups,
    payer: Groups,
    inp: Inputs,
    facts: np.ndarray,
    clock: Clock,
    events: EventTable,
    keys: Keys,
    payer_keys: Keys,
    out: Out,
) -> Onward:
    """Payee features but pass-through; returns what pass-through needs of them."""
    key, perm, tie, start = g.gid, g.perm, g.tie, g.start
    enc = clock.encode(key, g.time)
    lo = window_bounds(clock, g, enc, PAYEE_WINDOWS, out.kernels)

    pf = facts[perm]
    for w in DISTINCT_WINDOWS:
        out.put(f"payee_distinct_payers_{w}", distinct(g, pf, w, lo[w], out.kernels), perm)
    lo7, lo30 = lo["7d"], lo["30d"]
    firsts = range_sum(g, bit(pf, PAIR_FIRST), lo7, tie, out.kernels)
    del pf
    out.put("payee_new_payer_share_7d", ratio(firsts, tie - lo7), perm)
    del firsts
    flags = inp.flags[perm]
    ok = bit(flags, OK)
    received = inp.amount[perm]
    received[~ok] = 0
    inbound = range_sum(g, received, lo["24h"], tie, out.kernels)
    out.put("payee_inbound_amount_24h", inbound / 100, perm)
    with np.errstate(divide="ignore", invalid="ignore"):  # no successful inbound: null
        ticket = range_sum(g, received, lo30, tie, out.kernels) / range_sum(
            g, ok, lo30, tie, out.kernels
        )
        del received, ok
        out.put("payee_amount_ratio_mean_30d", inp.amount[perm] / ticket, perm)
    del ticket
    label_features("payee", g, enc, clock, inp, {"1d": lo["24h"], "7d": lo7, "30d": lo30}, out)

    # Account age: latest registration, else first appearance as payee or payer (which is
    # prior exactly when it is before t).
    as_payer = payer_keys.find(keys.h0, keys.h1)[key]
    known = np.flatnonzero(as_payer >= 0)
    as_payer = as_payer[known]
    seen = g.time[g.first][key]
    seen[known] = np.minimum(seen[known], payer.time[payer.first][as_payer])
    ev_key = keys.find(events.h0, events.h1)
    code = EVENT_CODE["REGISTERED"]
    (span,) = event_spans(g, enc, clock, ev_key, events.time, events.kind, [code])
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
    fails = range_sum(g, bit(flags, FAILED), lo7, tie, out.kernels)
    out.put("payee_decline_rate_7d", ratio(fails, tie - lo7), perm)
    return Onward(known=known, as_payer=as_payer, inbound=inbound)


def passthrough(
    g: Groups,
    payer: Groups,
    payer_enc: np.ndarray,
    sent: np.ndarray,
    onward: Onward,
    clock: Clock,
    out: Out,
) -> None:
    """payee_passthrough_24h: what the payee sent on over the 24 hours before, as a payer."""
    q_key, q_time = onward.as_payer, g.time[onward.known]
    hi, lo_sent = lower_bounds(
        clock,
        payer.gid,
        payer_enc,
        [(q_key, clock.encode(q_key, q_time)), (q_key, clock.encode(q_key, q_time - DAY))],
    )
    outbound = np.zeros(g.gid.size, dtype=np.int64)
    outbound[onward.known] = sent[hi] - sent[lo_sent]
    out.put("payee_passthrough_24h", ratio(outbound, onward.inbound), g.perm)


def _fraud_reports(
    g: Groups, enc: np.ndarray, clock: Clock, rows: np.ndarray, known_at: np.ndarray
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
        (after,) = lower_bounds(clock, g.gid, enc, [(key, clock.encode(key, when) + 1)])
        inside = after < g.end[key]
        counts += np.bincount(after[inside], minlength=counts.size)
    running = np.cumsum(counts)
    return running[:-1] - (running[g.start] - counts[g.start])
