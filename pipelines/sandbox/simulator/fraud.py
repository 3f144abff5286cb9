"""Fraud typologies: every case of the period planned up front, and who reports it, and when.

Eight typologies, each with its footprint: account takeover (SIM swap or new phone, night drain),
social engineering (a victim pays a first-time payee far more than usual), mule rings (many payers
into one account, swept out within hours), merchant fraud (a storefront that takes a spike of
payments and vanishes) and collect scams (collect requests some victims approve); and three that
turn, where an account with a clean history starts taking or sending fraud:

- QR swap: a real shop's QR code is swapped for some days (`qr_swap_days`), so whoever scans it,
  mostly its regulars, pays a fraudster's VPA: an older account with clean history where the
  world has one. The shop's own QR takings stop meanwhile. The plan holds the swap; the day's legit
  traffic is diverted as it is made (`divert_swapped_qr`), since it is the payments people would
  have made anyway.
- dormant mule: an account with clean history goes quiet for weeks (`dormancy_days`; its own
  payments stop, friends pay it elsewhere), then takes payments from several victims over a day
  or two and sweeps them on within hours.
- same-device takeover: the payer's own phone, no new binding or SIM change (screen sharing, a
  remote-access app); what changes is the amounts, the payees and the hour (`ato_spree_hours`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pipelines.ledger import contract as c
from pipelines.sandbox.simulator.batch import BATCH
from pipelines.sandbox.simulator.calibration import (
    MCC_CHANNEL_CDF,
    MCC_CODES,
    MCC_FAVOURITE,
    MCC_IDX,
    MCC_LOCAL,
    MCC_VOLUME,
    STATE_P,
)
from pipelines.sandbox.simulator.codes import (
    ATO,
    ATOSD,
    CHAT,
    COLLECT,
    CS,
    DAY,
    DEVICE_BOUND,
    DMULE,
    FAILED,
    FRAUD_TYPE_CODE,
    FRAUD_TYPES,
    HOUR,
    INTENT,
    MF,
    MINUTE,
    MULE,
    NEVER,
    NOTE_BASE,
    PIN_RESET,
    QR,
    QRS,
    RC,
    SE,
    SECOND,
    SIM_CHANGED,
    SUCCESS,
)
from pipelines.sandbox.simulator.draws import choice, lognormal, seeded_rng
from pipelines.sandbox.simulator.traffic import NIGHT_CDF, P2M_CDF, P2P_CDF, sample_in_day

if TYPE_CHECKING:
    from pipelines.sandbox.simulator.world import World

_CASE_PREFIX = {
    ATO: "ATO",
    SE: "SE",
    MULE: "MULE",
    MF: "MF",
    CS: "CS",
    QRS: "QRS",
    DMULE: "DMULE",
    ATOSD: "ATOSD",
}
# typical transfers per case
_CASE_SIZE = {ATO: 5, SE: 2, MULE: 14, MF: 30, CS: 10, QRS: 12, DMULE: 12, ATOSD: 4}
# A case maker returns this when the world cannot hold the typology on that day (no account old
# enough yet): the day's share is dropped rather than piled onto a later day.
_NOT_TODAY = -1
# Shops whose QR code a fraudster would swap: local, mostly paid by scanning, everyday limits.
_SWAPPABLE_MCC = MCC_LOCAL & (MCC_CHANNEL_CDF[:, 0] >= 0.8)
_SWAPPABLE_MCC &= np.array([code not in c.P2M_HIGH_LIMIT_MCCS for code in MCC_CODES[1:]])
_QR_SWAP_MOST = 40  # expected diverted transfers of one swap, at most (where shops allow)
_TURNED_HISTORY = 5 * DAY  # how long a turned account has been on the app, at least
_STOREFRONT_RUPEES = np.array([299, 399, 499, 599, 799, 999, 1299, 1499, 1999, 2499, 2999, 4999])


class FraudPlanner:
    """Plans every fraud case of the period: small loops per case, far fewer than transfers."""

    # A case's transfers: a batch's columns but the payer's state, which the writer adds.
    _COLS = tuple(k for k in BATCH if k != "state")

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.w = world
        self.pop = world.pop
        self.cfg = world.cfg
        self.rng = rng
        self.rows: list[tuple[int, ...]] = []
        self.events: list[tuple[int, int, int, int]] = []
        self.extra: dict[str, list[int]] = {"merchant": [], "mcc": [], "state": [], "since": []}
        self.attacker_devices = 0
        self.case_types: list[int] = []
        self._cashouts: list[int] = []
        self._scam_merchants: list[int] = []
        self._se_merchants: list[int] = []
        self._attackers: list[int] = []
        self._case: list[tuple[int, ...]] = []
        # The typologies that turn: their cases' accounts and windows, for the ground truth.
        self.turns: list[tuple[int, ...]] = []
        self._turn: tuple[int, ...] | None = None
        self._swaps: list[tuple[int, ...]] = []
        self._swapped: set[int] = set()
        self._turned: set[int] = set()  # accounts given a turning role; none gets two
        self._ato_victims: set[int] = set()
        # When a planned case last touched each user, so a dormant account is quiet in truth.
        self._last_used = np.full(self.pop.n, -1, dtype=np.int64)
        self._qr_share = _qr_share(world)

    # sampling helpers ----------------------------------------------------------------------

    def _r(self) -> float:
        return float(self.rng.random())

    def _logn(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * float(self.rng.standard_normal()))

    def _pick(self, options: tuple, p: tuple[float, ...]) -> Any:
        return options[int(choice(self.rng, 1, p)[0])]

    def _time_in_day(self, day_start: int, cdf: np.ndarray) -> int:
        return int(sample_in_day(self.rng, 1, cdf, day_start)[0])

    def _waking(self, t: int, not_before: int) -> int:
        """A time on t's UTC day when people are awake, and not before `not_before`."""
        day0 = self.w.start_us + (t - self.w.start_us) // DAY * DAY
        out = self._time_in_day(day0, P2M_CDF)
        if out < not_before:
            out = not_before + int(self._r() * max(day0 + DAY - not_before, 1))
        return out

    def _user(self, t: int, tenure: int, exclude: int = -1) -> int | None:
        """Someone who could pay at t: bank-linked `tenure` before, not leaving, not a mule."""
        pop = self.pop
        k = int(np.searchsorted(pop.link_sorted, t - tenure, side="right"))
        if k == 0:
            return None
        for _ in range(20):
            u = int(pop.link_order[int(self.rng.integers(k))])
            if (
                u != exclude
                and not pop.is_mule[u]
                and pop.dereg[u] > t + 2 * DAY
                and u not in self._turned
            ):
                return u
        return None

    def _mule(self, t: int, exclude: int = -1) -> int | None:
        k = int(np.searchsorted(self.pop.mule_link, t - 6 * HOUR, side="right"))
        if k == 0 or (k == 1 and int(self.pop.mules[0]) == exclude):
            return None
        while True:
            m = int(self.pop.mules[int(self.rng.integers(k))])
            if m != exclude:
                return m

    def _device(self, u: int, t: int) -> int:
        return int(self.w.device_at(np.array([u]), np.array([t]))[0])

    def _new_party(self, merchant: bool, mcc: int, t: int) -> int:
        self.extra["merchant"].append(int(merchant))
        self.extra["mcc"].append(mcc)
        self.extra["state"].append(int(choice(self.rng, 1, STATE_P)[0]))
        self.extra["since"].append(t)
        return self.w.extra_base + len(self.extra["merchant"]) - 1

    def _cashout(self, t: int) -> int:
        """An account on another app that turns money into cash; often reused by a ring."""
        if not self._cashouts or self._r() < 0.5:
            self._cashouts.append(self._new_party(False, -1, t))
        return self._cashouts[int(self.rng.integers(len(self._cashouts)))]

    def _fraud_merchant(self, pool: list[int], reuse: float, mccs: tuple[str, ...], t: int) -> int:
        if not pool or self._r() >= reuse:
            pool.append(self._new_party(True, MCC_IDX[self._pick(mccs, (1.0,) * len(mccs))], t))
            return pool[-1]
        return pool[int(self.rng.integers(len(pool)))]

    def _attacker(self) -> int:
        """A fraudster's phone; rings reuse phones across victims."""
        if self._attackers and self._r() < 0.35:
            return self._attackers[int(self.rng.integers(len(self._attackers)))]
        self._attackers.append(2 * self.pop.n + self.attacker_devices)
        self.attacker_devices += 1
        return self._attackers[-1]

    def _rupees(self, rupees: float, lo: float, hi: float, styles: tuple[float, ...]) -> int:
        """Paise for rupees clipped to [lo, hi], styled (₹1000s, x999, ₹100s, ₹1) by `styles`."""
        r = min(max(rupees, lo), hi)
        style = int(choice(self.rng, 1, styles)[0])
        if style == 0:
            r = max(round(r / 1000), 1) * 1000
        elif style == 1:
            r = max(round(r / 1000), 1) * 1000 - 1
        elif style == 2:
            r = max(round(r / 100), 1) * 100
        else:
            r = max(round(r), 1)
        return int(min(r, hi)) * 100

    def _add(
        self,
        t: int,
        payer: int,
        payee: int,
        amount: int,
        channel: int,
        device: int,
        status: int,
        rc: str,
        note: int,
        victim: int,
    ) -> None:
        self._case.append((t, payer, payee, amount, channel, device, status, RC[rc], note, victim))
        for party in (payer, payee):
            if party < self.pop.n and t > self._last_used[party]:
                self._last_used[party] = t

    def _note(self, group: str, p: float) -> int:
        if self._r() >= p:
            return 0
        base, count = NOTE_BASE[group]
        return base + int(self.rng.integers(count))

    # cases ---------------------------------------------------------------------------------

    def _ato(self, day_start: int) -> None:
        """SIM swap or new phone, then a night-time drain to new payees, wrong PINs first."""
        night = self._r() < 0.65
        t0 = self._time_in_day(day_start, NIGHT_CDF if night else P2P_CDF)
        v = self._user(t0, 3 * DAY)
        if v is None:
            return
        own = self._device(v, t0)
        self._ato_victims.add(v)
        attacker = self._attacker()
        t = t0
        if self._r() < 0.7:
            self.events.append((v, t, SIM_CHANGED, -1))
            t += int(self._logn(8 * MINUTE, 0.6))
        self.events.append((v, t, DEVICE_BOUND, attacker))
        reset = self._r() < 0.55
        if reset:
            t += int((1 + 5 * self._r()) * MINUTE)
            self.events.append((v, t, PIN_RESET, attacker))
        t += int((3 + 27 * self._r()) * MINUTE)
        dests = []
        for _ in range(1 + int(self.rng.integers(3))):
            m = self._mule(t) if self._r() < 0.7 else None
            dests.append(m if m is not None else self._cashout(t))
        balance = max(300_000.0, self._logn(4_500_000 * self.pop.amount_scale[v], 0.8))
        n_zm = int(choice(self.rng, 1, (0.7, 0.3) if reset else (0, 0.5, 0.35, 0.15))[0])
        for i in range(n_zm):
            guess = self._rupees(self._logn(20_000, 0.5), 1000, 99_000, (0.6, 0, 0.4, 0))
            self._add(
                t, v, dests[0], guess, INTENT, attacker, FAILED, "Z6" if i == 2 else "ZM", 0, v
            )
            t += int((30 + 90 * self._r()) * SECOND)
        if n_zm == 3:  # locked out: reset the PIN with the victim's card details, then go on
            t += int((5 + 20 * self._r()) * MINUTE)
            self.events.append((v, t, PIN_RESET, attacker))
        remaining = balance
        for _ in range(min(1 + int(self.rng.poisson(2.5)), 7)):
            amount = self._rupees(
                min(remaining / 100, self._logn(20_000, 0.6)), 500, 99_500, (0.5, 0, 0.5, 0)
            )
            if amount > remaining:
                break
            channel = self._pick((INTENT, CHAT, QR), (0.55, 0.25, 0.2))
            dest = dests[int(self.rng.integers(len(dests)))]
            if self._r() < 0.07:
                self._add(
                    t,
                    v,
                    dest,
                    amount,
                    channel,
                    attacker,
                    FAILED,
                    self._pick(("K1", "U16"), (0.5, 0.5)),
                    0,
                    v,
                )
            else:
                self._add(t, v, dest, amount, channel, attacker, SUCCESS, "00", 0, v)
                remaining -= amount
            t += int((2 + 23 * self._r()) * MINUTE)
        if self._r() < 0.45:  # one more try than the account could bear
            amount = self._rupees(remaining / 100 + 5000, 500, 99_500, (0.5, 0, 0.5, 0))
            self._add(t, v, dests[0], amount, INTENT, attacker, FAILED, "Z9", 0, v)
        if self._r() < 0.75:  # the victim gets the account back on their own phone
            self.events.append((v, t + int(self._logn(18 * HOUR, 0.6)), DEVICE_BOUND, own))

    def _se(self, day_start: int) -> None:
        """Victim pays a first-time payee far more than usual, sometimes several times."""
        t = self._time_in_day(day_start, P2M_CDF)
        v = self._user(t, DAY)
        if v is None:
            return
        r = self._r()
        payee = self._mule(t) if r < 0.45 else None
        merchant = False
        if payee is None and r < 0.8:
            payee = self._fraud_merchant(self._se_merchants, 0.6, ("5999", "5399", "4814"), t)
            merchant = True
        elif payee is None:
            payee = self._cashout(t)
        typical = 400 * float(self.pop.amount_scale[v])
        n = int(choice(self.rng, 1, (0.5, 0.25, 0.12, 0.08, 0.05))[0]) + 1
        for _ in range(n):
            amount = self._rupees(typical * self._logn(25, 0.6), 2000, 95_000, (0.4, 0.3, 0, 0.3))
            if merchant:
                channel = self._pick((QR, INTENT), (0.5, 0.5))
            else:
                channel = self._pick((QR, INTENT, CHAT), (0.4, 0.4, 0.2))
            note = self._note("se", 0.35)
            if self._r() < 0.88:
                status, rc = SUCCESS, "00"
            else:
                status, rc = FAILED, self._pick(("K1", "U16", "ZI", "Z9"), (0.3, 0.3, 0.2, 0.2))
            self._add(t, v, payee, amount, channel, self._device(v, t), status, rc, note, v)
            t += int((2 + 28 * self._r()) * MINUTE)

    def _mule_case(self, day_start: int) -> None:
        """Many unrelated payers into one mule, swept out within hours to mules or cash-out."""
        t0 = self._time_in_day(day_start, P2P_CDF)
        m = self._mule(t0 - 6 * HOUR)
        if m is None:
            return
        k = 4 + min(int(self.rng.poisson(5)), 16)
        span = min(max(self._logn(10 * HOUR, 0.6), HOUR), 40 * HOUR)
        raw = t0 + (self.rng.random(k) * span).astype(np.int64)
        times = np.sort([self._waking(int(t), t0) for t in raw])
        sweeps = 1 + int(k > 8) + int(k > 14)
        for group in np.array_split(times, sweeps):
            pot = 0
            for ti in group:
                ti = int(ti)
                p = self._user(ti, DAY // 2, exclude=m)
                if p is None:
                    continue
                amount = self._rupees(self._logn(6000, 0.7), 500, 90_000, (0.2, 0, 0.5, 0.3))
                channel = self._pick((INTENT, CHAT, QR), (0.45, 0.25, 0.3))
                ok = self._r() < 0.95
                rc = "00" if ok else self._pick(("Z9", "U30"), (0.6, 0.4))
                note = self._note("mule", 0.15)
                self._add(
                    ti,
                    p,
                    m,
                    amount,
                    channel,
                    self._device(p, ti),
                    SUCCESS if ok else FAILED,
                    rc,
                    note,
                    p,
                )
                pot += amount if ok else 0
            if pot == 0:
                continue
            t = int(group[-1]) + int(min(max(self._logn(90 * MINUTE, 0.6), 10 * MINUTE), 12 * HOUR))
            onward = self._mule(t, exclude=m) if self._r() < 0.4 else None
            dest = onward if onward is not None else self._cashout(t)
            left = int(pot * (0.92 + 0.07 * self._r())) // 10_000 * 10_000
            moved = 0
            while left > 0:
                amount = min(left, 9_500_000)
                channel = self._pick((INTENT, CHAT), (0.6, 0.4))
                self._add(t, m, dest, amount, channel, self._device(m, t), SUCCESS, "00", 0, -1)
                left -= amount
                moved += amount
                t += int((1 + 4 * self._r()) * MINUTE)
            if onward is not None and self._r() < 0.6:  # layering: a second hop to cash out
                t2 = t + int(self._logn(60 * MINUTE, 0.6))
                amount = max(int(moved * 0.97) // 10_000 * 10_000, 10_000)
                out = self._cashout(t2)
                while amount > 0:
                    part = min(amount, 9_500_000)
                    self._add(
                        t2,
                        onward,
                        out,
                        part,
                        INTENT,
                        self._device(onward, t2),
                        SUCCESS,
                        "00",
                        0,
                        -1,
                    )
                    amount -= part
                    t2 += int((1 + 4 * self._r()) * MINUTE)

    def _merchant_fraud(self, day_start: int) -> None:
        """A new storefront takes a spike of payments for a few days, then vanishes."""
        t0 = self._time_in_day(day_start, P2M_CDF)
        f = self._fraud_merchant([], 0.0, ("5399", "5651", "5732", "5999"), t0 - 6 * HOUR)
        k = 12 + int(self.rng.poisson(18))
        span = (1 + 3 * self._r()) * DAY
        # Word spreads: payments pick up towards the end, then stop dead.
        raw = t0 + (self.rng.random(k) ** 0.7 * span).astype(np.int64)
        times = np.sort([self._waking(int(t), t0) for t in raw])
        for ti in times:
            ti = int(ti)
            p = self._user(ti, DAY // 2)
            if p is None:
                continue
            price = int(self.rng.choice(_STOREFRONT_RUPEES)) * (2 if self._r() < 0.1 else 1)
            channel = self._pick((INTENT, QR), (0.65, 0.35))
            ok = self._r() < 0.93
            rc = "00" if ok else self._pick(("Z9", "U30", "ZI"), (0.5, 0.3, 0.2))
            note = self._note("p2m", 0.1)
            self._add(
                ti,
                p,
                f,
                price * 100,
                channel,
                self._device(p, ti),
                SUCCESS if ok else FAILED,
                rc,
                note,
                p,
            )

    def _collect_scam(self, day_start: int) -> None:
        """A fraudster merchant sends collect requests; some victims approve them."""
        t0 = self._time_in_day(day_start, P2M_CDF)
        f = self._fraud_merchant(self._scam_merchants, 0.3, ("4900", "5399", "4814", "5999"), t0)
        span = (2 + 46 * self._r()) * HOUR
        for _ in range(3 + min(int(self.rng.poisson(5)), 17)):
            t = self._waking(t0 + int(self._r() * span), t0)
            v = self._user(t, DAY)
            if v is None:
                continue
            for _ in range(1 if self._r() < 0.7 else 2):
                amount = self._rupees(self._logn(4000, 0.7), 500, 50_000, (0, 0.3, 0.5, 0.2))
                outcome = int(choice(self.rng, 1, (0.55, 0.25, 0.15, 0.05))[0])
                rc = ("00", "ZA", "U69", "Z9")[outcome]
                status = SUCCESS if outcome == 0 else FAILED
                note = self._note("cs", 0.5)
                self._add(t, v, f, amount, COLLECT, self._device(v, t), status, rc, note, v)
                t += int((1 + 19 * self._r()) * MINUTE)

    # the typologies that turn ------------------------------------------------------------

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._r()

    def _clean_account(
        self, linked_by: int, busy_from: int, busy_until: int, min_activity: float
    ) -> int | None:
        """An account linked by `linked_by`, active enough to have a history, untouched by the
        fraud planned so far (and by any later: it takes a turning role), with no own phone,
        SIM or PIN change in [busy_from, busy_until)."""
        pop = self.pop
        k = int(np.searchsorted(pop.link_sorted, linked_by, side="right"))
        if k == 0:
            return None
        for _ in range(40):
            u = int(pop.link_order[int(self.rng.integers(k))])
            if (
                pop.is_mule[u]
                or pop.activity[u] < min_activity
                or pop.dereg[u] < NEVER
                or u in self._turned
                or u in self._ato_victims
                or self._last_used[u] >= 0  # a case planned so far touched it: not clean
            ):
                continue
            changes = (pop.dev_change[u], pop.sim_change[u], pop.pin_reset[u])
            if any(busy_from <= int(x) < busy_until for x in changes):
                continue
            return u
        return None

    def _qr_swap(self, day_start: int) -> int:
        """A busy shop's QR code swapped for some days: its scanners pay a fraudster's VPA.

        Only the swap is planned here; the day's traffic is diverted as it is made. Returns the
        transfers expected to be diverted, which is what the swap costs of the fraud budget.
        """
        lo, hi = self.cfg.qr_swap_days
        t0 = self._time_in_day(day_start, P2M_CDF)
        t1 = t0 + int(self._uniform(lo, hi) * DAY)
        # Expected diverted transfers per shop: its share of each day's P2M scans, over the swap.
        starts = self.w.start_us + np.arange(self.cfg.days, dtype=np.int64) * DAY
        overlap = np.clip(np.minimum(starts + DAY, t1) - np.maximum(starts, t0), 0, DAY) / DAY
        expected = float((self.w.expected[:, 1] * overlap).sum()) * self._qr_share
        expected[sorted(self._swapped)] = 0.0
        # Fraudsters go for busy shops, but one giant swap would take the whole budget.
        weight = np.where(expected <= _QR_SWAP_MOST, expected, 0.0)
        if weight.sum() <= 0:
            weight = expected
        if weight.sum() <= 0:
            return _NOT_TODAY
        m = int(choice(self.rng, 1, weight)[0])
        # Where the world allows, the payee is an older account with a clean history: it turns.
        payee = self._clean_account(t0 - _TURNED_HISTORY, t0 - DAY, t1 + DAY, 1.5)
        if payee is None:
            payee = self._new_party(False, -1, t0 - DAY)
        else:
            self._turned.add(payee)
            self._last_used[payee] = max(int(self._last_used[payee]), t1)
        self._swapped.add(m)
        case = len(self.case_types)
        self.case_types.append(QRS)
        cfg = self.cfg
        bank_at = -1
        if self._r() < cfg.bank_confirm_rate["QR_SWAP"]:
            delay = self._logn(2.2 * cfg.report_delay_median_days * DAY, 0.6)
            delay = min(max(delay, DAY), cfg.max_report_delay_days * DAY)
            bank_at = min(t1, self.w.end_us) + int(delay)
        party = self.w.merchant_base + m
        self._swaps.append((party, payee, t0, t1, case, bank_at))
        self.turns.append((case, QRS, payee, party, -1, t0, t1))
        return round(float(expected[m]))

    def _dormant_mule(self, day_start: int) -> int | None:
        """An old account quiet for weeks takes payments from several victims, swept on fast."""
        pop, cfg = self.pop, self.cfg
        lo, hi = cfg.dormancy_days
        # The quiet starts at a day's start, so the account makes no transfer from that day on.
        longest = day_start - int(pop.link_sorted[min(20, len(pop.link_sorted) - 1)])
        longest = (longest - _TURNED_HISTORY) // DAY
        if longest < math.ceil(lo):
            return _NOT_TODAY  # no account has been on the app long enough yet
        quiet_days = min(math.ceil(self._uniform(lo, hi)), longest)
        quiet = day_start - quiet_days * DAY
        t0 = self._time_in_day(day_start, P2P_CDF)
        u = self._clean_account(quiet - _TURNED_HISTORY, quiet, t0 + 3 * DAY, 1.0)
        if u is None:
            return None
        pop.quiet[u] = quiet
        pop.is_mule[u] = True  # from now on, and in the ground truth
        self._turned.add(u)
        device = self._device(u, t0)
        if self._r() < 0.5:  # sold to a herder, who binds their own phone; else the owner runs it
            device = self._attacker()
            bound = t0 - int(min(max(self._logn(3 * HOUR, 0.8), 10 * MINUTE), 20 * HOUR))
            self.events.append((u, bound, DEVICE_BOUND, device))
        k = 4 + min(int(self.rng.poisson(4)), 12)
        span = self._uniform(8, 40) * HOUR  # a day or two
        raw = t0 + (self.rng.random(k) * span).astype(np.int64)
        times = np.sort([self._waking(int(t), t0) for t in raw])
        last = t0
        for group in np.array_split(times, 1 + int(k > 8)):
            pot = 0
            for ti in group:
                ti = int(ti)
                p = self._user(ti, DAY // 2, exclude=u)
                if p is None:
                    continue
                amount = self._rupees(self._logn(5000, 0.7), 500, 50_000, (0.2, 0, 0.5, 0.3))
                channel = self._pick((INTENT, CHAT, QR), (0.45, 0.3, 0.25))
                ok = self._r() < 0.95
                rc = "00" if ok else self._pick(("Z9", "U30"), (0.6, 0.4))
                note = self._note("mule", 0.15)
                status = SUCCESS if ok else FAILED
                self._add(ti, p, u, amount, channel, self._device(p, ti), status, rc, note, p)
                pot += amount if ok else 0
            if pot == 0:
                continue
            t = int(group[-1]) + int(min(max(self._logn(75 * MINUTE, 0.6), 10 * MINUTE), 6 * HOUR))
            onward = self._mule(t) if self._r() < 0.3 else None
            dest = onward if onward is not None else self._cashout(t)
            left = int(pot * (0.9 + 0.08 * self._r())) // 10_000 * 10_000
            while left > 0:
                amount = min(left, 9_500_000)
                channel = self._pick((INTENT, CHAT), (0.6, 0.4))
                self._add(t, u, dest, amount, channel, device, SUCCESS, "00", 0, -1)
                left -= amount
                t += int((1 + 4 * self._r()) * MINUTE)
            last = t
        self._turn = (u, -1, quiet, int(times[0]), last)
        return 0

    def _ato_same_device(self, day_start: int) -> int | None:
        """A takeover on the payer's own phone: no new binding; big amounts to new payees."""
        pop, cfg = self.pop, self.cfg
        if self.w.start_us + _TURNED_HISTORY > day_start + DAY:
            return _NOT_TODAY  # nobody has a history to depart from yet
        t0 = self._time_in_day(day_start, NIGHT_CDF if self._r() < 0.5 else P2P_CDF)
        lo, hi = cfg.ato_spree_hours
        spree = int(self._uniform(lo, hi) * HOUR)
        v = self._clean_account(t0 - _TURNED_HISTORY, t0 - 2 * DAY, t0 + spree + DAY, 1.0)
        if v is None:
            return None
        self._turned.add(v)
        device = self._device(v, t0)  # the victim's own phone: that is the typology
        dests = []
        for _ in range(1 + int(self.rng.integers(3))):
            m = self._mule(t0) if self._r() < 0.6 else None
            dests.append(m if m is not None else self._cashout(t0))
        n = 2 + min(int(self.rng.poisson(2)), 6)
        times = t0 + np.sort(self.rng.random(n) * spree).astype(np.int64)
        times[0], times[-1] = t0, t0 + spree
        typical = 400 * float(pop.amount_scale[v])
        remaining = max(500_000.0, self._logn(6_000_000 * float(pop.amount_scale[v]), 0.7))
        for ti in times:
            ti = int(ti)
            amount = self._rupees(typical * self._logn(30, 0.5), 3000, 99_500, (0.5, 0.2, 0.3, 0))
            dest = dests[int(self.rng.integers(len(dests)))]
            channel = self._pick((INTENT, CHAT, QR), (0.6, 0.3, 0.1))
            if amount > remaining:  # the account runs dry: the bank says no
                self._add(ti, v, dest, amount, channel, device, FAILED, "Z9", 0, v)
                break
            if self._r() < 0.07:
                rc = self._pick(("U16", "Z9"), (0.5, 0.5))
                self._add(ti, v, dest, amount, channel, device, FAILED, rc, 0, v)
                continue
            self._add(ti, v, dest, amount, channel, device, SUCCESS, "00", 0, v)
            remaining -= amount
        self._turn = (v, -1, -1, t0, t0 + spree)
        return 0

    # reporting and the plan ----------------------------------------------------------------

    def _finish(self, ftype: int) -> int:
        """Keep the case's in-period transfers and decide who reports them, and when."""
        rows = [r for r in self._case if self.w.start_us <= r[0] < self.w.end_us]
        self._case = []
        turn, self._turn = self._turn, None
        if not rows:
            return 0
        cfg = self.cfg
        name = FRAUD_TYPES[ftype - 1]
        case = len(self.case_types)
        self.case_types.append(ftype)
        if turn is not None:
            self.turns.append((case, ftype, *turn))
        max_delay = cfg.max_report_delay_days * DAY
        median = cfg.report_delay_median_days * DAY * cfg.report_delay_factor[name]
        victim_at: dict[int, int] = {}
        for victim in sorted({r[9] for r in rows if r[9] >= 0}):
            paid = [r[0] for r in rows if r[9] == victim and r[6] == SUCCESS]
            if paid and self._r() < cfg.victim_report_rate[name]:
                delay = min(max(self._logn(median, 0.9), 2 * HOUR), max_delay)
                victim_at[victim] = max(paid) + int(delay)
        bank_at = -1
        if self._r() < cfg.bank_confirm_rate[name]:
            delay = min(
                max(self._logn(2.2 * cfg.report_delay_median_days * DAY, 0.6), DAY), max_delay
            )
            bank_at = max(r[0] for r in rows) + int(delay)
            if victim_at:  # the bank confirms after the victims have complained
                bank_at = max(bank_at, max(victim_at.values()) + DAY)
        for r in rows:
            v_at = victim_at.get(r[9], -1) if r[6] == SUCCESS else -1
            self.rows.append((*r[:9], ftype, case, v_at, bank_at))
        return len(rows)

    def run(self) -> FraudPlanner:
        w, cfg = self.w, self.cfg
        expected = w.expected.sum(axis=1)
        # Retries of failed legit transfers add ~2.5% to the legit count the fraud share is of.
        budget = np.cumsum(expected * 1.025 * cfg.fraud_rate / (1.0 - cfg.fraud_rate))
        mix = {ft: cfg.typology_mix.get(name, 0.0) for name, ft in FRAUD_TYPE_CODE.items()}
        total = sum(mix.values()) or 1.0
        cases = {
            ATO: self._ato,
            SE: self._se,
            MULE: self._mule_case,
            MF: self._merchant_fraud,
            CS: self._collect_scam,
            QRS: self._qr_swap,
            DMULE: self._dormant_mule,
            ATOSD: self._ato_same_device,
        }
        planned = dict.fromkeys(cases, 0.0)
        for d in range(cfg.days):
            day_start = w.start_us + d * DAY
            for ft, make in cases.items():
                if mix[ft] <= 0:
                    continue
                target = budget[d] * mix[ft] / total
                misses = 0
                # Start a case once the budget covers about half of it, so big cases do not
                # swamp the first thin days.
                while planned[ft] + _CASE_SIZE[ft] / 2 < target and misses < 5:
                    ahead = make(day_start)  # transfers it adds beyond its planned rows
                    if ahead == _NOT_TODAY:
                        planned[ft] = max(planned[ft], target)
                        break
                    made = self._finish(ft) + (ahead or 0)
                    planned[ft] += made
                    misses = misses + 1 if made == 0 else 0
        self._freeze()
        return self

    def _freeze(self) -> None:
        rows = sorted(self.rows, key=lambda r: r[0])  # stable: ties keep planning order
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(self._COLS)
        self.transfers = {
            k: np.asarray(v, dtype=np.int64) for k, v in zip(self._COLS, cols, strict=True)
        }
        ev = sorted(self.events, key=lambda e: e[1])
        ecols = list(zip(*ev, strict=True)) if ev else [()] * 4
        self.account_events = {
            "user": np.asarray(ecols[0], dtype=np.int64),
            "t": np.asarray(ecols[1], dtype=np.int64),
            "kind": np.asarray(ecols[2], dtype=np.int8),
            "device": np.asarray(ecols[3], dtype=np.int64),
        }
        scols = list(zip(*self._swaps, strict=True)) if self._swaps else [()] * 6
        self.swaps = {
            k: np.asarray(v, dtype=np.int64)
            for k, v in zip(
                ("merchant", "payee", "start", "end", "case", "bank_at"), scols, strict=True
            )
        }
        self.case_names = pl.Series(
            [f"{_CASE_PREFIX[ft]}-{i + 1:06d}" for i, ft in enumerate(self.case_types)],
            dtype=pl.String,
        )


def _qr_share(world: World) -> np.ndarray:
    """Each legit merchant's expected share of all P2M transfers paid by scanning its QR code,
    0 for shops no one would swap a code at; `legit._merchant` is the choice this follows."""
    merch = world.merch
    lo = merch.seg_lo
    group = np.floor(lo).astype(np.int64)
    share = np.diff(np.append(lo, group[-1] + 1.0))  # each group spans [g, g + 1)
    member = merch.seg_member
    mcc = merch.mcc[member]
    national = group == merch.national_group[mcc]
    local_share = np.zeros(merch.n)
    local_share[member[~national]] = share[~national]
    national_share = np.zeros(merch.n)
    national_share[member[national]] = share[national]
    mcc = merch.mcc
    fav = MCC_FAVOURITE[mcc]
    local_p = np.where(MCC_LOCAL[mcc], fav + (1.0 - fav) * 0.85, 0.0)
    # Payers of the shop's state go local with local_p; anyone goes national otherwise.
    p = MCC_VOLUME[mcc] * (
        STATE_P[merch.state] * local_p * local_share + (1.0 - local_p) * national_share
    )
    return np.where(_SWAPPABLE_MCC[mcc], p * MCC_CHANNEL_CDF[mcc, 0], 0.0)


def divert_swapped_qr(world: World, batch: dict[str, np.ndarray], d: int) -> None:
    """Send day `d`'s QR payments to a swapped shop to the swap's payee, as QR_SWAP fraud.

    In place, on a legit batch: the payments are the ones its customers would have made anyway,
    so the shop's own QR takings stop for the swap. Victims' reports are drawn per transfer from a
    generator of its own, so the rest of the day's traffic does not depend on the swaps.
    """
    sw = world.plan.swaps
    if not len(sw["case"]):
        return
    ds = world.start_us + d * DAY
    active = np.flatnonzero((sw["start"] < ds + DAY) & (sw["end"] > ds))
    if not len(active):
        return
    cfg = world.cfg
    rng = seeded_rng(cfg.seed, 101, d)
    t = batch["created"]
    scanned = batch["channel"] == QR
    median = cfg.report_delay_median_days * DAY * cfg.report_delay_factor["QR_SWAP"]
    for i in active:
        hit = np.flatnonzero(
            scanned
            & (batch["payee"] == sw["merchant"][i])
            & (t >= sw["start"][i])
            & (t < sw["end"][i])
            & (batch["payer"] != sw["payee"][i])
        )
        if not len(hit):
            continue
        batch["payee"][hit] = sw["payee"][i]
        batch["ftype"][hit] = QRS
        batch["case"][hit] = sw["case"][i]
        batch["bank_at"][hit] = sw["bank_at"][i]
        paid = hit[batch["status"][hit] == SUCCESS]
        told = paid[rng.random(len(paid)) < cfg.victim_report_rate["QR_SWAP"]]
        delay = np.clip(
            lognormal(rng, median, 0.9, len(told)), 2 * HOUR, cfg.max_report_delay_days * DAY
        )
        batch["victim_at"][told] = t[told] + delay.astype(np.int64)
