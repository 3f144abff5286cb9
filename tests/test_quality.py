"""GX contract and freshness suites per ledger stream (pipelines/quality/suites.py).

All tests here share one process-wide GX context (the import alone costs 7-13 s), so they are
grouped onto one xdist worker. The 1M-row timing runs only with QUALITY_BENCH_ROWS set, e.g.
`QUALITY_BENCH_ROWS=1000000 .venv/bin/pytest tests/test_quality.py -k bench -s`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from pipelines.ledger import contract as c
from pipelines.quality import suites
from pipelines.quality.suites import SuiteResult

pytestmark = pytest.mark.xdist_group("great_expectations")

T0 = datetime(2025, 11, 3, tzinfo=UTC)
HANDLES = ["okaxis", "okhdfcbank", "oksbi", "ybl", "paytm", "ibl"]
STATES = ["IN-MH", "IN-KA", "IN-DL", "IN-TN", "IN-UP", "IN-GJ", "IN-WB"]
OTHER_MCCS = ["5411", "5812", "5999", "4121", "5311"]
MERCHANT_MCCS = OTHER_MCCS + sorted(c.P2M_HIGH_LIMIT_MCCS)
NOTES = ["rent", "dinner", "chai", "Diwali gift 🎁", "x" * 50, "ऑटो किराया"]


# --- synthetic ledger-v1 data -----------------------------------------------------------------


def _utc(start: datetime, offsets_us: np.ndarray) -> pl.Series:
    base = np.datetime64(start.replace(tzinfo=None), "us")
    return pl.Series(base + offsets_us.astype("timedelta64[us]")).dt.replace_time_zone("UTC")


def _with_nulls(values: np.ndarray, null: np.ndarray) -> pl.Series:
    return pl.Series(values).set(pl.Series(null), None)


def make_transfers(n: int, seed: int = 0) -> pl.DataFrame:
    """`n` transfer rows valid under ledger-v1, shaped like traffic: mostly P2P, some in 2 states."""
    rng = np.random.default_rng(seed)
    # A third of the transfers appear twice (PENDING, then their outcome), like the real event log.
    states = np.where(rng.random(n) < 1 / 3, 2, 1)
    transfer = np.repeat(np.arange(n), states)[:n]
    second = np.r_[False, transfer[1:] == transfer[:-1]]
    two_states = np.r_[transfer[1:] == transfer[:-1], False] | second

    m = n  # attributes of transfer k sit at index k; each row takes its transfer's through `transfer`
    merchant = rng.random(m) < 0.25
    mcc = np.where(merchant, rng.choice(MERCHANT_MCCS, m), c.PERSON_MCC)
    limit = np.where(
        np.isin(mcc, sorted(c.P2M_HIGH_LIMIT_MCCS)), c.P2M_LIMIT_PAISE, c.P2P_LIMIT_PAISE
    )
    amount = np.clip(rng.lognormal(11, 1.6, m).astype(np.int64), 100, limit)
    channel = np.where(
        merchant, rng.choice(["QR", "INTENT", "COLLECT"], m), rng.choice(["CHAT", "QR"], m)
    )
    created = np.sort(rng.integers(0, 86_400_000_000, m))
    final = rng.choice(["SUCCESS", "FAILED", "REVERSED"], n, p=[0.9, 0.08, 0.02])
    status = np.where(two_states & ~second, "PENDING", final)
    failure_codes = rng.choice(["Z9", "ZM", "U30", "K1"], n)
    code = np.select([status == "FAILED", status == "REVERSED"], [failure_codes, "RB"], "00")
    frame = pl.DataFrame(
        {
            "transfer_id": "AXI" + pl.Series(transfer).cast(pl.String).str.zfill(12),
            "ledger_seq": np.arange(1, n + 1, dtype=np.int64) * 2,
            "created_at": _utc(T0, created[transfer]),
            "payer_vpa": "user"
            + pl.Series(rng.integers(0, n // 3 + 10, m)[transfer]).cast(pl.String)
            + "@"
            + pl.Series(rng.choice(HANDLES, m)[transfer]),
            "payee_vpa": pl.Series(np.where(merchant, "shop.", "friend_")[transfer])
            + pl.Series(rng.integers(0, 50_000, m)[transfer]).cast(pl.String)
            + "@"
            + pl.Series(rng.choice(HANDLES, m)[transfer]),
            "payee_type": np.where(merchant, "MERCHANT", "PERSON")[transfer],
            "mcc": mcc[transfer],
            "amount_paise": amount[transfer],
            "currency": np.full(n, "INR"),
            "channel": channel[transfer],
            "payer_device_id": "dev-"
            + pl.Series(rng.integers(0, n // 2 + 10, m)[transfer]).cast(pl.String),
            "payer_state": _with_nulls(rng.choice(STATES, m)[transfer], rng.random(n) < 0.1),
            "status": status,
            "response_code": _with_nulls(code, status == "PENDING"),
            "note": _with_nulls(rng.choice(NOTES, m)[transfer], rng.random(n) < 0.6),
        }
    )
    return frame.cast(dict(c.TRANSFERS.schema))


def make_accounts(n: int, seed: int = 1) -> pl.DataFrame:
    """`n` valid account lifecycle events."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "event_id": "evt-" + pl.Series(np.arange(n)).cast(pl.String),
            "ledger_seq": np.arange(1, n + 1, dtype=np.int64),
            "event_time": _utc(T0, np.arange(n) * 1_000_000),
            "vpa": "user" + pl.Series(rng.integers(0, 1000, n)).cast(pl.String) + "@oksbi",
            "event_type": rng.choice(c.ACCOUNT_EVENT_TYPES, n),
            "device_id": _with_nulls(np.array([f"dev-{i}" for i in range(n)]), rng.random(n) < 0.3),
            "state": _with_nulls(rng.choice(STATES, n), rng.random(n) < 0.2),
        }
    ).cast(dict(c.ACCOUNTS.schema))


def make_labels(transfers: pl.DataFrame, n: int, seed: int = 2) -> pl.DataFrame:
    """`n` valid labels on distinct transfers, reported 1 minute to 30 days after them."""
    rng = np.random.default_rng(seed)
    about = transfers.unique("transfer_id", keep="first", maintain_order=True).head(n)
    fraud = rng.random(n) < 0.3
    delay = rng.integers(60_000_000, 30 * 86_400_000_000, n)
    return pl.DataFrame(
        {
            "transfer_id": about["transfer_id"],
            "label": np.where(fraud, "FRAUD", "LEGIT"),
            "fraud_type": _with_nulls(rng.choice(c.FRAUD_TYPES, n), ~fraud),
            "source": rng.choice(c.LABEL_SOURCES, n),
            "reported_at": about["created_at"] + pl.Series(delay, dtype=pl.Duration("us")),
        }
    ).cast(dict(c.LABELS_STREAM.schema))


def set_values(frame: pl.DataFrame, column: str, changes: dict[int, object]) -> pl.DataFrame:
    """`frame` with `column` changed at the given row positions."""
    values = frame.get_column(column).to_list()
    for row, value in changes.items():
        values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))


def failing(result: SuiteResult) -> dict[str, suites.ExpectationOutcome]:
    return {o.expectation: o for o in result.failures()}


def first_row(frame: pl.DataFrame, **where: str) -> int:
    """Position of the first row whose columns equal the given values."""
    mask = pl.all_horizontal(pl.col(k) == v for k, v in where.items())
    return int(frame.with_row_index().filter(mask)["index"][0])


# Names of the expectations the tests look for.
REGEX = "expect_column_values_to_match_regex({})"
IN_SET = "expect_column_values_to_be_in_set({})"
P2P_BOUND = "expect_column_values_to_be_between(amount_paise | payee_type == PERSON)"
P2M_BOUND = "expect_column_values_to_be_between(amount_paise | payee_type == MERCHANT)"
P2M_UNVERIFIED = (
    "expect_column_values_to_be_between(amount_paise | "
    "payee_type == MERCHANT and mcc not in P2M_HIGH_LIMIT_MCCS)"
)
PERSON_MCC = "expect_column_values_to_be_in_set(mcc | payee_type == PERSON)"
MERCHANT_MCC = "expect_column_values_to_not_be_in_set(mcc | payee_type == MERCHANT)"
TRANSFER_KEY = "expect_compound_columns_to_be_unique(transfer_id, ledger_seq)"
LEDGER_SEQ = "expect_column_values_to_be_unique(ledger_seq)"
LABEL_AFTER_TRANSFER = (
    "expect_column_pair_values_a_to_be_greater_than_b(reported_at, transfer_created_at)"
)
LABEL_TRANSFER_KNOWN = "expect_column_values_to_not_be_null(transfer_created_at)"


@pytest.fixture(scope="module")
def transfers() -> pl.DataFrame:
    return make_transfers(3_000)


@pytest.fixture(scope="module")
def accounts() -> pl.DataFrame:
    return make_accounts(500)


@pytest.fixture(scope="module")
def labels(transfers: pl.DataFrame) -> pl.DataFrame:
    return make_labels(transfers, 400)


@pytest.fixture(scope="module")
def transfer_times(transfers: pl.DataFrame) -> pl.DataFrame:
    return transfers.select("transfer_id", "created_at")


@pytest.fixture(scope="module", autouse=True)
def gx_runtime():
    """Create the process's GX context once, before the timed work of the tests."""
    return suites._gx_runtime()


# --- the module stays cheap to import -----------------------------------------------------------


def test_importing_the_module_does_not_import_great_expectations():
    code = "import sys, pipelines.quality.suites; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_suite_definitions_have_unique_names_and_the_intended_warnings():
    warnings = {
        name: {
            s.name
            for s in suites.suite_expectations(name, with_transfer_times=True)
            if not s.blocking
        }
        for name in c.STREAMS
    }
    assert warnings == {
        "transfers": {
            P2M_UNVERIFIED,
            "expect_column_values_to_not_be_in_set(channel | payee_type == PERSON and "
            f"created_at >= {suites.P2P_COLLECT_CUTOFF})",
        },
        "accounts": set(),
        "labels": {IN_SET.format("fraud_type"), LABEL_TRANSFER_KNOWN},
    }
    for name in c.STREAMS:
        specs = suites.suite_expectations(name)
        # Every contract column is checked for existence and type; every required one for nulls.
        stream = c.stream(name)
        assert {s.column for s in specs if s.kind == "ExpectColumnToExist"} == set(stream.columns)
        assert {s.column for s in specs if s.kind == "ExpectColumnValuesToBeOfType"} == set(
            stream.columns
        )
        assert {s.column for s in specs if s.kind == "ExpectColumnValuesToNotBeNull"} == set(
            stream.required
        )


# --- valid data passes --------------------------------------------------------------------------


def test_valid_transfers_pass(transfers):
    result = suites.contract_suite_result("transfers", transfers)
    assert result.failures() == []
    assert result.success and not result.blocked
    assert result.suite == "transfers_contract"
    assert result.rows_validated == result.rows_total == transfers.height
    assert len(result.outcomes) == len(suites.suite_expectations("transfers"))
    # The generator really produced what the conditional rules are about.
    assert transfers["transfer_id"].n_unique() < transfers.height
    assert set(transfers["payee_type"]) == set(c.PAYEE_TYPES)


def test_valid_accounts_pass(accounts):
    result = suites.contract_suite_result("accounts", accounts)
    assert result.failures() == []
    assert result.success and result.suite == "accounts_contract"
    assert result.rows_validated == 500


def test_valid_labels_pass_with_and_without_their_transfers(labels, transfer_times):
    joined = suites.contract_suite_result("labels", labels, transfers_created_at=transfer_times)
    assert joined.failures() == []
    assert LABEL_AFTER_TRANSFER in {o.expectation for o in joined.outcomes}
    alone = suites.contract_suite_result("labels", labels)
    assert alone.success
    assert LABEL_AFTER_TRANSFER not in {o.expectation for o in alone.outcomes}


def test_an_empty_load_passes_the_contract(transfers):
    result = suites.contract_suite_result("transfers", transfers.head(0))
    assert result.success and result.rows_validated == 0


# --- each kind of defect fails the right expectation --------------------------------------------


def test_bad_vpa(transfers):
    bad = set_values(transfers, "payer_vpa", {3: "Not A VPA", 7: "a@b"})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {REGEX.format("payer_vpa")}
    outcome = failing(result)[REGEX.format("payer_vpa")]
    assert (outcome.unexpected_count, outcome.blocking, outcome.column) == (2, True, "payer_vpa")
    assert outcome.unexpected_percent == pytest.approx(2 / transfers.height * 100)
    assert outcome.examples == [
        {
            "transfer_id": bad["transfer_id"][3],
            "ledger_seq": bad["ledger_seq"][3],
            "payer_vpa": "Not A VPA",
        },
        {
            "transfer_id": bad["transfer_id"][7],
            "ledger_seq": bad["ledger_seq"][7],
            "payer_vpa": "a@b",
        },
    ]
    assert result.blocked and not result.success


def test_unknown_enum(transfers):
    bad = set_values(transfers, "status", {11: "SETTLED"})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {IN_SET.format("status")}
    outcome = failing(result)[IN_SET.format("status")]
    assert outcome.unexpected_count == 1 and outcome.blocking
    assert outcome.examples[0]["status"] == "SETTLED"


def test_over_limit_p2p_amount_fails_and_the_limit_itself_passes(transfers):
    person = transfers.with_row_index().filter(pl.col("payee_type") == "PERSON")["index"]
    over, at_limit = int(person[0]), int(person[1])
    bad = set_values(
        transfers, "amount_paise", {over: c.P2P_LIMIT_PAISE + 1, at_limit: c.P2P_LIMIT_PAISE}
    )
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {P2P_BOUND}
    outcome = failing(result)[P2P_BOUND]
    assert outcome.unexpected_count == 1 and outcome.blocking
    assert outcome.examples == [
        {
            "transfer_id": bad["transfer_id"][over],
            "ledger_seq": bad["ledger_seq"][over],
            "amount_paise": c.P2P_LIMIT_PAISE + 1,
            "payee_type": "PERSON",
        }
    ]


def test_over_limit_p2m_amount(transfers):
    verified = first_row(transfers, payee_type="MERCHANT", mcc="6211")
    bad = set_values(transfers, "amount_paise", {verified: c.P2M_LIMIT_PAISE + 1})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {P2M_BOUND}
    outcome = failing(result)[P2M_BOUND]
    assert outcome.unexpected_count == 1 and outcome.blocking
    assert outcome.examples[0]["amount_paise"] == c.P2M_LIMIT_PAISE + 1


def test_non_positive_amount_fails(transfers):
    bad = set_values(transfers, "amount_paise", {first_row(transfers, payee_type="PERSON"): 0})
    assert set(failing(suites.contract_suite_result("transfers", bad))) == {P2P_BOUND}


def test_unverified_merchant_above_one_lakh_only_warns(transfers):
    row = first_row(transfers, payee_type="MERCHANT", mcc="5411")
    bad = set_values(transfers, "amount_paise", {row: c.P2P_LIMIT_PAISE + 1})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {P2M_UNVERIFIED}
    outcome = failing(result)[P2M_UNVERIFIED]
    assert outcome.unexpected_count == 1 and not outcome.blocking
    assert outcome.examples[0]["mcc"] == "5411"
    assert not result.success and not result.blocked


def test_wrong_mcc_for_person_and_for_merchant(transfers):
    person = first_row(transfers, payee_type="PERSON")
    merchant = first_row(transfers, payee_type="MERCHANT")
    bad = set_values(transfers, "mcc", {person: "5411", merchant: c.PERSON_MCC})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {PERSON_MCC, MERCHANT_MCC}
    assert failing(result)[PERSON_MCC].unexpected_count == 1
    assert failing(result)[PERSON_MCC].examples[0]["mcc"] == "5411"
    assert failing(result)[MERCHANT_MCC].unexpected_count == 1
    assert (
        failing(result)[MERCHANT_MCC].examples[0]["transfer_id"]
        == transfers["transfer_id"][merchant]
    )
    assert result.blocked


def test_duplicate_key(transfers):
    bad = pl.concat([transfers, transfers[[5]]])
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {TRANSFER_KEY, LEDGER_SEQ}
    outcome = failing(result)[TRANSFER_KEY]
    # GX counts every row of a duplicated key, the first occurrence too.
    assert outcome.unexpected_count == 2 and outcome.blocking
    key = {"transfer_id": transfers["transfer_id"][5], "ledger_seq": transfers["ledger_seq"][5]}
    assert outcome.examples == [key, key]


def test_duplicate_ledger_seq_on_another_transfer(transfers):
    bad = set_values(transfers, "ledger_seq", {9: int(transfers["ledger_seq"][4])})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {LEDGER_SEQ}
    outcome = failing(result)[LEDGER_SEQ]
    assert outcome.unexpected_count == 2 and outcome.blocking
    assert {e["transfer_id"] for e in outcome.examples} == {
        transfers["transfer_id"][i] for i in (4, 9)
    }


def test_missing_required_value_and_over_long_note(transfers):
    bad = set_values(set_values(transfers, "payer_device_id", {2: None}), "note", {8: "y" * 51})
    result = suites.contract_suite_result("transfers", bad)
    assert set(failing(result)) == {
        "expect_column_values_to_not_be_null(payer_device_id)",
        "expect_column_value_lengths_to_be_between(note)",
    }
    assert all(o.unexpected_count == 1 and o.blocking for o in result.failures())
    assert failing(result)["expect_column_values_to_not_be_null(payer_device_id)"].examples == [
        {
            "transfer_id": transfers["transfer_id"][2],
            "ledger_seq": transfers["ledger_seq"][2],
            "payer_device_id": None,
        }
    ]


def test_wrong_type_and_missing_column(transfers):
    naive = transfers.with_columns(pl.col("created_at").dt.replace_time_zone(None)).drop("note")
    result = suites.contract_suite_result("transfers", naive)
    names = set(failing(result))
    assert "expect_column_values_to_be_of_type(created_at)" in names
    assert "expect_column_to_exist(note)" in names
    assert failing(result)["expect_column_values_to_be_of_type(created_at)"].examples == [
        "datetime64"
    ]
    assert result.blocked


def test_p2p_collect_after_the_cutoff_warns(transfers):
    row = first_row(transfers, payee_type="PERSON")
    result = suites.contract_suite_result(
        "transfers", set_values(transfers, "channel", {row: "COLLECT"})
    )
    assert [(o.unexpected_count, o.blocking) for o in result.failures()] == [(1, False)]
    before = set_values(transfers, "channel", {row: "COLLECT"}).with_columns(
        pl.col("created_at") - pl.duration(days=60)
    )
    assert suites.contract_suite_result("transfers", before).success


def test_accounts_defects(accounts):
    bad = set_values(accounts, "event_id", {10: accounts["event_id"][3]})
    bad = set_values(bad, "vpa", {20: "USER@OKSBI"})
    bad = set_values(bad, "event_type", {30: "UPGRADED"})
    result = suites.contract_suite_result("accounts", bad)
    assert {o.expectation: o.unexpected_count for o in result.failures()} == {
        "expect_column_values_to_be_unique(event_id)": 2,
        REGEX.format("vpa"): 1,
        IN_SET.format("event_type"): 1,
    }
    assert failing(result)[REGEX.format("vpa")].examples == [
        {"event_id": "evt-20", "vpa": "USER@OKSBI"}
    ]
    assert result.blocked


def test_label_reported_before_its_transfer(labels, transfer_times):
    created = labels["reported_at"] - pl.Series([timedelta(days=400)] * labels.height)
    early = created[6]
    bad = set_values(labels, "reported_at", {6: early, 9: early})
    # Row 9's transfer was created at exactly its reported_at: not strictly after, also a leak.
    times = transfer_times.with_columns(
        pl.when(pl.col("transfer_id") == labels["transfer_id"][9])
        .then(pl.lit(early))
        .otherwise(pl.col("created_at"))
        .alias("created_at")
    )
    result = suites.contract_suite_result("labels", bad, transfers_created_at=times)
    assert set(failing(result)) == {LABEL_AFTER_TRANSFER}
    outcome = failing(result)[LABEL_AFTER_TRANSFER]
    assert outcome.unexpected_count == 2 and outcome.blocking
    first = outcome.examples[0]
    assert first["transfer_id"] == labels["transfer_id"][6]
    assert first["reported_at"] == early.isoformat()
    assert datetime.fromisoformat(first["transfer_created_at"]) > datetime.fromisoformat(
        first["reported_at"]
    )


def test_label_about_an_unknown_transfer_only_warns(labels, transfer_times):
    known = transfer_times.filter(pl.col("transfer_id") != labels["transfer_id"][0])
    result = suites.contract_suite_result("labels", labels, transfers_created_at=known)
    assert set(failing(result)) == {LABEL_TRANSFER_KNOWN}
    outcome = failing(result)[LABEL_TRANSFER_KNOWN]
    assert outcome.unexpected_count == 1 and not outcome.blocking
    assert outcome.examples[0]["transfer_id"] == labels["transfer_id"][0]
    assert not result.blocked


def test_duplicate_label(labels):
    result = suites.contract_suite_result("labels", pl.concat([labels, labels[[1]]]))
    name = "expect_compound_columns_to_be_unique(transfer_id, source, reported_at)"
    assert set(failing(result)) == {name}
    assert failing(result)[name].unexpected_count == 2


def test_transfer_times_are_only_for_labels(transfers, transfer_times):
    with pytest.raises(ValueError, match="labels"):
        suites.contract_suite_result("transfers", transfers, transfers_created_at=transfer_times)


# --- freshness ----------------------------------------------------------------------------------


def test_fresh_data_passes(transfers):
    newest = transfers["created_at"].max()
    result = suites.freshness_result(
        "transfers", transfers, now=newest + timedelta(minutes=30), max_age=timedelta(hours=1)
    )
    assert result.success and result.suite == "transfers_freshness"


def test_stale_data_warns(accounts):
    newest = accounts["event_time"].max()
    now = newest + timedelta(hours=3)
    result = suites.freshness_result("accounts", accounts, now=now, max_age=timedelta(hours=2))
    (outcome,) = result.failures()
    assert outcome.expectation == "expect_column_max_to_be_between(event_time)"
    assert (outcome.unexpected_count, outcome.blocking) == (1, False)
    assert outcome.examples == [
        {"newest": newest.isoformat(), "oldest_allowed": (now - timedelta(hours=2)).isoformat()}
    ]
    assert not result.success and not result.blocked


def test_no_rows_at_all_is_stale(labels):
    result = suites.freshness_result("labels", labels.head(0), now=T0, max_age=timedelta(days=1))
    assert not result.success
    assert result.failures()[0].examples[0]["newest"] is None


def test_freshness_needs_an_aware_now(labels):
    with pytest.raises(ValueError, match="timezone"):
        suites.freshness_result(
            "labels", labels, now=datetime(2025, 1, 1), max_age=timedelta(days=1)
        )


# --- results, reuse, sampling -------------------------------------------------------------------


def test_metadata_is_json_serialisable(labels, transfer_times):
    bad = set_values(labels, "reported_at", {0: datetime(2020, 1, 1, tzinfo=UTC)})
    bad = set_values(bad, "source", {1: "RUMOUR"})
    result = suites.contract_suite_result("labels", bad, transfers_created_at=transfer_times)
    metadata = json.loads(json.dumps(result.metadata()))
    assert metadata["rows"] == labels.height
    assert metadata["evaluated"] == len(result.outcomes)
    assert metadata["failed"] == metadata["blocking_failed"] == 2
    assert metadata["blocked"] is True and metadata["success"] is False
    failing_names = {f["expectation"]: f for f in metadata["failing"]}
    assert set(failing_names) == {LABEL_AFTER_TRANSFER, IN_SET.format("source")}
    assert (
        failing_names[LABEL_AFTER_TRANSFER]["examples"][0]["reported_at"]
        == "2020-01-01T00:00:00+00:00"
    )


def test_repeated_calls_do_not_reuse_earlier_results(transfers):
    bad = set_values(transfers, "currency", {0: "USD"})
    outcomes = [
        suites.contract_suite_result("transfers", frame).success
        for frame in (transfers, bad, transfers, bad)
    ]
    assert outcomes == [True, False, True, False]


def test_sampling_keeps_uniqueness_exact(transfers):
    bad = set_values(transfers, "ledger_seq", {2_999: int(transfers["ledger_seq"][0])})
    bad = set_values(bad, "payer_vpa", dict.fromkeys(range(0, 3_000, 10), "BAD"))
    result = suites.contract_suite_result("transfers", bad, max_rows=1_000)
    assert (result.rows_validated, result.rows_total, result.sampled) == (1_000, 3_000, True)
    assert failing(result)[LEDGER_SEQ].unexpected_count == 2
    regex = failing(result)[REGEX.format("payer_vpa")]
    # Every 10th row is bad: the sample sees about a tenth of its 1000 rows as bad.
    assert 60 < regex.unexpected_count < 140
    assert regex.unexpected_percent == pytest.approx(regex.unexpected_count / 10)
    again = suites.contract_suite_result("transfers", bad, max_rows=1_000)
    assert failing(again)[REGEX.format("payer_vpa")].unexpected_count == regex.unexpected_count
    assert result.metadata()["sampled"] is True
