"""A simulated day replayed through the online state equals the batch engine, feature by feature
and decision by decision, on each state store backend.

The world: 8 simulated days, every user registered from the first day (the demand curve and the
cap are set so), ingested into a warehouse; the last day holds 100k+ transfers and every fraud
typology. The online state is built from the first 7 days (`build_state`); then the last day
arrives as one time-ordered stream: each transfer's features are asked for, then it is
recorded, then its outcome (the switch settles within seconds: the outcome is recorded before
the next transfer), with account events at their event_time and labels at their reported_at in
between. The batch engine runs on the whole ledger.

Why 7 days of history and not 30: parity holds on any history, and what it tests is that the
online arithmetic over the records a key holds equals the batch's over the ledger. A week fills
every window but the 30-day ones (those then hold all the history, which is the same test of
the same code), and the replayed day's own updates (pending outcomes, late labels, events)
are what the windows see change. The summaries that compaction writes for history older than a
window are checked against the batch in tests/test_online_features.py.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.decisions.policy import Policy, confirmed_mule_vpas, decide, decide_one
from pipelines.features.definitions import FEATURE_NAMES, WHOLE_NUMBER_FEATURES
from pipelines.features.engine import compute_features, load_inputs
from pipelines.features.online import OnlineFeatureState, build_state
from pipelines.features.online.embedded import EmbeddedStore
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.risk.model import make_model
from pipelines.sandbox.simulator import SimulationConfig, simulate
from pipelines.sandbox.simulator.codes import FRAUD_TYPES
from pipelines.warehouse import warehouse

# Both backends on one xdist worker, in sequence, sharing the module's world.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("online_parity")]

START = dt.date(2026, 1, 1)
DAYS = 8  # 7 days of history, then the day replayed
CONFIG = SimulationConfig(
    users=150_000,
    days=DAYS,
    start=START,
    seed=7,
    transfer_rate=1.0,
    # Everyone registers on the first day, no cap: the last day is as busy as a day can be
    # for this many users, and the history before it is short.
    demand_midpoint=0.05,
    demand_width=0.05,
    cap_steps=((0.0, 1.0),),
    # Dormant mules need an account quiet for days after 5 days on the app: short enough
    # quiet, and enough cases, that one turns on the last day.
    dormancy_days=(1.0, 1.5),
    fraud_rate=0.006,
    typology_mix={**SimulationConfig().typology_mix, "DORMANT_MULE": 0.12},
)
DAY_START = dt.datetime.combine(START + dt.timedelta(days=DAYS - 1), dt.time(), tzinfo=dt.UTC)


class World:
    """The simulated ledger, the batch features of every transfer, and the replayed day."""

    def __init__(self, root: Path) -> None:
        simulate(CONFIG, root / "landing", root / "truth")
        with warehouse(root / "warehouse.duckdb") as con:
            ingest_landing(con, root / "landing")
            refresh_transfers(con)
            refresh_accounts(con)
            self.transfers, self.events, _ = load_inputs(con)
            self.labels = con.sql(
                "SELECT transfer_id, label, reported_at, fraud_type, source FROM ledger.labels"
            ).pl()
            mcc = con.sql("SELECT transfer_id, mcc FROM ledger.transfers").pl()
        self.batch = compute_features(self.transfers, self.events, self.labels)
        self.day = self.transfers.filter(pl.col("created_at") >= DAY_START).join(
            mcc, on="transfer_id", how="left", maintain_order="left"
        )
        self.prior = self.transfers.filter(pl.col("created_at") < DAY_START)
        truth = pl.read_parquet(root / "truth" / "transfers.parquet")
        self.day_typologies = set(
            truth.filter(pl.col("is_fraud"))
            .join(self.day.select("transfer_id"), on="transfer_id")["fraud_type"]
            .to_list()
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("online-parity"))


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "embedded":
        built = EmbeddedStore()
    else:
        from pipelines.features.online.redis_store import RedisStore

        url = request.getfixturevalue("redis_url")
        # Bulk appends of 50k keys take longer than the request path's default timeout.
        built = RedisStore(url, prefix="test-online-parity:", socket_timeout_s=30.0)
    yield built
    built.clear()
    built.close()


def stream(world: World) -> list[tuple[int, int, str, dict[str, Any]]]:
    """The day's updates as (time µs, order, kind, row), sorted: a transfer (features asked
    for, then recorded, then its outcome) before an event or a label of the same microsecond
    (which the transfer must not see: only what is strictly before it counts)."""
    events = world.events.filter(
        (pl.col("event_time") >= DAY_START) & (pl.col("event_time") < DAY_START + dt.timedelta(1))
    )
    labels = world.labels.filter(
        (pl.col("reported_at") >= DAY_START) & (pl.col("reported_at") < DAY_START + dt.timedelta(1))
    ).join(world.transfers.select("transfer_id", "created_at"), on="transfer_id")
    out = []
    for i, row in enumerate(world.day.iter_rows(named=True)):
        out.append((_us(row["created_at"]), 0, i, "transfer", row))
    for row in events.iter_rows(named=True):
        out.append((_us(row["event_time"]), 1, 0, "event", row))
    for row in labels.iter_rows(named=True):
        # A label reported before its transfer was made is sent once the transfer exists.
        out.append((_us(max(row["reported_at"], row["created_at"])), 2, 0, "label", row))
    out.sort(key=lambda u: u[:3])
    return [(t, order, kind, row) for t, order, _, kind, row in out]


def _us(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def replay(state: OnlineFeatureState, world: World) -> tuple[pl.DataFrame, list[float]]:
    """The online features of each of the day's transfers, and the seconds each took."""
    rows, seconds = [], []
    for _, _, kind, row in stream(world):
        if kind == "transfer":
            started = time.perf_counter()
            values = state.features(row)
            seconds.append(time.perf_counter() - started)
            rows.append({"transfer_id": row["transfer_id"], **values})
            assert state.record_transfer({**row, "status": None, "response_code": None})
            assert state.record_outcome(row["transfer_id"], row["status"], row["response_code"])
        elif kind == "event":
            state.record_account_event(row["vpa"], row["event_type"], row["event_time"])
        else:
            assert state.record_label(
                row["transfer_id"],
                row["label"],
                row["reported_at"],
                fraud_type=row["fraud_type"],
                source=row["source"],
            )
    schema = {"transfer_id": pl.String, **dict.fromkeys(FEATURE_NAMES, pl.Float64)}
    return pl.DataFrame(rows, schema=schema, orient="row"), seconds


def assert_frames_equal(online: pl.DataFrame, batch: pl.DataFrame) -> None:
    """Counts exactly, other features within 1e-9 relative, null where null."""
    assert online.height == batch.height
    joined = online.join(batch, on="transfer_id", suffix="_batch")
    assert joined.height == online.height
    problems = []
    for name in FEATURE_NAMES:
        got = joined[name].to_numpy()
        want = joined[f"{name}_batch"].cast(pl.Float64).to_numpy()
        null_got, null_want = np.isnan(got), np.isnan(want)
        if name in WHOLE_NUMBER_FEATURES:
            bad = (null_got != null_want) | (~null_want & (got != want))
        else:
            close = np.isclose(got, want, rtol=1e-9, atol=0.0)
            bad = (null_got != null_want) | (~null_want & ~null_got & ~close)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(
                f"{name}: {int(bad.sum())} rows differ, e.g. {joined['transfer_id'][i]} "
                f"online {got[i]} batch {want[i]}"
            )
    assert not problems, "\n".join(problems)


def test_a_replayed_day_equals_the_batch(world: World, store: Any) -> None:
    assert world.day.height >= 100_000
    assert world.day_typologies == set(FRAUD_TYPES)
    started = time.perf_counter()
    prior_labels = world.labels.filter(pl.col("reported_at") < DAY_START)
    prior_events = world.events.filter(pl.col("event_time") < DAY_START)
    state = build_state(store, world.prior, prior_events, prior_labels)
    built = time.perf_counter() - started
    online, seconds = replay(state, world)
    batch = world.batch.filter(pl.col("transfer_id").is_in(world.day["transfer_id"].implode()))
    assert_frames_equal(online, batch)
    p50, p99 = np.percentile(seconds, [50, 99]) * 1e3
    print(
        f"\n{store.backend}: built in {built:.1f}s, replayed {len(seconds):,} transfers in "
        f"{time.perf_counter() - started - built:.1f}s; features() p50 {p50:.3f} ms, "
        f"p99 {p99:.3f} ms; {state.stats()}"
    )

    # Decisions: the same model and policy on both paths, the block list as of the day start.
    fitted = _model(world)
    scores = fitted.risk_score(batch.select(FEATURE_NAMES))
    policy = Policy(
        version="policy-test.1",
        hold_threshold=float(np.quantile(scores, 0.99)),
        block_threshold=float(np.quantile(scores, 0.999)),
    )
    frame = world.day.join(batch, on="transfer_id", maintain_order="left")
    frame = frame.with_columns(risk_score=fitted.risk_score(frame.select(FEATURE_NAMES)))
    blocklist = confirmed_mule_vpas(world.labels, world.transfers, as_of=DAY_START)
    decided = decide(frame, policy, blocklist=blocklist, allowlist=set())
    expected = {
        r["transfer_id"]: (r["decision"], list(r["reason_codes"]))
        for r in decided.iter_rows(named=True)
    }
    features_of = {r["transfer_id"]: r for r in online.iter_rows(named=True)}
    # Scoring one at a time costs ~1 ms a transfer in sklearn: every transfer the batch holds,
    # blocks or lists, and a random sample of those it allows (the features of all are equal).
    allowed = [k for k, (d, _) in expected.items() if d == "ALLOW"]
    sample = set(np.random.default_rng(0).choice(allowed, 5_000, replace=False).tolist())
    sample |= {k for k, (d, _) in expected.items() if d != "ALLOW"}
    sample |= set(world.day.filter(pl.col("payee_vpa").is_in(sorted(blocklist)))["transfer_id"])
    differ = []
    for row in world.day.filter(pl.col("transfer_id").is_in(sorted(sample))).iter_rows(named=True):
        values = {**row, **features_of[row["transfer_id"]]}
        score = fitted.risk_score_one(values)
        listed = state.payee_blocklisted(row["payee_vpa"], DAY_START)
        decision, codes = decide_one(
            values, policy, score=score, blocklisted=listed, allowlist=set()
        )
        if (decision, codes) != expected[row["transfer_id"]]:
            differ.append((row["transfer_id"], decision, codes, expected[row["transfer_id"]]))
    assert not differ, differ[:5]
    assert {d for d, _ in expected.values()} >= {"ALLOW", "HOLD", "BLOCK"}


def _model(world: World) -> Any:
    """A small logistic model of fraud on the history's batch features: every fraud and a
    sample of the rest (fitting on all rows would take minutes and test nothing more)."""
    train = world.batch.join(world.prior.select("transfer_id"), on="transfer_id")
    fraud = world.labels.filter(pl.col("label") == "FRAUD").select("transfer_id").unique()
    y = train["transfer_id"].is_in(fraud["transfer_id"].implode())
    train = pl.concat([train.filter(y), train.filter(~y).sample(50_000, seed=0)])
    y = train["transfer_id"].is_in(fraud["transfer_id"].implode()).cast(pl.Int64)
    return make_model("logistic").fit(train.select(FEATURE_NAMES), y)
