"""Dagster wiring: the graph loads as designed, the ingest graph runs, blocking checks block."""

import dagster as dg
import pytest

from pipelines.definitions import defs
from pipelines.defs.ledger.jobs import ledger_arrivals
from pipelines.defs.resources import LedgerSourceResource, default_resources
from pipelines.ledger import contract as c
from pipelines.settings import DataDir, Settings
from pipelines.warehouse import warehouse
from tests.factories import account_event, label, land_parquet, transfer


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return defs()


def test_asset_graph_snapshot(definitions):
    graph = definitions.resolve_asset_graph()
    deps = {
        key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert deps == {
        "transfer_events": [],
        "account_events": [],
        "labels": [],
        "transfers": ["transfer_events"],
        "accounts": ["account_events"],
        "transfer_features": ["accounts", "labels", "transfers"],
        "risk_model": ["transfer_features"],
        "live_model": ["risk_model"],
        "transfer_scores": ["transfer_features"],
        "decision_outbox": ["transfer_scores"],
        "decision_delivery": ["decision_outbox"],
        "daily_users": ["accounts", "payer_days"],
        "activation_funnel": ["accounts", "transfers"],
        "payer_days": ["transfer_scores", "transfers"],
        "daily_active": ["payer_days"],
        "daily_volume": ["transfers"],
        "ticket_sizes": ["transfers"],
        "ticket_quantiles": ["transfers"],
        "daily_outcomes": ["transfers"],
        "weekly_retention": ["payer_days"],
        "daily_friction": ["transfer_scores", "transfers"],
        "friction_retention": ["payer_days"],
        "adoption_dashboards": sorted(
            [
                "activation_funnel",
                "daily_active",
                "daily_friction",
                "daily_outcomes",
                "daily_users",
                "daily_volume",
                "friction_retention",
                "payer_days",
                "ticket_quantiles",
                "ticket_sizes",
                "weekly_retention",
            ]
        ),
    }
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert {k for k, g in groups.items() if g == "ledger"} == {
        "transfer_events",
        "account_events",
        "labels",
        "transfers",
        "accounts",
    }
    assert set(groups.values()) == {"ledger", "risk", "adoption"}
    # The marts are daily partitions of India days; rolling windows read the days before.
    daily = graph.get(dg.AssetKey("daily_active")).partitions_def
    assert isinstance(daily, dg.DailyPartitionsDefinition) and daily.timezone == "Asia/Kolkata"
    assert graph.get(dg.AssetKey("adoption_dashboards")).partitions_def is None
    checks = sorted(k.to_user_string() for k in graph.asset_check_keys)
    assert checks == [
        "account_events:account_events_contract",
        "account_events:account_events_freshness",
        "labels:labels_contract",
        "labels:labels_freshness",
        "risk_model:risk_model_beats_live",
        "transfer_events:transfer_events_contract",
        "transfer_events:transfer_events_freshness",
    ]
    assert sorted(s.name for s in definitions.schedules) == [
        "adoption_daily",
        "adoption_dashboards_daily",
        "ledger_daily",
        "risk_daily_retraining",
    ]
    assert sorted(s.name for s in definitions.sensors) == [
        "adoption_on_ledger_change",
        "dashboards_after_marts",
        "ledger_arrivals",
        "score_new_transfers_sensor",
    ]
    for job in (
        "ledger_ingest",
        "risk_training",
        "risk_scoring",
        "adoption_marts",
        "adoption_reports",
    ):
        assert definitions.resolve_job_def(job) is not None


def _materialize(definitions: dg.Definitions, data_dir: DataDir) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        selection=dg.AssetSelection.groups("ledger"),
        resources=default_resources(Settings(data_dir=data_dir.root)),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {
        e.event_specific_data.check_name: (
            e.event_specific_data.passed,
            e.event_specific_data.severity.value,
        )
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def _land_clean_ledger(landing):
    land_parquet(landing, c.TRANSFERS, "d1.parquet", [transfer(i) for i in range(1, 41)])
    land_parquet(landing, c.ACCOUNTS, "d1.parquet", [account_event(i) for i in range(1, 8)])
    land_parquet(landing, c.LABELS_STREAM, "d4.parquet", [label(3), label(7)])


@pytest.mark.slow
def test_ingest_graph_materializes_on_a_temporary_warehouse(definitions, tmp_path):
    data_dir = DataDir.resolve(tmp_path).ensure()
    _land_clean_ledger(data_dir.landing)
    result = _materialize(definitions, data_dir)
    assert result.success
    outcomes = _check_outcomes(result)
    assert all(
        outcomes[f"{a}_contract"][0] for a in ("transfer_events", "account_events", "labels")
    )
    # Fixture data is from March 2026, so the freshness checks warn without blocking anything.
    assert outcomes["transfer_events_freshness"] == (False, "WARN")
    meta = result.asset_materializations_for_node("transfer_events")[0].metadata
    assert meta["loaded"].value == 40 and meta["balanced"].value is True
    with warehouse(data_dir.warehouse, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM ledger.transfers").fetchall() == [(40,)]
        assert con.sql("SELECT count(*) FROM ledger.accounts").fetchall() == [(7,)]

    # A second run finds nothing new and adds nothing.
    again = _materialize(definitions, data_dir)
    assert again.success
    meta = again.asset_materializations_for_node("transfer_events")[0].metadata
    assert (meta["rows_in"].value, meta["loaded"].value) == (0, 0)
    assert meta["dagster/row_count"].value == 40


@pytest.mark.slow
def test_failing_blocking_check_stops_downstream(definitions, tmp_path):
    data_dir = DataDir.resolve(tmp_path).ensure()
    _land_clean_ledger(data_dir.landing)
    # A merchant payment with the person category code: ingestion's row rules let it through,
    # the contract suite does not, and it must stop what depends on the transfers.
    land_parquet(
        data_dir.landing,
        c.TRANSFERS,
        "d2.parquet",
        [transfer(100, payee_type="MERCHANT", mcc=c.PERSON_MCC)],
    )
    result = _materialize(definitions, data_dir)
    outcomes = _check_outcomes(result)
    assert outcomes["transfer_events_contract"] == (False, "ERROR")
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "transfer_events" in materialized
    assert "transfers" not in materialized  # blocked by the failed check
    assert "accounts" in materialized  # other streams go on
    with warehouse(data_dir.warehouse, read_only=True) as con:
        tables = {
            r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()
        }
    assert "transfers" not in tables


def test_sensor_requests_a_run_for_new_files_only(tmp_path):
    landing = tmp_path / "landing"
    land_parquet(landing, c.TRANSFERS, "a.parquet", [transfer(1)])
    source = LedgerSourceResource(landing_dir=str(landing))
    context = dg.build_sensor_context(resources={"ledger_source": source})
    first = ledger_arrivals(context)
    assert len(first.run_requests) == 1
    context = dg.build_sensor_context(cursor=first.cursor, resources={"ledger_source": source})
    assert isinstance(ledger_arrivals(context), dg.SkipReason)
    land_parquet(landing, c.TRANSFERS, "b.parquet", [transfer(2)])
    context = dg.build_sensor_context(cursor=first.cursor, resources={"ledger_source": source})
    second = ledger_arrivals(context)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
