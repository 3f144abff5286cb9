"""UPI traffic simulator (pipelines/sandbox/simulator/): contract, determinism and realism.

One simulated month of a small population is shared by the module; a few tests run extra small
simulations (same seed, other seed, tiny files).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipelines.india_time import IST_TIME_ZONE
from pipelines.ledger import contract as c
from pipelines.sandbox.simulator import (
    FRAUD_TYPES,
    TURNING_TYPES,
    SimulationConfig,
    SimulationSummary,
    simulate,
)

CONFIG = SimulationConfig(users=12_000, days=28, seed=11)
SMALL = SimulationConfig(users=3_000, days=10, seed=5)
# Only the typologies that turn, at a high rate and with durations other than the defaults: the
# shape of a hold-out test world.
TURNING = SimulationConfig(
    users=8_000,
    days=28,
    seed=13,
    fraud_rate=0.02,
    typology_mix=dict.fromkeys(TURNING_TYPES, 1.0),
    qr_swap_days=(3.0, 5.0),
    dormancy_days=(8.0, 12.0),
    ato_spree_hours=(1.0, 3.0),
)
PART = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/part-\d{5}\.parquet$")
APP_HANDLES = {"wasbi", "wahdfcbank", "waicici", "waaxis"}


@dataclass
class Run:
    """One simulation on disk and its streams read back."""

    config: SimulationConfig
    landing: Path
    truth_dir: Path
    summary: SimulationSummary
    progress: list[tuple[int, int]]
    transfers: pl.DataFrame
    accounts: pl.DataFrame
    labels: pl.DataFrame
    truth: pl.DataFrame
    truth_labels: pl.DataFrame
    users: pl.DataFrame
    turns: pl.DataFrame


def _files(landing: Path, stream: str) -> list[Path]:
    return sorted((landing / stream).rglob("*.parquet"))


def _read(landing: Path, stream: str) -> pl.DataFrame:
    files = _files(landing, stream)
    if not files:
        return pl.DataFrame(schema=c.STREAMS[stream].schema)
    return pl.concat([pl.read_parquet(f) for f in files])


def _run(config: SimulationConfig, root: Path) -> Run:
    seen: list[tuple[int, int]] = []
    summary = simulate(
        config, root / "landing", root / "truth", progress=lambda d, n: seen.append((d, n))
    )
    return Run(
        config=config,
        landing=root / "landing",
        truth_dir=root / "truth",
        summary=summary,
        progress=seen,
        transfers=_read(root / "landing", "transfers"),
        accounts=_read(root / "landing", "accounts"),
        labels=_read(root / "landing", "labels"),
        truth=pl.read_parquet(root / "truth" / "transfers.parquet"),
        truth_labels=pl.read_parquet(root / "truth" / "labels.parquet"),
        users=pl.read_parquet(root / "truth" / "users.parquet"),
        turns=pl.read_parquet(root / "truth" / "turns.parquet"),
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(CONFIG, tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="module")
def created(run: Run) -> pl.DataFrame:
    """One row per transfer (its PENDING row) joined with its ground truth."""
    pending = run.transfers.filter(pl.col("status") == "PENDING")
    return pending.join(run.truth, on="transfer_id", how="left")


# --- determinism and layout -------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(run: Run, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate(CONFIG, again / "landing", again / "truth")
    first = _digests(run.landing.parent)
    assert first == _digests(again)
    assert len(first) == run.summary.files + 4  # landing files plus four truth files


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    a = _run(SMALL, tmp_path / "a")
    b = _run(SMALL.model_copy(update={"seed": 6}), tmp_path / "b")
    assert a.transfers.height > 1_000
    assert not a.transfers.equals(b.transfers)
    assert not a.accounts.equals(b.accounts)
    assert _digests(a.landing) != _digests(b.landing)


def test_file_size_limit_splits_files_without_changing_rows(tmp_path: Path) -> None:
    whole = _run(SMALL, tmp_path / "whole")
    split = _run(SMALL.model_copy(update={"max_rows_per_file": 1_000}), tmp_path / "split")
    assert split.transfers.equals(whole.transfers)
    assert split.accounts.equals(whole.accounts)
    files = _files(split.landing, "transfers")
    assert len(files) > len(_files(whole.landing, "transfers"))
    assert max(pq.ParquetFile(f).metadata.num_rows for f in files) <= 1_000


def test_files_follow_the_landing_layout_and_contract_schema(run: Run) -> None:
    for name, stream in c.STREAMS.items():
        files = _files(run.landing, name)
        assert files, name
        for f in files:
            assert PART.match(str(f.relative_to(run.landing / name)).replace("\\", "/")), f
            assert pl.read_parquet_schema(f) == dict(stream.schema), f
            meta = pq.ParquetFile(f).metadata
            assert meta.num_rows > 0, f
            column = meta.row_group(0).column(0)
            assert column.compression == "ZSTD"
            assert column.is_stats_set


def test_rows_land_on_the_utc_date_of_their_event(run: Run) -> None:
    def dated(name: str) -> pl.DataFrame:
        frames = []
        for f in _files(run.landing, name):
            day = dt.date.fromisoformat(f.parent.name.removeprefix("date="))
            frames.append(pl.read_parquet(f).with_columns(day=pl.lit(day)))
        return pl.concat(frames)

    t = dated("transfers")
    pending = t.filter(pl.col("status") == "PENDING")
    assert (pending["created_at"].dt.date() == pending["day"]).all()
    assert (t["created_at"].dt.date() <= t["day"]).all()
    a = dated("accounts")
    assert (a["event_time"].dt.date() == a["day"]).all()
    labels = dated("labels")
    assert (labels["reported_at"].dt.date() == labels["day"]).all()
    # Days without rows of a stream get no file; every simulated day has transfers.
    assert t["day"].n_unique() == CONFIG.days


def test_summary_and_progress_match_the_files(run: Run) -> None:
    s = run.summary
    assert s.transfer_events == run.transfers.height
    assert s.account_events == run.accounts.height
    assert s.labels == run.labels.height
    assert s.transfers == run.truth.height
    assert s.frauds == run.truth["is_fraud"].sum()
    assert s.files == sum(len(_files(run.landing, n)) for n in c.STREAMS)
    assert s.labels_not_yet_reported == run.truth_labels.height - run.labels.height
    assert run.progress == [(d, CONFIG.days) for d in range(1, CONFIG.days + 1)]


def test_refuses_a_landing_dir_that_already_has_files(run: Run, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        simulate(CONFIG, run.landing, tmp_path / "truth")


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValidationError, match=r"typology_mix: unknown fraud types \['PHISHING'\]"):
        SimulationConfig(typology_mix={"PHISHING": 1.0})
    with pytest.raises(ValidationError):
        SimulationConfig(cap_steps=((0.0, 0.5), (0.5, 0.2)))
    with pytest.raises(ValidationError):
        SimulationConfig(users=100, unknown_field=1)
    assert SimulationConfig().merchant_count == 2_500
    assert SimulationConfig(users=1_000).merchant_count == 50


# --- contract ---------------------------------------------------------------------------------


def test_transfers_match_patterns_and_enums(run: Run) -> None:
    t = run.transfers
    assert t.select(c.TRANSFERS.required).null_count().sum_horizontal().item() == 0
    assert t["transfer_id"].str.contains(c.TRANSFER_ID_PATTERN).all()
    assert t["payer_vpa"].str.contains(c.VPA_PATTERN).all()
    assert t["payee_vpa"].str.contains(c.VPA_PATTERN).all()
    assert t["mcc"].str.contains(c.MCC_PATTERN).all()
    assert t["payer_state"].drop_nulls().str.contains(c.STATE_PATTERN).all()
    assert t["response_code"].drop_nulls().is_in(list(c.NPCI_RESPONSE_CODES)).all()
    assert t["payee_type"].is_in(c.PAYEE_TYPES).all()
    assert t["currency"].is_in(c.CURRENCIES).all()
    assert t["channel"].is_in(c.CHANNELS).all()
    assert t["status"].is_in(c.TRANSFER_STATUSES).all()
    assert (t["amount_paise"] > 0).all()
    assert (t["note"].drop_nulls().str.len_chars() <= 50).all()
    assert t["payer_state"].null_count() > 0  # optional fields are sometimes missing
    assert t["note"].null_count() < t.height


def test_accounts_and_labels_match_patterns_and_enums(run: Run) -> None:
    a = run.accounts
    assert a.select(c.ACCOUNTS.required).null_count().sum_horizontal().item() == 0
    assert a["event_id"].is_unique().all()
    assert a["vpa"].str.contains(c.VPA_PATTERN).all()
    assert a["event_type"].is_in(c.ACCOUNT_EVENT_TYPES).all()
    assert set(a["event_type"]) == set(c.ACCOUNT_EVENT_TYPES)
    assert a["state"].drop_nulls().str.contains(c.STATE_PATTERN).all()
    labels = run.truth_labels
    assert labels.select(c.LABELS_STREAM.required).null_count().sum_horizontal().item() == 0
    assert labels["label"].is_in(c.LABELS).all()
    assert labels["source"].is_in(c.LABEL_SOURCES).all()
    assert labels["fraud_type"].drop_nulls().is_in(FRAUD_TYPES).all()
    assert labels.select(c.LABELS_STREAM.key).is_unique().all()


def test_ledger_seq_strictly_increases_in_event_order(run: Run) -> None:
    for stream in ("transfers", "accounts"):
        seq = pl.concat([pl.read_parquet(f)["ledger_seq"] for f in _files(run.landing, stream)])
        assert (seq.diff().drop_nulls() > 0).all(), stream
        assert seq[0] == 1
    assert (run.accounts["event_time"].diff().drop_nulls().dt.total_microseconds() >= 0).all()
    assert run.transfers.select(c.TRANSFERS.key).is_unique().all()


def test_transfer_ids_are_unique_and_match_ground_truth(run: Run) -> None:
    assert run.truth["transfer_id"].is_unique().all()
    pending = run.transfers.filter(pl.col("status") == "PENDING")
    assert pending["transfer_id"].is_unique().all()
    assert set(pending["transfer_id"]) == set(run.truth["transfer_id"])
    assert (run.truth["transfer_id"].str.len_chars() <= 35).all()


def test_each_transfer_goes_pending_then_final_then_maybe_reversed(run: Run) -> None:
    t = run.transfers
    states = t.group_by("transfer_id").agg(
        statuses=pl.col("status").sort_by("ledger_seq"),
        rows=pl.len(),
        same=pl.struct(pl.exclude("ledger_seq", "status", "response_code")).n_unique() == 1,
    )
    assert states["same"].all()
    allowed = {("PENDING", "SUCCESS"), ("PENDING", "FAILED"), ("PENDING", "SUCCESS", "REVERSED")}
    seqs = {tuple(s) for s in states["statuses"]}
    # The last seconds of the period may leave a transfer pending: its outcome lands later.
    unfinished = states.filter(pl.col("rows") == 1)
    assert unfinished.height < 20
    assert seqs - {("PENDING",)} <= allowed
    assert ("PENDING", "SUCCESS", "REVERSED") in seqs
    codes = t.group_by("status").agg(pl.col("response_code").unique())
    by_status = {row[0]: set(row[1]) for row in codes.iter_rows()}
    assert by_status["PENDING"] == {None}
    assert by_status["SUCCESS"] == {"00"}
    assert by_status["REVERSED"] == {"RB"}
    assert None not in by_status["FAILED"] and "00" not in by_status["FAILED"]


def test_failures_and_reversals_at_realistic_rates(run: Run) -> None:
    final = run.transfers.filter(pl.col("status").is_in(["SUCCESS", "FAILED"]))
    failed = final.filter(pl.col("status") == "FAILED")
    assert 0.04 < failed.height / final.height < 0.09
    codes = failed["response_code"].value_counts(sort=True)
    assert codes["response_code"][0] == "Z9"  # insufficient funds leads
    assert {"Z9", "ZM", "U30", "Z8", "U69", "ZA"} <= set(codes["response_code"])
    successes = (final["status"] == "SUCCESS").sum()
    reversed_ = (run.transfers["status"] == "REVERSED").sum()
    assert 0.0003 < reversed_ / successes < 0.003


# --- payments ---------------------------------------------------------------------------------


def test_upi_limits_are_respected(created: pl.DataFrame) -> None:
    p2p = created.filter(pl.col("payee_type") == "PERSON")
    p2m = created.filter(pl.col("payee_type") == "MERCHANT")
    assert p2p["amount_paise"].max() <= c.P2P_LIMIT_PAISE
    assert p2m["amount_paise"].max() <= c.P2M_LIMIT_PAISE
    high = pl.col("mcc").is_in(sorted(c.P2M_HIGH_LIMIT_MCCS))
    assert p2m.filter(~high)["amount_paise"].max() <= c.P2P_LIMIT_PAISE
    assert p2m.filter(high)["amount_paise"].max() > c.P2P_LIMIT_PAISE  # big tickets exist


def test_amounts_look_like_people_pay(created: pl.DataFrame) -> None:
    legit = created.filter(~pl.col("is_fraud"))
    p2p = legit.filter(pl.col("payee_type") == "PERSON")["amount_paise"]
    assert (p2p % 100 == 0).all()  # people send whole rupees
    assert 0.3 < (p2p % 10_000 == 0).mean() < 0.8  # often whole hundreds
    assert 20_000 <= p2p.median() <= 100_000
    by_mcc = legit.group_by("mcc").agg(pl.col("amount_paise").median())
    median = dict(by_mcc.iter_rows())
    assert median["5814"] < median["5411"] < median["8062"] < median["8220"]


def test_collect_only_to_merchants_and_mcc_0000_only_for_people(created: pl.DataFrame) -> None:
    assert (created.filter(pl.col("channel") == "COLLECT")["payee_type"] == "MERCHANT").all()
    person = created["payee_type"] == "PERSON"
    assert ((created["mcc"] == c.PERSON_MCC) == person).all()
    assert (created.filter(person)["channel"] == "CHAT").mean() > 0.6
    assert (created.filter(~person)["channel"] == "QR").mean() > 0.5


def test_p2m_share_rises_over_the_period(created: pl.DataFrame) -> None:
    start = CONFIG.start_datetime
    day = (pl.col("created_at") - start).dt.total_days()
    first = created.filter(day < 7)
    last = created.filter(day >= CONFIG.days - 7)
    share_first = (first["payee_type"] == "MERCHANT").mean()
    share_last = (last["payee_type"] == "MERCHANT").mean()
    assert share_last > share_first + 0.08
    assert 0.25 < share_first < 0.5 and 0.45 < share_last < 0.65


def test_intraday_peaks_in_ist(created: pl.DataFrame) -> None:
    ist = created["created_at"].dt.convert_time_zone(IST_TIME_ZONE)
    minute = ist.dt.hour().cast(pl.Int32) * 60 + ist.dt.minute().cast(pl.Int32)
    peak = ((minute >= 600) & (minute < 780)) | ((minute >= 1020) & (minute < 1290))
    night = (minute >= 60) & (minute < 300)
    per_hour_peak = peak.sum() / 8.0
    per_hour_night = night.sum() / 4.0
    assert per_hour_peak > 8 * per_hour_night


def test_payers_pay_only_once_bank_linked(run: Run, created: pl.DataFrame) -> None:
    linked = (
        run.accounts.filter(pl.col("event_type") == "BANK_LINKED")
        .group_by("vpa")
        .agg(linked_at=pl.col("event_time").min())
    )
    j = created.join(linked, left_on="payer_vpa", right_on="vpa", how="left")
    assert j["linked_at"].null_count() == 0
    assert (j["linked_at"] < j["created_at"]).all()
    assert set(j["payer_vpa"].str.split("@").list.get(1)) <= APP_HANDLES


def test_people_pay_the_same_contacts_again(created: pl.DataFrame) -> None:
    p2p = created.filter((pl.col("payee_type") == "PERSON") & ~pl.col("is_fraud"))
    per_payer = p2p.group_by("payer_vpa").agg(n=pl.len(), payees=pl.col("payee_vpa").n_unique())
    busy = per_payer.filter(pl.col("n") >= 5)
    assert (busy["payees"] / busy["n"]).mean() < 0.6
    states = created["payer_state"].drop_nulls().value_counts(sort=True)["payer_state"]
    assert {"IN-UP", "IN-MH"} <= set(states.head(4))
    assert states.n_unique() > 25


# --- onboarding -------------------------------------------------------------------------------


def test_onboarding_respects_the_user_caps(run: Run) -> None:
    reg = run.accounts.filter(pl.col("event_type") == "REGISTERED").sort("event_time")
    assert reg["vpa"].is_unique().all()
    times = reg["event_time"].to_list()
    over = [i for i, t in enumerate(times) if i + 1 > CONFIG.user_cap(t)]
    assert over == []
    first_raise = CONFIG.start_datetime + dt.timedelta(days=CONFIG.days * CONFIG.cap_steps[1][0])
    before = sum(t < first_raise for t in times)
    first_cap = CONFIG.user_cap(CONFIG.start_datetime)
    assert before >= 0.95 * first_cap  # demand presses against the cap
    assert len(times) > 2 * CONFIG.user_cap(first_raise)  # and keeps growing once it is lifted


def test_account_lifecycle(run: Run) -> None:
    a = run.accounts
    kinds = a.group_by("event_type").len()
    count = dict(kinds.iter_rows())
    registered = count["REGISTERED"]
    assert 0.85 < count["BANK_LINKED"] / registered < 0.97
    assert count["DEVICE_BOUND"] >= registered
    assert count["DEREGISTERED"] < 0.02 * registered
    assert 0 < count["SIM_CHANGED"] < 0.05 * registered
    first = a.group_by("vpa").agg(pl.col("event_type").sort_by("ledger_seq").first())
    assert (first["event_type"] == "REGISTERED").all()
    bound = a.filter(pl.col("event_type") == "DEVICE_BOUND")
    assert bound["device_id"].null_count() == 0


# --- fraud and labels -------------------------------------------------------------------------


def test_fraud_rate_near_target_and_every_typology_present(run: Run) -> None:
    share = run.truth["is_fraud"].mean()
    assert 0.7 * CONFIG.fraud_rate < share < 1.3 * CONFIG.fraud_rate
    frauds = run.truth.filter("is_fraud")
    assert set(frauds["fraud_type"]) == set(FRAUD_TYPES)
    assert frauds["fraud_case_id"].null_count() == 0
    legit = run.truth.filter(~pl.col("is_fraud"))
    assert legit["fraud_type"].null_count() == legit.height
    assert legit["fraud_case_id"].null_count() == legit.height
    cases = frauds.group_by("fraud_case_id").agg(pl.col("fraud_type").n_unique())
    assert (cases["fraud_type"] == 1).all()


def test_label_delays_and_reporting(run: Run, created: pl.DataFrame) -> None:
    frauds = created.filter("is_fraud")
    reported = frauds.filter("reported")
    assert reported["label_reported_at"].null_count() == 0
    assert frauds.filter(~pl.col("reported"))["label_reported_at"].null_count() == (
        frauds.height - reported.height
    )
    never = 1 - reported.height / frauds.height
    assert 0.15 < never < 0.6
    delay_days = (reported["label_reported_at"] - reported["created_at"]).dt.total_seconds() / 86400
    assert 2 < delay_days.median() < 14
    assert (delay_days > 14).mean() > 0.03
    assert (delay_days > 0).all()
    assert set(reported["fraud_type"]) == set(FRAUD_TYPES)


def test_labels_refer_to_truth_and_arrive_after_the_transfer(
    run: Run, created: pl.DataFrame
) -> None:
    end = CONFIG.end_datetime
    tl = run.truth_labels.join(
        created.select("transfer_id", "created_at", "is_fraud", truth_type="fraud_type"),
        on="transfer_id",
        how="left",
    )
    assert tl["created_at"].null_count() == 0
    assert (tl["reported_at"] > tl["created_at"]).all()
    fraud = tl.filter(pl.col("label") == "FRAUD")
    assert fraud["is_fraud"].all()
    assert (fraud["fraud_type"] == fraud["truth_type"]).all()
    legit = tl.filter(pl.col("label") == "LEGIT")
    assert legit.height > 0 and not legit["is_fraud"].any()
    assert legit["fraud_type"].null_count() == legit.height
    assert set(legit["source"]) <= {"REVIEW_VERDICT", "BANK_CONFIRMED"}
    assert set(fraud["source"]) == {"VICTIM_REPORT", "BANK_CONFIRMED"}
    # Banks confirm later than victims complain; some frauds get both.
    med = fraud.group_by("source").agg((pl.col("reported_at") - pl.col("created_at")).median())
    delays = dict(med.iter_rows())
    assert delays["BANK_CONFIRMED"] > delays["VICTIM_REPORT"]
    both = fraud.group_by("transfer_id").agg(pl.col("source").n_unique())
    assert (both["source"] == 2).any()
    # Only what was known by the end of the period lands; the rest stays in ground truth.
    assert (run.labels["reported_at"] < end).all()
    assert run.labels.height == (run.truth_labels["reported_at"] < end).sum()
    assert (run.truth_labels["reported_at"] >= end).any()
    landed = run.labels.select(c.LABELS_STREAM.key)
    assert landed.join(run.truth_labels, on=list(c.LABELS_STREAM.key), how="anti").height == 0


def _typology(created: pl.DataFrame, name: str) -> pl.DataFrame:
    return created.filter(pl.col("fraud_type") == name)


def test_account_takeover_footprint(run: Run, created: pl.DataFrame) -> None:
    ato = _typology(created, "ACCOUNT_TAKEOVER")
    changes = run.accounts.filter(pl.col("event_type").is_in(["SIM_CHANGED", "DEVICE_BOUND"]))
    first = ato.group_by("fraud_case_id").agg(
        pl.col("payer_vpa").first(),
        start=pl.col("created_at").min(),
        devices=pl.col("payer_device_id").unique(),
    )
    j = first.join(changes, left_on="payer_vpa", right_on="vpa").filter(
        (pl.col("event_time") < pl.col("start"))
        & (pl.col("event_time") > pl.col("start") - pl.duration(hours=6))
    )
    assert j["fraud_case_id"].n_unique() == first.height  # a takeover starts with a new binding
    own = (
        run.accounts.filter(pl.col("event_type") == "DEVICE_BOUND")
        .group_by("vpa")
        .agg(own=pl.col("device_id").first())
    )
    k = ato.join(own, left_on="payer_vpa", right_on="vpa")
    assert (k["payer_device_id"] != k["own"]).all()
    final = run.transfers.filter(
        pl.col("transfer_id").is_in(ato["transfer_id"].implode()) & (pl.col("status") != "PENDING")
    )
    assert {"ZM", "00"} <= set(final["response_code"])  # wrong PINs before the drain
    legit = created.filter(~pl.col("is_fraud") & (pl.col("payee_type") == "PERSON"))
    assert ato["amount_paise"].median() > 5 * legit["amount_paise"].median()
    ist_hour = ato["created_at"].dt.convert_time_zone(IST_TIME_ZONE).dt.hour()
    assert ((ist_hour >= 23) | (ist_hour < 4)).mean() > 0.3


def test_mule_footprint(run: Run, created: pl.DataFrame) -> None:
    mule = _typology(created, "MULE")
    mules = set(run.users.filter(pl.col("is_mule") & (pl.col("kind") == "USER"))["vpa"])
    inbound = mule.filter(pl.col("payee_vpa").is_in(sorted(mules)))
    fan_in = inbound.group_by("fraud_case_id", "payee_vpa").agg(
        payers=pl.col("payer_vpa").n_unique(), last_in=pl.col("created_at").max()
    )
    assert fan_in["payers"].median() >= 4
    out = (
        mule.filter(pl.col("payer_vpa").is_in(sorted(mules)))
        .group_by("fraud_case_id")
        .agg(first_out=pl.col("created_at").min())
    )
    j = fan_in.join(out, on="fraud_case_id")
    assert j.height > 0
    gap = (j["first_out"] - j["last_in"]).dt.total_hours()
    assert gap.median() < 24  # money moves on within hours


def test_merchant_fraud_footprint(created: pl.DataFrame) -> None:
    mf = _typology(created, "MERCHANT_FRAUD")
    shops = mf.group_by("payee_vpa").agg(
        n=pl.len(),
        payers=pl.col("payer_vpa").n_unique(),
        span=pl.col("created_at").max() - pl.col("created_at").min(),
    )
    assert (shops["n"] >= 5).any()
    assert (shops["span"] < dt.timedelta(days=5)).all()
    others = created.filter(
        pl.col("payee_vpa").is_in(shops["payee_vpa"].implode()) & ~pl.col("is_fraud")
    )
    assert others.height == 0  # a fake storefront only ever takes the scam payments
    assert (mf["payee_type"] == "MERCHANT").all()


def test_collect_scam_and_social_engineering_footprints(created: pl.DataFrame) -> None:
    cs = _typology(created, "COLLECT_SCAM")
    assert (cs["channel"] == "COLLECT").all() and (cs["payee_type"] == "MERCHANT").all()
    se = _typology(created, "SOCIAL_ENGINEERING")
    legit = created.filter(~pl.col("is_fraud"))
    typical = legit.group_by("payer_vpa").agg(typical=pl.col("amount_paise").median())
    j = se.join(typical, on="payer_vpa")
    assert (j["amount_paise"] / j["typical"]).median() > 5
    first_seen = se.group_by("payer_vpa", "payee_vpa").agg(first=pl.col("created_at").min())
    earlier = first_seen.join(
        legit.select("payer_vpa", "payee_vpa", t=pl.col("created_at")),
        on=["payer_vpa", "payee_vpa"],
    ).filter(pl.col("t") < pl.col("first"))
    assert earlier.height == 0  # the scammer is a first-time payee


def test_users_ground_truth(run: Run, created: pl.DataFrame) -> None:
    u = run.users
    assert u["vpa"].is_unique().all()
    assert u["vpa"].str.contains(c.VPA_PATTERN).all()
    fake = set(u.filter("is_fraudster_merchant")["vpa"])
    paid = created.filter(pl.col("fraud_type").is_in(["MERCHANT_FRAUD", "COLLECT_SCAM"]))
    assert set(paid["payee_vpa"]) <= fake
    assert not created.filter(~pl.col("is_fraud"))["payee_vpa"].is_in(sorted(fake)).any()
    users = u.filter(pl.col("kind") == "USER")
    assert users.height == run.accounts.filter(pl.col("event_type") == "REGISTERED").height
    assert users["registered_at"].null_count() == 0


# --- typologies that turn ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def turning(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(TURNING, tmp_path_factory.mktemp("turning"))


@pytest.fixture(scope="module")
def turning_created(turning: Run) -> pl.DataFrame:
    pending = turning.transfers.filter(pl.col("status") == "PENDING")
    return pending.join(turning.truth, on="transfer_id", how="left")


def _cases(r: Run, name: str) -> list[dict]:
    rows = r.turns.filter(pl.col("fraud_type") == name).to_dicts()
    assert rows, f"no {name} case"
    return rows


def _touching(created: pl.DataFrame, vpa: str) -> pl.DataFrame:
    return created.filter((pl.col("payer_vpa") == vpa) | (pl.col("payee_vpa") == vpa))


def test_a_mix_makes_only_its_typologies(run: Run, turning: Run, tmp_path: Path) -> None:
    made = set(turning.truth.filter("is_fraud")["fraud_type"])
    assert made == set(TURNING_TYPES)
    assert set(turning.turns["fraud_type"]) == set(TURNING_TYPES)
    share = turning.truth["is_fraud"].mean()
    # Dormant mules cannot happen before accounts are old enough: the rate falls a little short.
    assert 0.6 * TURNING.fraud_rate < share < 1.3 * TURNING.fraud_rate
    assert set(run.turns["fraud_type"]) == set(TURNING_TYPES)  # the defaults make all three
    no_swap = SMALL.model_copy(
        update={"typology_mix": {**CONFIG.typology_mix, "QR_SWAP": 0.0}, "fraud_rate": 0.02}
    )
    small = _run(no_swap, tmp_path / "no_swap")
    made = set(small.truth.filter("is_fraud")["fraud_type"])
    assert "QR_SWAP" not in made and "QR_SWAP" not in set(small.turns["fraud_type"])
    assert {"MULE", "SOCIAL_ENGINEERING"} <= made


def test_invalid_mix_and_durations_say_which_field() -> None:
    with pytest.raises(ValidationError, match=r"typology_mix: values must be within \[0, inf\]"):
        SimulationConfig(typology_mix={"QR_SWAP": -0.1, "MULE": 1.0})
    with pytest.raises(ValidationError, match="typology_mix: give some weight"):
        SimulationConfig(typology_mix=dict.fromkeys(FRAUD_TYPES, 0.0))
    with pytest.raises(ValidationError, match="victim_report_rate: values must be within"):
        SimulationConfig(victim_report_rate={"QR_SWAP": 1.5})
    for field in ("qr_swap_days", "dormancy_days", "ato_spree_hours"):
        with pytest.raises(ValidationError, match=f"{field}: expected \\(shortest, longest\\)"):
            SimulationConfig(**{field: (5.0, 2.0)})
    # No fraud at all needs no mix; a rate set for one type keeps the others' defaults.
    assert SimulationConfig(fraud_rate=0.0, typology_mix={}).typology_mix == {}
    partial = SimulationConfig(victim_report_rate={"QR_SWAP": 0.1})
    assert partial.victim_report_rate["QR_SWAP"] == 0.1
    assert partial.victim_report_rate["MULE"] == SimulationConfig().victim_report_rate["MULE"]
    assert set(SimulationConfig().typology_mix) == set(FRAUD_TYPES)


def test_qr_swap_footprint(turning: Run, turning_created: pl.DataFrame) -> None:
    created = turning_created
    lo, hi = TURNING.qr_swap_days
    registered = dict(
        turning.accounts.filter(pl.col("event_type") == "REGISTERED")
        .select("vpa", "event_time")
        .iter_rows()
    )
    regulars = paid = with_history = diverted = cases_with_regulars = 0
    cases = _cases(turning, "QR_SWAP")
    for case in cases:
        start, end, fraudster, shop = (
            case["turned_at"],
            case["turned_until"],
            case["vpa"],
            case["merchant_vpa"],
        )
        assert lo * 86400 <= (end - start).total_seconds() <= hi * 86400
        swapped = created.filter(pl.col("fraud_case_id") == case["fraud_case_id"])
        if swapped.height == 0:  # nobody scanned the code before the period ended
            continue
        diverted += 1
        assert (swapped["payee_vpa"] == fraudster).all() and (swapped["channel"] == "QR").all()
        assert swapped["created_at"].is_between(start, end, closed="left").all()
        to_shop = created.filter(pl.col("payee_vpa") == shop)
        before = to_shop.filter((pl.col("created_at") < start) & (pl.col("channel") == "QR"))
        during = to_shop.filter(pl.col("created_at").is_between(start, end, closed="left"))
        # The shop's own QR takings stop while the swap lasts; other channels go on.
        assert (during["channel"] != "QR").all()
        earlier = set(before["payer_vpa"])
        from_regulars = swapped["payer_vpa"].is_in(sorted(earlier)).sum()
        regulars += from_regulars
        cases_with_regulars += from_regulars > 0
        paid += swapped.height
        # The fraudster's VPA is an account that turned: on the app for days, clean before.
        assert fraudster in registered
        assert (start - registered[fraudster]).total_seconds() >= 5 * 86400
        history = _touching(created, fraudster).filter(pl.col("created_at") < start)
        # Clean as a payee: nothing it received was fraud (it may have scanned a swapped code).
        assert not history.filter(pl.col("payee_vpa") == fraudster)["is_fraud"].any()
        with_history += history.height > 0
    assert diverted >= 0.7 * len(cases)
    # The shop's earlier customers scanning as usual (a month holds only some of its regulars).
    assert regulars / paid > 0.1
    assert cases_with_regulars >= 0.5 * diverted
    assert with_history / diverted >= 0.5
    reported = created.filter(pl.col("fraud_type") == "QR_SWAP")
    delay = (reported["label_reported_at"] - reported["created_at"]).dt.total_hours() / 24
    assert 0 < reported["reported"].mean() < 1  # some are reported, late; some never
    assert delay.drop_nulls().median() > 2


def test_dormant_mule_footprint(turning: Run, turning_created: pl.DataFrame) -> None:
    created = turning_created
    quiet_days = TURNING.dormancy_days[0]
    mules = set(turning.users.filter("is_mule")["vpa"])
    registered = dict(
        turning.accounts.filter(pl.col("event_type") == "REGISTERED")
        .select("vpa", "event_time")
        .iter_rows()
    )
    succeeded = turning.transfers.filter(pl.col("status") == "SUCCESS")["transfer_id"]
    with_history = 0
    fan_in: list[int] = []
    cases = _cases(turning, "DORMANT_MULE")
    for case in cases:
        mule = case["vpa"]
        assert mule in mules
        rows = created.filter(pl.col("fraud_case_id") == case["fraud_case_id"]).sort("created_at")
        inbound = rows.filter(pl.col("payee_vpa") == mule)
        outbound = rows.filter(pl.col("payer_vpa") == mule)
        first_in = inbound["created_at"].min()
        fan_in.append(inbound["payer_vpa"].n_unique())
        assert (inbound["created_at"].max() - first_in).total_seconds() < 3 * 86400
        # Old, with a gap of at least the shortest dormancy before the fan-in.
        assert (first_in - registered[mule]).total_seconds() > quiet_days * 86400
        before = _touching(created, mule).filter(pl.col("created_at") < first_in)
        assert not before.filter(pl.col("payee_vpa") == mule)["is_fraud"].any()
        if before.height:
            with_history += 1
            gap = (first_in - before["created_at"].max()).total_seconds() / 86400
            assert gap >= quiet_days
        # The money moves on within hours of arriving.
        ok_in = inbound.filter(pl.col("transfer_id").is_in(succeeded.implode()))
        if outbound.height == 0:  # nothing came in, or the period ended before the sweep
            last_in = inbound["created_at"].max()
            assert ok_in.height == 0 or last_in > TURNING.end_datetime - dt.timedelta(hours=7)
            continue
        waits = outbound.join_asof(
            inbound.select(pl.col("created_at").alias("in_at")).sort("in_at"),
            left_on="created_at",
            right_on="in_at",
        )
        assert (waits["created_at"] - waits["in_at"]).dt.total_hours().max() <= 7
        assert outbound["amount_paise"].sum() <= ok_in["amount_paise"].sum()
    assert with_history / len(cases) >= 0.6
    assert sorted(fan_in)[len(fan_in) // 2] >= 4  # several victims (the period may cut a case)


def test_same_device_takeover_footprint(turning: Run, turning_created: pl.DataFrame) -> None:
    created = turning_created
    changes = turning.accounts.filter(pl.col("event_type").is_in(["DEVICE_BOUND", "SIM_CHANGED"]))
    compared = 0
    for case in _cases(turning, "ATO_SAME_DEVICE"):
        payer = case["vpa"]
        rows = created.filter(pl.col("fraud_case_id") == case["fraud_case_id"])
        start, end = rows["created_at"].min(), rows["created_at"].max()
        assert (end - start).total_seconds() <= TURNING.ato_spree_hours[1] * 3600
        assert (rows["payer_vpa"] == payer).all()
        earlier = created.filter(
            (pl.col("payer_vpa") == payer) & (pl.col("created_at") < start) & ~pl.col("is_fraud")
        )
        # The payer's own phone, no binding or SIM change in the day before or during.
        assert set(rows["payer_device_id"]) <= set(earlier["payer_device_id"])
        events = changes.filter(
            (pl.col("vpa") == payer)
            & (pl.col("event_time") >= start - dt.timedelta(days=1))
            & (pl.col("event_time") <= end)
        )
        assert events.height == 0
        # New payees, amounts far above the payer's usual.
        assert not rows["payee_vpa"].is_in(earlier["payee_vpa"].implode()).any()
        if earlier.height >= 3:
            compared += 1
            assert rows["amount_paise"].median() > 5 * earlier["amount_paise"].median()
    assert compared >= 3
