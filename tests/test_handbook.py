"""The Fraud Detection Handbook's world as a ledger-v1 landing directory (`sandbox.handbook`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipelines.ledger import contract as c
from pipelines.sandbox.handbook import (
    COMPROMISED_CUSTOMER,
    COMPROMISED_TERMINAL,
    HIGH_AMOUNT,
    HandbookConfig,
    write_handbook_ledger,
)

SMALL = HandbookConfig(customers=600, terminals=1_200, days=45, seed=3)
# The handbook's own world (5,000 customers, 10,000 terminals, 183 days) has 1,754,155
# transactions, 14,681 frauds: 973 by the amount rule, 9,077 compromised terminals, 4,631
# compromised customers (chapter "Transaction data simulator").
PUBLISHED_SHARES = {HIGH_AMOUNT: 973 / 14_681, COMPROMISED_TERMINAL: 9_077 / 14_681}
PUBLISHED_SHARES[COMPROMISED_CUSTOMER] = 4_631 / 14_681


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    root = tmp_path_factory.mktemp("handbook")
    made = write_handbook_ledger(SMALL, root / "landing", root / "truth")
    return root / "landing", pl.read_parquet(made.truth_path)


def _stream(landing: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(landing / name)


def test_the_streams_follow_the_contract(small_world):
    landing, truth = small_world
    transfers = _stream(landing, "transfers")
    assert transfers.columns == c.TRANSFERS.columns
    assert _stream(landing, "accounts").columns == c.ACCOUNTS.columns
    assert _stream(landing, "labels").columns == c.LABELS_STREAM.columns
    assert transfers.height == truth.height
    assert transfers["transfer_id"].str.contains(c.TRANSFER_ID_PATTERN).all()
    assert transfers["payer_vpa"].str.contains(c.VPA_PATTERN).all()
    assert transfers["payee_vpa"].str.contains(c.VPA_PATTERN).all()
    assert (
        transfers["ledger_seq"].is_sorted() and transfers["ledger_seq"].n_unique() == truth.height
    )
    assert set(transfers["status"].unique()) == {"SUCCESS"}
    assert set(transfers["payee_type"].unique()) == {"MERCHANT"}
    assert (transfers["amount_paise"] > 0).all()
    # One device per customer: the design has nothing a device could reveal.
    assert (
        transfers.group_by("payer_vpa")
        .agg(pl.col("payer_device_id").n_unique())["payer_device_id"]
        .max()
        == 1
    )
    # Days are IST days: every transfer falls in the world's IST calendar.
    ist_day = transfers["created_at"].dt.convert_time_zone("Asia/Kolkata").dt.date()
    assert ist_day.min() == SMALL.start
    assert ist_day.max() <= SMALL.start + dt.timedelta(days=SMALL.days - 1)


def test_fraud_scenarios_follow_the_published_rules(small_world):
    landing, truth = small_world
    tx = (
        _stream(landing, "transfers")
        .join(truth, on="transfer_id")
        .with_columns(day=pl.col("created_at").dt.convert_time_zone("Asia/Kolkata").dt.date())
    )
    # Rule 1: above 220 rupees is fraud (whatever scenario typed it last).
    assert tx.filter(pl.col("amount_paise") > 22_000)["is_fraud"].all()
    assert tx.filter(pl.col("fraud_type") == HIGH_AMOUNT)["amount_paise"].min() > 22_000
    # Rule 2: a compromised terminal's transactions are all fraud on the days it is compromised.
    terminal_days = (
        tx.filter(pl.col("fraud_type") == COMPROMISED_TERMINAL).select("payee_vpa", "day").unique()
    )
    on_them = tx.join(terminal_days, on=["payee_vpa", "day"])
    assert on_them["is_fraud"].all()
    # Rule 3: about a third of a compromised customer's transactions in its window; their
    # amounts are 5 times the customer's usual ones.
    customer = tx.filter(pl.col("fraud_type") == COMPROMISED_CUSTOMER)
    assert customer.height > 0
    usual = (
        tx.filter(~pl.col("is_fraud"))
        .group_by("payer_vpa")
        .agg(usual=pl.col("amount_paise").median())
    )
    ratio = (
        customer.join(usual, on="payer_vpa")["amount_paise"]
        / customer.join(usual, on="payer_vpa")["usual"]
    )
    assert 3 < ratio.median() < 8
    assert set(truth["fraud_type"].drop_nulls().unique()) == {
        HIGH_AMOUNT,
        COMPROMISED_TERMINAL,
        COMPROMISED_CUSTOMER,
    }
    assert truth.filter(pl.col("is_fraud"))["fraud_type"].null_count() == 0
    assert (
        truth.filter(~pl.col("is_fraud"))["fraud_type"].null_count()
        == truth.filter(~pl.col("is_fraud")).height
    )


def test_frauds_are_reported_about_a_week_late(small_world):
    landing, truth = small_world
    labels = _stream(landing, "labels")
    frauds = truth.filter(pl.col("is_fraud"))
    assert labels.height == frauds.height and set(labels["label"].unique()) == {"FRAUD"}
    assert set(labels["transfer_id"]) == set(frauds["transfer_id"])
    delay = labels.join(_stream(landing, "transfers"), on="transfer_id").select(
        days=(pl.col("reported_at") - pl.col("created_at")).dt.total_seconds() / 86_400
    )["days"]
    assert (delay > 0).all()
    assert 6.5 < delay.mean() < 7.5
    assert 1.5 < delay.std() < 2.5
    # Some reports come after the week: a delayed-label protocol meets labels it cannot know yet.
    assert 0.1 < (delay > 8).mean() < 0.5
    # The contract's types where one fits; the amount rule has none.
    typed = labels.join(truth, on="transfer_id", suffix="_truth")
    assert typed.filter(pl.col("fraud_type_truth") == HIGH_AMOUNT)["fraud_type"].null_count() == (
        typed.filter(pl.col("fraud_type_truth") == HIGH_AMOUNT).height
    )
    assert set(labels["fraud_type"].drop_nulls().unique()) <= set(c.FRAUD_TYPES)


def test_it_ingests_with_nothing_quarantined(small_world, tmp_path):
    from pipelines.ledger.ingest import ingest_landing
    from pipelines.warehouse import warehouse

    landing, truth = small_world
    with warehouse(tmp_path / "warehouse.duckdb") as con:
        report = ingest_landing(con, landing).as_dict()
    assert {name: s["quarantined"] for name, s in report.items()} == {
        "transfers": 0,
        "accounts": 0,
        "labels": 0,
    }
    assert report["transfers"]["loaded"] == truth.height
    assert report["labels"]["loaded"] == int(truth["is_fraud"].sum())


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    config = HandbookConfig(customers=200, terminals=400, days=20, seed=5)
    a = write_handbook_ledger(config, tmp_path / "a", tmp_path / "ta")
    b = write_handbook_ledger(config, tmp_path / "b", tmp_path / "tb")
    other = HandbookConfig(customers=200, terminals=400, days=20, seed=6)
    o = write_handbook_ledger(other, tmp_path / "o", tmp_path / "to")
    assert _stream(tmp_path / "a", "transfers").equals(_stream(tmp_path / "b", "transfers"))
    assert not _stream(tmp_path / "a", "transfers").equals(_stream(tmp_path / "o", "transfers"))
    assert a.frauds == b.frauds and o.transfers > 0
    with pytest.raises(FileExistsError):
        write_handbook_ledger(config, tmp_path / "a", tmp_path / "ta")


@pytest.mark.slow
def test_the_default_world_matches_the_published_one(tmp_path):
    made = write_handbook_ledger(HandbookConfig(), tmp_path / "landing", tmp_path / "truth")
    assert 1_650_000 < made.transfers < 1_850_000
    assert 0.0075 < made.frauds / made.transfers < 0.0095
    for scenario, share in PUBLISHED_SHARES.items():
        assert abs(made.frauds_by_scenario[scenario] / made.frauds - share) < 0.03, scenario
    assert made.seconds < 30
