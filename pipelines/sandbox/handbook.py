"""A ledger-v1 world from a published design the project did not write: the transaction simulator
of the Fraud Detection Handbook (Le Borgne, Siblini, Lebichot, Bontempi, "Reproducible Machine
Learning for Credit Card Fraud Detection - Practical Handbook", chapter "Transaction data
simulator"), written here from its description, in UPI terms.

The design, as described there:
- customers at random places on a 100 x 100 grid, each with a spending profile: mean amount
  uniform in [5, 100], standard deviation half of it, transactions a day uniform in [0, 4];
- terminals at random places on the same grid; a customer uses the terminals within a radius;
- every day, a Poisson number of transactions per customer, at a time of day drawn around noon
  (normal, sd 20,000 s; draws outside the day are dropped), an amount from the customer's
  profile (a negative draw is redrawn uniform in [0, 2 x mean]) and a terminal drawn uniformly
  among the customer's;
- three fraud scenarios, applied in this order (a later one re-types a fraud):
  1. HIGH_AMOUNT: any transaction above 220 is fraud;
  2. COMPROMISED_TERMINAL: each day 2 terminals are compromised, and their transactions of that
     day and the next 27 (28 days) are fraud;
  3. COMPROMISED_CUSTOMER: each day 3 customers are compromised; over that day and the next 13
     (14 days) a third of their transactions have their amount multiplied by 5 and are fraud.

In UPI terms: a customer is a person's VPA paying from one device; a terminal is a merchant's
VPA, paid by scanning its QR code; an amount is rupees; a day is an India (IST) day, so the
published protocol's days are the days payments belong to. Every transfer succeeds (the design
has no declines). Accounts: each customer registers, links a bank account and binds its device
before the ledger starts, and each terminal's merchant registers. The design carries nothing a
device, channel or account event could reveal about fraud, and none is added: a fraudster here
is visible only through amounts, terminals and customers, as published.

Labels: every fraud is reported (the design knows all frauds), late. The handbook's protocol
assumes feedback a week late (its delay period is 7 days), so the delay here is drawn around
7 days: a gamma with mean 7 days and sd 2 days (shape 12.25), which keeps the week as the typical
delay while some reports come after the delay period ends (about 1 in 4 after 8.3 days), as real
chargebacks do, so a protocol that reads labels at the end of the delay period meets some it
cannot know yet. Compromised-customer frauds come from the victim (VICTIM_REPORT), the others
from the bank's investigation (BANK_CONFIRMED). The labels' fraud_type is the contract's word
where one fits (MERCHANT_FRAUD for a compromised terminal, ACCOUNT_TAKEOVER for a compromised
customer) and empty for the amount rule, which has no typology; the ground truth carries the
scenario (`truth/transfers.parquet`: transfer_id, is_fraud, fraud_type, scenario day), for
`upi-risk backtest --truth`.

`write_handbook_ledger(config, landing_dir, truth_dir)` writes the landing directory
(transfers/, accounts/, labels/ as Parquet) and the ground truth; seeded, numpy and polars only.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.india_time import IST
from pipelines.ledger import contract as c

HIGH_AMOUNT = "HIGH_AMOUNT"
COMPROMISED_TERMINAL = "COMPROMISED_TERMINAL"
COMPROMISED_CUSTOMER = "COMPROMISED_CUSTOMER"
FRAUD_SCENARIOS = (HIGH_AMOUNT, COMPROMISED_TERMINAL, COMPROMISED_CUSTOMER)
# The contract's fraud types where one fits; the amount rule has none (fraud_type is optional).
LABEL_FRAUD_TYPE = {HIGH_AMOUNT: None, COMPROMISED_TERMINAL: "MERCHANT_FRAUD"}
LABEL_FRAUD_TYPE[COMPROMISED_CUSTOMER] = "ACCOUNT_TAKEOVER"

DAY_SECONDS = 86_400
_US = 1_000_000
# Merchant categories for terminals (groceries, restaurants, fuel, pharmacies, clothing, misc.).
TERMINAL_MCCS = ("5411", "5812", "5541", "5912", "5651", "5999")
PAYER_HANDLES = ("okaxis", "okhdfcbank", "okicici", "oksbi", "ybl", "paytm")
MERCHANT_HANDLE = "pos"
# States for the grid's quadrants (a customer's state is where it lives; optional in the contract).
GRID_STATES = ("IN-MH", "IN-KA", "IN-TN", "IN-DL")


@dataclass(frozen=True)
class HandbookConfig:
    """The published design's parameters (defaults: the handbook's own world, 183 days)."""

    customers: int = 5_000
    terminals: int = 10_000
    days: int = 183
    start: dt.date = dt.date(2018, 4, 1)  # the handbook's first day, as an IST day
    radius: float = 5.0
    seed: int = 0
    high_amount_rupees: float = 220.0
    terminals_compromised_a_day: int = 2
    terminal_compromise_days: int = 28
    customers_compromised_a_day: int = 3
    customer_compromise_days: int = 14
    customer_fraud_share: float = 1 / 3
    customer_fraud_multiplier: float = 5.0
    label_delay_mean_days: float = 7.0
    label_delay_sd_days: float = 2.0


@dataclass(frozen=True)
class HandbookWorld:
    """What `write_handbook_ledger` wrote: counts, frauds per scenario, paths, seconds."""

    transfers: int
    frauds: int
    frauds_by_scenario: dict[str, int]
    accounts: int
    labels: int
    landing_dir: Path
    truth_path: Path
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["landing_dir"], out["truth_path"] = str(self.landing_dir), str(self.truth_path)
        return out


def customer_profiles(config: HandbookConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each customer's place, mean and sd of amount, and transactions a day."""
    n = config.customers
    mean_amount = rng.uniform(5, 100, n)
    return {
        "x": rng.uniform(0, 100, n),
        "y": rng.uniform(0, 100, n),
        "mean_amount": mean_amount,
        "std_amount": mean_amount / 2,
        "tx_per_day": rng.uniform(0, 4, n),
    }


def terminals_in_reach(
    customers: dict[str, np.ndarray], terminals: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each customer, the terminals closer than `radius` (CSR: offsets, terminal ids)."""
    offsets = [0]
    ids: list[np.ndarray] = []
    places = np.column_stack([customers["x"], customers["y"]])
    # Blocks of customers keep the distance matrix small (500 x terminals floats at a time).
    for lo in range(0, len(places), 500):
        block = places[lo : lo + 500]
        d2 = (block[:, None, 0] - terminals[None, :, 0]) ** 2 + (
            block[:, None, 1] - terminals[None, :, 1]
        ) ** 2
        for row in d2 < radius**2:
            near = np.flatnonzero(row)
            ids.append(near)
            offsets.append(offsets[-1] + len(near))
    return np.asarray(offsets, dtype=np.int64), np.concatenate(ids).astype(np.int64)


def draw_transactions(config: HandbookConfig, rng: np.random.Generator) -> pl.DataFrame:
    """The world's transactions with the three fraud scenarios: customer, terminal, day,
    seconds into the day, amount (rupees), is_fraud, fraud_type; in time order."""
    customers = customer_profiles(config, rng)
    terminals = rng.uniform(0, 100, (config.terminals, 2))
    offsets, reach = terminals_in_reach(customers, terminals, config.radius)
    n_reach = np.diff(offsets)

    counts = rng.poisson(np.tile(customers["tx_per_day"], config.days))  # day-major
    day = np.repeat(np.repeat(np.arange(config.days), config.customers), counts)
    cust = np.repeat(np.tile(np.arange(config.customers), config.days), counts)
    seconds = rng.normal(DAY_SECONDS / 2, 20_000, len(cust))
    # As published: a time drawn outside the day, or a customer with no terminal, makes no
    # transaction.
    keep = (seconds > 0) & (seconds < DAY_SECONDS) & (n_reach[cust] > 0)
    day, cust, seconds = day[keep], cust[keep], seconds[keep].astype(np.int64)
    mean, sd = customers["mean_amount"][cust], customers["std_amount"][cust]
    amount = rng.normal(mean, sd)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    amount = np.round(amount, 2)
    pick = np.minimum((rng.random(len(cust)) * n_reach[cust]).astype(np.int64), n_reach[cust] - 1)
    terminal = reach[offsets[cust] + pick]

    order = np.lexsort((cust, seconds, day))
    day, cust, seconds, amount, terminal = (
        a[order] for a in (day, cust, seconds, amount, terminal)
    )
    fraud_type = np.full(len(day), "", dtype=object)

    fraud_type[amount > config.high_amount_rupees] = HIGH_AMOUNT

    # Scenario 2: a terminal compromised on day d makes its transactions of [d, d + 28) fraud.
    windows = np.array(
        [
            (t, d, d + config.terminal_compromise_days)
            for d in range(config.days)
            for t in rng.choice(config.terminals, config.terminals_compromised_a_day, replace=False)
        ]
    )
    fraud_type[_in_windows(terminal, day, windows, config.terminals)] = COMPROMISED_TERMINAL

    # Scenario 3: a customer compromised on day d has a third of its transactions of
    # [d, d + 14) multiplied by 5, and those are fraud.
    for d in range(config.days):
        chosen = rng.choice(config.customers, config.customers_compromised_a_day, replace=False)
        lo = np.searchsorted(day, d)
        hi = np.searchsorted(day, d + config.customer_compromise_days)
        rows = lo + np.flatnonzero(np.isin(cust[lo:hi], chosen))
        n_fraud = int(len(rows) * config.customer_fraud_share)
        if n_fraud:
            hit = rng.choice(rows, n_fraud, replace=False)
            amount[hit] = np.round(amount[hit] * config.customer_fraud_multiplier, 2)
            fraud_type[hit] = COMPROMISED_CUSTOMER

    return pl.DataFrame(
        {
            "customer": cust,
            "terminal": terminal,
            "day": day,
            "seconds": seconds,
            "amount": amount,
            "is_fraud": fraud_type != "",
            "fraud_type": pl.Series(fraud_type.astype(str)).replace("", None),
        },
        schema_overrides={"fraud_type": pl.String},
    )


def _in_windows(
    entity: np.ndarray, day: np.ndarray, windows: np.ndarray, n_entities: int
) -> np.ndarray:
    """Whether each (entity, day) falls in one of `windows` (entity, first day, end day)."""
    covered = np.zeros((n_entities, int(day.max()) + 1 if len(day) else 1), dtype=bool)
    for entity_id, first, end in windows:
        covered[entity_id, first : min(end, covered.shape[1])] = True
    return covered[entity, day]


def payer_vpas(n: int) -> np.ndarray:
    """The customers' VPAs: a person's handle at one of the common PSP handles."""
    ids = np.arange(n)
    return np.array(
        [f"hbcust{i:05d}@{PAYER_HANDLES[i % len(PAYER_HANDLES)]}" for i in ids], dtype=object
    )


def merchant_vpas(n: int) -> np.ndarray:
    """The terminals' merchant VPAs."""
    return np.array([f"hbterm{i:05d}@{MERCHANT_HANDLE}" for i in range(n)], dtype=object)


def ledger_frames(
    config: HandbookConfig, tx: pl.DataFrame, rng: np.random.Generator
) -> dict[str, pl.DataFrame]:
    """The three ledger-v1 streams and the ground truth of `tx` (`draw_transactions`)."""
    start_us = int(dt.datetime.combine(config.start, dt.time(), tzinfo=IST).timestamp() * _US)
    created_us = start_us + (tx["day"].to_numpy() * DAY_SECONDS + tx["seconds"].to_numpy()) * _US
    # Sub-second jitter so two transfers of a payer never share an instant.
    created_us = created_us + rng.integers(0, _US, len(created_us))
    n = tx.height
    payers, merchants = payer_vpas(config.customers), merchant_vpas(config.terminals)
    mcc = np.array(TERMINAL_MCCS, dtype=object)[
        rng.integers(0, len(TERMINAL_MCCS), config.terminals)
    ]
    quadrant = rng.integers(0, len(GRID_STATES), config.customers)
    cust, term = tx["customer"].to_numpy(), tx["terminal"].to_numpy()
    transfer_id = (
        pl.Series(np.arange(n))
        .cast(pl.String)
        .str.zfill(12)
        .str.replace(r"^", f"HB{config.seed:03d}")
    ).to_numpy()
    amount_paise = np.maximum(np.round(tx["amount"].to_numpy() * 100).astype(np.int64), 1)
    transfers = pl.DataFrame(
        {
            "transfer_id": transfer_id,
            "ledger_seq": np.arange(1, n + 1, dtype=np.int64),
            "created_at": pl.Series(created_us).cast(pl.Datetime("us", "UTC")),
            "payer_vpa": payers[cust],
            "payee_vpa": merchants[term],
            "payee_type": "MERCHANT",
            "mcc": mcc[term],
            "amount_paise": amount_paise,
            "currency": "INR",
            "channel": "QR",  # a terminal is a shop's QR code
            "payer_device_id": pl.Series([f"hbdev{i:05d}" for i in range(config.customers)])
            .gather(cust)
            .to_numpy(),
            "payer_state": np.array(GRID_STATES, dtype=object)[quadrant][cust],
            "status": "SUCCESS",
            "response_code": "00",
            "note": None,
        },
        schema_overrides={"note": pl.String},
    ).select(c.TRANSFERS.columns)

    accounts = _account_events(config, payers, merchants, quadrant, start_us, rng)

    fraud = tx["is_fraud"].to_numpy()
    delay_days = rng.gamma(
        (config.label_delay_mean_days / config.label_delay_sd_days) ** 2,
        config.label_delay_sd_days**2 / config.label_delay_mean_days,
        int(fraud.sum()),
    )
    scenario = tx["fraud_type"].filter(tx["is_fraud"])
    labels = pl.DataFrame(
        {
            "transfer_id": transfer_id[fraud],
            "label": "FRAUD",
            "fraud_type": scenario.replace_strict(LABEL_FRAUD_TYPE, return_dtype=pl.String),
            "source": np.where(
                scenario.to_numpy() == COMPROMISED_CUSTOMER, "VICTIM_REPORT", "BANK_CONFIRMED"
            ),
            "reported_at": pl.Series(
                created_us[fraud] + (delay_days * DAY_SECONDS * _US).astype(np.int64)
            ).cast(pl.Datetime("us", "UTC")),
        }
    ).select(c.LABELS_STREAM.columns)
    truth = pl.DataFrame(
        {
            "transfer_id": transfer_id,
            "is_fraud": fraud,
            "fraud_type": tx["fraud_type"],
            "day": tx["day"].cast(pl.Int32),
        }
    )
    return {"transfers": transfers, "accounts": accounts, "labels": labels, "truth": truth}


def _account_events(
    config: HandbookConfig,
    payers: np.ndarray,
    merchants: np.ndarray,
    quadrant: np.ndarray,
    start_us: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Before the ledger starts: each customer registers, links its bank and binds its device
        within a day; each merchant registers. Times are 30 to 365 days before the start (the contract
    allows nothing before UPI's launch)."""
    n_c, n_t = len(payers), len(merchants)
    registered = start_us - rng.integers(30, 365, n_c) * DAY_SECONDS * _US
    linked = registered + rng.integers(60, 86_400, n_c) * _US
    bound = registered + rng.integers(1, 60, n_c) * _US
    merchant_registered = start_us - rng.integers(30, 365, n_t) * DAY_SECONDS * _US
    devices = np.array([f"hbdev{i:05d}" for i in range(n_c)], dtype=object)
    states = np.array(GRID_STATES, dtype=object)[quadrant]
    frame = pl.DataFrame(
        {
            "event_time": np.concatenate([registered, bound, linked, merchant_registered]),
            "vpa": np.concatenate([payers, payers, payers, merchants]),
            "event_type": ["REGISTERED"] * n_c
            + ["DEVICE_BOUND"] * n_c
            + ["BANK_LINKED"] * n_c
            + ["REGISTERED"] * n_t,
            "device_id": np.concatenate([devices, devices, devices, np.full(n_t, None)]),
            "state": np.concatenate([states, states, states, np.full(n_t, None)]),
        },
        schema_overrides={"device_id": pl.String, "state": pl.String},
    ).with_columns(event_time=pl.col("event_time").cast(pl.Datetime("us", "UTC")))
    frame = frame.sort("event_time", "vpa").with_row_index("ledger_seq", offset=1)
    return frame.with_columns(
        event_id=pl.format("HBACC{}-{}", pl.lit(config.seed), pl.col("ledger_seq")),
        ledger_seq=pl.col("ledger_seq").cast(pl.Int64),
    ).select(c.ACCOUNTS.columns)


def write_handbook_ledger(
    config: HandbookConfig, landing_dir: Path, truth_dir: Path
) -> HandbookWorld:
    """Generate `config`'s world; write landing_dir/{transfers,accounts,labels}/ (Parquet, one
    file per 30 days of transfers) and truth_dir/transfers.parquet. Refuses a non-empty landing
    directory: landed files are immutable, and a second world would mix into the first."""
    started = time.perf_counter()
    landing_dir, truth_dir = Path(landing_dir), Path(truth_dir)
    if landing_dir.exists() and any(landing_dir.iterdir()):
        raise FileExistsError(f"{landing_dir} is not empty: write a world into a new directory")
    rng = np.random.default_rng(config.seed)
    tx = draw_transactions(config, rng)
    frames = ledger_frames(config, tx, rng)
    for stream in c.STREAMS:
        (landing_dir / stream).mkdir(parents=True, exist_ok=True)
    transfers = frames["transfers"].with_columns(_part=pl.Series(tx["day"] // 30))
    for (part,), rows in transfers.group_by("_part", maintain_order=True):
        rows.drop("_part").write_parquet(
            landing_dir / "transfers" / f"days-{part * 30:03d}.parquet"
        )
    frames["accounts"].write_parquet(landing_dir / "accounts" / "accounts.parquet")
    frames["labels"].sort("reported_at").write_parquet(landing_dir / "labels" / "labels.parquet")
    truth_dir.mkdir(parents=True, exist_ok=True)
    truth_path = truth_dir / "transfers.parquet"
    frames["truth"].write_parquet(truth_path)
    truth = frames["truth"]
    by_scenario = {s: int((truth["fraud_type"] == s).sum()) for s in FRAUD_SCENARIOS}
    return HandbookWorld(
        transfers=truth.height,
        frauds=int(truth["is_fraud"].sum()),
        frauds_by_scenario=by_scenario,
        accounts=frames["accounts"].height,
        labels=frames["labels"].height,
        landing_dir=landing_dir,
        truth_path=truth_path,
        seconds=time.perf_counter() - started,
    )
