"""The adoption marts through Dagster: a range of days in one run, re-runs add nothing, and a
late ledger row makes the sensor rebuild exactly the day it belongs to."""

import dagster as dg
import pytest

from pipelines.definitions import defs
from pipelines.defs.adoption.jobs import adoption_on_ledger_change, partition_range_tags
from pipelines.defs.resources import default_resources
from pipelines.defs.risk.jobs import score_new_transfers_sensor
from pipelines.ledger import contract as c
from pipelines.settings import DataDir
from pipelines.warehouse import warehouse
from tests.factories import T0, account_event, land_parquet, transfer

pytestmark = pytest.mark.slow


def _materialize(definitions, data_dir, instance, selection, tags=None):
    return dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        selection=selection,
        resources=default_resources(data_dir),
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def _sensor_request(instance: dg.DagsterInstance, definitions, sensor=adoption_on_ledger_change):
    context = dg.build_sensor_context(instance=instance, definitions=definitions)
    tick = sensor.evaluate_tick(context)
    assert len(tick.run_requests) == 1, tick.skip_message
    return tick.run_requests[0]


def _range(request: dg.RunRequest) -> dict[str, str]:
    return {k: v for k, v in request.tags.items() if "partition_range" in k}


def _counts(data_dir: DataDir) -> dict[str, int]:
    with warehouse(data_dir.warehouse, read_only=True) as con:
        return {
            t: con.sql(f"SELECT count(*) FROM adoption.{t}").fetchall()[0][0]
            for t in ("daily_volume", "payer_days", "daily_active", "daily_users")
        }


def test_marts_backfill_rerun_and_late_rows(tmp_path, monkeypatch):
    data_dir = DataDir.resolve(tmp_path).ensure()
    monkeypatch.setenv("UPI_RISK_DATA_DIR", str(data_dir.root))
    # Transfers a minute apart from 2026-03-02 12:00 IST: 800 of them run into 03-03 IST.
    land_parquet(data_dir.landing, c.TRANSFERS, "d1.parquet", [transfer(i) for i in range(1, 801)])
    land_parquet(data_dir.landing, c.ACCOUNTS, "d1.parquet", [account_event(i) for i in range(7)])
    definitions = defs()
    instance = dg.DagsterInstance.ephemeral()
    ledger = _materialize(definitions, data_dir, instance, dg.AssetSelection.groups("ledger"))
    assert ledger.success

    request = _sensor_request(instance, definitions)
    assert _range(request) == partition_range_tags(T0.date(), T0.date().replace(day=3))
    # The risk loop's sensor answers the same ledger materialization.
    assert _sensor_request(instance, definitions, score_new_transfers_sensor).run_key

    marts = dg.AssetSelection.groups("adoption") - dg.AssetSelection.assets("adoption_dashboards")
    built = _materialize(definitions, data_dir, instance, marts, tags=request.tags)
    assert built.success
    # One run covered both days: each mart materialized both partitions at once.
    volume = built.asset_materializations_for_node("daily_volume")
    assert {m.partition for m in volume} == {"2026-03-02", "2026-03-03"}
    first = _counts(data_dir)
    assert first["daily_volume"] > 0 and first["daily_users"] == 2
    with warehouse(data_dir.warehouse, read_only=True) as con:
        payers = con.sql("SELECT count(DISTINCT payer_token) FROM adoption.payer_days").fetchall()
        tokens = con.sql("SELECT payer_token FROM adoption.payer_days LIMIT 1").fetchall()
    assert payers == [(7,)] and tokens[0][0].startswith("u_")

    again = _materialize(definitions, data_dir, instance, marts, tags=request.tags)
    assert again.success and _counts(data_dir) == first

    # A late row: transfer 1 (made on 03-02) is reversed. Only 03-02 is stale now.
    late = transfer(1, ledger_seq=5_000, status="REVERSED", response_code="RB")
    land_parquet(data_dir.landing, c.TRANSFERS, "late.parquet", [late])
    assert _materialize(definitions, data_dir, instance, dg.AssetSelection.groups("ledger")).success
    request = _sensor_request(instance, definitions)
    assert _range(request) == partition_range_tags(T0.date(), T0.date())
    assert _materialize(definitions, data_dir, instance, marts, tags=request.tags).success
    with warehouse(data_dir.warehouse, read_only=True) as con:
        reversed_ = con.sql(
            "SELECT day, sum(transfers) FROM adoption.daily_volume WHERE status = 'REVERSED' "
            "GROUP BY day"
        ).fetchall()
    assert reversed_ == [(T0.date(), 1)]
    assert _counts(data_dir)["payer_days"] == first["payer_days"]
