"""Fraud typologies: every case of the period planned up front, and who reports it, and when.

Five typologies, each with its footprint: account takeover (SIM swap or new phone, night drain),
social engineering (a victim pays a first-time payee far more than usual), mule rings (many payers
into one account, swept out within hours), merchant fraud (a storefront that takes a spike of
payments and vanishes) and collect scams (collect requests some victims approve).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pipelines.ledger import contract as c
from pipelines.sandbox.simulator.batch import BATCH
from pipelines.sandbox.simulator.calibration import MCC_IDX, STATE_P
from pipelines.sandbox.simulator.codes import (
    ATO,
    CHAT,
    COLLECT,
    CS,
    DAY,
    DEVICE_BOUND,
    FAILED,
    FRAUD_TYPE_CODE,
    HOUR,
    INTENT,
    MF,
    MINUTE,
    MULE,
    NOTE_BASE,
    PIN_RESET,
    QR,
    RC,
    SE,
    SECOND,
    SIM_CHANGED,
    SUCCESS,
)
from pipelines.sandbox.simulator.draws import choice
from pipelines.sandbox.simulator.traffic import NIGHT_CDF, P2M_CDF, P2P_CDF, sample_in_day

if TYPE_CHECKING:
    from pipelines.sandbox.simulator.world import World

_CASE_PREFIX = {ATO: "ATO", SE: "SE", MULE: "MULE", MF: "MF", CS: "CS"}
_CASE_SIZE = {ATO: 5, SE: 2, MULE: 14, MF: 30, CS: 10}  # typical transfers per case
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
            if u != exclude and not pop.is_mule[u] and pop.dereg[u] > t + 2 * DAY:
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

    # reporting and the plan ----------------------------------------------------------------

    def _finish(self, ftype: int) -> int:
        """Keep the case's in-period transfers and decide who reports them, and when."""
        rows = [r for r in self._case if self.w.start_us <= r[0] < self.w.end_us]
        self._case = []
        if not rows:
            return 0
        cfg = self.cfg
        name = c.FRAUD_TYPES[ftype - 1]
        case = len(self.case_types)
        self.case_types.append(ftype)
        max_delay = cfg.max_report_delay_days * DAY
        median = cfg.report_delay_median_days * DAY * (0.4 if ftype == ATO else 1.0)
        victim_at: dict[int, int] = {}
        for victim in sorted({r[9] for r in rows if r[9] >= 0}):
            paid = [r[0] for r in rows if r[9] == victim and r[6] == SUCCESS]
            if paid and self._r() < cfg.victim_report_rate.get(name, 0.0):
                delay = min(max(self._logn(median, 0.9), 2 * HOUR), max_delay)
                victim_at[victim] = max(paid) + int(delay)
        bank_at = -1
        if self._r() < cfg.bank_confirm_rate.get(name, 0.0):
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
        }
        planned = dict.fromkeys(cases, 0)
        for d in range(cfg.days):
            day_start = w.start_us + d * DAY
            for ft, make in cases.items():
                target = budget[d] * mix[ft] / total
                misses = 0
                # Start a case once the budget covers about half of it, so big cases do not
                # swamp the first thin days.
                while planned[ft] + _CASE_SIZE[ft] / 2 < target and misses < 5:
                    make(day_start)
                    made = self._finish(ft)
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
        self.case_names = pl.Series(
            [f"{_CASE_PREFIX[ft]}-{i + 1:06d}" for i, ft in enumerate(self.case_types)],
            dtype=pl.String,
        )
