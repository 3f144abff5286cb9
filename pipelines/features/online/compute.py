"""The features of one transfer from its payer's, payee's and device's records, and compaction.

Each feature follows the batch engine's definition (`pipelines.features.engine`, whose module
docstrings state the point-in-time rules) and its arithmetic, operation for operation, so that
the two agree exactly on counts and to the last bits on ratios: a window is [t - span, t), a
prior transfer's status is its latest OUTCOME (PENDING until one arrives), a fraud is known at
max(created_at, first FRAUD report) and counts once known strictly before t.

Reads stay proportional to the window: `compact` folds transfers older than a horizon into
per-counterpart summaries (count, sum, first and last time) and devices seen, which is all the
lifetime features read of them; fraud reports are few and kept whole. It also folds outcomes
into their transfers, which spares a busy payee's queries matching thousands of them. Queries
read a key through `Columns`, never selecting whole packed records (slow in numpy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.engine.inputs import (
    CHANNELS,
    DAY,
    EVENT_CODE,
    FAILED,
    FUNDS_FAIL,
    HOUR,
    MINUTE,
    NIGHT,
    OK,
    PIN_FAIL,
)
from pipelines.features.engine.payee import FRAUD_RATE_PRIOR
from pipelines.features.online.records import (
    AS_DEVICE,
    AS_PAYEE,
    AS_PAYER,
    DEVICE_SEEN,
    DEVICE_USE,
    EVENT,
    FRAUD,
    IN,
    MULE_CONFIRMED,
    OUT,
    OUTCOME,
    PAIR,
    RECORD,
    STATUS_BITS,
    TRANSFER_KINDS,
    records,
)
from pipelines.india_time import IST_OFFSET_US

_PAYER_WINDOWS = {"5m": 5 * MINUTE, "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
_LABEL_WINDOWS = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
_DISTINCT_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}
_PAYER_EVENTS = {
    "payer_hours_since_registration": EVENT_CODE["REGISTERED"],
    "payer_hours_since_device_bound": EVENT_CODE["DEVICE_BOUND"],
    "payer_hours_since_sim_change": EVENT_CODE["SIM_CHANGED"],
    "payer_hours_since_pin_reset": EVENT_CODE["PIN_RESET"],
}
_EMPTY = records(0)


@dataclass(frozen=True)
class Query:
    """The transfer whose features are asked for, as the records know it."""

    t: int  # created_at, microseconds since the epoch (UTC)
    amount: int  # paise
    payee: int  # stable hash of payee_vpa (the payer's counterpart)
    device: int  # stable hash of payer_device_id
    merchant: bool
    channel: str


class Columns:
    """A key's records read a field at a time: what `features` reads.

    Selecting records by a mask from the packed `RECORD` array copies each 56-byte record
    through numpy's generic path (about 0.1 us a record: milliseconds on a busy payee's key);
    a selection here copies only the fields read, each in numpy's fast path. Indexed like the
    record array: by field name (a column), by mask or indices (the selected records), `.size`.
    """

    __slots__ = ("_fields", "_source", "_which", "size")

    def __init__(self, source: np.ndarray | Columns, which: np.ndarray | None = None) -> None:
        self._source, self._which = source, which
        self._fields: dict[str, np.ndarray] = {}
        if which is None:
            self.size = source.size
        elif which.dtype == bool:
            self.size = int(np.count_nonzero(which))
        else:
            self.size = which.size

    def __getitem__(self, which: str | np.ndarray) -> np.ndarray | Columns:
        if not isinstance(which, str):
            return Columns(self, np.asarray(which))
        column = self._fields.get(which)
        if column is None:  # taken when first read
            column = self._source[which]
            if self._which is not None:
                column = column[self._which]
            self._fields[which] = column
        return column

    def with_flags(self, flags: np.ndarray) -> Columns:
        """The same records with `flags` for their flags."""
        out = Columns(self)
        out._fields["flags"] = flags
        return out


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (a sort: numpy's hashing `unique` is slower on uint64)."""
    if values.size == 0:
        return 0
    ordered = np.sort(values)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


def resolve(recs: np.ndarray | Columns) -> np.ndarray | Columns:
    """The key's records (a record array or its `Columns`) with each transfer's status bits
    taken from its latest OUTCOME (in append order), if any; the OUTCOME records themselves are
    left in place."""
    kind = recs["kind"]
    outcome = kind == OUTCOME
    if not outcome.any():
        return recs
    tx_o = recs["tx"][outcome][::-1]  # reversed: np.unique's first index is the latest
    bits_o = recs["flags"][outcome][::-1]
    uniq, first = np.unique(tx_o, return_index=True)
    # An OUTCOME carries its transfer's created_at: only transfers in the outcomes' span of
    # times can match (live outcomes are for the newest few, so few are searched).
    time_o = recs["time"][outcome]
    time = recs["time"]
    span = (time >= time_o.min()) & (time <= time_o.max())
    moved = np.flatnonzero(((kind == OUT) | (kind == IN)) & span)
    at = np.minimum(np.searchsorted(uniq, recs["tx"][moved]), uniq.size - 1)
    hit = uniq[at] == recs["tx"][moved]
    moved, at = moved[hit], at[hit]
    flags = recs["flags"].copy()
    flags[moved] = (flags[moved] & ~np.uint8(STATUS_BITS)) | bits_o[first[at]]
    if isinstance(recs, Columns):
        return recs.with_flags(flags)
    recs = recs.copy()
    recs["flags"] = flags
    return recs


def features(q: Query, payer: Columns, payee: Columns, device: Columns) -> dict:
    """Every feature of FEATURE_NAMES for `q`, from the resolved (`resolve`) records of its
    payer's, payee's and device's keys (`Columns`, or record arrays: the same answer, slower):
    None where the batch gives null."""
    out: dict[str, float | None] = {}
    _transfer(q, out)
    _payer(q, payer, out)
    _payee(q, payee, out)
    _pair(q, payer, out)
    _device(q, device, out)
    return {name: out[name] for name in FEATURE_NAMES}


def _transfer(q: Query, out: dict) -> None:
    out["amount_log"] = float(np.log1p(q.amount / 100))
    out["payee_is_merchant"] = float(q.merchant)
    for name in CHANNELS:
        out[f"channel_{name.lower()}"] = float(q.channel == name)
    hour = (q.t + IST_OFFSET_US) // HOUR % 24
    out["hour_ist"] = float(hour)
    out["is_night_ist"] = float(hour < 5)


def _prior(recs: np.ndarray, kind: int, t: int) -> np.ndarray:
    return recs[(recs["kind"] == kind) & (recs["time"] < t)]


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def _payer(q: Query, recs: np.ndarray, out: dict) -> None:
    t = q.t
    sent = _prior(recs, OUT, t)
    time, amount, flags = sent["time"], sent["amount"], sent["flags"]
    counts = {}
    for w, span in _PAYER_WINDOWS.items():
        inside = time >= t - span
        counts[w] = int(np.count_nonzero(inside))
        out[f"payer_count_{w}"] = float(counts[w])
        out[f"payer_amount_{w}"] = int(amount[inside].sum()) / 100
    in30 = time >= t - 30 * DAY
    in24 = time >= t - DAY
    ok30 = in30 & ((flags & OK) != 0)
    good = np.sort(amount[ok30]).astype(np.float64)
    if good.size:
        lower, upper = good[(good.size - 1) // 2], good[good.size // 2]
        median = lower + (upper - lower) * 0.5
        with np.errstate(divide="ignore"):
            out["payer_amount_ratio_median_30d"] = float(np.float64(q.amount) / median)
    else:
        out["payer_amount_ratio_median_30d"] = None
    out["payer_amount_zscore_30d"] = _zscore(q.amount, amount[ok30])

    events = _prior(recs, EVENT, t)
    for name, code in _PAYER_EVENTS.items():
        times = events["time"][events["code"] == code]
        out[name] = (t - int(times.max())) / HOUR if times.size else None

    used = (sent["aux"] == np.uint64(q.device)).any()
    seen = recs[(recs["kind"] == DEVICE_SEEN) & (recs["time"] < t)]
    used = used or bool((seen["other"] == np.uint64(q.device)).any())
    out["payer_new_device"] = float(not used)

    window = sent[in24]
    out["payer_distinct_payees_24h"] = float(_distinct(window["other"]))
    firsts = _firsts(recs, OUT, AS_PAYER, t - DAY, t)
    out["payer_new_payee_share_24h"] = _ratio(firsts, counts["24h"])
    out["payer_night_share_30d"] = _ratio(int(np.count_nonzero(flags[in30] & NIGHT)), counts["30d"])
    out["payer_failed_pin_24h"] = float(np.count_nonzero(window["flags"] & PIN_FAIL))
    out["payer_failed_funds_24h"] = float(np.count_nonzero(window["flags"] & FUNDS_FAIL))
    _labels("payer", t, recs, AS_PAYER, time, out)


def _zscore(amount: int, good: np.ndarray) -> float | None:
    """(amount - mean) / sample std of `good`, as the batch's `_zscore`: the sums are exact
    integers (deviations from the first amount, squares summed in Python integers when int64
    might wrap), so 'all equal' is exactly zero, null."""
    cnt = good.size
    if cnt < 2:
        return None
    base = int(good[0])
    dev = good - base
    s1 = int(dev.sum())
    top = int(np.abs(dev).max())
    # int64 squares and sums are exact below 2**63; past that, Python integers.
    wraps = cnt * top * top >= 2**62
    s2 = sum(d * d for d in dev.tolist()) if wraps else int((dev * dev).sum())
    q = cnt * s2 - s1 * s1
    if q <= 0:
        return None
    # (cnt * own - s1) / cnt is the exact mean deviation, rounded once.
    return ((cnt * (amount - base) - s1) / cnt) / math.sqrt(q / (cnt * (cnt - 1.0)))


def _firsts(recs: Columns, kind: int, role: int, since: int, t: int) -> int:
    """How many of the key's transfers of `kind` created in [since, t) were the first of their
    pair: no transfer of the same counterpart strictly earlier, among the key's transfers of
    `kind` and its summaries."""
    is_kind, time = recs["kind"] == kind, recs["time"]
    window = is_kind & (time >= since) & (time < t)
    if not window.any():
        return 0
    summary = (recs["kind"] == PAIR) & ((recs["flags"] & role) != 0)
    pairs = is_kind | summary
    earliest = np.where(summary, recs["time2"], time)[pairs]
    other, window = recs["other"][pairs], window[pairs]
    order = np.argsort(other)  # one key: about half the time of a lexsort on two
    other, earliest, window = other[order], earliest[order], window[order]
    starts = np.flatnonzero(np.concatenate(([True], other[1:] != other[:-1])))
    first = np.repeat(np.minimum.reduceat(earliest, starts), np.diff(starts, append=other.size))
    return int(np.count_nonzero(window & (earliest == first)))


def _group_min(other: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `other`, sorted, and the least of `values` for each."""
    if other.size == 0:
        return other, values
    order = np.argsort(other)
    other = other[order]
    starts = np.flatnonzero(np.concatenate(([True], other[1:] != other[:-1])))
    return other[starts], np.minimum.reduceat(values[order], starts)


def _frauds(recs: np.ndarray, role: int) -> tuple[np.ndarray, np.ndarray]:
    """(created_at, known_at) of each transfer with a FRAUD record of `role`: known at
    max(created_at, its first report)."""
    fr = recs[(recs["kind"] == FRAUD) & ((recs["flags"] & role) != 0)]
    if fr.size <= 1:
        return fr["time2"], np.maximum(fr["time2"], fr["time"])
    order = np.lexsort((fr["time"], fr["tx"]))
    fr = fr[order]
    head = np.ones(fr.size, dtype=bool)
    head[1:] = fr["tx"][1:] != fr["tx"][:-1]
    fr = fr[head]
    return fr["time2"], np.maximum(fr["time2"], fr["time"])


def _labels(entity: str, t: int, recs: np.ndarray, role: int, time: np.ndarray, out: dict) -> None:
    """`<entity>_fraud_reports_<w>`, `_fraud_rate_<w>`, `_days_since_fraud_report`; `time`
    holds the created_at of the entity's prior transfers (the rates' denominators)."""
    created, known = _frauds(recs, role)
    known_before = known < t
    for w, span in _LABEL_WINDOWS.items():
        out[f"{entity}_fraud_reports_{w}"] = float(
            np.count_nonzero(known_before & (known >= t - span))
        )
        made = int(np.count_nonzero(known_before & (created >= t - span)))
        out[f"{entity}_fraud_rate_{w}"] = _ratio(made, int(np.count_nonzero(time >= t - span)))
    latest = known[known_before]
    out[f"{entity}_days_since_fraud_report"] = (
        (t - int(latest.max())) / HOUR / 24 if latest.size else None
    )


def _payee(q: Query, recs: np.ndarray, out: dict) -> None:
    t = q.t
    got = _prior(recs, IN, t)
    time, amount, flags, payer = got["time"], got["amount"], got["flags"], got["other"]
    in7 = time >= t - 7 * DAY
    # Payers of the last 7 days, each with its latest transfer: one sort for the three windows
    # (a payer is in a window if its latest transfer is).
    _, latest = _group_min(payer[in7], -time[in7])
    for w, span in _DISTINCT_WINDOWS.items():
        out[f"payee_distinct_payers_{w}"] = float(np.count_nonzero(-latest >= t - span))
    count7 = int(np.count_nonzero(in7))
    out["payee_new_payer_share_7d"] = _ratio(_firsts(recs, IN, AS_PAYEE, t - 7 * DAY, t), count7)
    ok = (flags & OK) != 0
    in24 = time >= t - DAY
    inbound = int(amount[ok & in24].sum())
    out["payee_inbound_amount_24h"] = inbound / 100
    ok30 = ok & (time >= t - 30 * DAY)
    cnt30 = int(np.count_nonzero(ok30))
    out["payee_amount_ratio_mean_30d"] = (
        None if cnt30 == 0 else q.amount / (int(amount[ok30].sum()) / cnt30)
    )
    _labels("payee", t, recs, AS_PAYEE, time, out)

    registered = _prior(recs, EVENT, t)
    registered = registered["time"][registered["code"] == EVENT_CODE["REGISTERED"]]
    if registered.size:
        out["payee_account_age_hours"] = (t - int(registered.max())) / HOUR
    else:  # first appearance as payee or payer, summaries included
        kind = recs["kind"]
        appear = np.concatenate(
            [recs["time"][(kind == IN) | (kind == OUT)], recs["time2"][kind == PAIR]]
        )
        seen = int(appear.min()) if appear.size else t
        out["payee_account_age_hours"] = (t - seen) / HOUR if seen < t else None

    count24 = int(np.count_nonzero(in24))
    before = int(np.count_nonzero((time >= t - 8 * DAY) & ~in24))
    out["payee_volume_spike"] = count24 / (before / 7 + 1)
    _, known = _frauds(recs, AS_PAYEE)
    reports = int(np.count_nonzero(known < t))
    summaries = recs[(recs["kind"] == PAIR) & ((recs["flags"] & AS_PAYEE) != 0)]
    lifetime = time.size + int(summaries["n"].sum())
    out["payee_fraud_reports"] = float(reports)
    out["payee_fraud_rate_reported"] = reports / (lifetime + FRAUD_RATE_PRIOR)
    out["payee_decline_rate_7d"] = _ratio(
        int(np.count_nonzero(in7 & ((flags & FAILED) != 0))), count7
    )

    sent = _prior(recs, OUT, t)
    onward = sent[(sent["time"] >= t - DAY) & ((sent["flags"] & OK) != 0)]
    out["payee_passthrough_24h"] = _ratio(int(onward["amount"].sum()), inbound)


def _pair(q: Query, recs: np.ndarray, out: dict) -> None:
    t, payee = q.t, np.uint64(q.payee)
    sent = recs[(recs["kind"] == OUT) & (recs["time"] < t) & (recs["other"] == payee)]
    old = recs[
        (recs["kind"] == PAIR) & ((recs["flags"] & AS_PAYER) != 0) & (recs["other"] == payee)
    ]
    prior = sent.size + int(old["n"].sum())
    total = int(sent["amount"].sum()) + int(old["amount"].sum())
    out["pair_prior_count"] = float(prior)
    out["pair_is_first"] = float(prior == 0)
    if prior == 0:
        out["pair_amount_ratio_mean"] = out["pair_days_since_last"] = None
        return
    last = max(
        int(sent["time"].max()) if sent.size else -(2**63), int(old["time"].max(initial=-(2**63)))
    )
    out["pair_amount_ratio_mean"] = q.amount / (total / prior)
    out["pair_days_since_last"] = (t - last) / DAY


def _device(q: Query, recs: np.ndarray, out: dict) -> None:
    used = _prior(recs, DEVICE_USE, q.t)
    _labels("device", q.t, recs, AS_DEVICE, used["time"], out)


def blocklisted(recs: np.ndarray, as_of: int) -> bool:
    """Whether the payee's records hold a bank-confirmed mule report on a transfer to it,
    reported before `as_of` (`pipelines.decisions.policy.confirmed_mule_vpas`)."""
    mule = AS_PAYEE | MULE_CONFIRMED
    return bool(
        ((recs["kind"] == FRAUD) & ((recs["flags"] & mule) == mule) & (recs["time"] < as_of)).any()
    )


def oldest_transfer(recs: np.ndarray) -> int | None:
    """The created_at of the key's oldest transfer record, None if it holds none (compaction
    is due when it is older than the window)."""
    times = recs["time"][recs["kind"] <= max(TRANSFER_KINDS)]  # kinds 1-3: transfers
    return int(times.min()) if times.size else None


def outcomes(recs: np.ndarray) -> int:
    """How many OUTCOME records the key holds (compaction folds them into their transfers)."""
    return int(np.count_nonzero(recs["kind"] == OUTCOME))


def compact(recs: np.ndarray, horizon: int) -> np.ndarray:
    """The key's records with transfers created before `horizon` folded into summaries.

    Features of transfers created at or after horizon + 30 days are unchanged: their windows
    hold no folded transfer, and the lifetime features read only what the summaries keep (per
    counterpart and direction: count, amount sum, first and last created_at; devices the VPA
    paid from, with first use). Outcomes are folded into their transfers; of each event kind
    the latest before the horizon is kept; fraud reports are all kept.
    """
    recs = resolve(recs)
    kind, time = recs["kind"], recs["time"]
    is_transfer = np.isin(kind, TRANSFER_KINDS)
    old = is_transfer & (time < horizon)
    matched = np.isin(recs["tx"], recs["tx"][is_transfer & ~old])
    keep = (is_transfer & ~old) | (kind == FRAUD)
    keep |= (kind == OUTCOME) & ~matched & (time >= horizon)  # its transfer may still arrive
    keep |= (kind == EVENT) & (time >= horizon)
    events = np.flatnonzero((kind == EVENT) & (time < horizon))
    for code in np.unique(recs["code"][events]):
        of_code = events[recs["code"][events] == code]
        keep[of_code[np.argmax(time[of_code])]] = True

    parts = [recs[keep]]
    for direction, role in ((OUT, AS_PAYER), (IN, AS_PAYEE)):
        folded = recs[
            (old & (kind == direction)) | ((kind == PAIR) & ((recs["flags"] & role) != 0))
        ]
        parts.append(_pair_summaries(folded, role))
    parts.append(_devices_seen(recs[(old & (kind == OUT)) | (kind == DEVICE_SEEN)]))
    # Transfers outside a key's window come back to it only through its summaries: an
    # OUTCOME for a folded transfer, a DEVICE_USE record, are dropped.
    return np.concatenate(parts)


def _pair_summaries(folded: np.ndarray, role: int) -> np.ndarray:
    """One PAIR record per counterpart, from transfer records and earlier PAIR records."""
    if folded.size == 0:
        return _EMPTY
    summary = folded["kind"] == PAIR
    n = np.where(summary, folded["n"], 1).astype(np.int64)
    first = np.where(summary, folded["time2"], folded["time"])
    other = folded["other"]
    keys, inverse = np.unique(other, return_inverse=True)
    out = records(keys.size)
    out["kind"] = PAIR
    out["flags"] = role
    out["other"] = keys
    out["n"] = np.bincount(inverse, weights=n, minlength=keys.size).astype(np.int64)
    sums = np.zeros(keys.size, dtype=np.int64)
    np.add.at(sums, inverse, folded["amount"])
    out["amount"] = sums
    last = np.full(keys.size, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, inverse, folded["time"])
    out["time"] = last
    earliest = np.full(keys.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(earliest, inverse, first)
    out["time2"] = earliest
    return out


def _devices_seen(folded: np.ndarray) -> np.ndarray:
    """One DEVICE_SEEN record per device, from OUT records and earlier DEVICE_SEEN records."""
    if folded.size == 0:
        return _EMPTY
    device = np.where(folded["kind"] == DEVICE_SEEN, folded["other"], folded["aux"])
    keys, inverse = np.unique(device, return_inverse=True)
    first = np.full(keys.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, inverse, folded["time"])
    out = records(keys.size)
    out["kind"] = DEVICE_SEEN
    out["other"] = keys
    out["time"] = first
    return out


def decode(data: bytes) -> np.ndarray:
    """A key's bytes as records (read-only, no copy)."""
    if len(data) % RECORD.itemsize:
        raise ValueError(
            f"a key holds {len(data)} bytes, not a whole number of {RECORD.itemsize}-byte records"
        )
    return np.frombuffer(data, dtype=RECORD)
