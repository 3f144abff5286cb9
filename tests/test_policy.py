"""Policy and reason codes on hand-made feature rows: hard rules, thresholds, codes, records."""

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipelines.decisions.policy import (
    Policy,
    confirmed_mule_vpas,
    decide,
    decide_one,
)
from pipelines.decisions.record import DecisionRecord, decision_id
from pipelines.decisions.scoring import decision_records
from pipelines.ledger import contract as c
from pipelines.risk import reasons as rc
from pipelines.risk.evaluation import hold_threshold
from tests.factories import T0, label, transfer

FEATURES = rc.required_columns()
POLICY = Policy(version="policy-2026.11.1", hold_threshold=0.8, block_threshold=0.97)


def row(i: int = 1, **overrides):
    """A transfer with every feature unknown (null), a low score, and the given overrides."""
    base = {
        "transfer_id": f"TX{i:08d}",
        "payer_vpa": f"payer.{i}@waaxis",
        "payee_vpa": f"payee.{i}@wasbi",
        "payee_type": "PERSON",
        "mcc": "0000",
        "amount_paise": 50_000,
        "risk_score": 0.01,
    }
    base.update({name: None for name in FEATURES if name not in base})
    base.update(overrides)
    return base


def frame(*rows) -> pl.DataFrame:
    schema = {
        "transfer_id": pl.String,
        "payer_vpa": pl.String,
        "payee_vpa": pl.String,
        "payee_type": pl.String,
        "mcc": pl.String,
        "amount_paise": pl.Int64,
        "risk_score": pl.Float64,
    }
    schema.update({name: pl.Float64 for name in FEATURES if name not in schema})
    return pl.DataFrame(list(rows), schema=schema, orient="row")


def decided(*rows, policy=POLICY, blocklist=frozenset(), allowlist=frozenset()):
    out = decide(frame(*rows), policy, blocklist=set(blocklist), allowlist=set(allowlist))
    return list(zip(out["decision"], out["reason_codes"].to_list(), strict=True))


# hard rules --------------------------------------------------------------------------------


def test_over_upi_limit_blocks_whatever_the_score_and_lists():
    over_p2p = row(1, amount_paise=c.P2P_LIMIT_PAISE + 1, risk_score=0.0)
    at_p2p = row(2, amount_paise=c.P2P_LIMIT_PAISE)
    # 2 lakh: allowed for a verified category (insurance), over the cap for a grocery shop.
    verified = row(3, payee_type="MERCHANT", mcc="6300", amount_paise=20_000_000)
    grocery = row(4, payee_type="MERCHANT", mcc="5411", amount_paise=20_000_000)
    over_p2m = row(5, payee_type="MERCHANT", mcc="6300", amount_paise=c.P2M_LIMIT_PAISE + 1)
    allow = {over_p2p["payee_vpa"], grocery["payee_vpa"]}
    assert decided(over_p2p, at_p2p, verified, grocery, over_p2m, allowlist=allow) == [
        ("BLOCK", ["OVER_UPI_LIMIT"]),
        ("ALLOW", []),
        ("ALLOW", []),
        ("BLOCK", ["OVER_UPI_LIMIT"]),
        ("BLOCK", ["OVER_UPI_LIMIT"]),
    ]


def test_blocklisted_payee_blocks_even_when_allowlisted_and_low_score():
    mule = row(1, payee_vpa="mule.1@wasbi", risk_score=0.0)
    assert decided(mule, blocklist={"mule.1@wasbi"}, allowlist={"mule.1@wasbi"}) == [
        ("BLOCK", ["BLOCKLISTED_PAYEE"])
    ]


def test_allowlisted_payee_or_pair_allows_a_high_score():
    by_payee = row(1, payee_vpa="utility@wasbi", risk_score=0.99)
    by_pair = row(2, payer_vpa="mum@waaxis", payee_vpa="son@wasbi", risk_score=0.99)
    other_payer = row(3, payer_vpa="stranger@waaxis", payee_vpa="son@wasbi", risk_score=0.99)
    allow = {"utility@wasbi", "mum@waaxis->son@wasbi"}
    assert decided(by_payee, by_pair, other_payer, allowlist=allow) == [
        ("ALLOW", ["ALLOWLISTED"]),
        ("ALLOW", ["ALLOWLISTED"]),
        ("BLOCK", ["HIGH_MODEL_SCORE"]),
    ]


def test_switched_off_rules_do_not_apply():
    policy = Policy(
        version="policy-2026.11.2",
        hold_threshold=0.8,
        block_over_upi_limit=False,
        block_listed_payees=False,
        allow_listed=False,
    )
    over = row(1, amount_paise=c.P2P_LIMIT_PAISE + 1)
    mule = row(2, payee_vpa="mule.1@wasbi")
    liked = row(3, payee_vpa="ok@wasbi", risk_score=0.9)
    out = decided(
        over, mule, liked, policy=policy, blocklist={"mule.1@wasbi"}, allowlist={"ok@wasbi"}
    )
    assert [d for d, _ in out] == ["ALLOW", "ALLOW", "HOLD"]


# thresholds and reason codes --------------------------------------------------------------


def test_score_thresholds_hold_and_block():
    rows = [row(i, risk_score=s) for i, s in enumerate([0.5, 0.79999, 0.8, 0.9, 0.97, 1.0])]
    assert [d for d, _ in decided(*rows)] == ["ALLOW", "ALLOW", "HOLD", "HOLD", "BLOCK", "BLOCK"]
    no_block = Policy(version="policy-2026.11.3", hold_threshold=0.8)
    assert [d for d, _ in decided(*rows, policy=no_block)][-1] == "HOLD"


def test_reason_codes_for_hand_made_rows_strongest_first():
    takeover = row(
        1,
        risk_score=0.9,
        amount_paise=2_000_000,  # ₹20,000
        payer_new_device=1.0,
        payer_hours_since_sim_change=5.0,
        pair_is_first=1.0,
        is_night_ist=1.0,
        payer_night_share_30d=0.0,
    )
    mule_payee = row(
        2,
        risk_score=0.85,
        payee_is_merchant=0.0,
        payee_distinct_payers_1h=9.0,
        payee_passthrough_24h=0.95,
        payee_inbound_amount_24h=80_000.0,
        payee_account_age_hours=20.0,
    )
    unexplained = row(3, risk_score=0.95)
    small_new_device = row(4, risk_score=0.9, amount_paise=10_000, payer_new_device=1.0)
    allowed = row(5, risk_score=0.1, payer_failed_pin_24h=5.0)
    assert decided(takeover, mule_payee, unexplained, small_new_device, allowed) == [
        ("HOLD", ["NEW_DEVICE_HIGH_AMOUNT", "RECENT_SIM_CHANGE", "FIRST_TIME_PAYEE_HIGH_AMOUNT"]),
        ("HOLD", ["PAYEE_PASS_THROUGH", "PAYEE_MANY_NEW_PAYERS", "PAYEE_NEW_ACCOUNT"]),
        ("HOLD", ["HIGH_MODEL_SCORE"]),
        ("HOLD", ["HIGH_MODEL_SCORE"]),  # ₹100 on a new device is not a high amount
        ("ALLOW", []),
    ]


def test_reason_codes_function_every_feature_code_fires_alone_and_nulls_never_fire():
    triggers = {
        "PAYEE_REPORTED_FRAUD": {"payee_fraud_reports": 4.0},
        "PAYEE_PASS_THROUGH": {"payee_passthrough_24h": 0.9, "payee_inbound_amount_24h": 2e4},
        "REPEATED_FAILED_PIN": {"payer_failed_pin_24h": 3.0},
        "NEW_DEVICE_HIGH_AMOUNT": {"payer_hours_since_device_bound": 2.0},
        "RECENT_SIM_CHANGE": {"payer_hours_since_sim_change": 10.0},
        "RECENT_PIN_RESET": {"payer_hours_since_pin_reset": 10.0},
        "PAYEE_MANY_NEW_PAYERS": {"payee_is_merchant": 0.0, "payee_distinct_payers_24h": 30.0},
        "FIRST_TIME_PAYEE_HIGH_AMOUNT": {"pair_is_first": 1.0, "amount_paise": 1_500_000},
        "AMOUNT_FAR_ABOVE_PAYER_HISTORY": {"payer_amount_ratio_median_30d": 25.0},
        "PAYEE_NEW_ACCOUNT": {"payee_account_age_hours": 1.0},
        "COLLECT_FROM_NEW_MERCHANT": {
            "channel_collect": 1.0,
            "payee_is_merchant": 1.0,
            "payee_account_age_hours": 200.0,
        },
        "PAYER_VELOCITY_SPIKE": {"payer_count_1h": 12.0},
        "PAYER_MANY_NEW_PAYEES": {
            "payer_distinct_payees_24h": 8.0,
            "payer_new_payee_share_24h": 1.0,
        },
        "PAYEE_VOLUME_SPIKE": {"payee_volume_spike": 9.0},
        "NIGHT_ACTIVITY": {"is_night_ist": 1.0, "payer_night_share_30d": 0.01},
        "PAYEE_REPORTED_RECENTLY": {"payee_fraud_reports_7d": 1.0},
        "DEVICE_REPORTED_FRAUD": {"device_fraud_reports_30d": 2.0},
        "AMOUNT_FAR_ABOVE_PAYEE_TICKET": {"payee_amount_ratio_mean_30d": 12.0},
    }
    assert set(triggers) == {r.code for r in rc.FEATURE_CODES}
    base = {"amount_paise": 800_000}  # ₹8,000
    rows = [row(i, **{**base, **t}) for i, t in enumerate(triggers.values())]
    rows.append(row(99, **base))  # all features unknown
    codes = rc.reason_codes(frame(*rows)).to_list()
    for code, got in zip(triggers, codes, strict=False):
        assert got == [code], (code, got)
    assert codes[-1] == []
    with_fallback = rc.reason_codes(frame(row(1, risk_score=0.9)), high_score=0.8)
    assert with_fallback.to_list() == [["HIGH_MODEL_SCORE"]]


def test_at_most_max_codes():
    busy = row(
        1,
        risk_score=0.99,
        payee_fraud_reports=5.0,
        payer_failed_pin_24h=4.0,
        payer_hours_since_sim_change=1.0,
        payer_hours_since_pin_reset=1.0,
        payee_volume_spike=10.0,
    )
    assert decided(busy)[0][1] == [
        "PAYEE_REPORTED_FRAUD",
        "REPEATED_FAILED_PIN",
        "RECENT_SIM_CHANGE",
    ]
    two = Policy(version="policy-2026.11.4", hold_threshold=0.5, max_reason_codes=2)
    assert decided(busy, policy=two)[0][1] == ["PAYEE_REPORTED_FRAUD", "REPEATED_FAILED_PIN"]


def test_missing_column_and_null_score_are_named():
    with pytest.raises(ValueError, match="payer_failed_pin_24h"):
        decide(frame(row()).drop("payer_failed_pin_24h"), POLICY, blocklist=set(), allowlist=set())
    with pytest.raises(ValueError, match="risk_score is null in 1 rows"):
        decide(frame(row(risk_score=None)), POLICY, blocklist=set(), allowlist=set())


def test_catalogue_defines_each_code_once_and_documents_it():
    table = rc.reason_code_table()
    for code in rc.CATALOGUE:
        assert table.count(f"`{code}`") == 1
    for needed in ("OVER_UPI_LIMIT", "BLOCKLISTED_PAYEE", "ALLOWLISTED", "HIGH_MODEL_SCORE"):
        assert needed in rc.CATALOGUE
    assert len({r.strength for r in rc.FEATURE_CODES}) == len(rc.FEATURE_CODES)


# threshold, block list, records, policy file ------------------------------------------------


def test_hold_threshold_holds_at_most_the_rate():
    scores = np.array([i / 1000 for i in range(1000)])
    t = hold_threshold(scores, 0.005)
    assert (scores >= t).sum() == 5
    assert 0.994 < t <= 0.995
    tied = np.array([0.5] * 990 + [0.9] * 10)
    t = hold_threshold(tied, 0.005)  # ten tied at the top: holding them all is 1%
    assert (tied >= t).sum() == 0
    assert (tied >= hold_threshold(tied, 0.01)).sum() == 10


def test_confirmed_mule_vpas_is_point_in_time():
    transfers = pl.DataFrame(
        [
            transfer(1, payee_vpa="mule.a@wasbi"),
            transfer(1, payee_vpa="mule.a@wasbi", ledger_seq=100, status="SUCCESS"),
            transfer(2, payee_vpa="mule.b@wasbi"),
            transfer(3, payee_vpa="victim.c@wasbi"),
            transfer(4, payee_vpa="scam.d@wasbi"),
        ],
        schema=c.TRANSFERS.schema,
        orient="row",
    )
    confirmed = {"fraud_type": "MULE", "source": "BANK_CONFIRMED"}
    labels = pl.DataFrame(
        [
            label(1, **confirmed, reported_at=T0 + dt.timedelta(days=1)),
            label(2, **confirmed, reported_at=T0 + dt.timedelta(days=5)),  # later
            label(3, fraud_type="MULE", source="VICTIM_REPORT"),  # not bank-confirmed
            label(4, source="BANK_CONFIRMED", fraud_type="SOCIAL_ENGINEERING"),
        ],
        schema=c.LABELS_STREAM.schema,
        orient="row",
    )
    as_of = T0 + dt.timedelta(days=3)
    assert confirmed_mule_vpas(labels, transfers, as_of) == {"mule.a@wasbi"}
    later = T0 + dt.timedelta(days=6)
    assert confirmed_mule_vpas(labels, transfers, later) == {"mule.a@wasbi", "mule.b@wasbi"}


def test_decision_records_are_valid_and_ids_deterministic():
    at = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)
    out = decide(frame(row(1, risk_score=0.9), row(2)), POLICY, blocklist=set(), allowlist=set())
    first = decision_records(out, "model-7", POLICY.version, at)
    again = decision_records(out, "model-7", POLICY.version, at + dt.timedelta(hours=1))
    other_model = decision_records(out, "model-8", POLICY.version, at)
    assert [r["decision_id"] for r in first] == [r["decision_id"] for r in again]
    assert first[0]["decision_id"] == decision_id("TX00000001", "model-7", POLICY.version)
    assert {r["decision_id"] for r in first}.isdisjoint(r["decision_id"] for r in other_model)
    assert first[0]["decision"] == "HOLD" and first[0]["reason_codes"] == ["HIGH_MODEL_SCORE"]
    assert first[0]["decided_at"] == "2026-11-02T04:00:00Z"
    for record in first:
        assert DecisionRecord.model_validate(record).to_json_dict() == record
    json.dumps(first)  # JSON-ready as it is
    with pytest.raises(ValueError, match="repeats"):
        decision_records(pl.concat([out, out]), "model-7", POLICY.version, at)


def test_policy_json_round_trip_and_validation(tmp_path):
    path = POLICY.save(tmp_path / "policy.json")
    assert Policy.load(path) == POLICY
    assert Policy.from_json(POLICY.to_json()) == POLICY
    assert json.loads(path.read_text())["version"] == "policy-2026.11.1"
    with pytest.raises(ValidationError, match="block_threshold"):
        Policy(version="policy-2026.11.1", hold_threshold=0.9, block_threshold=0.5)
    with pytest.raises(ValidationError, match="version"):
        Policy(version="2026.11.1", hold_threshold=0.9)
    with pytest.raises(ValidationError):
        Policy.from_json('{"version": "policy-1", "hold_threshold": 0.5, "hold_treshold": 1}')
    with pytest.raises(ValidationError):
        POLICY.hold_threshold = 0.1  # frozen


def test_reason_code_page_matches_the_catalogue():
    from pathlib import Path

    from pipelines.risk.reasons import reason_code_table

    page = (Path(__file__).parents[1] / "docs" / "reason-codes.md").read_text()
    assert reason_code_table() in page


# one row online (decide_one) against the batch (decide) -------------------------------------

# Values at and around every threshold the conditions use, and null.
_NEAR = [None, 0.0, 0.01, 0.049, 0.05, 0.8, 0.9, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0, 12.0, 15.0]
_NEAR += [23.9, 24.0, 71.9, 72.0, 200.0, 719.0, 720.0, 1e4, 3e4]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    score=st.sampled_from([0.01, 0.5, 0.79, 0.8, 0.9, 0.97, 0.99]),
    amount=st.sampled_from([100, 199_999, 200_000, 500_000, 1_000_000, 10_000_000, 10_000_001]),
    payee_type=st.sampled_from(["PERSON", "MERCHANT"]),
    mcc=st.sampled_from(["0000", "5411", *sorted(c.P2M_HIGH_LIMIT_MCCS)[:1]]),
    listed=st.sampled_from(["none", "block", "allow_payee", "allow_pair"]),
    max_codes=st.integers(1, 4),
)
def test_decide_one_equals_the_batch_decide(
    data, score, amount, payee_type, mcc, listed, max_codes
):
    features = {name: data.draw(st.sampled_from(_NEAR), label=name) for name in FEATURES}
    features.pop("amount_paise", None)
    r = row(1, risk_score=score, amount_paise=amount, payee_type=payee_type, mcc=mcc, **features)
    policy = POLICY.model_copy(update={"max_reason_codes": max_codes})
    blocklist = {r["payee_vpa"]} if listed == "block" else set()
    allowlist = {
        "allow_payee": {r["payee_vpa"]},
        "allow_pair": {f"{r['payer_vpa']}->{r['payee_vpa']}"},
    }.get(listed, set())
    batch = decided(r, policy=policy, blocklist=blocklist, allowlist=allowlist)[0]
    online = decide_one(r, policy, score=score, blocklisted=bool(blocklist), allowlist=allowlist)
    assert online == (batch[0], batch[1])


def test_decide_one_without_a_score_applies_the_hard_rules_then_the_fallback():
    over = row(1, amount_paise=c.P2P_LIMIT_PAISE + 1)
    assert decide_one(over, POLICY, score=None, blocklisted=False, allowlist=set()) == (
        "BLOCK",
        ["OVER_UPI_LIMIT"],
    )
    listed = row(2)
    assert decide_one(listed, POLICY, score=None, blocklisted=True, allowlist=set()) == (
        "BLOCK",
        ["BLOCKLISTED_PAYEE"],
    )
    plain = row(3)
    assert decide_one(plain, POLICY, score=None, blocklisted=False, allowlist=set()) == (
        "ALLOW",
        ["MODEL_UNAVAILABLE"],
    )
    assert decide_one(
        plain, POLICY, score=None, blocklisted=False, allowlist=set(), fallback="HOLD"
    ) == ("HOLD", ["MODEL_UNAVAILABLE"])
    with pytest.raises(ValueError, match="fallback 'BLOCK'"):
        decide_one(plain, POLICY, score=None, blocklisted=False, allowlist=set(), fallback="BLOCK")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), amount=st.sampled_from([100, 199_999, 200_000, 500_000, 1_000_000]))
def test_reason_mask_of_one_row_equals_the_expression(data, amount):
    # Each feature null or near its thresholds; sparse, so that each code is often decided
    # by one of its terms being null (where Kleene logic matters).
    features = {
        name: data.draw(st.sampled_from([None, None, *_NEAR]), label=name) for name in FEATURES
    }
    features["amount_paise"] = amount
    r = row(1, **features)
    batch = frame(r).select(rc.reason_mask_expr()).item()
    assert rc.reason_mask_one(r) == batch
