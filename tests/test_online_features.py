"""The online feature state against the batch engine on small random ledgers: ties, updates in
any order, unknown parties, compaction, and what online means where the batch cannot know."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.decisions.policy import confirmed_mule_vpas
from pipelines.features.definitions import FEATURE_NAMES, WHOLE_NUMBER_FEATURES
from pipelines.features.engine import compute_features
from pipelines.features.engine.single_transfer import TRANSFER_SCHEMA
from pipelines.features.online import OnlineFeatureState, build_state, compute
from pipelines.features.online import state as state_module
from pipelines.features.online.embedded import EmbeddedStore
from pipelines.features.online.records import RECORD, vpa_key

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
VPAS = ("a@x", "b@x", "c@x", "d@y")  # payers and payees alike: money passes through
DEVICES = ("d1", "d2", "d3")
STATUSES = (("SUCCESS", "00"), ("FAILED", "ZM"), ("FAILED", "Z9"), ("FAILED", "U30"))
STATUSES += (("PENDING", None), ("REVERSED", "00"))
# Offsets in minutes: a few far apart (30-day windows, compaction), many close (ties, 5 min).
OFFSETS = st.one_of(
    st.integers(0, 70 * 24 * 60), st.sampled_from([60 * 24 * 50, 60 * 24 * 50 + 3, 60 * 24 * 51])
)
EVENT_SCHEMA = {"vpa": pl.String, "event_type": pl.String, "event_time": pl.Datetime("us", "UTC")}
LABEL_SCHEMA = {
    "transfer_id": pl.String,
    "label": pl.String,
    "reported_at": pl.Datetime("us", "UTC"),
    "fraud_type": pl.String,
    "source": pl.String,
}


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, pl.DataFrame]:
    """Up to 40 transfers among four VPAs over 70 days, with ties to the microsecond, equal
    amounts, every status, events and labels (some reported before the transfer was made)."""
    n = draw(st.integers(1, 40))
    rows = []
    for i in range(n):
        status, code = draw(st.sampled_from(STATUSES))
        rows.append(
            {
                "transfer_id": f"T{i}",
                "created_at": T0 + dt.timedelta(minutes=draw(OFFSETS)),
                "payer_vpa": draw(st.sampled_from(VPAS)),
                "payee_vpa": draw(st.sampled_from(VPAS)),
                "payee_type": draw(st.sampled_from(["PERSON", "MERCHANT"])),
                "amount_paise": draw(st.sampled_from([100, 5_000, 5_000, 123_457, 9_999_999])),
                "channel": draw(st.sampled_from(["CHAT", "QR", "INTENT", "COLLECT", "NFC"])),
                "payer_device_id": draw(st.sampled_from(DEVICES)),
                "status": status,
                "response_code": code,
            }
        )
    events = [
        {
            "vpa": draw(st.sampled_from(VPAS)),
            "event_type": draw(
                st.sampled_from(["REGISTERED", "DEVICE_BOUND", "SIM_CHANGED", "PIN_RESET", "KYC"])
            ),
            "event_time": T0 + dt.timedelta(minutes=draw(OFFSETS) - 60 * 24 * 5),
        }
        for _ in range(draw(st.integers(0, 8)))
    ]
    labels = []
    for _ in range(draw(st.integers(0, 10))):
        row = rows[draw(st.integers(0, n - 1))]
        mule = draw(st.booleans())
        labels.append(
            {
                "transfer_id": row["transfer_id"],
                "label": draw(st.sampled_from(["FRAUD", "FRAUD", "LEGIT"])),
                "reported_at": row["created_at"]
                + dt.timedelta(minutes=draw(st.integers(-60, 60 * 24 * 40))),
                "fraud_type": "MULE" if mule else "SOCIAL_ENGINEERING",
                "source": draw(st.sampled_from(["BANK_CONFIRMED", "VICTIM_REPORT"])),
            }
        )
    return {
        "transfers": pl.DataFrame(rows, schema=TRANSFER_SCHEMA),
        "events": pl.DataFrame(events, schema=EVENT_SCHEMA),
        "labels": pl.DataFrame(labels, schema=LABEL_SCHEMA),
    }


def in_time_order(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows in created_at order: queries come as live traffic does (a key compacted for a
    transfer at t answers exactly from t - 2 days on, `state.KEEP`)."""
    return list(frame.sort("created_at").iter_rows(named=True))


def batch(ledger: Mapping[str, pl.DataFrame]) -> dict[str, dict[str, Any]]:
    """transfer_id -> the batch engine's features, on the whole ledger."""
    frame = compute_features(ledger["transfers"], ledger["events"], ledger["labels"])
    return {row["transfer_id"]: row for row in frame.iter_rows(named=True)}


def assert_same(online: Mapping[str, Any], expected: Mapping[str, Any], what: str = "") -> None:
    """Counts and flags exactly, other features within 1e-9 relative, null where null."""
    assert list(online) == list(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        got, want = online[name], expected[name]
        if want is None:
            assert got is None, (what, name, got, want)
        elif name in WHOLE_NUMBER_FEATURES:
            assert got == want, (what, name, got, want)
        else:
            assert got is not None and math.isclose(got, want, rel_tol=1e-9), (
                what,
                name,
                got,
                want,
            )


def updates(ledger: Mapping[str, pl.DataFrame]) -> list[tuple[str, dict[str, Any]]]:
    """Every fact of the ledger as an update: transfers (PENDING), outcomes, events, labels."""
    out: list[tuple[str, dict[str, Any]]] = []
    for row in ledger["transfers"].iter_rows(named=True):
        out.append(("transfer", {k: v for k, v in row.items() if k not in ("status",)}))
        out.append(("outcome", row))
    out += [("event", row) for row in ledger["events"].iter_rows(named=True)]
    out += [("label", row) for row in ledger["labels"].iter_rows(named=True)]
    return out


def apply(state: OnlineFeatureState, kind: str, row: Mapping[str, Any]) -> bool | None:
    if kind == "transfer":
        return state.record_transfer({**row, "response_code": None})
    if kind == "outcome":
        return state.record_outcome(row["transfer_id"], row["status"], row["response_code"])
    if kind == "event":
        return state.record_account_event(row["vpa"], row["event_type"], row["event_time"])
    return state.record_label(
        row["transfer_id"],
        row["label"],
        row["reported_at"],
        fraud_type=row["fraud_type"],
        source=row["source"],
    )


def replayed(ledger: Mapping[str, pl.DataFrame], order: random.Random) -> OnlineFeatureState:
    """A state fed every update of the ledger in a shuffled order (outcomes may come first:
    they are then refused and sent again at the end, as a retrying caller would)."""
    state = OnlineFeatureState(EmbeddedStore())
    todo = updates(ledger)
    order.shuffle(todo)
    refused = [(k, r) for k, r in todo if apply(state, k, r) is False]
    for kind, row in refused:
        assert apply(state, kind, row) is True, (kind, row)
    return state


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers(), st.randoms(use_true_random=False))
def test_updates_in_any_order_give_the_batch_features(ledger, order):
    state = replayed(ledger, order)
    expected = batch(ledger)
    for row in in_time_order(ledger["transfers"]):
        assert_same(state.features(row), expected[row["transfer_id"]], row["transfer_id"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers())
def test_build_state_gives_the_batch_features_and_records_once(ledger):
    state = build_state(EmbeddedStore(), ledger["transfers"], ledger["events"], ledger["labels"])
    expected = batch(ledger)
    for row in in_time_order(ledger["transfers"]):
        assert state.has_transfer(row["transfer_id"])
        assert state.record_transfer(row) is False  # already there: nothing appended
        assert_same(state.features(row), expected[row["transfer_id"]], row["transfer_id"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers(), st.integers(0, 40 * 24 * 60))
def test_compaction_changes_no_feature_from_the_horizon_plus_30_days(ledger, minutes):
    horizon = T0 + dt.timedelta(minutes=minutes)
    compacted = build_state(
        EmbeddedStore(), ledger["transfers"], ledger["events"], ledger["labels"]
    )
    keys = {vpa_key(v) for v in VPAS} | {f"d:{d}" for d in DEVICES}
    for key in sorted(keys):
        assert compacted.compact(key, horizon)
    folded = build_state(
        EmbeddedStore(),
        ledger["transfers"],
        ledger["events"],
        ledger["labels"],
        keep_from=horizon,
    )
    expected = batch(ledger)
    late = ledger["transfers"].filter(pl.col("created_at") >= horizon + dt.timedelta(days=30))
    for row in in_time_order(late):
        want = expected[row["transfer_id"]]
        assert_same(compacted.features(row), want, f"compacted {row['transfer_id']}")
        assert_same(folded.features(row), want, f"built with keep_from {row['transfer_id']}")


def test_compaction_shrinks_a_key_and_keeps_its_answers():
    rng = random.Random(3)
    rows = [
        {
            "transfer_id": f"T{i}",
            "created_at": T0 + dt.timedelta(hours=6 * i),
            "payer_vpa": "a@x",
            "payee_vpa": rng.choice(VPAS[1:]),
            "payee_type": "PERSON",
            "amount_paise": rng.randrange(100, 100_000),
            "channel": "CHAT",
            "payer_device_id": rng.choice(DEVICES),
            "status": rng.choice(["SUCCESS", "FAILED"]),
            "response_code": "00",
        }
        for i in range(400)  # 100 days
    ]
    ledger = {
        "transfers": pl.DataFrame(rows, schema=TRANSFER_SCHEMA),
        "events": pl.DataFrame(schema=EVENT_SCHEMA),
        "labels": pl.DataFrame(schema=LABEL_SCHEMA),
    }
    expected = batch(ledger)
    store = EmbeddedStore()
    state = OnlineFeatureState(store)
    sizes = []
    for row in rows:  # the live path: features, then the transfer; compaction when due
        assert_same(state.features(row), expected[row["transfer_id"]], row["transfer_id"])
        state.record_transfer(row)
        sizes.append(len(store.read([vpa_key("a@x")])[0]))
    assert state.stats()["compactions"] >= 5
    # At most 39 days of the payer's transfers (4 a day) and a few summaries, not 100 days.
    assert max(sizes) < (39 * 4 + 10) * RECORD.itemsize < len(rows) * RECORD.itemsize


def test_unknown_parties_and_transfers():
    ledger = {
        "transfers": pl.DataFrame(
            [
                {
                    "transfer_id": "T0",
                    "created_at": T0,
                    "payer_vpa": "new@x",
                    "payee_vpa": "other@y",
                    "payee_type": "MERCHANT",
                    "amount_paise": 4_200,
                    "channel": "QR",
                    "payer_device_id": "fresh",
                    "status": "PENDING",
                    "response_code": None,
                }
            ],
            schema=TRANSFER_SCHEMA,
        ),
        "events": pl.DataFrame(schema=EVENT_SCHEMA),
        "labels": pl.DataFrame(schema=LABEL_SCHEMA),
    }
    state = OnlineFeatureState(EmbeddedStore())
    row = ledger["transfers"].row(0, named=True)
    assert_same(state.features(row), batch(ledger)["T0"])
    assert not state.has_transfer("T0")
    assert state.record_label("T0", "FRAUD", T0) is False
    assert state.record_outcome("T0", "SUCCESS", "00") is False
    assert state.store.stats()["keys"] == 0  # nothing was appended for an unknown transfer
    assert state.record_transfer(row) is True
    assert state.record_transfer(row) is False
    assert state.has_transfer("T0")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers(), st.integers(0, 80 * 24 * 60))
def test_block_list_is_the_batch_block_list(ledger, minutes):
    as_of = T0 + dt.timedelta(minutes=minutes)
    state = build_state(EmbeddedStore(), ledger["transfers"], ledger["events"], ledger["labels"])
    expected = confirmed_mule_vpas(ledger["labels"], ledger["transfers"], as_of)
    assert {v for v in VPAS if state.payee_blocklisted(v, as_of)} == expected


def test_a_busy_payees_outcomes_are_folded_and_its_answers_kept():
    rng = random.Random(5)
    rows = [
        {
            "transfer_id": f"T{i}",
            "created_at": T0 + dt.timedelta(minutes=3 * i),
            "payer_vpa": rng.choice(VPAS[1:]),
            "payee_vpa": "a@x",
            "payee_type": "MERCHANT",
            "amount_paise": rng.randrange(100, 100_000),
            "channel": "QR",
            "payer_device_id": rng.choice(DEVICES),
            "status": rng.choice(["SUCCESS", "FAILED", "REVERSED"]),
            "response_code": rng.choice(["00", "Z9", "ZM"]),
        }
        for i in range(3 * state_module.FOLD_OUTCOMES_AFTER)
    ]
    ledger = {
        "transfers": pl.DataFrame(rows, schema=TRANSFER_SCHEMA),
        "events": pl.DataFrame(schema=EVENT_SCHEMA),
        "labels": pl.DataFrame(schema=LABEL_SCHEMA),
    }
    expected = batch(ledger)
    store = EmbeddedStore()
    state = OnlineFeatureState(store)
    held = []
    for row in rows:  # the live path: features, the transfer PENDING, then its outcome
        assert_same(state.features(row), expected[row["transfer_id"]], row["transfer_id"])
        state.record_transfer({**row, "status": None, "response_code": None})
        state.record_outcome(row["transfer_id"], row["status"], row["response_code"])
        held.append(compute.outcomes(compute.decode(store.read([vpa_key("a@x")])[0])))
    assert state.stats()["compactions"] >= 2
    assert max(held) <= state_module.FOLD_OUTCOMES_AFTER + 1


# --- where online differs from the batch by nature (state.py's docstring) -------------------


def _two_transfers() -> dict[str, pl.DataFrame]:
    """A payer's first transfer, settled SUCCESS, and a second one two seconds later."""
    base = {
        "payer_vpa": "a@x",
        "payee_vpa": "b@x",
        "payee_type": "PERSON",
        "channel": "CHAT",
        "payer_device_id": "d1",
        "response_code": "00",
    }
    rows = [
        {**base, "transfer_id": "T1", "created_at": T0, "amount_paise": 10_000},
        {
            **base,
            "transfer_id": "T2",
            "created_at": T0 + dt.timedelta(seconds=2),
            "amount_paise": 30_000,
        },
    ]
    frame = pl.DataFrame(rows, schema={**TRANSFER_SCHEMA, "status": pl.String}, strict=False)
    return {
        "transfers": frame.with_columns(status=pl.lit("SUCCESS")),
        "events": pl.DataFrame(schema=EVENT_SCHEMA),
        "labels": pl.DataFrame(schema=LABEL_SCHEMA),
    }


def test_an_outcome_not_yet_recorded_counts_as_pending():
    settled = _two_transfers()
    pending = {**settled, "transfers": settled["transfers"].with_columns(status=pl.lit("PENDING"))}
    state = OnlineFeatureState(EmbeddedStore())
    first, second = settled["transfers"].iter_rows(named=True)
    state.record_transfer({**first, "status": None})  # the switch has not answered yet
    before = state.features(second)
    assert_same(before, batch(pending)["T2"])
    assert before["payer_amount_ratio_median_30d"] is None  # no successful amount yet
    assert batch(settled)["T2"]["payer_amount_ratio_median_30d"] == 3.0
    state.record_outcome("T1", "SUCCESS", "00")
    assert_same(state.features(second), batch(settled)["T2"])


def test_a_label_not_yet_recorded_does_not_count():
    ledger = _two_transfers()
    reported = {
        **ledger,
        "labels": pl.DataFrame(
            [
                {
                    "transfer_id": "T1",
                    "label": "FRAUD",
                    "reported_at": T0 + dt.timedelta(seconds=1),
                    "fraud_type": "MULE",
                    "source": "BANK_CONFIRMED",
                }
            ],
            schema=LABEL_SCHEMA,
        ),
    }
    state = build_state(
        EmbeddedStore(), ledger["transfers"].head(1), ledger["events"], ledger["labels"]
    )
    second = ledger["transfers"].row(1, named=True)
    assert_same(state.features(second), batch(ledger)["T2"])
    assert state.features(second)["payee_fraud_reports"] == 0.0
    assert batch(reported)["T2"]["payee_fraud_reports"] == 1.0
    assert state.record_label(
        "T1", "FRAUD", T0 + dt.timedelta(seconds=1), fraud_type="MULE", source="BANK_CONFIRMED"
    )
    assert_same(state.features(second), batch(reported)["T2"])
    assert state.payee_blocklisted("b@x", T0 + dt.timedelta(seconds=2))
    assert not state.payee_blocklisted("b@x", T0 + dt.timedelta(seconds=1))


def test_hashes_are_stable_across_processes():
    """Keys and counterparts are hashed with blake2b, never Python's per-process `hash`."""
    from pipelines.features.online.records import stable_hash

    assert stable_hash("a@x") == 0x0 + int.from_bytes(
        __import__("hashlib").blake2b(b"a@x", digest_size=8).digest(), "little"
    )
    assert np.uint64(stable_hash("a@x")) == stable_hash("a@x")


@pytest.mark.parametrize("count", [0, 1])
def test_features_read_their_three_keys_in_one_read(count):
    class Counting(EmbeddedStore):
        reads = 0

        def read(self, keys):
            Counting.reads += 1
            assert len(keys) == 3
            return super().read(keys)

    state = OnlineFeatureState(Counting())
    ledger = _two_transfers()
    rows = list(ledger["transfers"].iter_rows(named=True))[: count + 1]
    for row in rows[:-1]:
        state.record_transfer(row)
    state.features(rows[-1])
    assert Counting.reads == 1
