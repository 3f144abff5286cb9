"""The adoption marts through Dagster: their partitions are the ledger's days, a range of days
is one run, re-runs add nothing, and a late ledger row makes the sensor rebuild exactly the day
it belongs to."""

import datetime as dt

import dagster as dg
import duckdb
import pytest

from pipelines.adoption.marts import LEDGER_TRANSFERS, MARTS, SCHEMA, ledger_days
from pipelines.cli.orchestration import run_adoption
from pipelines.defs.adoption.jobs import adoption_daily, adoption_on_ledger_change
from pipelines.defs.ledger.partitions import (
    ledger_day_partitions,
    partition_range_tags,
    register_ledger_days,
)
from pipelines.defs.resources import default_resources
from pipelines.defs.risk.jobs import score_new_transfers_sensor
from pipelines.india_time import IST
from pipelines.ledger import contract as c
from pipelines.runs import prepare_instance, run_job
from pipelines.settings import DataDir, Settings
from pipelines.warehouse import warehouse
from tests.factories import T0, account_event, land_parquet, load_definitions, transfer

pytestmark = pytest.mark.slow


def _materialize(definitions, data_dir, instance, selection, tags=None):
    return dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        selection=selection,
        resources=default_resources(Settings(data_dir=data_dir.root)),
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
            t: con.sql(f"SELECT count(*) FROM {SCHEMA}.{t}").fetchall()[0][0]
            for t in ("daily_volume", "payer_days", "daily_active", "daily_users")
        }


def _keys(instance: dg.DagsterInstance) -> list[str]:
    return instance.get_dynamic_partitions(ledger_day_partitions.name)


def _ist(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), IST).astimezone(dt.UTC)


def test_marts_backfill_rerun_and_late_rows(tmp_path, monkeypatch):
    data_dir = DataDir.resolve(tmp_path).ensure()
    monkeypatch.setenv("UPI_RISK_DATA_DIR", str(data_dir.root))
    # Transfers a minute apart from 2026-03-02 12:00 IST: 800 of them run into 03-03 IST.
    land_parquet(data_dir.landing, c.TRANSFERS, "d1.parquet", [transfer(i) for i in range(1, 801)])
    land_parquet(data_dir.landing, c.ACCOUNTS, "d1.parquet", [account_event(i) for i in range(7)])
    definitions = load_definitions()
    instance = dg.DagsterInstance.ephemeral()
    ledger = _materialize(definitions, data_dir, instance, dg.AssetSelection.groups("ledger"))
    assert ledger.success
    # The ledger's refresh made its two IST days the marts' partitions, and no other day.
    assert _keys(instance) == ["2026-03-02", "2026-03-03"]

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
        payers = con.sql(f"SELECT count(DISTINCT payer_token) FROM {SCHEMA}.payer_days").fetchall()
        tokens = con.sql(f"SELECT payer_token FROM {SCHEMA}.payer_days LIMIT 1").fetchall()
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
            f"SELECT day, sum(transfers) FROM {SCHEMA}.daily_volume WHERE status = 'REVERSED' "
            "GROUP BY day"
        ).fetchall()
    assert reversed_ == [(T0.date(), 1)]
    assert _counts(data_dir)["payer_days"] == first["payer_days"]


def test_demo_fills_every_partition_and_lists_no_other_day(tmp_path, monkeypatch):
    """`upi-risk demo` and `upi-risk adoption`: ingest, then build the marts for the ledger's days;
    the UI must then list exactly the ledger's IST days, every one materialized."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = Settings(data_dir=tmp_path / "instance")
    paths = settings.paths.ensure()
    # 2026-03-02 to 03-05 IST with no transfer at all on 03-04 (still a day of the ledger), and
    # a transfer at 02:00 IST on 03-02 that is 03-01 in UTC.
    days = [dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 5)]
    rows = [
        transfer(i, created_at=_ist(day, hour))
        for i, (day, hour) in enumerate([(d, h) for d in days for h in (2, 11, 20)], start=1)
    ]
    land_parquet(paths.landing, c.TRANSFERS, "t.parquet", rows)
    land_parquet(paths.landing, c.ACCOUNTS, "a.parquet", [account_event(i) for i in range(1, 8)])
    assert run_job("ledger_ingest", settings).success

    adoption = run_adoption(settings)
    assert adoption["success"], adoption["failures"]

    with warehouse(paths.warehouse, read_only=True) as con:
        span = ledger_days(con)
    assert span is not None and (span.first, span.last) == (days[0], days[-1])
    ledger = [day.isoformat() for day in span.days]
    instance = prepare_instance(paths)
    assert _keys(instance) == ledger  # in calendar order, 03-04 included, nothing else
    for name in MARTS:
        status = instance.get_status_by_partition(
            dg.AssetKey(name), _keys(instance), ledger_day_partitions
        )
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}, (name, status)

    # The nightly schedule asks for yesterday and today, of which only the ledger's days.
    at = dt.datetime.combine(dt.date(2026, 3, 6), dt.time(2, 30), IST)
    nightly = adoption_daily(dg.build_schedule_context(instance, scheduled_execution_time=at))
    assert _range(nightly) == partition_range_tags(days[-1], days[-1])
    later = dg.build_schedule_context(instance, scheduled_execution_time=at + dt.timedelta(days=2))
    assert isinstance(adoption_daily(later), dg.SkipReason)


def test_partitions_follow_the_ledger_back_in_time():
    """Older transfers landed late: the new days go before the others, in calendar order, and
    what was materialized stays materialized."""
    instance = dg.DagsterInstance.ephemeral()
    with duckdb.connect() as con:
        con.execute(
            f"CREATE SCHEMA ledger; CREATE TABLE {LEDGER_TRANSFERS} (created_at TIMESTAMPTZ)"
        )

        def land(*days: dt.date) -> None:
            for day in days:
                con.execute(f"INSERT INTO {LEDGER_TRANSFERS} VALUES (?)", [_ist(day, 12)])

        assert register_ledger_days(instance, con) == [] and _keys(instance) == []
        land(dt.date(2026, 3, 3), dt.date(2026, 3, 4))
        assert register_ledger_days(instance, con) == ["2026-03-03", "2026-03-04"]
        assert register_ledger_days(instance, con) == []
        instance.report_runless_asset_event(
            dg.AssetMaterialization("daily_volume", partition="2026-03-03")
        )
        land(dt.date(2026, 3, 6))
        assert register_ledger_days(instance, con) == ["2026-03-05", "2026-03-06"]
        land(dt.date(2026, 2, 28))
        register_ledger_days(instance, con)
        assert _keys(instance) == [
            "2026-02-28",
            "2026-03-01",
            "2026-03-02",
            "2026-03-03",
            "2026-03-04",
            "2026-03-05",
            "2026-03-06",
        ]
        materialized = instance.get_materialized_partitions(dg.AssetKey("daily_volume"))
        assert materialized == {"2026-03-03"}
