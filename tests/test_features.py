"""Point-in-time features: the fast engine against a slow, obviously-correct reference.

The reference below reads each feature's definition straight off the catalogue with plain
Python loops over the history; the engine must agree with it on random ledgers full of the
awkward cases (ties in created_at, REVERSED and FAILED rows, late labels, events at the same
microsecond as a transfer, window boundaries hit exactly).
"""

import datetime as dt
import math
import statistics
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.features import engine
from pipelines.features.definitions import FEATURE_DTYPES, FEATURE_NAMES, FEATURES, GROUPS
from pipelines.features.engine import (
    batch,
    compute_features,
    features_for_transfer,
    inputs,
    load_inputs,
    sorted_keys,
    windows,
)
from pipelines.features.engine.output import BLOCK_FEATURES
from pipelines.india_time import IST
from pipelines.ledger import contract as c

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)
MIN, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)
PEOPLE = ["amit.k@wasbi", "bela99@waaxis", "chand@waicici", "devraj@wahdfcbank", "esha@ybl"]
SHOPS = ["kirana.one@wabizaxis", "pharma.two@ybl"]
GAPS = [
    dt.timedelta(0),  # a tie with the previous transfer
    US,
    30 * dt.timedelta(seconds=1),
    4 * MIN,
    5 * MIN,  # exactly a window: [t - 5m, t) includes it
    50 * MIN,
    HOUR,
    3 * HOUR,
    20 * HOUR,
    DAY,
    2 * DAY,
    6 * DAY,
]
GAP_P = [0.08, 0.04, 0.1, 0.1, 0.05, 0.12, 0.05, 0.14, 0.12, 0.06, 0.09, 0.05]


# --- random ledgers -------------------------------------------------------------------------


def random_ledger(seed: int, n: int = 240) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Transfers, account events and labels over a few keys, with the awkward cases mixed in."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice(len(GAPS), size=n, p=GAP_P)
    times, now = [], T0
    for g in gaps:
        now = now + GAPS[g]
        times.append(now)
    rows = []
    for i, created in enumerate(times):
        payer = PEOPLE[rng.choice(len(PEOPLE), p=[0.4, 0.25, 0.15, 0.1, 0.1])]
        if rng.random() < 0.08:
            payer = SHOPS[0]  # a merchant paying out: pass-through
        payee = rng.choice([p for p in PEOPLE + SHOPS if p != payer])
        merchant = payee in SHOPS
        status = rng.choice(["SUCCESS", "FAILED", "REVERSED", "PENDING"], p=[0.7, 0.2, 0.07, 0.03])
        code = {"SUCCESS": "00", "REVERSED": "00", "PENDING": None}.get(status)
        if status == "FAILED":
            code = rng.choice(["ZM", "Z6", "Z9", "U30"])
        amount = int(rng.choice([29_900, 29_900, 100_000, 50, 250_000, rng.integers(100, 900_000)]))
        device = f"dev-{payer[:3]}-{rng.choice(3, p=[0.8, 0.15, 0.05])}"
        if rng.random() < 0.1:
            device = "dev-shared"  # one phone, several payers
        rows.append(
            {
                "transfer_id": f"TX{seed:03d}{i:05d}",
                "ledger_seq": i + 1,
                "created_at": created,
                "payer_vpa": payer,
                "payee_vpa": str(payee),
                "payee_type": "MERCHANT" if merchant else "PERSON",
                "mcc": "5411" if merchant else "0000",
                "amount_paise": amount,
                "currency": "INR",
                "channel": str(
                    rng.choice(["QR", "INTENT", "COLLECT"] if merchant else ["CHAT", "INTENT"])
                ),
                "payer_device_id": device,
                "payer_state": "IN-KA",
                "status": str(status),
                "response_code": None if code is None else str(code),
                "note": None,
            }
        )
    order = rng.permutation(n)  # the engine must not rely on input order
    transfers = pl.DataFrame([rows[i] for i in order], schema=c.TRANSFERS.schema, orient="row")

    events = []
    for v, vpa in enumerate(PEOPLE + SHOPS[:1]):
        kinds = ["REGISTERED", "BANK_LINKED", "DEVICE_BOUND", "DEVICE_BOUND", "SIM_CHANGED"]
        kinds += ["PIN_RESET", "DEVICE_BOUND", "REGISTERED"] if v % 2 else ["DEREGISTERED"]
        for k, kind in enumerate(kinds):
            if rng.random() < 0.4:
                at = times[rng.integers(n)]  # the same microsecond as a transfer
            else:
                at = T0 + (rng.random() * 45 - 5) * DAY
            if kind == "REGISTERED" and k == 0:
                at = T0 - rng.integers(0, 100) * HOUR
            events.append(
                {
                    "event_id": f"EV{seed:03d}{v:02d}{k:02d}",
                    "ledger_seq": len(events) + 1,
                    "event_time": at,
                    "vpa": vpa,
                    "event_type": kind,
                    "device_id": None,
                    "state": "IN-KA",
                }
            )
    account_events = pl.DataFrame(events, schema=c.ACCOUNTS.schema, orient="row")

    labels = []
    for i in rng.choice(n, size=n // 5, replace=False):
        created = rows[i]["created_at"]
        for source in ["VICTIM_REPORT", "BANK_CONFIRMED"][: rng.integers(1, 3)]:
            delay = rng.choice(5)
            reported = [
                created,
                created + US,
                created + 3 * DAY,
                times[min(i + rng.integers(1, 6), n - 1)],  # a later transfer's microsecond
                created + 60 * DAY,
            ][delay]
            labels.append(
                {
                    "transfer_id": rows[i]["transfer_id"],
                    "label": "FRAUD" if rng.random() < 0.8 else "LEGIT",
                    "fraud_type": None,
                    "source": source,
                    "reported_at": max(reported, created),
                }
            )
    label_frame = pl.DataFrame(labels, schema=c.LABELS_STREAM.schema, orient="row")
    return transfers, account_events, label_frame


# --- the reference ------------------------------------------------------------------------


def _ist_hour(moment: dt.datetime) -> int:
    return moment.astimezone(IST).hour


def _ok(row: dict) -> bool:
    return row["status"] in ("SUCCESS", "REVERSED")  # the reversal comes hours later


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def reference(
    transfers: pl.DataFrame, account_events: pl.DataFrame, labels: pl.DataFrame
) -> dict[str, dict[str, Any]]:
    """Every feature of every transfer, by brute force over its history."""
    rows = transfers.to_dicts()
    events = account_events.to_dicts()
    label_rows = labels.to_dicts()
    first_report: dict[str, dt.datetime] = {}
    for lb in label_rows:
        if lb["label"] == "FRAUD":
            tid = lb["transfer_id"]
            first_report[tid] = min(first_report.get(tid, lb["reported_at"]), lb["reported_at"])
    known_at = {
        u["transfer_id"]: max(first_report[u["transfer_id"]], u["created_at"])
        for u in rows
        if u["transfer_id"] in first_report
    }
    out = {}
    for t in rows:
        at, payer, payee = t["created_at"], t["payer_vpa"], t["payee_vpa"]
        prior = [u for u in rows if u["created_at"] < at]

        def within(history, span, _at=at):
            return [u for u in history if u["created_at"] >= _at - span]

        def last_event(vpa, kind, _at=at):
            times = [
                e["event_time"]
                for e in events
                if e["vpa"] == vpa and e["event_type"] == kind and e["event_time"] < _at
            ]
            return (_at - max(times)) / HOUR if times else None

        def first_to_payee(u):
            return not any(
                v["payer_vpa"] == u["payer_vpa"]
                and v["payee_vpa"] == u["payee_vpa"]
                and v["created_at"] < u["created_at"]
                for v in rows
            )

        f: dict[str, Any] = {}
        f["amount_log"] = math.log1p(t["amount_paise"] / 100)
        f["payee_is_merchant"] = float(t["payee_type"] == "MERCHANT")
        for ch in ("CHAT", "QR", "INTENT", "COLLECT"):
            f[f"channel_{ch.lower()}"] = float(t["channel"] == ch)
        f["hour_ist"] = float(_ist_hour(at))
        f["is_night_ist"] = float(_ist_hour(at) < 5)

        mine = [u for u in prior if u["payer_vpa"] == payer]
        for name, span in (("5m", 5 * MIN), ("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY)):
            f[f"payer_count_{name}"] = len(within(mine, span))
            f[f"payer_amount_{name}"] = sum(u["amount_paise"] for u in within(mine, span)) / 100
        month = within(mine, 30 * DAY)
        f["payer_count_30d"] = len(month)
        f["payer_amount_30d"] = sum(u["amount_paise"] for u in month) / 100
        good = [u["amount_paise"] for u in month if _ok(u)]
        f["payer_amount_ratio_median_30d"] = (
            t["amount_paise"] / statistics.median(good) if good else None
        )
        f["payer_amount_zscore_30d"] = (
            (t["amount_paise"] - statistics.mean(good)) / statistics.stdev(good)
            if len(set(good)) > 1
            else None
        )
        f["payer_hours_since_registration"] = last_event(payer, "REGISTERED")
        f["payer_hours_since_device_bound"] = last_event(payer, "DEVICE_BOUND")
        f["payer_hours_since_sim_change"] = last_event(payer, "SIM_CHANGED")
        f["payer_hours_since_pin_reset"] = last_event(payer, "PIN_RESET")
        f["payer_new_device"] = float(
            not any(u["payer_device_id"] == t["payer_device_id"] for u in mine)
        )
        day = within(mine, DAY)
        f["payer_distinct_payees_24h"] = len({u["payee_vpa"] for u in day})
        f["payer_new_payee_share_24h"] = _ratio(sum(first_to_payee(u) for u in day), len(day))
        f["payer_night_share_30d"] = _ratio(
            sum(_ist_hour(u["created_at"]) < 5 for u in month), len(month)
        )
        f["payer_failed_pin_24h"] = sum(
            u["status"] == "FAILED" and u["response_code"] in ("ZM", "Z6") for u in day
        )
        f["payer_failed_funds_24h"] = sum(
            u["status"] == "FAILED" and u["response_code"] == "Z9" for u in day
        )

        inbound = [u for u in prior if u["payee_vpa"] == payee]
        for name, span in (("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY)):
            f[f"payee_distinct_payers_{name}"] = len(
                {u["payer_vpa"] for u in within(inbound, span)}
            )
        received = sum(u["amount_paise"] for u in within(inbound, DAY) if _ok(u))
        f["payee_inbound_amount_24h"] = received / 100
        outbound = [u for u in prior if u["payer_vpa"] == payee]
        sent = sum(u["amount_paise"] for u in within(outbound, DAY) if _ok(u))
        f["payee_passthrough_24h"] = _ratio(sent, received)
        registered = last_event(payee, "REGISTERED")
        seen = [u["created_at"] for u in prior if payee in (u["payer_vpa"], u["payee_vpa"])]
        f["payee_account_age_hours"] = (
            registered if registered is not None else (at - min(seen)) / HOUR if seen else None
        )
        week_before = [u for u in inbound if at - 8 * DAY <= u["created_at"] < at - DAY]
        f["payee_volume_spike"] = len(within(inbound, DAY)) / (len(week_before) / 7 + 1)
        reported = sum(
            any(
                lb["transfer_id"] == u["transfer_id"]
                and lb["label"] == "FRAUD"
                and lb["reported_at"] < at
                for lb in label_rows
            )
            for u in inbound
        )
        f["payee_fraud_reports"] = reported
        f["payee_fraud_rate_reported"] = reported / (len(inbound) + 10)
        week = within(inbound, 7 * DAY)
        f["payee_decline_rate_7d"] = _ratio(sum(u["status"] == "FAILED" for u in week), len(week))
        f["payee_new_payer_share_7d"] = _ratio(sum(first_to_payee(u) for u in week), len(week))
        ticket = [u["amount_paise"] for u in within(inbound, 30 * DAY) if _ok(u)]
        f["payee_amount_ratio_mean_30d"] = (
            t["amount_paise"] / statistics.mean(ticket) if ticket else None
        )

        def label_recency(entity: str, history: list[dict], _at=at, f=f) -> None:
            known = [known_at[u["transfer_id"]] for u in history if u["transfer_id"] in known_at]
            known = [k for k in known if k < _at]
            for w, span in (("1d", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
                f[f"{entity}_fraud_reports_{w}"] = sum(k >= _at - span for k in known)
                made = within(history, span)
                reported = [
                    u
                    for u in made
                    if u["transfer_id"] in known_at and known_at[u["transfer_id"]] < _at
                ]
                f[f"{entity}_fraud_rate_{w}"] = _ratio(len(reported), len(made))
            f[f"{entity}_days_since_fraud_report"] = (_at - max(known)) / DAY if known else None

        label_recency("payee", inbound)
        label_recency("payer", mine)
        device = [u for u in prior if u["payer_device_id"] == t["payer_device_id"]]
        label_recency("device", device)

        pair = [u for u in inbound if u["payer_vpa"] == payer]
        f["pair_prior_count"] = len(pair)
        f["pair_is_first"] = float(not pair)
        f["pair_amount_ratio_mean"] = (
            t["amount_paise"] / statistics.mean(u["amount_paise"] for u in pair) if pair else None
        )
        f["pair_days_since_last"] = (
            (at - max(u["created_at"] for u in pair)) / DAY if pair else None
        )
        out[t["transfer_id"]] = f
    return out


def assert_features_equal(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for name in FEATURE_NAMES:
        a, b = got[name], want[name]
        if b is None or a is None:
            assert a is None and b is None, f"{where} {name}: engine {a}, reference {b}"
        else:
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{where} {name}: {a} != {b}"


def by_id(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["transfer_id"]: row for row in frame.to_dicts()}


@pytest.fixture(scope="module")
def ledger() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return random_ledger(seed=1)


# --- 1. the engine equals the reference ---------------------------------------------------


@pytest.mark.parametrize(("seed", "n"), [(1, 240), (2, 240), (3, 240), (7, 240), (8, 500)])
def test_every_feature_equals_the_reference(seed: int, n: int) -> None:
    transfers, events, labels = random_ledger(seed, n)
    got = by_id(compute_features(transfers, events, labels))
    want = reference(transfers, events, labels)
    assert got.keys() == want.keys()
    for tid, features in want.items():
        assert_features_equal(got[tid], features, tid)
    # The awkward cases are really there, or the comparison proves little.
    assert transfers["created_at"].is_duplicated().any()
    assert {"REVERSED", "FAILED"} <= set(transfers["status"])
    assert any(
        f["payer_amount_zscore_30d"] is None and f["payer_count_30d"] > 2 for f in want.values()
    )
    assert any(f["payee_fraud_reports"] > 0 for f in want.values())
    for entity in ("payer", "payee", "device"):
        assert any(f[f"{entity}_fraud_reports_1d"] > 0 for f in want.values())
        assert any(0 < (f[f"{entity}_fraud_rate_7d"] or 0) < 1 for f in want.values())
        # a report that has left the 30-day window: known, but not recent
        assert any(
            f[f"{entity}_fraud_reports_30d"] == 0
            and (f[f"{entity}_days_since_fraud_report"] or 0) > 30
            for f in want.values()
        )
    assert any(f["payee_fraud_reports"] > f["payee_fraud_reports_30d"] for f in want.values())


def test_hash_collisions_and_key_blocks_do_not_change_results(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rare paths: colliding first hashes (exact re-sort) and keys split into blocks."""
    transfers, events, labels = ledger
    normal = compute_features(transfers, events, labels)
    real = inputs.hash_exprs

    def colliding(column: str) -> list[pl.Expr]:
        first, second = real(column)
        return [(first % 3).alias(f"{column}_0"), second]  # three buckets: collisions galore

    monkeypatch.setattr(inputs, "hash_exprs", colliding)
    monkeypatch.setattr(sorted_keys, "_BLOCK_LIMIT", 3 * 45 * engine.DAY)  # two keys a block
    assert sorted_keys.Clock.around(np.array([0, 40 * engine.DAY])).per <= 3
    odd = compute_features(transfers, events, labels)
    assert odd.equals(normal)


def test_the_big_batch_path_gives_the_same_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a million rows the output blocks are mapped up front in a second thread, freed
    memory is kept, numba kernels find window starts, sum windows and return columns to row
    order, and each block row is given back once the frame holds it: the features must not
    change. 3,000 rows make each block row span whole pages, which are really given back."""
    transfers, events, labels = random_ledger(seed=21, n=3000)
    normal = compute_features(transfers, events, labels)
    mapped = []
    real = batch.populated_block

    def spy(rows: int, n: int, dtype: type) -> np.ndarray:
        mapped.append(block := real(rows, n, dtype))
        return block

    monkeypatch.setattr(batch, "BIG_BATCH", 1)
    monkeypatch.setattr(batch, "populated_block", spy)
    big = compute_features(transfers, events, labels)
    assert sorted(b.shape for b in mapped) == sorted(
        (len(names), transfers.height) for names in BLOCK_FEATURES.values()
    )
    assert sum(len(names) for names in BLOCK_FEATURES.values()) == len(FEATURE_NAMES)
    assert big.equals(normal)


def test_a_released_row_of_the_mapped_block_goes_back_and_spares_its_neighbours() -> None:
    from pipelines.features.engine.memory import populated_block, release_row

    block = populated_block(3, 10_000)  # rows of 80,000 bytes: not page-aligned
    block[:] = 1.0
    release_row(block, 1)
    # Row 1 holds bytes [80,000, 160,000): its whole pages are [81,920, 159,744).
    assert (block[1, 240:9968] == 0).all()
    assert (block[1, :240] == 1).all() and (block[1, 9968:] == 1).all()  # pages it shares
    assert (block[0] == 1).all() and (block[2] == 1).all()
    plain = np.ones((2, 10_000))
    release_row(plain, 0)  # not a mapped block: left alone
    assert (plain == 1).all()


def test_window_sums_slide_exactly_as_prefix_differences() -> None:
    """The sliding-window kernel equals differences of prefix sums, wrapping int64 included."""
    from pipelines.features.engine import _kernels

    rng = np.random.default_rng(3)
    n = 20_000
    key = np.sort(rng.integers(0, 700, n))
    new = np.r_[True, key[1:] != key[:-1]]
    first = np.flatnonzero(new)
    start = first[np.cumsum(new) - 1]
    hi = np.maximum.accumulate(np.maximum(start, np.arange(n) - rng.integers(0, 2, n)))
    lo = np.maximum.accumulate(np.maximum(start, hi - rng.integers(0, 6, n)))
    for values in (rng.integers(-(2**62), 2**62, n), rng.random(n) < 0.3):
        prefix = np.zeros(n + 1, dtype=np.int64)
        with np.errstate(over="ignore"):
            np.cumsum(values, dtype=np.int64, out=prefix[1:])
            want = prefix[hi] - prefix[lo]
        got = np.empty(n, dtype=np.int64)
        _kernels.range_sums(np.append(first, n), lo, hi, values, got)
        assert np.array_equal(got, want)


def test_rolling_median_kernel_equals_polars() -> None:
    """The big-batch median (a sorted buffer per key) equals Polars' rolling median, with
    ties in time, gaps wider than the window, NaN values and keys with none."""
    from pipelines.features.engine import _kernels

    rng = np.random.default_rng(5)
    n = 20_000
    key = np.sort(rng.integers(0, 900, n))
    time = np.cumsum(rng.integers(0, 3, n)) * engine.HOUR  # zeros: ties in time
    order = np.lexsort((time, key))
    key, time = key[order], time[order]
    values = rng.integers(1, 50, n).astype(np.float64) * 100  # repeated amounts
    values[rng.random(n) < 0.2] = np.nan
    values[key % 7 == 0] = np.nan  # keys with nothing to take a median of
    window = 30 * engine.HOUR
    clock = sorted_keys.Clock.around(np.sort(time))
    want = windows.rolling_median_prior(clock, key, time, values, window)
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    got = np.empty(n)
    _kernels.rolling_median_prior(np.append(first, n), time, values, window, got)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got).any() and not np.isnan(got).all()


@pytest.mark.parametrize("big", [False, True], ids=["inline", "threads"])
def test_an_error_on_the_payee_side_reaches_the_caller(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    big: bool,
) -> None:
    """Big batches run the payee side on a second thread: its failure must surface, not hang
    or vanish (small batches run it inline)."""
    transfers, events, labels = ledger
    if big:
        monkeypatch.setattr(batch, "BIG_BATCH", 1)

    def broken(*args: object) -> None:
        raise RuntimeError("payee side failed")

    monkeypatch.setattr(batch, "payee_features", broken)
    with pytest.raises(RuntimeError, match="payee side failed"):
        compute_features(transfers, events, labels)


def test_an_account_event_without_a_time_is_ignored_on_both_paths(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event with no time cannot be before anything: both paths leave it out alike."""
    transfers, events, labels = ledger
    timeless = events.head(1).with_columns(
        pl.lit(None, dtype=events["event_time"].dtype).alias("event_time")
    )
    with_gap = pl.concat([events, timeless.select(events.columns)])
    normal = compute_features(transfers, with_gap, labels)
    assert normal.equals(compute_features(transfers, events, labels))
    monkeypatch.setattr(batch, "BIG_BATCH", 1)
    assert compute_features(transfers, with_gap, labels).equals(normal)


# --- 2. point in time ---------------------------------------------------------------------


def test_the_future_never_changes_a_feature(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    """Cut the ledger at several moments: what came at or after the cut changes nothing before."""
    transfers, events, labels = ledger
    full = compute_features(transfers, events, labels)
    times = transfers["created_at"].sort()
    for cut in (times[40], times[120], times[200]):
        past = compute_features(
            transfers.filter(pl.col("created_at") < cut),
            events.filter(pl.col("event_time") < cut),
            labels.filter(pl.col("reported_at") < cut),
        )
        expect = full.join(past.select("transfer_id"), on="transfer_id", how="semi")
        assert past.height == expect.height > 0
        assert past.equals(expect), f"cut at {cut}"


def test_late_labels_and_future_events_are_ignored_but_known_labels_count() -> None:
    transfers, events, labels = random_ledger(seed=4, n=60)
    first = transfers.sort("created_at").row(0, named=True)
    later = transfers.filter(
        (pl.col("payee_vpa") == first["payee_vpa"]) & (pl.col("created_at") > first["created_at"])
    ).sort("created_at")
    assert later.height >= 2
    target, at = later["transfer_id"][-1], later["created_at"][-1]
    no_labels = labels.clear()
    base = by_id(compute_features(transfers, events, no_labels))[target]
    assert base["payee_fraud_reports"] == 0

    def fraud(reported: dt.datetime) -> pl.DataFrame:
        row = {
            "transfer_id": first["transfer_id"],
            "label": "FRAUD",
            "fraud_type": "MULE",
            "source": "VICTIM_REPORT",
            "reported_at": reported,
        }
        return pl.DataFrame([row], schema=c.LABELS_STREAM.schema, orient="row")

    late = by_id(compute_features(transfers, events, fraud(at)))[target]  # same microsecond
    assert late == base
    known = by_id(compute_features(transfers, events, fraud(at - US)))[target]
    assert known["payee_fraud_reports"] == 1
    assert known["payee_fraud_rate_reported"] > 0
    assert known["payee_fraud_reports_1d"] == known["payee_fraud_reports_30d"] == 1
    assert known["payee_days_since_fraud_report"] == pytest.approx(1e-6 / 86_400, rel=1e-6)
    # Only label features moved: no other feature reads labels.
    changed = {k for k, v in known.items() if v != base[k]}
    assert changed <= {k for k in known if "fraud" in k}

    payer = transfers.filter(pl.col("transfer_id") == target)["payer_vpa"][0]
    future = pl.DataFrame(
        [
            {
                "event_id": f"EVF{i}",
                "ledger_seq": 900 + i,
                "event_time": at + i * US,
                "vpa": payer,
                "event_type": kind,
                "device_id": None,
                "state": None,
            }
            for i, kind in enumerate(["REGISTERED", "DEVICE_BOUND", "SIM_CHANGED", "PIN_RESET"])
        ],
        schema=c.ACCOUNTS.schema,
        orient="row",
    )
    with_future = by_id(compute_features(transfers, pl.concat([events, future]), no_labels))
    assert with_future[target] == base
    just_before = future.with_columns(pl.col("event_time") - dt.timedelta(minutes=90))
    moved = by_id(compute_features(transfers, pl.concat([events, just_before]), no_labels))
    assert moved[target]["payer_hours_since_sim_change"] == pytest.approx(1.5 - 2 / 3.6e9)


def test_ties_and_the_transfer_itself_are_not_history() -> None:
    transfers, events, labels = random_ledger(seed=5, n=50)
    row = transfers.sort("created_at").row(25, named=True)
    twins = pl.DataFrame(
        [row | {"transfer_id": f"TWIN{i}", "amount_paise": 10**6 * (i + 1)} for i in range(3)],
        schema=transfers.schema,
        orient="row",
    )
    alone = by_id(compute_features(transfers, events, labels))[row["transfer_id"]]
    crowded = by_id(compute_features(pl.concat([transfers, twins]), events, labels))
    assert crowded[row["transfer_id"]] == alone
    assert crowded["TWIN0"]["pair_prior_count"] == alone["pair_prior_count"]

    # Twins on a device and payee never used before: neither is history for the other.
    fresh = twins.with_columns(payer_device_id=pl.lit("dev-fresh"), payee_vpa=pl.lit("new@ybl"))
    both = by_id(compute_features(pl.concat([transfers, fresh]), events, labels))
    for twin in ("TWIN0", "TWIN1", "TWIN2"):
        assert both[twin]["payer_new_device"] == 1.0
        assert both[twin]["pair_is_first"] == 1.0
        assert both[twin]["payee_distinct_payers_24h"] == 0.0


def test_a_reversal_is_never_used() -> None:
    transfers, events, labels = random_ledger(seed=6, n=120)
    as_success = transfers.with_columns(
        pl.col("status").replace({"REVERSED": "SUCCESS"}), response_code=pl.lit("00")
    )
    reversed_all = as_success.with_columns(
        pl.when(pl.col("status") == "SUCCESS")
        .then(pl.lit("REVERSED"))
        .otherwise(pl.col("status"))
        .alias("status")
    )
    assert compute_features(as_success, events, labels).equals(
        compute_features(reversed_all, events, labels)
    )


# --- 3. one transfer online = the batch row -------------------------------------------------


def test_features_for_transfer_equals_the_batch_row(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    transfers, events, labels = ledger
    batch = by_id(compute_features(transfers, events, labels))
    rows = transfers.sort("created_at").to_dicts()
    for row in rows[::9] + rows[-3:]:
        incoming = {k: row[k] for k in engine.TRANSFER_COLUMNS if k not in ("status",)}
        incoming["response_code"] = None  # not decided yet; never read for its own features
        online = features_for_transfer(incoming, transfers, events, labels)
        assert_features_equal(online, batch[row["transfer_id"]], row["transfer_id"])


def test_features_for_transfer_accepts_a_naive_utc_time(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    transfers, events, labels = ledger
    row = transfers.sort("created_at").row(150, named=True)
    naive = row | {"created_at": row["created_at"].replace(tzinfo=None)}
    assert features_for_transfer(naive, transfers, events, labels) == features_for_transfer(
        row, transfers, events, labels
    )


# --- 4. the catalogue and the output shape -------------------------------------------------


BRIEF = [
    "amount_log",
    "payee_is_merchant",
    "channel_chat",
    "channel_qr",
    "channel_intent",
    "channel_collect",
    "hour_ist",
    "is_night_ist",
    "payer_count_5m",
    "payer_count_1h",
    "payer_count_24h",
    "payer_count_7d",
    "payer_count_30d",
    "payer_amount_5m",
    "payer_amount_1h",
    "payer_amount_24h",
    "payer_amount_7d",
    "payer_amount_30d",
    "payer_amount_ratio_median_30d",
    "payer_amount_zscore_30d",
    "payer_hours_since_registration",
    "payer_hours_since_device_bound",
    "payer_hours_since_sim_change",
    "payer_hours_since_pin_reset",
    "payer_new_device",
    "payer_distinct_payees_24h",
    "payer_new_payee_share_24h",
    "payer_night_share_30d",
    "payer_failed_pin_24h",
    "payer_failed_funds_24h",
    "payee_distinct_payers_1h",
    "payee_distinct_payers_24h",
    "payee_distinct_payers_7d",
    "payee_inbound_amount_24h",
    "payee_passthrough_24h",
    "payee_account_age_hours",
    "payee_volume_spike",
    "payee_fraud_rate_reported",
    "payee_fraud_reports",
    "payee_decline_rate_7d",
    "pair_prior_count",
    "pair_is_first",
    "pair_amount_ratio_mean",
    "pair_days_since_last",
]


def test_catalogue_is_complete_unique_and_explained() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert set(BRIEF) <= set(FEATURE_NAMES)
    for feature in FEATURES:
        assert feature.group in GROUPS
        assert len(feature.meaning) > 10, feature.name
        assert feature.name.startswith(feature.group) or feature.group == "transfer"


def test_output_columns_types_order_and_targets(
    ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    transfers, events, labels = ledger
    out = compute_features(transfers, events, labels)
    assert out.columns == ["transfer_id", *FEATURE_NAMES]
    assert {name: out.schema[name] for name in FEATURE_NAMES} == FEATURE_DTYPES
    assert out.schema["payer_count_24h"] == pl.Float32  # a count: exact in half the memory
    assert out.schema["payer_amount_24h"] == pl.Float64
    assert out.select(pl.col(FEATURE_NAMES).is_nan().any()).row(0) == (False,) * len(FEATURE_NAMES)
    expected_order = transfers.sort("created_at", maintain_order=True)["transfer_id"]
    assert out["transfer_id"].equals(expected_order)
    some = expected_order.gather([5, 70, 3])
    picked = compute_features(transfers, events, labels, targets=some)
    assert picked["transfer_id"].to_list() == sorted(some.to_list(), key=expected_order.index_of)
    assert picked.equals(out.filter(pl.col("transfer_id").is_in(some.implode())))
    empty = compute_features(transfers.clear(), events, labels)
    assert empty.columns == out.columns and empty.height == 0


def test_missing_columns_are_named(ledger: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]):
    transfers, events, labels = ledger
    with pytest.raises(ValueError, match="payer_device_id"):
        compute_features(transfers.drop("payer_device_id"), events, labels)


def _ingested(tmp_path, ledger) -> Any:
    """A warehouse holding `ledger`, ingested as landing files; returns its path."""
    from pipelines.ledger.current import refresh_transfers
    from pipelines.ledger.ingest import ingest_landing
    from pipelines.warehouse import warehouse

    landing = tmp_path / "landing"
    for stream, frame in zip((c.TRANSFERS, c.ACCOUNTS, c.LABELS_STREAM), ledger, strict=True):
        (landing / stream.name).mkdir(parents=True)
        frame.write_parquet(landing / stream.name / "part-0.parquet")
    path = tmp_path / "warehouse.duckdb"
    with warehouse(path) as con:
        ingest_landing(con, landing)
        refresh_transfers(con)
    return path


def test_load_inputs_reads_the_warehouse(tmp_path, ledger) -> None:
    from pipelines.warehouse import warehouse

    transfers, events, labels = ledger
    with warehouse(_ingested(tmp_path, ledger)) as con:
        loaded = load_inputs(con)
        since = transfers["created_at"].sort()[100]
        recent, _, recent_labels = load_inputs(con, since=since)
        then = load_inputs(con, until=since)
    assert loaded[0].height == transfers.height
    assert (
        then[0]["created_at"].max() < since
        and then[0].height == transfers.filter(pl.col("created_at") < since).height
    )
    assert then[1]["event_time"].max() < since and then[2]["reported_at"].max() < since
    as_of = compute_features(*then).sort("transfer_id")
    assert as_of.equals(
        compute_features(*loaded)
        .filter(pl.col("transfer_id").is_in(then[0]["transfer_id"].implode()))
        .sort("transfer_id")
    )
    from_warehouse = compute_features(*loaded).sort("transfer_id")
    assert from_warehouse.equals(compute_features(transfers, events, labels).sort("transfer_id"))
    assert recent.height == transfers.filter(pl.col("created_at") >= since).height
    assert set(recent_labels["transfer_id"]) <= set(recent["transfer_id"])


def test_a_feature_table_of_an_older_catalogue_is_rebuilt_with_every_feature(
    tmp_path, ledger
) -> None:
    """Features added to the catalogue: the stored table (fewer columns) is computed again."""
    from pipelines.features.table import read_features, refresh_feature_table
    from pipelines.warehouse import FEATURE_TABLE, warehouse

    with warehouse(_ingested(tmp_path, ledger)) as con:
        con.execute("CREATE SCHEMA features")
        con.execute(
            f"CREATE TABLE {FEATURE_TABLE} (transfer_id VARCHAR NOT NULL, "
            "created_at TIMESTAMPTZ NOT NULL, amount_log DOUBLE)"
        )
        con.execute(
            f"INSERT INTO {FEATURE_TABLE} SELECT transfer_id, created_at, -1.0 FROM ledger.transfers"
        )
        result = refresh_feature_table(con)
        stored = read_features(con).select("transfer_id", *FEATURE_NAMES).sort("transfer_id")
    assert result["computed"] == result["rows"] == ledger[0].height
    assert stored.equals(compute_features(*ledger).sort("transfer_id"))


def test_the_feature_job_process_starts_with_the_engines_memory_settings(tmp_path):
    """Memory settings that must be in place when a process starts are given to the process
    that computes features, not written into this one's environment."""
    import os

    from pipelines.features.engine import JOB_ENVIRONMENT
    from pipelines.features.table import refresh_feature_table_in_job_process
    from pipelines.ledger import contract as c
    from pipelines.ledger.current import refresh_transfers
    from pipelines.ledger.ingest import ingest_landing
    from pipelines.warehouse import warehouse
    from tests.factories import land_parquet, transfer

    before = dict(os.environ)
    land_parquet(
        tmp_path / "landing", c.TRANSFERS, "d1.parquet", [transfer(i) for i in range(1, 6)]
    )
    with warehouse(tmp_path / "w.duckdb") as con:
        ingest_landing(con, tmp_path / "landing")
        refresh_transfers(con)
    result = refresh_feature_table_in_job_process(tmp_path / "w.duckdb")
    assert (result["computed"], result["rows"]) == (5, 5)
    assert result["environment"] == JOB_ENVIRONMENT
    assert dict(os.environ) == before
    again = refresh_feature_table_in_job_process(tmp_path / "w.duckdb")
    assert (again["computed"], again["rows"]) == (0, 5)
