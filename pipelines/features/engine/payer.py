"""Features of the payer's own history: windowed counts and amounts, amount outliers, account
events, new devices, failures, night share, and its distinct and first-time payees."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pipelines.features.engine.events import event_spans
from pipelines.features.engine.inputs import (
    DAY,
    EVENT_CODE,
    FUNDS_FAIL,
    HOUR,
    MINUTE,
    NIGHT,
    OK,
    PIN_FAIL,
    EventTable,
    Inputs,
    bit,
)
from pipelines.features.engine.labels import label_features
from pipelines.features.engine.output import Out
from pipelines.features.engine.pair import PAIR_FIRST, distinct
from pipelines.features.engine.sorted_keys import Clock, Groups, Keys, group, mix
from pipelines.features.engine.windows import (
    prefix,
    range_sum,
    range_sums,
    ratio,
    rolling_median_prior,
    window_bounds,
)

PAYER_WINDOWS = {"5m": 5 * MINUTE, "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
PAYER_EVENTS = {
    "payer_hours_since_registration": "REGISTERED",
    "payer_hours_since_device_bound": "DEVICE_BOUND",
    "payer_hours_since_sim_change": "SIM_CHANGED",
    "payer_hours_since_pin_reset": "PIN_RESET",
}


def payer_features(
    g: Groups,
    inp: Inputs,
    clock: Clock,
    events: EventTable,
    keys: Keys,
    out: Out,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Payer features but those of counterparties; returns the encoded positions, the prefix
    sums of money sent and the 24-hour window starts."""
    key, perm, tie = g.gid, g.perm, g.tie
    n = key.size
    enc = clock.encode(key, g.time)
    lo = window_bounds(clock, g, enc, PAYER_WINDOWS, out.kernels)
    amount = inp.amount[perm]
    work, share = np.empty(n, dtype=np.int64), np.empty(n)
    windows = range_sums(g, amount, ((lo[w], tie) for w in PAYER_WINDOWS), out.kernels)
    for w, sums in zip(PAYER_WINDOWS, windows, strict=True):
        np.copyto(share, np.subtract(tie, lo[w], out=work))  # scatters cast slowly: cast first
        out.put(f"payer_count_{w}", share, perm)
        out.put(f"payer_amount_{w}", np.divide(sums, 100, out=share), perm)
        del sums
    label_features(
        "payer", g, enc, clock, inp, {"1d": lo["24h"], "7d": lo["7d"], "30d": lo["30d"]}, out
    )
    lo24, lo30 = lo["24h"], lo["30d"]
    del lo
    flags = inp.flags[perm]
    ok = bit(flags, OK)
    good = amount.astype(np.float64)
    good[~ok] = np.nan
    if out.kernels is not None:
        median = np.empty(n)
        out.kernels.rolling_median_prior(g.bounds, g.time, good, 30 * DAY, median)
    else:
        median = rolling_median_prior(clock, key, g.time, good, 30 * DAY)
    del good
    out.put("payer_amount_ratio_median_30d", np.divide(amount, median, out=share), perm)
    del median
    out.put("payer_amount_zscore_30d", _zscore(g, amount, ok, lo30, out.kernels), perm)

    kinds = [EVENT_CODE[k] for k in PAYER_EVENTS.values()]
    ev_key = keys.find(events.h0, events.h1)
    spans = event_spans(g, enc, clock, ev_key, events.time, events.kind, kinds)
    for name, span in zip(PAYER_EVENTS, spans, strict=True):
        out.put_hours_since(name, g, span)
    del spans, ev_key

    for name, mask in (("pin", PIN_FAIL), ("funds", FUNDS_FAIL)):
        fails = range_sum(g, bit(flags, mask), lo24, tie, out.kernels)
        out.put(f"payer_failed_{name}_24h", fails, perm)
    night = range_sum(g, bit(flags, NIGHT), lo30, tie, out.kernels)
    out.put("payer_night_share_30d", ratio(night, tie - lo30), perm)
    del night, fails, flags
    amount[~ok] = 0
    return enc, prefix(amount), lo24


def _zscore(
    g: Groups, amount: np.ndarray, ok: np.ndarray, lo: np.ndarray, kernels: ModuleType | None
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
    cnt = range_sum(g, ok, lo, tie, kernels)
    s1 = range_sum(g, dev, lo, tie, kernels)
    top = float(np.abs(dev).max()) if dev.size else 0.0
    most = float(cnt.max()) if cnt.size else 0.0
    with np.errstate(over="ignore"):
        np.multiply(dev, dev, out=dev)
        s2 = range_sum(g, dev, lo, tie, kernels)
        del dev
        q = cnt * s2
        q -= s1 * s1
    if most * most * top * top >= 2.0**62:  # a product might overflow somewhere: find where
        s1f, s2f, cntf = s1.astype(np.float64), s2.astype(np.float64), cnt.astype(np.float64)
        floaty = cntf * top * top >= 2.0**62
        if floaty.any():
            dev_f = np.where(ok, own, 0).astype(np.float64)
            squares_f = prefix(dev_f * dev_f, np.float64)
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


def new_device(payer: Groups, inp: Inputs) -> np.ndarray:
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
    sub = group(mix(key, device[heads]), mix(key, other[heads]), payer.time[heads])
    del device, other
    head_new = sub.to_rows(sub.tie == sub.start)
    run = np.cumsum(head) - 1
    return head_new[run] & (payer.time == payer.time[heads][run])


def payer_counterparty_features(g: Groups, facts: np.ndarray, lo24: np.ndarray, out: Out) -> None:
    """The payer's distinct and first-time payees over 24 hours, from the pair facts."""
    perm, tie = g.perm, g.tie
    pf = facts[perm]
    out.put("payer_distinct_payees_24h", distinct(g, pf, "24h", lo24, out.kernels), perm)
    firsts = range_sum(g, bit(pf, PAIR_FIRST), lo24, tie, out.kernels)
    del pf
    out.put("payer_new_payee_share_24h", ratio(firsts, tie - lo24), perm)
