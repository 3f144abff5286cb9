"""On simulated traffic, the gradient-boosting model beats the logistic baseline across folds."""

import datetime as dt

import polars as pl
import pytest

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.table import read_features, refresh_feature_table
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.risk.evaluation import backtest
from pipelines.risk.labels import read_labels
from pipelines.risk.training import latest_test_start
from pipelines.sandbox.simulator import SimulationConfig, simulate
from pipelines.settings import Settings
from pipelines.warehouse import warehouse

pytestmark = pytest.mark.slow


def test_model_beats_logistic_baseline_on_average_precision(tmp_path):
    simulate(
        SimulationConfig(users=40_000, days=30, start=dt.date(2026, 1, 1), seed=7),
        tmp_path / "landing",
        tmp_path / "truth",
    )
    with warehouse(tmp_path / "warehouse.duckdb") as con:
        ingest_landing(con, tmp_path / "landing")
        refresh_transfers(con)
        refresh_accounts(con)
        refresh_feature_table(con)
        features, labels = read_features(con), read_labels(con)
    settings = Settings(data_dir=tmp_path, test_days=5, delay_days=3, folds=2, maturity_days=5)
    result = backtest(
        features,
        labels,
        FEATURE_NAMES,
        test_start=latest_test_start(features, settings),
        test_days=5,
        delay_days=3,
        folds=2,
        maturity_days=5,
        truth=pl.read_parquet(tmp_path / "truth" / "transfers.parquet"),
    )
    gbdt, logistic = (result.metrics["models"][m] for m in ("gbdt", "logistic"))
    assert [f.get("skipped") for f in gbdt["folds"]] == [None, None]
    assert gbdt["mean"]["average_precision"] > logistic["mean"]["average_precision"]
    recall = gbdt["mean"]["recall_by_fraud_type"]
    assert {"ACCOUNT_TAKEOVER", "SOCIAL_ENGINEERING", "MULE"} <= set(recall)
    # Holding a random share of transfers would catch that share of each typology's frauds.
    chance = gbdt["mean"]["held_share"]
    for fraud_type in ("ACCOUNT_TAKEOVER", "SOCIAL_ENGINEERING", "MULE"):
        assert recall[fraud_type] > 10 * chance, (fraud_type, recall[fraud_type], chance)
    for fold in gbdt["folds"]:  # the frauds held per typology add up to the frauds held
        held = sum(
            recall * fold["frauds_by_fraud_type"][t]
            for t, recall in fold["recall_by_fraud_type"].items()
        )
        assert held == pytest.approx(fold["recall_at_hold"] * fold["n_frauds"])
