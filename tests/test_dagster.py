"""Dagster wiring: the graph loads as designed, the ingest graph runs, blocking checks block."""

import difflib
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from pipelines.defs.ledger.jobs import ledger_arrivals
from pipelines.defs.resources import default_resources
from pipelines.ledger import contract as c
from pipelines.settings import DataDir, Settings
from pipelines.warehouse import warehouse
from tests.factories import account_event, label, land_parquet, load_definitions, transfer


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return load_definitions()


SNAPSHOT = Path(__file__).parent / "snapshots" / "dagster_graph.json"


def _describe(value: object) -> object:
    """A stable, readable description of a Dagster object (partitions, mappings)."""
    if value is None:
        return None
    if isinstance(value, dg.TimeWindowPartitionsDefinition):
        return {
            "type": type(value).__name__,
            "cron": value.cron_schedule,
            "timezone": value.timezone,
            "start": value.start.isoformat(),
        }
    if isinstance(value, dg.DynamicPartitionsDefinition):
        return {"type": "DynamicPartitionsDefinition", "name": value.name}
    fields = getattr(value, "__dict__", None) or getattr(value, "_asdict", dict)()
    return {"type": type(value).__name__, **{k: repr(v) for k, v in sorted(fields.items())}}


def graph_snapshot(definitions: dg.Definitions) -> dict:
    """The whole wiring: per asset its group, deps (with their partition mappings), partitions,
    kinds, pools and checks; the jobs' selections; the schedules' cron; the sensors' targets."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partition_mappings": {
                parent.to_user_string(): _describe(mapping)
                for parent, mapping in sorted(node.partition_mappings.items())
            },
            "partitions": _describe(node.partitions_def),
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools or []),
            "checks": sorted(
                f"{check.name}{' (blocking)' if graph.get(check).blocking else ''}"
                for check in node.check_keys
            ),
        }
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        for job in sorted(definitions.resolve_all_job_defs(), key=lambda j: j.name)
        if not job.name.startswith("__")
    }
    schedules = {
        s.name: {"job": s.job_name, "cron": s.cron_schedule, "timezone": s.execution_timezone}
        for s in sorted(definitions.schedules, key=lambda s: s.name)
    }
    sensors = {
        s.name: {
            "type": type(s).__name__,
            "jobs": sorted(t.job_name for t in s.targets),
            "minimum_interval_seconds": s.minimum_interval_seconds,
        }
        for s in sorted(definitions.sensors, key=lambda s: s.name)
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_dagster_graph_matches_its_reviewed_snapshot(definitions):
    """A wiring change shows as a diff of tests/snapshots/dagster_graph.json, reviewed with the
    change: regenerate it with `UPDATE_SNAPSHOTS=1 pytest tests/test_dagster.py -k snapshot`."""
    current = json.dumps(graph_snapshot(definitions), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), f"no snapshot yet: run with UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    diff = "".join(
        difflib.unified_diff(
            SNAPSHOT.read_text().splitlines(keepends=True),
            current.splitlines(keepends=True),
            "reviewed",
            "current",
        )
    )
    assert not diff, (
        f"the Dagster graph changed; review the diff, then update the snapshot:\n{diff}"
    )


def test_the_lineage_the_design_relies_on(definitions):
    """The few edges the product's correctness relies on, stated where a reader finds them."""
    graph = definitions.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert {"transfer_features", "live_model"} <= parents["transfer_scores"]
    assert parents["live_model"] == {"risk_model"}
    gate = dg.AssetCheckKey(dg.AssetKey("risk_model"), "risk_model_beats_live")
    assert graph.get(gate).blocking
    # A check only checks: the gate is given no resource of ours, so it cannot write the registry.
    (check_def,) = [c for c in definitions.asset_checks if gate in c.check_keys]
    assert check_def.required_resource_keys <= {"io_manager"}


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
    resources = default_resources(Settings(data_dir=tmp_path))
    sources = {"ledger_source": resources["ledger_source"], "settings": resources["settings"]}

    def arrivals(cursor: str | None = None):
        with dg.build_sensor_context(cursor=cursor, resources=sources) as context:
            return ledger_arrivals(context)

    first = arrivals()
    assert len(first.run_requests) == 1
    assert isinstance(arrivals(first.cursor), dg.SkipReason)
    land_parquet(landing, c.TRANSFERS, "b.parquet", [transfer(2)])
    second = arrivals(first.cursor)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
