"""A day's legit transfers: who pays whom, how much, over which channel, what fails, who retries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipelines.ledger import contract as c
from pipelines.sandbox.simulator.batch import BATCH, concat, take
from pipelines.sandbox.simulator.calibration import (
    MCC_CHANNEL_CDF,
    MCC_FAVOURITE,
    MCC_IDX,
    MCC_LIMIT,
    MCC_LOCAL,
    MCC_MEDIAN,
    MCC_ROUNDING,
    MCC_SIGMA,
    MCC_VOLUME,
)
from pipelines.sandbox.simulator.codes import (
    CHAT,
    COLLECT,
    DAY,
    FAILED,
    INTENT,
    MINUTE,
    NOTE_BASE,
    QR,
    RC,
    SECOND,
    SUCCESS,
)
from pipelines.sandbox.simulator.draws import cdf_choice, choice, hash_uniform, lognormal
from pipelines.sandbox.simulator.fraud import divert_swapped_qr
from pipelines.sandbox.simulator.traffic import P2M_CDF, P2P_CDF, day_weights, sample_in_day

if TYPE_CHECKING:
    from pipelines.sandbox.simulator.world import World

_TELECOM = MCC_IDX["4814"]  # prepaid recharges: one of the operators' plan prices
_PLAN_RUPEES = np.array([19, 29, 155, 199, 239, 249, 299, 349, 479, 666, 719, 839, 859, 2999, 3599])
_PLAN_P = np.array([3, 2, 6, 10, 10, 8, 12, 8, 10, 6, 8, 5, 4, 3, 1], dtype=np.float64)
_PLAN_P /= _PLAN_P.sum()

# Legit failures: (code, share when the amount is small, share when it is over ₹2,000).
_FAIL_CODES = (
    ("Z9", 0.32, 0.45),
    ("U30", 0.20, 0.17),
    ("ZM", 0.19, 0.15),
    ("Z8", 0.03, 0.06),
    ("Z6", 0.02, 0.02),
    ("Z7", 0.03, 0.02),
    ("K1", 0.03, 0.04),
    ("ZI", 0.02, 0.02),
    ("U16", 0.04, 0.05),
    ("XH", 0.03, 0.02),
)
_FAIL_IDX = np.array([RC[f[0]] for f in _FAIL_CODES])
_FAIL_CDF_SMALL = np.cumsum([f[1] for f in _FAIL_CODES]) / sum(f[1] for f in _FAIL_CODES)
_FAIL_CDF_LARGE = np.cumsum([f[2] for f in _FAIL_CODES]) / sum(f[2] for f in _FAIL_CODES)
_COLLECT_FAIL_IDX = np.array([RC["ZA"], RC["U69"], RC["Z9"], RC["U30"]])
_COLLECT_FAIL_CDF = np.cumsum([0.50, 0.35, 0.08, 0.07])
_RETRY_P = {"ZM": 0.65, "U30": 0.5, "Z9": 0.25, "XH": 0.1}
_NEW_USER_LIMIT_PAISE = 500_000  # NPCI: ₹5,000 in the first 24 h after a new UPI registration


def legit_transfers(world: World, d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Day `d`'s legit transfers as a batch (see `BATCH`), retries after failures included."""
    w, pop = world, world.pop
    ds = w.start_us + d * DAY
    de = ds + DAY
    weights = day_weights(pop, ds)
    cw = np.cumsum(weights)
    if cw[-1] <= 0:
        return {k: np.zeros(0, dtype=np.int64) for k in BATCH}
    n1 = int(rng.poisson(w.expected[d, 0]))
    n2 = int(rng.poisson(w.expected[d, 1]))
    n = n1 + n2
    payer = np.minimum(np.searchsorted(cw, rng.random(n) * cw[-1], side="right"), pop.n - 1)
    t = np.concatenate([sample_in_day(rng, n1, P2P_CDF, ds), sample_in_day(rng, n2, P2M_CDF, ds)])
    # Someone who linked their bank (or left) today pays only while they can.
    lo = np.maximum(pop.link[payer], ds)
    hi = np.minimum(pop.dereg[payer], de)
    bad = (t < lo) | (t >= hi)
    t[bad] = lo[bad] + (rng.random(int(bad.sum())) * (hi[bad] - lo[bad])).astype(np.int64)

    payee = np.empty(n, dtype=np.int64)
    channel = np.empty(n, dtype=np.int64)
    amount = np.empty(n, dtype=np.int64)
    note = np.zeros(n, dtype=np.int64)

    # P2P: pay a contact, mostly the same few; a contact not on the app yet is paid on the
    # VPA they have on another app.
    p = payer[:n1]
    off = pop.contact_off
    deg = off[p + 1] - off[p]
    k = (deg * rng.random(n1) ** 2.2).astype(np.int64)
    contact = pop.contacts[off[p] + k]
    # A dormant account's friends pay them elsewhere while it is quiet.
    on_app = (
        (pop.link[contact] <= t[:n1])
        & (pop.dereg[contact] > t[:n1])
        & (pop.quiet[contact] > t[:n1])
    )
    payee[:n1] = np.where(on_app, contact, w.other_base + contact)
    channel[:n1] = np.array([CHAT, QR, INTENT])[choice(rng, n1, (0.74, 0.13, 0.13))]
    rupees = lognormal(rng, 400, 1.05, n1) * pop.amount_scale[p]
    amount[:n1] = np.minimum(_round_p2p(rng, rupees), c.P2P_LIMIT_PAISE)
    base, count = NOTE_BASE["p2p"]
    has = rng.random(n1) < 0.35
    note[:n1] = np.where(has, base + (rng.random(n1) * count).astype(np.int64), 0)

    # P2M: a category, then a regular shop of the payer's (deterministic hash) or any shop,
    # in their state for local categories.
    q = payer[n1:]
    mcc = choice(rng, n2, MCC_VOLUME)
    m = _merchant(world, rng, mcc, q)
    payee[n1:] = w.merchant_base + m
    channel[n1:] = np.array([QR, INTENT, COLLECT])[cdf_choice(rng, MCC_CHANNEL_CDF[mcc])]
    amount[n1:] = _p2m_amounts(rng, mcc, pop.amount_scale[q])
    base, count = NOTE_BASE["p2m"]
    has = rng.random(n2) < 0.04
    note[n1:] = np.where(has, base + (rng.random(n2) * count).astype(np.int64), 0)

    device = w.device_at(payer, t)
    state = np.where(rng.random(n) < 0.015, -1, pop.state[payer].astype(np.int64))
    new_user = (t - pop.link[payer] < DAY) & (amount > _NEW_USER_LIMIT_PAISE)
    status, rc = _legit_status(rng, w.cfg.failure_rate, amount, channel, new_user)
    batch = {
        "created": t,
        "payer": payer,
        "payee": payee,
        "amount": amount,
        "channel": channel,
        "device": device,
        "state": state,
        "status": status,
        "rc": rc,
        "note": note,
    }
    retries = _retries(rng, batch, de)
    batch = concat([batch, retries])
    size = len(batch["created"])
    batch["ftype"] = np.zeros(size, dtype=np.int64)
    batch["case"] = np.full(size, -1, dtype=np.int64)
    batch["victim_at"] = np.full(size, -1, dtype=np.int64)
    batch["bank_at"] = np.full(size, -1, dtype=np.int64)
    # Last, so a retry of a payment to a swapped QR code goes to the fraudster too.
    divert_swapped_qr(world, batch, d)
    return batch


def _merchant(
    world: World, rng: np.random.Generator, mcc: np.ndarray, payer: np.ndarray
) -> np.ndarray:
    """Each P2M payer's merchant: often a regular of theirs, mostly in their own state."""
    merch, pop = world.merch, world.pop
    n = len(mcc)
    fav = rng.random(n) < MCC_FAVOURITE[mcc]
    slot = (rng.random(n) ** 2 * 3).astype(np.int64)
    u = np.where(fav, hash_uniform(world.cfg.seed, payer, mcc, slot), rng.random(n))
    local = merch.local_group[mcc, pop.state[payer]]
    use_local = MCC_LOCAL[mcc] & (local >= 0) & (fav | (rng.random(n) < 0.85))
    g = np.where(use_local, local, merch.national_group[mcc])
    pos = np.searchsorted(merch.seg_lo, g + u, side="right") - 1
    return merch.seg_member[pos]


def _p2m_amounts(rng: np.random.Generator, mcc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Paise paid in each category: its price level and rounding, recharge plans, its limit."""
    n = len(mcc)
    rupees = MCC_MEDIAN[mcc] * np.exp(MCC_SIGMA[mcc] * rng.standard_normal(n)) * scale**0.5
    u = rng.random(n)
    cdf = MCC_ROUNDING[mcc]
    paise = np.where(
        u < cdf[:, 0],
        np.maximum(np.round(rupees / 100), 1) * 10_000,
        np.where(
            u < cdf[:, 1],
            np.maximum(np.round(rupees / 10), 1) * 1000,
            np.where(u < cdf[:, 2], np.round(rupees * 100), np.maximum(np.round(rupees), 1) * 100),
        ),
    ).astype(np.int64)
    telecom = mcc == _TELECOM
    paise[telecom] = _PLAN_RUPEES[choice(rng, int(telecom.sum()), _PLAN_P)] * 100
    paise = np.maximum(paise, 100)
    limit = MCC_LIMIT[mcc]
    over = paise > limit
    # Nobody pays exactly the limit: big payments land on round thousands below it.
    redo = (limit[over] * (0.3 + 0.7 * rng.random(int(over.sum())))) // 100_000 * 100_000
    paise[over] = np.maximum(redo, 100_000)
    return paise


def _legit_status(
    rng: np.random.Generator,
    failure_rate: float,
    amount: np.ndarray,
    channel: np.ndarray,
    new_user: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each transfer's status and response code: failures by amount and channel, new users' cap."""
    n = len(amount)
    rupees = amount / 100
    collect = channel == COLLECT
    # Bigger payments fail more often (mostly insufficient funds).
    p = failure_rate * (0.8 + 0.25 * np.clip(np.log10(np.maximum(rupees, 1) / 300), 0, 3))
    p = np.where(collect, 0.18, p)
    fail = rng.random(n) < p
    u = rng.random(n)
    code = np.where(
        rupees > 2000,
        _FAIL_IDX[
            np.minimum(np.searchsorted(_FAIL_CDF_LARGE, u, side="right"), len(_FAIL_IDX) - 1)
        ],
        _FAIL_IDX[
            np.minimum(np.searchsorted(_FAIL_CDF_SMALL, u, side="right"), len(_FAIL_IDX) - 1)
        ],
    )
    ccode = _COLLECT_FAIL_IDX[
        np.minimum(np.searchsorted(_COLLECT_FAIL_CDF, u, side="right"), len(_COLLECT_FAIL_IDX) - 1)
    ]
    code = np.where(collect, ccode, code)
    cooling = new_user & ~collect & (rng.random(n) < 0.85)
    code = np.where(cooling, RC["Z8"], code)
    fail |= cooling
    status = np.where(fail, FAILED, SUCCESS).astype(np.int64)
    rc = np.where(fail, code, RC["00"]).astype(np.int64)
    return status, rc


def _retries(
    rng: np.random.Generator, b: dict[str, np.ndarray], day_end: int
) -> dict[str, np.ndarray]:
    """People retry after a wrong PIN or a bank hiccup, usually within a minute."""
    n = len(b["created"])
    p = np.zeros(n)
    for code, prob in _RETRY_P.items():
        p[b["rc"] == RC[code]] = prob
    p[b["channel"] == COLLECT] = 0.0
    idx = np.flatnonzero((b["status"] == FAILED) & (rng.random(n) < p))
    r = take(b, idx)
    wait = np.clip(lognormal(rng, 45 * SECOND, 0.6, len(idx)), 8 * SECOND, 15 * MINUTE)
    r["created"] = r["created"] + wait.astype(np.int64)
    z9 = r["rc"] == RC["Z9"]
    half = np.maximum(r["amount"] // 2 // 10_000 * 10_000, 10_000)
    r["amount"] = np.where(z9 & (r["amount"] > 20_000), half, r["amount"])
    ok = rng.random(len(idx)) < 0.88
    r["status"] = np.where(ok, SUCCESS, FAILED).astype(np.int64)
    r["rc"] = np.where(ok, RC["00"], r["rc"]).astype(np.int64)
    return take(r, r["created"] < day_end)


def _round_p2p(rng: np.random.Generator, rupees: np.ndarray) -> np.ndarray:
    """People send whole hundreds, tens or rupees; never paise."""
    u = rng.random(len(rupees))
    r100 = np.maximum(np.round(rupees / 100), 1) * 100
    r10 = np.maximum(np.round(rupees / 10), 1) * 10
    r1 = np.maximum(np.round(rupees), 1)
    big = np.where(u < 0.55, r100, np.where(u < 0.8, r10, r1))
    small = np.where(u < 0.5, r10, r1)
    return np.where(rupees >= 200, big, small).astype(np.int64) * 100
