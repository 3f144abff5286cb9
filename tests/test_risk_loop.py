"""The risk loop through Dagster: train, gate, score, decide, deliver; run again, nothing doubles."""

import datetime as dt

import dagster as dg
import numpy as np
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from pipelines.decisions.outbox import operational_engine, status_counts
from pipelines.defs.resources import default_resources
from pipelines.defs.risk import assets as risk_assets
from pipelines.risk.model import GradientBoostingRiskModel
from pipelines.sandbox.simulator import SimulationConfig, simulate
from pipelines.sandbox.transfer_service import ReferenceTransferService
from pipelines.settings import DataDir, Settings, write_settings_file
from pipelines.warehouse import warehouse
from tests.factories import load_definitions

pytestmark = pytest.mark.slow


def _run(definitions: dg.Definitions, job: str, resources: dict) -> dg.ExecuteInProcessResult:
    selection = definitions.resolve_job_def(job).asset_layer.selected_asset_keys
    return dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        selection=list(selection),
        resources=resources,
        instance=_run.instance,
        raise_on_error=False,
    )


def test_train_gate_score_deliver_and_rerun(tmp_path, monkeypatch):
    data_dir = DataDir.resolve(tmp_path).ensure()
    start = dt.date.today() - dt.timedelta(days=30)
    simulate(
        SimulationConfig(users=6_000, days=30, start=start, seed=5, fraud_rate=0.01),
        data_dir.landing,
        data_dir.ground_truth,
    )
    write_settings_file(data_dir, {"test_days": 7, "delay_days": 3, "folds": 1, "maturity_days": 7})
    definitions = load_definitions()
    _run.instance = dg.DagsterInstance.ephemeral()
    with ReferenceTransferService(host="127.0.0.1", port=0) as service:
        settings = Settings(data_dir=data_dir.root, transfer_service_url=service.url)
        resources = default_resources(settings)
        assert _run(definitions, "ledger_ingest", resources).success
        first = _run(definitions, "risk_training", resources)
        assert first.success
        registry = resources["risk"].registry
        live = registry.live_version()
        assert live is not None and registry.challengers() == []

        scoring = _run(definitions, "risk_scoring", resources)
        assert scoring.success
        # Scoring computed the features again (none new): the model trained on them is still
        # in sync, and the scores declare the live model they came from.
        stale = get_stale_status_resolver(_run.instance, list(definitions.assets))
        for name in ("transfer_features", "risk_model", "live_model", "transfer_scores"):
            assert stale.get_status(dg.AssetKey(name)) == StaleStatus.FRESH, name
        engine = operational_engine(settings.operational_database_url)
        counts = status_counts(engine)
        assert counts.get("DELIVERED", 0) > 0
        assert sum(counts.values()) == counts["DELIVERED"]
        assert service.effect_count == counts["DELIVERED"]
        with warehouse(data_dir.warehouse, read_only=True) as con:
            scored = con.sql(
                "SELECT count(*), count(DISTINCT transfer_id) FROM risk.transfer_scores"
            ).fetchall()[0]
            transfers = con.sql("SELECT count(*) FROM ledger.transfers").fetchall()[0][0]
            held = con.sql(
                "SELECT count(*) FROM risk.transfer_scores WHERE decision = 'HOLD'"
            ).fetchall()[0][0]
        assert scored == (transfers, transfers)
        assert 0 < held < transfers * 0.02

        # The same data again: training gives the same bytes, so the candidate is the live
        # version itself. The gate passes ("already live"), nothing new is registered, and
        # scoring again adds no rows, no shadow scores and no deliveries.
        versions = registry.versions()
        second = _run(definitions, "risk_training", resources)
        assert second.success
        gate = [
            e.event_specific_data
            for e in second.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        assert [g.passed for g in gate] == [True]
        assert "already live" in gate[0].metadata["reason"].value
        assert registry.versions() == versions and registry.challengers() == []
        assert registry.live_version() == live

        again = _run(definitions, "risk_scoring", resources)
        assert again.success
        assert status_counts(engine) == counts  # nothing new to decide, nothing sent twice
        assert service.effect_count == counts["DELIVERED"]
        with warehouse(data_dir.warehouse, read_only=True) as con:
            shadow = con.sql("SELECT count(*) FROM risk.transfer_scores WHERE shadow").fetchall()[
                0
            ][0]
            live_rows = con.sql(
                "SELECT count(*) FROM risk.transfer_scores WHERE NOT shadow"
            ).fetchall()[0][0]
            decisions = con.sql("SELECT count(*) FROM risk.transfer_decisions").fetchall()[0][0]
        assert shadow == 0 and live_rows == transfers and decisions == transfers

        # A worse candidate (trained on scrambled labels) is stopped by the gate, stays a
        # challenger, and the gate's decision is in the promotion log.
        fit = GradientBoostingRiskModel.fit

        def scrambled(self, X, y, **kwargs):
            return fit(self, X, np.random.default_rng(0).permutation(np.asarray(y)), **kwargs)

        monkeypatch.setattr(GradientBoostingRiskModel, "fit", scrambled)
        third = _run(definitions, "risk_training", resources)
        gate = [
            e.event_specific_data
            for e in third.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        assert [g.passed for g in gate] == [False]
        candidate = gate[0].metadata["candidate"].value
        assert registry.live_version() == live and registry.challengers() == [candidate]
        last = registry.promotions()[-1]
        assert last["candidate"] == candidate and not last["promoted"]
        assert "stays a challenger" in last["reason"]

        # Another feature catalogue (the table computed again, as many rows as before): what
        # was trained and scored on the old one is out of date.
        monkeypatch.setattr(risk_assets, "CATALOGUE_VERSION", "another-catalogue")
        assert _run(definitions, "risk_scoring", resources).success
        stale = get_stale_status_resolver(_run.instance, list(definitions.assets))
        assert stale.get_status(dg.AssetKey("transfer_features")) == StaleStatus.FRESH
        assert stale.get_status(dg.AssetKey("risk_model")) == StaleStatus.STALE
