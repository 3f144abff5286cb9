"""The online loop end to end, on a small simulated ledger: the last hours held back, paid through
a real `upi-risk serve` app on loopback by the reference payments flow, landed and ingested;
the online decisions reach the warehouse as decisions of record, the batch recomputes them
(parity), and labels ingested later are forwarded to the service."""

from __future__ import annotations

import datetime as dt

import httpx
import polars as pl
import pytest

from pipelines.decisions.forwarding import forward_ledger_updates
from pipelines.decisions.online_log import online_engine
from pipelines.decisions.online_record import (
    ONLINE_TABLE,
    load_online_decisions,
    online_batch_parity,
)
from pipelines.features.table import refresh_feature_table
from pipelines.ledger.current import refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.risk.registry import ModelRegistry
from pipelines.sandbox.live_traffic import LIVE_FILE, hold_back, pay_live_traffic
from pipelines.sandbox.simulator import SimulationConfig, simulate
from pipelines.warehouse import DECISIONS_TABLE, warehouse
from tests.test_serving import instance, register, serving, trained_model

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("online_loop")]


def _ingest(settings) -> None:
    with warehouse(settings.paths.warehouse) as con:
        ingest_landing(con, settings.paths.landing)
        refresh_transfers(con)
        refresh_feature_table(con)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """An instance whose last 4 hours were paid online, landed and ingested."""
    root = tmp_path_factory.mktemp("online-loop")
    settings = instance(root)
    paths = settings.paths
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=12)
    simulate(
        SimulationConfig(users=3_000, days=12, start=start, seed=11),
        paths.landing,
        paths.ground_truth,
    )
    live = root / "live"
    held = hold_back(paths.landing, live, hours=4)
    _ingest(settings)
    registry = ModelRegistry(paths.models)
    version = register(registry, trained_model(), hold_threshold=0.3)
    with serving(settings) as (url, _runtime):
        report = pay_live_traffic(live, paths.landing, url, concurrency=1, timeout_s=5.0)
        _ingest(settings)
        engine = online_engine(settings.operational_database_url)
        with warehouse(paths.warehouse) as con:
            loaded = load_online_decisions(con, engine)
            again = load_online_decisions(con, engine)
            parity = online_batch_parity(con, registry)
            forwarded = forward_ledger_updates(con, url)
            forwarded_again = forward_ledger_updates(con, url, forwarded.cursor)
            tables = {
                "online": con.sql(f"SELECT * FROM {ONLINE_TABLE}").pl(),
                "of_record": con.sql(f"SELECT * FROM {DECISIONS_TABLE}").pl(),
                "transfers": con.sql("SELECT * FROM ledger.transfers").pl(),
            }
        metrics = httpx.get(f"{url}/metrics").text
    return {
        "held": held,
        "report": report,
        "loaded": loaded,
        "again": again,
        "parity": parity,
        "forwarded": forwarded,
        "forwarded_again": forwarded_again,
        "version": version,
        "live": live,
        "landing": paths.landing,
        "metrics": metrics,
        **tables,
    }


def test_every_live_transfer_was_decided_before_it_was_settled(loop):
    held, report = loop["held"], loop["report"]
    live_transfers = pl.read_parquet(loop["live"] / "transfers.parquet")
    assert held["held_back"] and held["rows"]["transfers"] == live_transfers.height > 0
    assert report.transfers == live_transfers["transfer_id"].n_unique()
    assert report.client_fallbacks == 0 and report.model_unavailable == 0
    assert sum(report.decisions.values()) == report.transfers
    assert report.model_versions == [loop["version"]]
    # The hold threshold of 0.3 on an amount-driven model holds some, and allows most.
    assert report.decisions.get("HOLD", 0) > 0 and report.decisions["ALLOW"] > 0
    assert list((loop["landing"] / "transfers").rglob(LIVE_FILE))


def test_held_transfers_stay_pending_and_blocked_ones_fail_in_the_ledger(loop):
    online = loop["online"].select("transfer_id", "decision")
    ledger = loop["transfers"].join(online, on="transfer_id")
    assert ledger.height == online.height  # every decided transfer reached the ledger
    held = ledger.filter(pl.col("decision") == "HOLD")
    assert held.height and (held["status"] == "PENDING").all()
    blocked = ledger.filter(pl.col("decision") == "BLOCK")
    assert ((blocked["status"] == "FAILED") & (blocked["response_code"] == "K1")).all()


def test_online_decisions_are_the_decisions_of_record_and_load_once(loop):
    online, of_record = loop["online"], loop["of_record"]
    assert loop["loaded"]["copied"] == online.height == loop["report"].transfers
    assert loop["again"]["copied"] == 0  # a re-run adds nothing
    joined = online.join(of_record, on="transfer_id", suffix="_record")
    assert joined.height == online.height
    assert (joined["decision"] == joined["decision_record"]).all()
    assert (joined["decided_at"] == joined["decided_at_record"]).all()


def test_batch_recomputation_matches_every_online_decision(loop):
    parity = loop["parity"]
    # Decided one at a time, each outcome posted before the next transfer: the online path
    # saw exactly what the batch sees, so every sampled decision matches in full.
    assert parity.sampled > 0
    assert parity.features_match == parity.sampled, parity.examples
    assert parity.decisions_match == parity.sampled, parity.examples
    assert parity.share_matching == 1.0


def test_labels_and_events_forwarded_once_per_cursor(loop):
    first, again = loop["forwarded"], loop["forwarded_again"]
    assert first.sent["labels"] > 0 and first.sent["account_events"] > 0
    assert set(first.cursor) == {"labels", "account_events"}
    assert again.sent == {"labels": 0, "account_events": 0}
    assert again.cursor == first.cursor


def test_the_service_metrics_saw_the_decisions(loop):
    total = loop["report"].transfers
    lines = [
        line
        for line in loop["metrics"].splitlines()
        if line.startswith("upi_risk_decisions_total{")
    ]
    assert lines, loop["metrics"][:2000]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines) >= total


def test_hold_back_twice_moves_nothing_more(loop):
    again = hold_back(loop["landing"], loop["live"], hours=4)
    assert again["held_back"] is False
