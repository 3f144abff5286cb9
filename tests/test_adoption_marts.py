"""Adoption marts against expectations worked out by hand on a ledger small enough to read.

The ledger (IST = UTC+05:30; 2026-03-02 is a Monday):
- a registers 03-01 09:30 IST, links a bank at 10:30, pays five times from 03-01 to 03-05
  (a failed attempt on 03-02 does not count) and is held on 03-04;
- b registers 03-02 01:30 IST (20:00 UTC the day before), links at 06:00, pays ₹60,000 at
  01:30 IST on 03-03 (still 03-02 in UTC) and again on 03-09;
- c registers on 03-02 and only ever has a pending transfer;
- d never registered in this ledger (data from elsewhere) and pays once on 03-03.
"""

import datetime as dt

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.adoption.marts import (
    MARTS,
    SCHEMA,
    DayRange,
    build_marts,
    last_complete_day,
    ledger_days,
)
from pipelines.decisions.scoring import ensure_score_tables, record_decisions
from pipelines.ledger import contract as c
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.privacy import register_token_macro, token_sql, vpa_token
from pipelines.warehouse import warehouse
from tests.factories import account_event, land_parquet, transfer

KEY = b"test-token-key"
UTC = dt.UTC
A, B, C, D = "asha.k@waaxis", "bala.r@wasbi", "chitra@waaxis", "dev.s@wahdfc"
SHOP, FRIEND = "kirana.12@waaxis", "friend.9@wasbi"
FIRST, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 15)


def _at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def _pay(i: int, payer: str, when: dt.datetime, rupees: int, **kw) -> dict:
    row = transfer(
        i,
        payer_vpa=payer,
        payee_vpa=kw.pop("payee", FRIEND),
        created_at=when,
        amount_paise=rupees * 100,
        payer_device_id=f"dev-{payer[:4]}",
        payer_state=kw.pop("state", "IN-KA"),
    )
    row.update(kw)
    return row


def _shop(i: int, payer: str, when: dt.datetime, rupees: int, **kw) -> dict:
    return _pay(i, payer, when, rupees, payee=SHOP, payee_type="MERCHANT", mcc="5411", **kw)


TRANSFERS = [
    _pay(1, A, _at(1, 6), 50),
    _shop(2, A, _at(2, 6), 150, channel="QR"),
    _pay(3, A, _at(2, 7), 300, status="FAILED", response_code="Z9"),
    _pay(4, A, _at(3, 6), 600),
    _pay(5, A, _at(4, 6), 2_500),
    _shop(6, A, _at(5, 6), 12_000, channel="QR"),
    _pay(7, B, _at(2, 20), 60_000, state="IN-MH"),
    _pay(8, C, _at(3, 6), 700, status="PENDING", response_code=None),
    _pay(9, D, _at(3, 10), 200, state="IN-DL"),
    _pay(10, B, _at(9, 6), 100, state="IN-MH"),
]
ACCOUNTS = [
    account_event(1, vpa=A, event_time=_at(1, 4), event_type="REGISTERED"),
    account_event(2, vpa=A, event_time=_at(1, 5), event_type="BANK_LINKED"),
    account_event(3, vpa=B, event_time=_at(1, 20), event_type="REGISTERED"),
    account_event(4, vpa=B, event_time=_at(2, 0, 30), event_type="BANK_LINKED"),
    account_event(5, vpa=C, event_time=_at(2, 3, 30), event_type="REGISTERED"),
    account_event(6, vpa=C, event_time=_at(12, 3), event_type="DEREGISTERED"),
]
# (transfer, decision, shadow, scored_at): the first non-shadow score is the one that counted.
SCORES = [
    (1, "ALLOW", False, _at(1, 6, 1)),
    (4, "ALLOW", False, _at(3, 6, 1)),
    (5, "HOLD", False, _at(4, 6, 1)),
    (6, "ALLOW", False, _at(5, 6, 1)),
    (6, "HOLD", False, _at(6, 0)),  # a later live model re-scored it: not what took effect
    (7, "BLOCK", True, _at(2, 20, 1)),  # a challenger in shadow: never took effect
]


def _load(con: duckdb.DuckDBPyConnection, tmp_path) -> None:
    landing = tmp_path / "landing"
    land_parquet(landing, c.TRANSFERS, "t.parquet", TRANSFERS)
    land_parquet(landing, c.ACCOUNTS, "a.parquet", ACCOUNTS)
    ingest_landing(con, landing)
    refresh_transfers(con)
    refresh_accounts(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS risk")
    ensure_score_tables(con)
    created = {r["transfer_id"]: r["created_at"] for r in TRANSFERS}
    for i, decision, shadow, scored_at in SCORES:
        tid = f"TX{i:08d}"
        con.execute(
            "INSERT INTO risk.transfer_scores VALUES (?, ?, 'm1', 'p1', ?, 0.5, ?, [], ?)",
            [tid, created[tid], shadow, decision, scored_at],
        )
    record_decisions(con)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("marts")
    with warehouse(tmp_path / "warehouse.duckdb") as con:
        _load(con, tmp_path)
        build_marts(con, FIRST, LAST, token_key=KEY)
        yield con


def _rows(con, sql: str) -> list[tuple]:
    return con.sql(sql).fetchall()


def _day(n: int) -> dt.date:
    return dt.date(2026, 3, n)


def test_ledger_days_are_india_days(con):
    # The first transfer is 03-01 06:00 UTC; b's payment at 20:00 UTC on 03-02 is 03-03 IST.
    assert ledger_days(con) == DayRange(_day(1), _day(9))
    days = DayRange(_day(3), _day(3))
    assert days.start == dt.datetime(2026, 3, 2, 18, 30, tzinfo=UTC)
    assert days.end == dt.datetime(2026, 3, 3, 18, 30, tzinfo=UTC)


def test_daily_users(con):
    rows = _rows(con, f"SELECT * FROM {SCHEMA}.daily_users WHERE day <= '2026-03-04' ORDER BY day")
    # day, registered, linked, activated, deregistered, and the three running totals
    assert rows == [
        (_day(1), 1, 1, 1, 0, 1, 1, 1),
        (_day(2), 2, 1, 0, 0, 3, 2, 1),
        (_day(3), 0, 0, 2, 0, 3, 2, 3),
        (_day(4), 0, 0, 0, 0, 3, 2, 3),
    ]
    assert _rows(con, f"SELECT day, deregistered FROM {SCHEMA}.daily_users WHERE deregistered > 0")
    assert _rows(con, f"SELECT count(*) FROM {SCHEMA}.daily_users") == [(15,)]


def test_activation_funnel(con):
    rows = _rows(con, f"SELECT * FROM {SCHEMA}.activation_funnel ORDER BY cohort_day")
    assert rows == [
        # a: linked after 1 h, first payment 1 h later, fifth 96 h after the first
        (_day(1), 1, 1, 1, 1, 1.0, 1.0, 96.0, _day(9)),
        # b linked 4.5 h after registering and paid 19.5 h later; c never linked or paid
        (_day(2), 2, 1, 1, 0, 4.5, 19.5, None, _day(9)),
    ]


def test_payer_days_use_tokens_and_count_holds(con):
    rows = _rows(
        con,
        "SELECT payer_token, day, transfers, successful, value_paise, held, first_payment_day "
        f"FROM {SCHEMA}.payer_days ORDER BY payer_token, day",
    )
    a, b, c_, d = (vpa_token(v, KEY) for v in (A, B, C, D))
    want = sorted(
        [
            (a, _day(1), 1, 1, 5_000, 0, _day(1)),
            (a, _day(2), 2, 1, 15_000, 0, _day(1)),
            (a, _day(3), 1, 1, 60_000, 0, _day(1)),
            (a, _day(4), 1, 1, 250_000, 1, _day(1)),
            (a, _day(5), 1, 1, 1_200_000, 0, _day(1)),
            (b, _day(3), 1, 1, 6_000_000, 0, _day(3)),
            (b, _day(9), 1, 1, 10_000, 0, _day(3)),
            (c_, _day(3), 1, 0, 0, 0, None),
            (d, _day(3), 1, 1, 20_000, 0, _day(3)),
        ],
        key=lambda r: (r[0], r[1]),
    )
    assert rows == want


def test_no_mart_holds_a_raw_vpa(con):
    for name in MARTS:
        frame = con.sql(f"SELECT * FROM {SCHEMA}.{name}").pl()
        for column in frame.columns:
            if frame.schema[column] == pl.String:
                assert not frame[column].str.contains("@").any(), f"{name}.{column}"


def test_daily_active(con):
    rows = _rows(con, f"SELECT day, dau, wau, mau FROM {SCHEMA}.daily_active ORDER BY day")
    got = {r[0]: r[1:] for r in rows}
    assert got[_day(1)] == (1, 1, 1)
    assert got[_day(3)] == (3, 3, 3)  # a, b, d; c's pending transfer is not a payment
    assert got[_day(6)] == (0, 3, 3)
    assert got[_day(9)] == (1, 3, 3)  # a's 03-03 payment is still within the 7 days
    assert got[_day(10)] == (0, 2, 3)  # the week from 03-04: a and b
    assert got[_day(15)] == (0, 1, 3)
    assert len(rows) == 15


def test_volume_tickets_and_outcomes(con):
    volume = _rows(
        con,
        "SELECT payee_type, channel, payer_state, category, status, sum(transfers), "
        f"sum(value_paise) FROM {SCHEMA}.daily_volume WHERE day = '2026-03-02' "
        "GROUP BY ALL ORDER BY ALL",
    )
    assert volume == [
        ("MERCHANT", "QR", "IN-KA", "Grocery (kirana)", "SUCCESS", 1, 15_000),
        ("PERSON", "CHAT", "IN-KA", "Person", "FAILED", 1, 30_000),
    ]
    buckets = _rows(
        con,
        f"SELECT bucket, bucket_order, sum(transfers) FROM {SCHEMA}.ticket_sizes "
        "GROUP BY ALL ORDER BY bucket_order",
    )
    assert buckets == [
        ("under ₹100", 0, 1),
        ("₹100-500", 1, 3),  # ₹150, ₹200 and ₹100 (the lower bound is inclusive)
        ("₹500-2,000", 2, 1),
        ("₹2,000-10,000", 3, 1),
        ("₹10,000-50,000", 4, 1),
        ("₹50,000 and over", 5, 1),
    ]
    quantiles = _rows(
        con,
        "SELECT transfers, p10_paise, p50_paise, p99_paise, mean_paise FROM "
        f"{SCHEMA}.ticket_quantiles WHERE day = '2026-03-03' AND payee_type = 'PERSON'",
    )
    assert quantiles == [(3, 20_000, 60_000, 6_000_000, (20_000 + 60_000 + 6_000_000) / 3)]
    outcomes = _rows(
        con,
        f"SELECT day, status, response_code, description, transfers FROM {SCHEMA}.daily_outcomes "
        "WHERE status <> 'SUCCESS' ORDER BY day",
    )
    assert outcomes == [
        (_day(2), "FAILED", "Z9", "insufficient funds", 1),
        (_day(3), "PENDING", None, "no response yet", 1),
    ]


def test_weekly_retention(con):
    rows = _rows(
        con,
        "SELECT cohort_week, week, week_number, cohort_users, active_users, retention "
        f"FROM {SCHEMA}.weekly_retention ORDER BY week, cohort_week",
    )
    feb23, mar2, mar9 = dt.date(2026, 2, 23), _day(2), _day(9)
    assert rows == [
        (feb23, feb23, 0, 1, 1, 1.0),
        (feb23, mar2, 1, 1, 1, 1.0),
        (mar2, mar2, 0, 2, 2, 1.0),  # b and d
        (feb23, mar9, 2, 1, 0, 0.0),
        (mar2, mar9, 1, 2, 1, 0.5),  # b came back on 03-09
    ]


def test_risk_friction(con):
    friction = _rows(
        con,
        f"SELECT decision, sum(transfers), sum(value_paise) FROM {SCHEMA}.daily_friction "
        "GROUP BY ALL ORDER BY decision",
    )
    # The shadow BLOCK and the later re-score never took effect.
    assert friction == [
        ("ALLOW", 3, 5_000 + 60_000 + 1_200_000),
        ("HOLD", 1, 250_000),
        ("UNSCORED", 6, 15_000 + 30_000 + 6_000_000 + 70_000 + 20_000 + 10_000),
    ]
    retention = _rows(
        con,
        f"SELECT week, held, payers, retained, retention FROM {SCHEMA}.friction_retention "
        "ORDER BY week, held",
    )
    assert retention == [
        (dt.date(2026, 2, 23), False, 1, 1, 1.0),
        (_day(2), False, 3, 1, 1 / 3),  # b, c, d tried; only b paid the week after
        (_day(2), True, 1, 0, 0.0),  # a was held on 03-04 and did not pay the week after
    ]


def test_rebuilding_any_range_changes_nothing(con):
    def snapshot() -> dict[str, list[tuple]]:
        return {
            name: sorted(_rows(con, f"SELECT * FROM {SCHEMA}.{name}"), key=repr) for name in MARTS
        }

    before = snapshot()
    build_marts(con, FIRST, LAST, token_key=KEY)
    build_marts(con, _day(3), _day(3), token_key=KEY)
    build_marts(con, _day(8), _day(9), token_key=KEY)  # a Sunday and the Monday after
    assert snapshot() == before


def test_a_day_is_built_from_that_day_only(tmp_path):
    """Building one partition writes that day and leaves the others as they were."""
    with warehouse(tmp_path / "warehouse.duckdb") as con:
        _load(con, tmp_path)
        build_marts(con, _day(3), _day(3), token_key=KEY)
        days = _rows(con, f"SELECT DISTINCT day FROM {SCHEMA}.daily_volume")
        assert days == [(_day(3),)]
        assert _rows(con, f"SELECT count(*) FROM {SCHEMA}.weekly_retention") == [(0,)]


def test_empty_ledger_builds_empty_marts(tmp_path):
    with warehouse(tmp_path / "warehouse.duckdb") as con:
        ingest_landing(con, tmp_path / "landing")
        refresh_transfers(con)
        refresh_accounts(con)
        assert ledger_days(con) is None
        report = build_marts(con, _day(1), _day(7), token_key=KEY)
        assert report["daily_volume"]["rows"] == 0
        assert _rows(con, f"SELECT sum(dau), max(mau) FROM {SCHEMA}.daily_active") == [(0, 0)]


def test_a_range_that_ends_before_it_starts_is_refused():
    with pytest.raises(ValueError, match="ends"):
        DayRange(_day(5), _day(4))


@settings(max_examples=60, deadline=None)
@given(
    vpa=st.text(min_size=0, max_size=80),
    key=st.binary(min_size=1, max_size=100),
)
def test_sql_tokens_equal_python_tokens(vpa, key):
    con = duckdb.connect()
    register_token_macro(con, key)
    got = con.sql("SELECT vpa_token(?), " + token_sql("?", key), params=[vpa, vpa]).fetchall()[0]
    assert got == (vpa_token(vpa, key), vpa_token(vpa, key))


def test_last_complete_day_leaves_out_the_day_still_filling(con):
    # The newest transfer is 03-09 11:30 IST: 03-09 is not over, 03-08 is.
    assert last_complete_day(con) == _day(8)
