"""Writing the ledger: `simulate()` and the writer that lands one UTC day at a time.

Each day the writer merges the day's legit traffic with the fraud planned for it, emits every
transfer's state rows (PENDING, then final, then maybe REVERSED) in event order, carrying rows
due on a later day, lands account events and the labels reported that day, and appends the day
to the ground truth. Codes become contract strings only here, through lookup series. At the end
it writes the truth files of the whole period: labels, users and the turning cases (`turns`).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipelines.ledger import contract as c
from pipelines.sandbox.simulator.batch import BATCH, concat, take
from pipelines.sandbox.simulator.calibration import MCC_CODES, STATE_CODES
from pipelines.sandbox.simulator.codes import (
    B36,
    COLLECT,
    DAY,
    FRAUD_TYPES,
    HOUR,
    MINUTE,
    NOTES,
    PENDING,
    RC,
    RC_CODES,
    REVERSED,
    SECOND,
    SUCCESS,
    encode,
)
from pipelines.sandbox.simulator.config import SimulationConfig
from pipelines.sandbox.simulator.draws import lognormal, seeded_rng
from pipelines.sandbox.simulator.legit import legit_transfers
from pipelines.sandbox.simulator.world import World

# Lookup series: gathering from these turns code arrays into contract strings; index 0 is null
# where the field is optional.
_S_CHANNEL = pl.Series(c.CHANNELS, dtype=pl.String)
_S_STATUS = pl.Series(c.TRANSFER_STATUSES, dtype=pl.String)
_S_RC = pl.Series([None, *RC_CODES], dtype=pl.String)
_S_NOTE = pl.Series(NOTES, dtype=pl.String)
_S_STATE = pl.Series([None, *STATE_CODES], dtype=pl.String)
_S_MCC = pl.Series(MCC_CODES, dtype=pl.String)
_S_PAYEE_TYPE = pl.Series(c.PAYEE_TYPES, dtype=pl.String)
_S_EVENT = pl.Series(c.ACCOUNT_EVENT_TYPES, dtype=pl.String)
_S_LABEL = pl.Series(c.LABELS, dtype=pl.String)
_S_SOURCE = pl.Series(c.LABEL_SOURCES, dtype=pl.String)
_S_FTYPE = pl.Series([None, *FRAUD_TYPES], dtype=pl.String)
assert c.PAYEE_TYPES == ("PERSON", "MERCHANT")  # is_merchant (0/1) indexes it
_FRAUD_LABEL, _LEGIT_LABEL = c.LABELS.index("FRAUD"), c.LABELS.index("LEGIT")
_VICTIM, _BANK, _REVIEW = (
    c.LABEL_SOURCES.index(s) for s in ("VICTIM_REPORT", "BANK_CONFIRMED", "REVIEW_VERDICT")
)


@dataclass
class SimulationSummary:
    """What a run produced: row counts per stream, ground-truth frauds, files and seconds."""

    transfers: int
    transfer_events: int
    account_events: int
    labels: int
    frauds: int
    files: int
    seconds: float
    registered_users: int = 0
    labels_not_yet_reported: int = 0


def simulate(
    config: SimulationConfig,
    landing_dir: Path,
    truth_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Simulate `config`, write landing streams day by day and ground truth; return counts."""
    t_start = time.perf_counter()
    landing_dir, truth_dir = Path(landing_dir), Path(truth_dir)
    for name in c.STREAMS:
        existing = landing_dir / name
        if existing.exists() and any(existing.rglob("*.parquet")):
            # Landed files are immutable by contract: never overwrite or mix runs.
            raise FileExistsError(f"{existing} already holds parquet files; use an empty dir")
    truth_dir.mkdir(parents=True, exist_ok=True)

    world = World(config)
    writer = LedgerWriter(world, landing_dir, truth_dir)
    for d in range(config.days):
        writer.day(d)
        if progress is not None:
            progress(d + 1, config.days)
    writer.close()

    s = writer.stats
    return SimulationSummary(
        transfers=s["transfers"],
        transfer_events=s["transfer_events"],
        account_events=int(s["account_events"]),
        labels=s["labels"],
        frauds=s["frauds"],
        files=s["files"],
        seconds=round(time.perf_counter() - t_start, 3),
        registered_users=int((world.pop.reg < world.end_us).sum()),
        labels_not_yet_reported=s["labels_future"],
    )


class LedgerWriter:
    """Writes one UTC day at a time; carries events that belong to later days."""

    def __init__(self, world: World, landing: Path, truth: Path) -> None:
        self.w = world
        self.cfg = world.cfg
        self.landing = landing
        self.truth_dir = truth
        self.counter = 0  # transfers created so far: the transfer_id sequence
        self.seq = 0  # transfers stream ledger_seq
        self.carry: dict[str, np.ndarray] | None = None  # events not yet due
        self.pending_labels: list[pl.DataFrame] = []
        self.all_labels: list[pl.DataFrame] = []
        self.truth_writer: pq.ParquetWriter | None = None
        self.truth_tmp = truth / ".transfers.parquet.tmp"
        self.stats = dict.fromkeys(
            (
                "transfers",
                "transfer_events",
                "account_events",
                "labels",
                "frauds",
                "files",
                "labels_future",
            ),
            0,
        )
        plan = world.plan.transfers
        self.fraud = plan
        self.fraud["state"] = world.pop.state[plan["payer"]].astype(np.int64)
        self.acc_seq = 0

    # a day ---------------------------------------------------------------------------------

    def day(self, d: int) -> None:
        """Land day `d`'s transfer state rows, account events and labels; append its truth."""
        w, cfg = self.w, self.cfg
        ds = w.start_us + d * DAY
        de = ds + DAY
        rng = seeded_rng(cfg.seed, 100, d)
        legit = legit_transfers(self.w, d, rng)
        f = self.fraud
        a, b = np.searchsorted(f["created"], [ds, de])
        batch = concat([legit, {k: f[k][a:b] for k in BATCH}])
        order = np.argsort(batch["created"], kind="stable")
        batch = take(batch, order)
        n = len(order)
        counter = self.counter + np.arange(n, dtype=np.int64)
        self.counter += n

        final, rev = self._timing(rng, batch)
        labels = self._labels(rng, batch, counter, final)
        self._truth(batch, counter)
        self.stats["transfers"] += n
        self.stats["frauds"] += int((batch["ftype"] > 0).sum())

        # Write in windows of at most ~half a file of transfers so memory stays flat on big days.
        chunk = max(1, int(cfg.max_rows_per_file * 0.45))
        part = 0
        for lo in range(0, max(n, 1), chunk):
            hi = min(lo + chunk, n)
            window_end = int(batch["created"][hi]) if hi < n else de
            part = self._window(batch, counter, final, rev, lo, hi, window_end, ds, part)

        self._accounts(ds, de)
        self._land_labels(labels, ds, de)

    def _timing(
        self, rng: np.random.Generator, b: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """When each transfer reached its final state, and when (if ever) it was reversed."""
        n = len(b["created"])
        lat = np.clip(lognormal(rng, 1.6 * SECOND, 0.7, n), 0.2 * SECOND, 40 * SECOND)
        lat = np.where(b["rc"] == RC["U30"], lat * 2.5, lat)
        collect = b["channel"] == COLLECT
        approve = np.clip(lognormal(rng, 40 * SECOND, 1.0, n), 3 * SECOND, 25 * MINUTE)
        lat = np.where(collect, approve, lat)
        expired = b["rc"] == RC["U69"]
        lat = np.where(expired, 30 * MINUTE + rng.random(n) * 90 * SECOND, lat)
        final = b["created"] + lat.astype(np.int64)
        reversed_ = (
            (b["status"] == SUCCESS) & (b["ftype"] == 0) & (rng.random(n) < self.cfg.reversal_rate)
        )
        later = np.clip(lognormal(rng, 4 * HOUR, 0.8, n), 15 * MINUTE, 47 * HOUR).astype(np.int64)
        rev = np.where(reversed_, final + later, -1)
        return final, rev

    def _labels(
        self,
        rng: np.random.Generator,
        b: dict[str, np.ndarray],
        counter: np.ndarray,
        final: np.ndarray,
    ) -> pl.DataFrame:
        """Fraud labels as planned, plus a few disputes that turned out genuine (LEGIT)."""
        cfg = self.cfg
        n = len(counter)
        is_p2m = self.w.party_merchant[b["payee"]] == 1
        p = cfg.legit_label_rate * np.where(is_p2m, 1.6, 0.4)
        legit = np.flatnonzero((b["ftype"] == 0) & (b["status"] == SUCCESS) & (rng.random(n) < p))
        delay = np.clip(
            lognormal(rng, 7 * DAY, 0.8, len(legit)), HOUR, cfg.max_report_delay_days * DAY
        )
        source = np.where(rng.random(len(legit)) < 0.7, _REVIEW, _BANK)
        vic = np.flatnonzero(b["victim_at"] >= 0)
        bank = np.flatnonzero(b["bank_at"] >= 0)
        rows = np.concatenate([legit, vic, bank])
        df = pl.DataFrame(
            {
                "transfer_id": _transfer_ids(counter[rows]),
                "label": _S_LABEL.gather(
                    np.repeat([_LEGIT_LABEL, _FRAUD_LABEL], [len(legit), len(vic) + len(bank)])
                ),
                "fraud_type": _S_FTYPE.gather(b["ftype"][rows]),
                "source": _S_SOURCE.gather(
                    np.concatenate([source, np.full(len(vic), _VICTIM), np.full(len(bank), _BANK)])
                ),
                "reported_at": _timestamps(
                    np.concatenate(
                        [
                            final[legit] + delay.astype(np.int64),
                            b["victim_at"][vic],
                            b["bank_at"][bank],
                        ]
                    )
                ),
            },
            schema=c.LABELS_STREAM.schema,
        )
        self.all_labels.append(df)
        return df

    def _truth(self, b: dict[str, np.ndarray], counter: np.ndarray) -> None:
        v, k = b["victim_at"], b["bank_at"]
        first = np.where((v >= 0) & (k >= 0), np.minimum(v, k), np.maximum(v, k))
        case = b["case"]
        df = pl.DataFrame(
            {
                "transfer_id": _transfer_ids(counter),
                "is_fraud": b["ftype"] > 0,
                "fraud_type": _S_FTYPE.gather(b["ftype"]),
                "fraud_case_id": self._case_ids(case),
                "reported": first >= 0,
                "label_reported_at": _timestamps(first).set(pl.Series(first < 0), None),
            }
        )
        table = df.to_arrow()
        if self.truth_writer is None:
            self.truth_writer = pq.ParquetWriter(self.truth_tmp, table.schema, compression="zstd")
        self.truth_writer.write_table(table.cast(self.truth_writer.schema))

    def _case_ids(self, case: np.ndarray) -> pl.Series:
        names = self.w.plan.case_names
        if not len(names):
            return pl.Series([None] * len(case), dtype=pl.String)
        return names.gather(np.maximum(case, 0)).set(pl.Series(case < 0), None)

    def _window(
        self,
        b: dict[str, np.ndarray],
        counter: np.ndarray,
        final: np.ndarray,
        rev: np.ndarray,
        lo: int,
        hi: int,
        window_end: int,
        day_start: int,
        part: int,
    ) -> int:
        """Emit the window's state rows, due carried rows first-come, and land them in order."""
        sl = slice(lo, hi)
        base = {
            k: b[k][sl]
            for k in ("created", "payer", "payee", "amount", "channel", "device", "state", "note")
        }
        base["counter"] = counter[sl]
        m = hi - lo
        has_rev = np.flatnonzero(rev[sl] >= 0)
        idx = np.concatenate([np.arange(m), np.arange(m), has_rev])
        ev = take(base, idx)
        ev["t"] = np.concatenate([base["created"], final[sl], rev[sl][has_rev]])
        ev["rank"] = np.repeat(np.array([0, 1, 2], dtype=np.int64), [m, m, len(has_rev)])
        ev["status"] = np.concatenate(
            [np.full(m, PENDING), b["status"][sl], np.full(len(has_rev), REVERSED)]
        ).astype(np.int64)
        ev["rc"] = np.concatenate(
            [np.full(m, -1), b["rc"][sl], np.full(len(has_rev), RC["RB"])]
        ).astype(np.int64)
        if self.carry is not None:
            ev = concat([self.carry, ev])
        order = np.lexsort((ev["rank"], ev["counter"], ev["t"]))
        ev = take(ev, order)
        cut = int(np.searchsorted(ev["t"], window_end, side="left"))
        self.carry = take(ev, slice(cut, None))
        now = take(ev, slice(0, cut))
        if cut == 0:
            return part
        df = self._transfer_frame(now)
        date = dt.datetime.fromtimestamp(day_start // SECOND, tz=dt.UTC).date()
        folder = self.landing / "transfers" / f"date={date.isoformat()}"
        step = self.cfg.max_rows_per_file
        for s in range(0, cut, step):
            _write_parquet(df.slice(s, step), folder / f"part-{part:05d}.parquet")
            part += 1
            self.stats["files"] += 1
        self.stats["transfer_events"] += cut
        return part

    def _transfer_frame(self, ev: dict[str, np.ndarray]) -> pl.DataFrame:
        w = self.w
        n = len(ev["t"])
        payee = ev["payee"]
        df = pl.DataFrame(
            {
                "transfer_id": _transfer_ids(ev["counter"]),
                "ledger_seq": np.arange(self.seq + 1, self.seq + n + 1, dtype=np.int64),
                "created_at": _timestamps(ev["created"]),
                "payer_vpa": w.vpa.gather(ev["payer"]),
                "payee_vpa": w.vpa.gather(payee),
                "payee_type": _S_PAYEE_TYPE.gather(w.party_merchant[payee]),
                "mcc": _S_MCC.gather(w.party_mcc[payee]),
                "amount_paise": ev["amount"],
                "currency": pl.repeat(c.CURRENCIES[0], n, eager=True, dtype=pl.String),
                "channel": _S_CHANNEL.gather(ev["channel"]),
                "payer_device_id": w.devices.gather(ev["device"]),
                "payer_state": _S_STATE.gather(ev["state"] + 1),
                "status": _S_STATUS.gather(ev["status"]),
                "response_code": _S_RC.gather(ev["rc"] + 1),
                "note": _S_NOTE.gather(ev["note"]),
            },
            schema=c.TRANSFERS.schema,
        )
        self.seq += n
        return df

    def _accounts(self, ds: int, de: int) -> None:
        w = self.w
        a = w.accounts
        lo, hi = np.searchsorted(a["t"], [ds, de])
        if hi == lo:
            return
        user = a["user"][lo:hi]
        n = hi - lo
        seq = np.arange(self.acc_seq + 1, self.acc_seq + n + 1, dtype=np.int64)
        self.acc_seq += n
        device = a["device"][lo:hi]
        df = pl.DataFrame(
            {
                "event_id": encode(seq, B36, 10, b"AE"),
                "ledger_seq": seq,
                "event_time": _timestamps(a["t"][lo:hi]),
                "vpa": w.vpa.gather(user),
                "event_type": _S_EVENT.gather(a["kind"][lo:hi]),
                "device_id": w.devices.gather(np.maximum(device, 0)).set(
                    pl.Series(device < 0), None
                ),
                "state": _S_STATE.gather(w.pop.state[user].astype(np.int64) + 1),
            },
            schema=c.ACCOUNTS.schema,
        )
        date = dt.datetime.fromtimestamp(ds // SECOND, tz=dt.UTC).date()
        folder = self.landing / "accounts" / f"date={date.isoformat()}"
        step = self.cfg.max_rows_per_file
        for part, s in enumerate(range(0, n, step)):
            _write_parquet(df.slice(s, step), folder / f"part-{part:05d}.parquet")
            self.stats["files"] += 1
        self.stats["account_events"] += int(n)

    def _land_labels(self, new: pl.DataFrame, ds: int, de: int) -> None:
        """Land the labels reported today; keep later ones until their day comes."""
        pending = pl.concat([*self.pending_labels, new])
        t = pending["reported_at"].dt.epoch("us").to_numpy()
        due = (t >= ds) & (t < de)
        self.pending_labels = [pending.filter(pl.Series(t >= de))]
        today = pending.filter(pl.Series(due)).sort(["reported_at", "transfer_id", "source"])
        if today.height == 0:
            return
        date = dt.datetime.fromtimestamp(ds // SECOND, tz=dt.UTC).date()
        folder = self.landing / "labels" / f"date={date.isoformat()}"
        step = self.cfg.max_rows_per_file
        for part, s in enumerate(range(0, today.height, step)):
            _write_parquet(today.slice(s, step), folder / f"part-{part:05d}.parquet")
            self.stats["files"] += 1
        self.stats["labels"] += today.height

    # the end -------------------------------------------------------------------------------

    def close(self) -> None:
        w = self.w
        if self.truth_writer is not None:
            self.truth_writer.close()
            os.replace(self.truth_tmp, self.truth_dir / "transfers.parquet")
        labels = pl.concat(self.all_labels).sort(["reported_at", "transfer_id", "source"])
        self.stats["labels_future"] = int((labels["reported_at"].dt.epoch("us") >= w.end_us).sum())
        _write_parquet(labels, self.truth_dir / "labels.parquet")
        _write_parquet(self._users(), self.truth_dir / "users.parquet")
        _write_parquet(self._turns(), self.truth_dir / "turns.parquet")

    def _turns(self) -> pl.DataFrame:
        """One row per case of a typology that turns: the account that turned, and when."""
        w = self.w
        rows = w.plan.turns
        cols = list(zip(*rows, strict=True)) if rows else [()] * 7
        case, ftype, party, merchant, quiet, start, end = (
            np.asarray(col, dtype=np.int64) for col in cols
        )

        def when(us: np.ndarray) -> pl.Series:
            return _timestamps(us).set(pl.Series(us < 0), None)

        return pl.DataFrame(
            {
                "fraud_case_id": self._case_ids(case),
                "fraud_type": _S_FTYPE.gather(ftype),
                "vpa": w.vpa.gather(party),
                "merchant_vpa": w.vpa.gather(np.maximum(merchant, 0)).set(
                    pl.Series(merchant < 0), None
                ),
                "quiet_since": when(quiet),
                "turned_at": when(start),
                "turned_until": when(end),
            },
            schema={
                "fraud_case_id": pl.String,
                "fraud_type": pl.String,
                "vpa": pl.String,
                "merchant_vpa": pl.String,
                "quiet_since": c.TIMESTAMP,
                "turned_at": c.TIMESTAMP,
                "turned_until": c.TIMESTAMP,
            },
        ).sort("turned_at", "fraud_case_id")

    def _users(self) -> pl.DataFrame:
        """Who is who: registered users, merchants and fraud-only parties, with their roles."""
        w, pop = self.w, self.w.pop
        users = np.flatnonzero(pop.reg < w.end_us)
        n_extra = len(w.plan.extra["merchant"])
        extra_merchant = np.asarray(w.plan.extra["merchant"], dtype=bool)
        extra_state = np.asarray(w.plan.extra["state"], dtype=np.int64)
        extra_since = np.asarray(w.plan.extra["since"], dtype=np.int64)
        party = np.concatenate(
            [users, w.merchant_base + np.arange(w.merch.n), w.extra_base + np.arange(n_extra)]
        )
        kind = np.concatenate(
            [np.zeros(len(users)), np.ones(w.merch.n), np.where(extra_merchant, 1, 2)]
        ).astype(np.int64)
        registered = np.concatenate([pop.reg[users], np.full(w.merch.n, -1), extra_since])
        linked = np.concatenate([pop.link[users], np.full(w.merch.n + n_extra, -1)])
        state = np.concatenate([pop.state[users], w.merch.state, extra_state]).astype(np.int64)
        return pl.DataFrame(
            {
                "vpa": w.vpa.gather(party),
                "kind": pl.Series(["USER", "MERCHANT", "EXTERNAL"]).gather(kind),
                "is_mule": np.concatenate(
                    [pop.is_mule[users], np.zeros(w.merch.n, bool), ~extra_merchant]
                ),
                "is_fraudster_merchant": np.concatenate(
                    [np.zeros(len(users) + w.merch.n, bool), extra_merchant]
                ),
                "registered_at": _timestamps(registered).set(pl.Series(registered < 0), None),
                "bank_linked_at": _timestamps(linked).set(
                    pl.Series((linked < 0) | (linked >= w.end_us)), None
                ),
                "state": _S_STATE.gather(state + 1),
                "mcc": _S_MCC.gather(w.party_mcc[party]),
            }
        )


def _transfer_ids(counter: np.ndarray) -> pl.Series:
    """`WAP` and 12 base-36 digits: unique, deterministic, within the contract's 35 chars."""
    return encode(counter + 1, B36, 12, b"WAP")


def _timestamps(us: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(us, dtype=np.int64)).cast(c.TIMESTAMP)


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write atomically so a reader globbing *.parquet never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    os.replace(tmp, path)
