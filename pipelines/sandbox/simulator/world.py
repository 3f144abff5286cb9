"""The world planned before the first day: people, merchants, accounts, identities and devices.

People register along an S-curve of demand under a user cap, link a bank, change phones and SIMs,
and have a social graph; merchants sit in categories and states. The fraud plan is made here too,
because fraud adds parties, attackers' phones and account events the world must know of, and
turns some accounts: a dormant mule's own traffic stops from its `quiet` time on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipelines.sandbox.simulator.calibration import MCC_LOCAL, MCCS, STATE_CODES, STATE_P
from pipelines.sandbox.simulator.codes import (
    BANK_LINKED,
    DAY,
    DEREGISTERED,
    DEVICE_BOUND,
    HALF_HOUR,
    HEX,
    HOUR,
    MINUTE,
    NEVER,
    PIN_RESET,
    REGISTERED,
    SECOND,
    SIM_CHANGED,
    encode,
)
from pipelines.sandbox.simulator.config import SimulationConfig
from pipelines.sandbox.simulator.draws import choice, lognormal, seeded_rng, splitmix
from pipelines.sandbox.simulator.fraud import FraudPlanner
from pipelines.sandbox.simulator.traffic import P2P_CDF, expected_volume

# --- identities ------------------------------------------------------------------------------

# The app's partner-bank handles, other apps' handles (contacts not on the app yet, cash-out
# accounts) and acquirer handles for merchants.
_APP_HANDLES = (("wasbi", 0.36), ("wahdfcbank", 0.26), ("waicici", 0.22), ("waaxis", 0.16))
_OTHER_HANDLES = (
    ("ybl", 0.40),
    ("oksbi", 0.12),
    ("okhdfcbank", 0.08),
    ("okicici", 0.07),
    ("okaxis", 0.06),
    ("paytm", 0.15),
    ("ibl", 0.06),
    ("axl", 0.06),
)
_MERCHANT_HANDLES = (("wabizaxis", 0.3), ("wabizhdfc", 0.2), ("ybl", 0.3), ("paytm", 0.2))

# fmt: off
_FIRST_NAMES = (
    "aarav", "aditi", "aditya", "akash", "amit", "ananya", "anil", "anita", "anjali", "ankit",
    "arjun", "aryan", "asha", "deepak", "deepika", "divya", "gaurav", "geeta", "harish", "ishaan",
    "jaya", "karan", "kavita", "kiran", "krishna", "lakshmi", "mahesh", "manish", "meena",
    "mohan", "neha", "nikhil", "pooja", "pradeep", "prakash", "priya", "rahul", "raj", "rajesh",
    "ramesh", "ravi", "rekha", "rohit", "sachin", "sanjay", "santosh", "sarita", "shreya",
    "shweta", "sneha", "sunil", "sunita", "suresh", "swati", "tanvi", "uma", "varun", "vijay",
    "vikram", "vinod", "vivek", "yash", "abdul", "farhan", "imran", "salma", "ayesha", "zoya",
    "harpreet", "gurpreet", "manpreet", "simran", "joseph", "mary", "thomas", "anand", "balaji",
    "murugan", "selvi", "venkatesh", "srinivas", "lavanya", "bhavna", "hemant", "jitendra",
    "kamal", "lalit", "naveen", "omprakash", "pankaj", "rinku", "sonu", "chandan", "dinesh",
    "ganesh", "irfan", "kunal", "madhu", "nandini", "parveen", "rupa", "saurabh", "tarun", "usha",
    "vandana"
)
_SURNAMES = (
    "sharma", "verma", "singh", "kumar", "yadav", "patel", "shah", "gupta", "reddy", "nair",
    "iyer", "das", "ghosh", "mishra", "pandey", "jain", "khan", "ali", "joshi", "mehta", "rao",
    "naidu", "pillai", "mukherjee", "chauhan", "thakur", "gill", "sandhu", "biswas", "sahu",
    "patil", "kulkarni", "desai", "menon"
)
# fmt: on


@dataclass
class Population:
    """Every person who may register, as parallel arrays indexed by user number."""

    n: int
    state: np.ndarray  # int16 index into STATE_CODES
    reg: np.ndarray  # registration time, NEVER if not within the period
    link: np.ndarray  # bank linked (can pay from then on)
    dereg: np.ndarray
    dev_change: np.ndarray  # when a new own device was bound
    sim_change: np.ndarray  # legit SIM swap (new SIM, port), NEVER if none
    pin_reset: np.ndarray
    dev0: np.ndarray  # device-table index before dev_change
    dev1: np.ndarray
    activity: np.ndarray  # relative transfer rate, mean 1
    amount_scale: np.ndarray  # relative spend, median 1
    is_mule: np.ndarray
    quiet: np.ndarray  # a dormant mule's own traffic stops here (the fraud plan sets it), or NEVER
    contact_off: np.ndarray  # CSR social graph: contacts of u are contacts[off[u]:off[u+1]]
    contacts: np.ndarray
    link_order: np.ndarray  # users by bank-link time, to pick someone able to pay at t
    link_sorted: np.ndarray
    mules: np.ndarray  # mule users by bank-link time
    mule_link: np.ndarray


@dataclass
class Merchants:
    """Legit merchants and a grouped cumulative table to pick them by (category, state)."""

    n: int
    mcc: np.ndarray  # index into MCCS
    state: np.ndarray
    seg_lo: np.ndarray  # group g's members span [g, g + 1): start of each member's share
    seg_member: np.ndarray
    local_group: np.ndarray  # (mcc, state) -> group, -1 if no such merchant
    national_group: np.ndarray  # mcc -> group over all its merchants


class World:
    """Everything planned before the first day is written."""

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.start_us = int(cfg.start_datetime.timestamp()) * SECOND
        self.end_us = self.start_us + cfg.days * DAY
        self.pop = self._population(seeded_rng(cfg.seed, 0))
        self.merch = self._merchants(seeded_rng(cfg.seed, 1))
        self.other_base = self.pop.n  # other-app VPA of user u is party n + u
        self.merchant_base = 2 * self.pop.n
        self.extra_base = self.merchant_base + self.merch.n
        self.expected = expected_volume(cfg, self.pop, self.start_us)
        self.accounts = self._account_events(seeded_rng(cfg.seed, 2))
        self.plan = FraudPlanner(self, seeded_rng(cfg.seed, 3)).run()
        self._merge_fraud_account_events()
        self._parties(seeded_rng(cfg.seed, 4))
        self.devices = self._devices()

    # population ---------------------------------------------------------------------------

    def _registration_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Queue positions in an S-curve of demand, clipped by the user cap on a 30-min grid."""
        cfg = self.cfg
        steps = cfg.days * 48
        # Demand builds while people are awake: "activity time" advances with the profile.
        w = np.diff(np.concatenate([[0.0], P2P_CDF]))
        tau = np.concatenate([[0.0], np.cumsum(np.tile(w, cfg.days))])
        x = tau / cfg.days

        def logistic(v: np.ndarray | float) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-(np.asarray(v) - cfg.demand_midpoint) / cfg.demand_width))

        l0 = logistic(0.0)
        demand = (logistic(x) - l0) / (1.0 - l0)
        # The cap is on wall-clock time; each raise rolls out linearly so servers keep up.
        grid_days = np.arange(steps + 1) / 48.0
        cap = np.full(steps + 1, cfg.cap_steps[0][1])
        for (_, prev), (at, step) in zip(cfg.cap_steps, cfg.cap_steps[1:], strict=False):
            # Snap to the grid so no one registers under a raise before it takes effect.
            begin = math.ceil(at * cfg.days * 48 - 1e-9) / 48
            ramp = np.clip((grid_days - begin) / max(cfg.cap_rollout_days, 1e-9), 0.0, 1.0)
            cap += (step - prev) * ramp * (grid_days >= begin)
        registered = np.maximum.accumulate(n * np.minimum(demand, np.minimum(cap, 1.0)))
        target = np.arange(1, n + 1, dtype=np.float64)
        k = np.searchsorted(registered, target, side="left")
        ok = k <= steps
        kk = np.clip(k, 1, steps)
        lo, hi = registered[kk - 1], registered[kk]
        frac = np.where(hi > lo, (target - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
        times = self.start_us + ((kk - 1 + frac) * HALF_HOUR).astype(np.int64)
        times = np.where(ok, times, NEVER)
        reg = np.empty(n, dtype=np.int64)
        reg[rng.permutation(n)] = times
        return reg

    def _population(self, rng: np.random.Generator) -> Population:
        cfg = self.cfg
        n = cfg.users
        end = self.end_us
        months = cfg.days / 30.0
        state = choice(rng, n, STATE_P).astype(np.int16)
        reg = self._registration_times(rng, n)
        registered = reg < end

        fast = rng.random(n) < 0.65
        delay = np.where(
            fast,
            lognormal(rng, 4 * MINUTE, 0.9, n),
            lognormal(rng, 20 * HOUR, 1.1, n),
        )
        delay = np.clip(delay, 20 * SECOND, 20 * DAY).astype(np.int64)
        linked = registered & (rng.random(n) < cfg.bank_link_rate)
        link = np.where(linked, reg + delay, NEVER)
        link = np.where(link < end, link, NEVER)
        active = link < end

        def later(p: float) -> tuple[np.ndarray, np.ndarray]:
            """Which linked users have an event with probability p, and when (after linking)."""
            has = active & (rng.random(n) < p)
            span = np.maximum(end - link, 1).astype(np.float64)
            t = link + (rng.random(n) * span).astype(np.int64)
            # Keep the date but move the time of day into waking hours.
            day0 = self.start_us + (t - self.start_us) // DAY * DAY
            waking = day0 + (
                np.searchsorted(P2P_CDF, rng.random(n), side="right") * HALF_HOUR
                + (rng.random(n) * HALF_HOUR).astype(np.int64)
            )
            t = np.where((waking > link) & (waking < end), waking, t)
            return has, np.where(has, t, NEVER)

        # Monthly rates: a new phone 3%, a new SIM 1.2%, a forgotten PIN 2%, leaving 0.4%.
        _, dev_change = later(0.03 * months)
        _, sim_change = later(0.012 * months)
        _, pin_reset = later(0.02 * months)

        mule_candidates = np.flatnonzero(active & (link < end - 3 * DAY))
        n_mules = min(len(mule_candidates), max(8, round(n * cfg.mule_share)))
        mules = np.sort(rng.choice(mule_candidates, n_mules, replace=False))
        is_mule = np.zeros(n, dtype=bool)
        is_mule[mules] = True
        _, dereg = later(0.004 * months)
        dereg = np.where(is_mule, NEVER, dereg)

        dev0 = np.arange(n, dtype=np.int64)
        dev1 = np.arange(n, 2 * n, dtype=np.int64)
        # Mule herders run several accounts from one phone.
        if len(mules) > 1:
            share = rng.random(len(mules)) < 0.3
            dev0[mules[share]] = dev0[rng.choice(mules, int(share.sum()))]

        activity = np.clip(rng.gamma(0.6, 1 / 0.6, n), 0.02, 15.0)
        amount_scale = np.exp(0.45 * rng.standard_normal(n))

        # Social graph: power-law number of contacts, 80% in one's own state.
        deg = np.minimum(1 + np.floor(rng.pareto(1.7, n) * 4), 150).astype(np.int64)
        off = np.concatenate([[0], np.cumsum(deg)])
        owner = np.repeat(np.arange(n, dtype=np.int64), deg)
        by_state = np.argsort(state, kind="stable")
        counts = np.bincount(state, minlength=len(STATE_CODES))
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        s = state[owner]
        same = by_state[first[s] + (rng.random(len(owner)) * counts[s]).astype(np.int64)]
        anyone = rng.integers(0, n, len(owner))
        contacts = np.where(rng.random(len(owner)) < 0.8, same, anyone)
        contacts = np.where(contacts == owner, (contacts + 1) % n, contacts)

        order = np.argsort(link, kind="stable")
        mule_order = mules[np.argsort(link[mules], kind="stable")]
        return Population(
            n=n,
            state=state,
            reg=np.where(registered, reg, NEVER),
            link=link,
            dereg=dereg,
            dev_change=dev_change,
            sim_change=sim_change,
            pin_reset=pin_reset,
            dev0=dev0,
            dev1=dev1,
            activity=activity,
            amount_scale=amount_scale,
            is_mule=is_mule,
            quiet=np.full(n, NEVER, dtype=np.int64),
            contact_off=off,
            contacts=contacts.astype(np.int64),
            link_order=order,
            link_sorted=link[order],
            mules=mule_order,
            mule_link=link[mule_order],
        )

    def _merchants(self, rng: np.random.Generator) -> Merchants:
        n = self.cfg.merchant_count
        shares = np.array([m.merchant_share for m in MCCS])
        counts = np.maximum(np.where(MCC_LOCAL, 1, 2), np.round(n * shares / shares.sum()))
        counts = counts.astype(np.int64)
        counts[0] += max(n - counts.sum(), 1 - counts[0])  # groceries absorb the rounding
        n = int(counts.sum())
        mcc = np.repeat(np.arange(len(MCCS)), counts)
        state = choice(rng, n, STATE_P).astype(np.int16)
        # Local shops: lognormal popularity. National billers: a few giants (Zipf).
        weight = np.exp(1.0 * rng.standard_normal(n))
        for i in np.flatnonzero(~MCC_LOCAL):
            members = np.flatnonzero(mcc == i)
            weight[members] = 1.0 / np.arange(1, len(members) + 1) ** 1.1

        n_states = len(STATE_CODES)
        local_group = np.full((len(MCCS), n_states), -1, dtype=np.int64)
        national_group = np.empty(len(MCCS), dtype=np.int64)
        seg_lo: list[np.ndarray] = []
        seg_member: list[np.ndarray] = []
        g = 0

        def add_group(members: np.ndarray) -> None:
            w = weight[members]
            seg_lo.append(g + np.concatenate([[0.0], np.cumsum(w)[:-1]]) / w.sum())
            seg_member.append(members)

        for i in range(len(MCCS)):
            members = np.flatnonzero(mcc == i)
            add_group(members)
            national_group[i] = g
            g += 1
            if MCC_LOCAL[i]:
                for s in np.unique(state[members]):
                    add_group(members[state[members] == s])
                    local_group[i, s] = g
                    g += 1
        return Merchants(
            n=n,
            mcc=mcc,
            state=state,
            seg_lo=np.concatenate(seg_lo),
            seg_member=np.concatenate(seg_member),
            local_group=local_group,
            national_group=national_group,
        )

    # accounts ------------------------------------------------------------------------------

    def _account_events(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Lifecycle events of every user as parallel arrays (user, time, type, device)."""
        pop = self.pop
        n = pop.n
        users = np.arange(n, dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]] = []

        def add(mask: np.ndarray, t: np.ndarray, kind: int, device: np.ndarray | None) -> None:
            dev = np.full(n, -1, dtype=np.int64) if device is None else device
            parts.append((users[mask], t[mask], kind, dev[mask]))

        registered = pop.reg < self.end_us
        add(registered, pop.reg, REGISTERED, None)
        bound = pop.reg + np.clip(lognormal(rng, 25 * SECOND, 0.6, n), 3 * SECOND, 10 * MINUTE)
        add(registered, bound.astype(np.int64), DEVICE_BOUND, pop.dev0)
        add(pop.link < self.end_us, pop.link, BANK_LINKED, pop.dev0)
        add(pop.dev_change < self.end_us, pop.dev_change, DEVICE_BOUND, pop.dev1)
        has_sim = pop.sim_change < self.end_us
        add(has_sim, pop.sim_change, SIM_CHANGED, None)
        # After a SIM swap UPI makes the user re-bind, usually on the same phone.
        rebind = pop.sim_change + lognormal(rng, 5 * MINUTE, 0.7, n).astype(np.int64)
        own = np.where(rebind >= pop.dev_change, pop.dev1, pop.dev0)
        add(has_sim & (rebind < self.end_us), rebind, DEVICE_BOUND, own)
        add(pop.pin_reset < self.end_us, pop.pin_reset, PIN_RESET, None)
        add(pop.dereg < self.end_us, pop.dereg, DEREGISTERED, None)
        user = np.concatenate([p[0] for p in parts])
        t = np.concatenate([p[1] for p in parts])
        kind = np.concatenate([np.full(len(p[0]), p[2], dtype=np.int8) for p in parts])
        device = np.concatenate([p[3] for p in parts])
        # Nothing happens to an account after it is deregistered.
        keep = (t <= pop.dereg[user]) & (t < self.end_us)
        return {"user": user[keep], "t": t[keep], "kind": kind[keep], "device": device[keep]}

    def _merge_fraud_account_events(self) -> None:
        ev = self.plan.account_events
        a = self.accounts
        for k in a:
            a[k] = np.concatenate([a[k], ev[k]])
        keep = a["t"] < self.end_us
        for k in a:
            a[k] = a[k][keep]
        order = np.lexsort((a["kind"], a["user"], a["t"]))
        for k in a:
            a[k] = a[k][order]

    # identities ----------------------------------------------------------------------------

    def _person_vpas(
        self, rng: np.random.Generator, n: int, handles: tuple[tuple[str, float], ...]
    ) -> pl.Series:
        """`name.1234`, `namesurname12` or a 10-digit mobile number, at one of `handles`."""
        names = pl.Series(_FIRST_NAMES)
        surnames = pl.Series(_SURNAMES)
        h = pl.Series([x[0] for x in handles])
        df = pl.DataFrame(
            {
                "kind": choice(rng, n, (0.35, 0.45, 0.20)),
                "phone": rng.integers(6_000_000_000, 10_000_000_000, n),
                "first": names.gather(rng.integers(0, len(names), n)),
                "last": surnames.gather(rng.integers(0, len(surnames), n)),
                "num": rng.integers(10, 10_000, n),
                "handle": h.gather(choice(rng, n, tuple(x[1] for x in handles))),
            }
        )
        local = (
            pl.when(pl.col("kind") == 0)
            .then(pl.col("phone").cast(pl.String))
            .when(pl.col("kind") == 1)
            .then(pl.concat_str(pl.col("first"), pl.lit("."), pl.col("num").cast(pl.String)))
            .otherwise(
                pl.concat_str(
                    pl.col("first"), pl.col("last"), (pl.col("num") % 100).cast(pl.String)
                )
            )
        )
        return df.select(pl.concat_str(local, pl.lit("@"), pl.col("handle"))).to_series()

    def _merchant_vpas(self, rng: np.random.Generator, mcc: np.ndarray) -> pl.Series:
        """QR-sticker ids (`q123456789`) or `stem.12345` by category, at a merchant handle."""
        n = len(mcc)
        stems = [m.stems for m in MCCS]
        flat = pl.Series([s for group in stems for s in group])
        first = np.cumsum([0, *(len(s) for s in stems)])[:-1]
        count = np.array([len(s) for s in stems])
        stem = first[mcc] + (rng.random(n) * count[mcc]).astype(np.int64)
        h = pl.Series([x[0] for x in _MERCHANT_HANDLES])
        df = pl.DataFrame(
            {
                "qr": rng.random(n) < 0.35,
                "digits": rng.integers(100_000_000, 1_000_000_000, n),
                "stem": flat.gather(stem),
                "num": rng.integers(100, 100_000, n),
                "handle": h.gather(choice(rng, n, tuple(x[1] for x in _MERCHANT_HANDLES))),
            }
        )
        local = (
            pl.when(pl.col("qr"))
            .then(pl.concat_str(pl.lit("q"), pl.col("digits").cast(pl.String)))
            .otherwise(pl.concat_str(pl.col("stem"), pl.lit("."), pl.col("num").cast(pl.String)))
        )
        return df.select(pl.concat_str(local, pl.lit("@"), pl.col("handle"))).to_series()

    def _parties(self, rng: np.random.Generator) -> None:
        """Every payer/payee VPA: users, their other-app VPAs, merchants, fraud-only parties."""
        n = self.pop.n
        extra = self.plan.extra
        extra_merchant = np.asarray(extra["merchant"], dtype=bool)
        extra_mcc = np.asarray(extra["mcc"], dtype=np.int64)
        parts = [
            self._person_vpas(rng, n, _APP_HANDLES),
            self._person_vpas(rng, n, _OTHER_HANDLES),
            self._merchant_vpas(rng, self.merch.mcc),
        ]
        if len(extra_merchant):
            people = self._person_vpas(rng, len(extra_merchant), _OTHER_HANDLES)
            shops = self._merchant_vpas(rng, np.maximum(extra_mcc, 0))
            parts.append(
                pl.select(
                    pl.when(pl.Series(extra_merchant)).then(shops).otherwise(people)
                ).to_series()
            )
        vpa = pl.concat(parts).alias("vpa")
        # Collisions (same name and number) get a fresh mobile-number VPA until all are unique.
        for _ in range(50):
            dup = ~vpa.is_first_distinct()
            idx = np.flatnonzero(dup.to_numpy())
            if len(idx) == 0:
                break
            handle = vpa.gather(idx).str.split("@").list.get(1)
            phone = pl.Series(rng.integers(6_000_000_000, 10_000_000_000, len(idx)))
            fresh = phone.cast(pl.String) + "@" + handle
            vpa = vpa.scatter(idx, fresh)
        else:  # pragma: no cover - 50 rounds of 10-digit collisions do not happen
            raise RuntimeError("could not make VPAs unique")
        self.vpa = vpa
        is_merchant = np.zeros(len(vpa), dtype=np.uint8)
        is_merchant[self.merchant_base : self.extra_base] = 1
        is_merchant[self.extra_base :] = extra_merchant
        mcc = np.zeros(len(vpa), dtype=np.int64)
        mcc[self.merchant_base : self.extra_base] = self.merch.mcc + 1
        mcc[self.extra_base :] = np.where(extra_merchant, extra_mcc + 1, 0)
        self.party_merchant = is_merchant
        self.party_mcc = mcc

    def _devices(self) -> pl.Series:
        """Opaque 16-hex device ids: users' own phones, then attackers' phones."""
        total = 2 * self.pop.n + self.plan.attacker_devices
        salt = np.uint64(self.cfg.seed & 0xFFFFFFFFFFFFFFFF)
        ids = splitmix(np.arange(total, dtype=np.uint64) ^ splitmix(np.full(1, salt))[0])
        return encode(ids, HEX, 16)

    def device_at(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The phone each user has bound at time t: the first one, or the new one after a change."""
        pop = self.pop
        return np.where(t >= pop.dev_change[users], pop.dev1[users], pop.dev0[users])
