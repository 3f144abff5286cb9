"""Adoption marts: daily tables of users, activity, volume, outcomes, cohorts and risk friction.

Every mart is built for a range of India (IST) days and replaces exactly those days, so a
partition re-run never adds rows. Payers appear only as keyed tokens. The tables and their
columns are documented in docs/adoption-marts.md; the dashboards and notebooks read them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from pipelines.india_time import IST, IST_DAY_SQL
from pipelines.ledger import contract as c
from pipelines.privacy import token_from_key_sql, token_key_sql
from pipelines.warehouse import (
    DECISIONS_TABLE,
    EVENT_TABLES,
    ONLINE_DECISIONS_TABLE,
    table_exists,
)

SCHEMA = "adoption"

MCC_CATEGORIES = {
    c.PERSON_MCC: "Person",
    "4111": "Transit",
    "4121": "Cabs and rides",
    "4722": "Travel agencies",
    "4814": "Telecom recharge",
    "4900": "Utilities",
    "5399": "Online marketplaces",
    "5411": "Grocery (kirana)",
    "5499": "Food stores",
    "5541": "Fuel",
    "5651": "Clothing",
    "5732": "Electronics",
    "5812": "Restaurants",
    "5814": "Fast food and tea stalls",
    "5912": "Pharmacies",
    "5999": "Other retail",
    "6012": "Financial institutions",
    "6211": "Securities and broking",
    "6300": "Insurance",
    "7011": "Hotels",
    "8062": "Hospitals",
    "8220": "Education",
    "8299": "Schools and coaching",
    "9311": "Tax payments",
}
# Amount bands of the ticket-size mart, in paise: (label, lower bound inclusive).
TICKET_BUCKETS = (
    ("under ₹100", 0),
    ("₹100-500", 10_000),
    ("₹500-2,000", 50_000),
    ("₹2,000-10,000", 200_000),
    ("₹10,000-50,000", 1_000_000),
    ("₹50,000 and over", 5_000_000),
)
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)

# What the marts read, besides each other.
LEDGER_TRANSFERS = "ledger.transfers"
ACCOUNT_EVENTS = EVENT_TABLES["accounts"]
PAYER_DAYS = f"{SCHEMA}.payer_days"
ONLINE_DECISIONS = ONLINE_DECISIONS_TABLE

WEEK_DAYS = 7  # Monday to Sunday, IST
WAU_DAYS, MAU_DAYS = 7, 30
# Rolling windows: how many days before its own a partition of these marts reads.
ACTIVE_LOOKBACK = MAU_DAYS - 1  # daily_active: the 30 days ending the day
RETENTION_LOOKBACK = WEEK_DAYS - 1  # weekly_retention: the week ending the Sunday
FRICTION_LOOKBACK = 2 * WEEK_DAYS - 1  # friction_retention: a week and the week after


@dataclass(frozen=True)
class DayRange:
    """An inclusive range of IST days, and the UTC instants that bound it."""

    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"day range ends ({self.last}) before it starts ({self.first})")

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), IST).astimezone(dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """The instant after the last day (exclusive)."""
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), IST).astimezone(
            dt.UTC
        )

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for name, mart in MARTS.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{name} ({mart.columns})")


def ledger_days(con: duckdb.DuckDBPyConnection) -> DayRange | None:
    """The IST days the ledger's transfers cover, or None for an empty ledger."""
    first, last = con.sql(
        f"SELECT min({IST_DAY_SQL.format(column='created_at')}), "
        f"max({IST_DAY_SQL.format(column='created_at')}) FROM {LEDGER_TRANSFERS}"
    ).fetchall()[0]
    return None if first is None else DayRange(first, last)


def last_complete_day(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The last IST day the ledger covers to its end: the day before the newest transfer's,
    unless that transfer closes its day. Today, still filling up, would read as a slump."""
    newest = con.sql(f"SELECT max(created_at) FROM {LEDGER_TRANSFERS}").fetchall()[0][0]
    return None if newest is None else last_complete_day_before(newest)


def last_complete_day_before(newest: dt.datetime) -> dt.date:
    """The last IST day that data ending at the instant `newest` covers to its end."""
    return (newest + dt.timedelta(microseconds=1)).astimezone(IST).date() - dt.timedelta(days=1)


def _within(column: str, start: dt.datetime, end: dt.datetime) -> str:
    return f"{column} >= TIMESTAMPTZ '{start.isoformat()}' AND {column} < TIMESTAMPTZ '{end.isoformat()}'"


def _window_transfers(days: DayRange) -> str:
    """A subquery: the transfers of the range, with their IST day."""
    return f"""(SELECT t.*, {IST_DAY_SQL.format(column="t.created_at")} AS day
        FROM {LEDGER_TRANSFERS} t WHERE {_within("t.created_at", days.start, days.end)})"""


def _window_decisions(con: duckdb.DuckDBPyConnection, days: DayRange) -> str:
    """A subquery: the decisions of record of the range's transfers, with their IST day
    (empty before the risk loop has scored anything)."""
    if not table_exists(con, DECISIONS_TABLE):
        return """(SELECT NULL::DATE AS day, NULL::VARCHAR AS payer_vpa,
            NULL::VARCHAR AS payee_type, NULL::BIGINT AS amount_paise,
            NULL::VARCHAR AS decision WHERE false)"""
    return f"""(SELECT {IST_DAY_SQL.format(column="created_at")} AS day, payer_vpa, payee_type,
            amount_paise, decision
        FROM {DECISIONS_TABLE} WHERE {_within("created_at", days.start, days.end)})"""


def _first_payments(until: dt.datetime, *, fifth: bool = False, cohort: str | None = None) -> str:
    """A subquery: per payer (of `cohort`, a query of VPAs, if given), the first and if asked
    the fifth successful payment before `until`."""
    # The fifth needs a top-5 list per payer: several times the cost of a plain min.
    five = ", min(created_at, 5) AS first_five" if fifth else ""
    among = f"AND payer_vpa IN ({cohort})" if cohort else ""
    return f"""(SELECT payer_vpa, min(created_at) AS first_at{five}
        FROM {LEDGER_TRANSFERS}
        WHERE status = 'SUCCESS' AND created_at < TIMESTAMPTZ '{until.isoformat()}' {among}
        GROUP BY payer_vpa)"""


def _first_account_events(event_type: str, until: dt.datetime) -> str:
    return f"""(SELECT vpa, min(event_time) AS happened_at FROM {ACCOUNT_EVENTS}
        WHERE event_type = '{event_type}' AND event_time < TIMESTAMPTZ '{until.isoformat()}'
        GROUP BY vpa)"""


def _day_series(days: DayRange, lookback: int = 0) -> str:
    first = days.first - dt.timedelta(days=lookback)
    return f"""(SELECT CAST(d AS DATE) AS day FROM generate_series(
        DATE '{first}', DATE '{days.last}', INTERVAL 1 DAY) g(d))"""


def daily_users_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Users registered, bank-linked, activated (first successful payment) and deregistered per day, with running totals."""
    # Activations come from payer_days (each payer's first-payment row), built just before:
    # one pass over the ledger for both marts instead of two.
    registered = _first_account_events("REGISTERED", days.end)
    linked = _first_account_events("BANK_LINKED", days.end)
    ist = IST_DAY_SQL.format(column="happened_at")
    return f"""
        WITH firsts AS (
            SELECT {ist} AS day, 'registered' AS step FROM {registered}
            UNION ALL SELECT {ist}, 'bank_linked' FROM {linked}),
        per_day AS (
            SELECT day, count(*) FILTER (step = 'registered') AS registered,
                count(*) FILTER (step = 'bank_linked') AS bank_linked
            FROM firsts GROUP BY day),
        activations AS (
            SELECT day, count(*) AS activated FROM {PAYER_DAYS}
            WHERE day = first_payment_day AND day <= DATE '{days.last}' GROUP BY day),
        before AS (
            SELECT (SELECT coalesce(sum(registered), 0) FROM per_day
                    WHERE day < DATE '{days.first}') AS r,
                (SELECT coalesce(sum(bank_linked), 0) FROM per_day
                    WHERE day < DATE '{days.first}') AS b,
                (SELECT coalesce(sum(activated), 0) FROM activations
                    WHERE day < DATE '{days.first}') AS a),
        deregistered AS (
            SELECT {IST_DAY_SQL.format(column="event_time")} AS day, count(DISTINCT vpa) AS n
            FROM {ACCOUNT_EVENTS}
            WHERE event_type = 'DEREGISTERED' AND {_within("event_time", days.start, days.end)}
            GROUP BY ALL)
        SELECT s.day, coalesce(p.registered, 0), coalesce(p.bank_linked, 0),
            coalesce(a.activated, 0), coalesce(x.n, 0),
            (SELECT r FROM before) + sum(coalesce(p.registered, 0)) OVER w,
            (SELECT b FROM before) + sum(coalesce(p.bank_linked, 0)) OVER w,
            (SELECT a FROM before) + sum(coalesce(a.activated, 0)) OVER w
        FROM {_day_series(days)} s LEFT JOIN per_day p USING (day)
            LEFT JOIN activations a USING (day) LEFT JOIN deregistered x USING (day)
        WINDOW w AS (ORDER BY s.day ROWS UNBOUNDED PRECEDING)"""


def activation_funnel_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Per registration day: how many reached bank link, first and fifth payment, and the median hours between steps."""
    # The funnel follows each cohort to the end of the data: later steps keep arriving.
    horizon = con.sql(f"SELECT max(created_at) FROM {LEDGER_TRANSFERS}").fetchall()[0][0]
    until = max(days.end, horizon + dt.timedelta(microseconds=1)) if horizon else days.end
    hours = "date_diff('second', {a}, {b}) / 3600.0"
    # A day or a week of cohorts (the schedule, the sensor) is a small share of all payers:
    # looking only at them beats a pass over everyone; a backfill of months is the reverse.
    among = "SELECT vpa FROM cohort" if len(days.days) <= 7 else None
    return f"""
        WITH cohort AS (
            SELECT vpa, happened_at AS registered_at, {IST_DAY_SQL.format(column="happened_at")} AS cohort_day
            FROM {_first_account_events("REGISTERED", until)}
            WHERE {_within("happened_at", days.start, days.end)}),
        steps AS (
            SELECT c.cohort_day, c.registered_at, l.happened_at AS linked_at, m.first_at,
                CASE WHEN len(m.first_five) = 5 THEN m.first_five[5] END AS fifth_at
            FROM cohort c
            LEFT JOIN {_first_account_events("BANK_LINKED", until)} l USING (vpa)
            LEFT JOIN {_first_payments(until, fifth=True, cohort=among)} m
                ON m.payer_vpa = c.vpa)
        SELECT cohort_day, count(*), count(linked_at), count(first_at), count(fifth_at),
            median({hours.format(a="registered_at", b="linked_at")}),
            median({hours.format(a="linked_at", b="first_at")}),
            median({hours.format(a="first_at", b="fifth_at")}),
            {IST_DAY_SQL.format(column=f"TIMESTAMPTZ '{(horizon or days.end).isoformat()}'")}
        FROM steps GROUP BY cohort_day"""


_PAYERS = "_adoption_payers"


def payer_days_setup(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """A temporary table of the range's payers: their token key and first payment."""
    return f"""CREATE OR REPLACE TEMP TABLE {_PAYERS} AS
        SELECT hash(payer_vpa) AS h, payer_vpa, {token_key_sql("payer_vpa", token_key)} AS payer_key,
            {IST_DAY_SQL.format(column="first_at")} AS first_payment_day
        FROM (
            SELECT payer_vpa, min(created_at) FILTER (status = 'SUCCESS') AS first_at
            FROM {LEDGER_TRANSFERS} WHERE created_at < TIMESTAMPTZ '{days.end.isoformat()}'
            GROUP BY payer_vpa HAVING max(created_at) >= TIMESTAMPTZ '{days.start.isoformat()}');
        CREATE OR REPLACE TEMP TABLE {_PAYERS}_exact AS
        SELECT count(*) = count(DISTINCT h) AS exact FROM {_PAYERS}"""


def payer_days_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """One row per payer and day: transfers, successful payments, value, transfers held; the payer as a keyed token (`payer_key`, shown as `payer_token`)."""
    # Grouping on a 64-bit hash of the VPA is several times faster than on the string; it is
    # exact unless two of the range's VPAs share a hash, which build_mart checks first.
    key = "hash(payer_vpa)" if _distinct_hashes(con) else "payer_vpa"
    join = "h" if key.startswith("hash") else "payer_vpa"
    return f"""
        WITH per_payer AS (
            SELECT day, {key} AS k, count(*) AS transfers,
                count(*) FILTER (status = 'SUCCESS') AS successful,
                coalesce(sum(amount_paise) FILTER (status = 'SUCCESS'), 0) AS value_paise
            FROM {_window_transfers(days)} GROUP BY day, k),
        held AS (
            SELECT day, {key} AS k, count(*) AS held FROM {_window_decisions(con, days)}
            WHERE decision IN ('HOLD', 'BLOCK') GROUP BY ALL)
        SELECT p.day, u.payer_key, p.transfers, p.successful, p.value_paise,
            coalesce(h.held, 0), u.first_payment_day
        FROM per_payer p JOIN {_PAYERS} u ON u.{join} = p.k
            LEFT JOIN held h ON h.day = p.day AND h.k = p.k"""


def _distinct_hashes(con: duckdb.DuckDBPyConnection) -> bool:
    return con.sql(f"SELECT exact FROM {_PAYERS}_exact").fetchall()[0][0]


def daily_active_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Daily, weekly and monthly active payers (trailing 1, 7, 30 days) and stickiness."""
    # Each active day covers itself and the days after it up to the payer's next active day
    # (at most the window): the covers of one payer never overlap, so the active payers of a
    # window ending D are the covers open on D, counted with one running sum.
    return f"""
        WITH active AS (
            SELECT day, payer_key,
                lead(day) OVER (PARTITION BY payer_key ORDER BY day) AS next_day
            FROM {PAYER_DAYS}
            WHERE successful > 0
                AND day BETWEEN DATE '{days.first}' - {ACTIVE_LOOKBACK} AND DATE '{days.last}'),
        deltas AS (
            SELECT day, 1 AS d, 0 AS w, 0 AS m FROM active
            UNION ALL SELECT day, 0, 1, 1 FROM active
            UNION ALL SELECT least(day + {WAU_DAYS}, coalesce(next_day, day + {WAU_DAYS})), 0, -1, 0
                FROM active
            UNION ALL SELECT least(day + {MAU_DAYS}, coalesce(next_day, day + {MAU_DAYS})), 0, 0, -1
                FROM active),
        per_day AS (SELECT day, sum(d) AS d, sum(w) AS w, sum(m) AS m FROM deltas GROUP BY day),
        running AS (
            SELECT s.day, coalesce(p.d, 0) AS dau,
                sum(coalesce(p.w, 0)) OVER o AS wau, sum(coalesce(p.m, 0)) OVER o AS mau
            FROM {_day_series(days, lookback=ACTIVE_LOOKBACK)} s LEFT JOIN per_day p USING (day)
            WINDOW o AS (ORDER BY s.day ROWS UNBOUNDED PRECEDING))
        SELECT day, dau, wau, mau, CASE WHEN mau > 0 THEN dau / mau END
        FROM running WHERE day >= DATE '{days.first}'"""


def _values(rows: dict[str, str], columns: str) -> str:
    body = ", ".join(f"({_literal(k)}, {_literal(v)})" for k, v in rows.items())
    return f"(SELECT * FROM (VALUES {body}) v({columns}))"


def _literal(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def daily_volume_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Transfers and value by day, P2P / P2M, channel, payer state, merchant category and status."""
    return f"""
        SELECT t.day, t.payee_type, t.channel, t.payer_state, t.mcc,
            coalesce(m.category, 'MCC ' || t.mcc), t.status, count(*), sum(t.amount_paise)
        FROM {_window_transfers(days)} t
        LEFT JOIN {_values(MCC_CATEGORIES, "mcc, category")} m USING (mcc)
        GROUP BY ALL"""


def _bucket_case(column: str) -> tuple[str, str]:
    """CASE expressions giving a paise amount's ticket-size band and its order."""
    label = order = "CASE"
    for i, (name, lower) in reversed(list(enumerate(TICKET_BUCKETS))):
        label += f" WHEN {column} >= {lower} THEN {_literal(name)}"
        order += f" WHEN {column} >= {lower} THEN {i}"
    return label + " END", order + " END"


def ticket_sizes_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Successful transfers and value by amount band, per day and payee type."""
    label, order = _bucket_case("amount_paise")
    return f"""
        SELECT day, payee_type, {label}, {order}, count(*), sum(amount_paise)
        FROM {_window_transfers(days)} WHERE status = 'SUCCESS' GROUP BY ALL"""


def ticket_quantiles_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Ticket-size distribution of successful transfers per day and payee type (mean, p10 to p99)."""
    qs = ", ".join(str(q) for q in QUANTILES)
    picks = ", ".join(f"q[{i + 1}]" for i in range(len(QUANTILES)))
    return f"""
        SELECT day, payee_type, n, mean, {picks} FROM (
            SELECT day, payee_type, count(*) AS n, avg(amount_paise) AS mean,
                quantile_disc(amount_paise, [{qs}]) AS q
            FROM {_window_transfers(days)} WHERE status = 'SUCCESS' GROUP BY ALL)"""


def daily_outcomes_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Transfers by status and NPCI response code, per day, payee type and channel."""
    return f"""
        SELECT t.day, t.payee_type, t.channel, t.status, t.response_code,
            CASE WHEN t.response_code IS NULL THEN 'no response yet'
                ELSE coalesce(r.description, 'other code') END,
            count(*), sum(t.amount_paise)
        FROM {_window_transfers(days)} t
        LEFT JOIN {_values(c.NPCI_RESPONSE_CODES, "response_code, description")} r
            USING (response_code)
        GROUP BY ALL"""


def weekly_retention_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Weekly retention cohorts: of the payers whose first payment fell in a week, how many paid in each later week."""
    return f"""
        WITH weeks AS (
            SELECT day - {RETENTION_LOOKBACK} AS week FROM {_day_series(days)} WHERE isodow(day) = 7),
        cohorts AS (
            SELECT date_trunc('week', first_payment_day)::DATE AS cohort_week,
                count(*) AS cohort_users
            FROM {PAYER_DAYS}
            WHERE day = first_payment_day AND day <= DATE '{days.last}'
            GROUP BY ALL),
        active AS (
            SELECT DISTINCT date_trunc('week', p.day)::DATE AS week, p.payer_key,
                date_trunc('week', p.first_payment_day)::DATE AS cohort_week
            FROM {PAYER_DAYS} p
            WHERE p.successful > 0
                AND p.day BETWEEN DATE '{days.first}' - {RETENTION_LOOKBACK} AND DATE '{days.last}'
                AND date_trunc('week', p.day)::DATE IN (SELECT week FROM weeks)),
        counted AS (SELECT week, cohort_week, count(*) AS active_users FROM active GROUP BY ALL)
        SELECT c.cohort_week, w.week, CAST(date_diff('week', c.cohort_week, w.week) AS INTEGER),
            c.cohort_users, coalesce(n.active_users, 0),
            coalesce(n.active_users, 0) / c.cohort_users
        FROM weeks w JOIN cohorts c ON c.cohort_week <= w.week
        LEFT JOIN counted n ON n.week = w.week AND n.cohort_week = c.cohort_week"""


def daily_friction_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Transfers and value allowed, held, blocked or unscored per day and payee type."""
    # Unscored = all transfers less the decided ones: two scans, no join of the ledger with
    # the decisions (30M x 30M rows at a month of national traffic).
    return f"""
        WITH decided AS (
            SELECT day, payee_type, decision, count(*) AS n, sum(amount_paise) AS v
            FROM {_window_decisions(con, days)} GROUP BY ALL),
        everything AS (
            SELECT day, payee_type, count(*) AS n, sum(amount_paise) AS v
            FROM {_window_transfers(days)} GROUP BY ALL),
        unscored AS (
            SELECT e.day, e.payee_type, 'UNSCORED' AS decision,
                e.n - coalesce(sum(d.n), 0) AS n, e.v - coalesce(sum(d.v), 0) AS v
            FROM everything e LEFT JOIN decided d USING (day, payee_type)
            GROUP BY e.day, e.payee_type, e.n, e.v)
        SELECT * FROM decided UNION ALL SELECT * FROM unscored WHERE n > 0"""


def online_decisions_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Decisions the online service made before the money moved, per day, decision and
    whether its fallback decided them: how many, and how long the service took."""
    if not table_exists(con, ONLINE_DECISIONS):
        return """SELECT NULL::DATE, NULL::VARCHAR, NULL::BOOLEAN, NULL::BIGINT, NULL::DOUBLE,
            NULL::DOUBLE, NULL::DOUBLE WHERE false"""
    return f"""
        SELECT {IST_DAY_SQL.format(column="created_at")} AS day, decision, fallback,
            count(*) AS decisions,
            quantile_cont(latency_us, 0.5) / 1000 AS latency_ms_p50,
            quantile_cont(latency_us, 0.99) / 1000 AS latency_ms_p99,
            max(latency_us) / 1000 AS latency_ms_max
        FROM {ONLINE_DECISIONS} WHERE {_within("created_at", days.start, days.end)}
        GROUP BY ALL"""


def friction_retention_sql(con: duckdb.DuckDBPyConnection, days: DayRange, token_key: bytes) -> str:
    """Retention the week after of payers who were held or blocked in a week, against those who were not."""
    # The population is everyone who tried to pay in the week (a held payer may have no
    # successful payment); retained means an actual successful payment the week after.
    return f"""
        WITH weeks AS (
            SELECT day - {FRICTION_LOOKBACK} AS week FROM {_day_series(days)} WHERE isodow(day) = 7),
        tried AS (
            SELECT date_trunc('week', day)::DATE AS week, payer_key, sum(held) > 0 AS held
            FROM {PAYER_DAYS}
            WHERE transfers > 0 AND day BETWEEN DATE '{days.first}' - {FRICTION_LOOKBACK}
                AND DATE '{days.last}' - {WEEK_DAYS}
                AND date_trunc('week', day)::DATE IN (SELECT week FROM weeks)
            GROUP BY ALL),
        next_week AS (
            SELECT DISTINCT date_trunc('week', day)::DATE - {WEEK_DAYS} AS week, payer_key
            FROM {PAYER_DAYS}
            WHERE successful > 0
                AND day BETWEEN DATE '{days.first}' - {FRICTION_LOOKBACK - WEEK_DAYS}
                    AND DATE '{days.last}'
                AND date_trunc('week', day)::DATE - {WEEK_DAYS} IN (SELECT week FROM weeks))
        SELECT t.week, t.held, count(*), count(n.payer_key), count(n.payer_key) / count(*)
        FROM tried t LEFT JOIN next_week n USING (week, payer_key)
        GROUP BY ALL"""


MartQuery = Callable[[duckdb.DuckDBPyConnection, DayRange, bytes], str]


@dataclass(frozen=True)
class Mart:
    """One adoption mart: its columns, the query that builds it for a range of days (and
    optionally statements preparing temporary tables the query reads), and what it reads."""

    columns: str
    query: MartQuery
    reads: tuple[str, ...]
    setup: MartQuery | None = None
    # A rolling window: how many days before its own a partition reads.
    lookback_days: int = 0
    # The date column that places a row in a partition. A weekly mart's row (keyed by the
    # Monday of its `week`) belongs to the partition of the last day it reads, a Sunday.
    day_column: str = "day"
    weekly: bool = False
    # One row per payer (as a token): for analysis, never shown on a dashboard.
    per_payer: bool = False

    @property
    def description(self) -> str:
        return (self.query.__doc__ or "").strip()

    @property
    def partition_day(self) -> str:
        """SQL: the IST day of the partition that writes a row."""
        if self.weekly:
            return f"{self.day_column} + {self.lookback_days}"
        return self.day_column


# In build order: a mart reads only the ledger, the risk decisions and the marts before it.
MARTS: dict[str, Mart] = {
    "payer_days": Mart(
        f"""day DATE NOT NULL, payer_key UBIGINT NOT NULL, transfers BIGINT,
        successful BIGINT, value_paise BIGINT, held BIGINT, first_payment_day DATE,
        payer_token VARCHAR GENERATED ALWAYS AS ({token_from_key_sql("payer_key")}) VIRTUAL""",
        payer_days_sql,
        reads=(LEDGER_TRANSFERS, DECISIONS_TABLE),
        setup=payer_days_setup,
        per_payer=True,
    ),
    "daily_users": Mart(
        """day DATE NOT NULL, registered BIGINT, bank_linked BIGINT,
        activated BIGINT, deregistered BIGINT, registered_total BIGINT,
        bank_linked_total BIGINT, activated_total BIGINT""",
        daily_users_sql,
        reads=(ACCOUNT_EVENTS, PAYER_DAYS),
    ),
    "activation_funnel": Mart(
        """cohort_day DATE NOT NULL, registered BIGINT, bank_linked BIGINT,
        first_payment BIGINT, fifth_payment BIGINT, median_hours_to_link DOUBLE,
        median_hours_link_to_first DOUBLE, median_hours_first_to_fifth DOUBLE,
        observed_through DATE""",
        activation_funnel_sql,
        reads=(LEDGER_TRANSFERS, ACCOUNT_EVENTS),
        day_column="cohort_day",
    ),
    "daily_active": Mart(
        "day DATE NOT NULL, dau BIGINT, wau BIGINT, mau BIGINT, dau_mau DOUBLE",
        daily_active_sql,
        reads=(PAYER_DAYS,),
        lookback_days=ACTIVE_LOOKBACK,
    ),
    "daily_volume": Mart(
        """day DATE NOT NULL, payee_type VARCHAR, channel VARCHAR,
        payer_state VARCHAR, mcc VARCHAR, category VARCHAR, status VARCHAR, transfers BIGINT,
        value_paise BIGINT""",
        daily_volume_sql,
        reads=(LEDGER_TRANSFERS,),
    ),
    "ticket_sizes": Mart(
        """day DATE NOT NULL, payee_type VARCHAR, bucket VARCHAR,
        bucket_order INTEGER, transfers BIGINT, value_paise BIGINT""",
        ticket_sizes_sql,
        reads=(LEDGER_TRANSFERS,),
    ),
    "ticket_quantiles": Mart(
        """day DATE NOT NULL, payee_type VARCHAR, transfers BIGINT,
        mean_paise DOUBLE, p10_paise BIGINT, p25_paise BIGINT, p50_paise BIGINT,
        p75_paise BIGINT, p90_paise BIGINT, p99_paise BIGINT""",
        ticket_quantiles_sql,
        reads=(LEDGER_TRANSFERS,),
    ),
    "daily_outcomes": Mart(
        """day DATE NOT NULL, payee_type VARCHAR, channel VARCHAR,
        status VARCHAR, response_code VARCHAR, description VARCHAR, transfers BIGINT,
        value_paise BIGINT""",
        daily_outcomes_sql,
        reads=(LEDGER_TRANSFERS,),
    ),
    "weekly_retention": Mart(
        """cohort_week DATE NOT NULL, week DATE NOT NULL,
        week_number INTEGER, cohort_users BIGINT, active_users BIGINT, retention DOUBLE""",
        weekly_retention_sql,
        reads=(PAYER_DAYS,),
        lookback_days=RETENTION_LOOKBACK,
        day_column="week",
        weekly=True,
    ),
    "daily_friction": Mart(
        """day DATE NOT NULL, payee_type VARCHAR, decision VARCHAR,
        transfers BIGINT, value_paise BIGINT""",
        daily_friction_sql,
        reads=(LEDGER_TRANSFERS, DECISIONS_TABLE),
    ),
    "online_decisions_daily": Mart(
        """day DATE NOT NULL, decision VARCHAR, fallback BOOLEAN, decisions BIGINT,
        latency_ms_p50 DOUBLE, latency_ms_p99 DOUBLE, latency_ms_max DOUBLE""",
        online_decisions_sql,
        reads=(ONLINE_DECISIONS,),
    ),
    "friction_retention": Mart(
        """week DATE NOT NULL, held BOOLEAN NOT NULL, payers BIGINT,
        retained BIGINT, retention DOUBLE""",
        friction_retention_sql,
        reads=(PAYER_DAYS,),
        lookback_days=FRICTION_LOOKBACK,
        day_column="week",
        weekly=True,
    ),
}
# The marts the dashboards read: every one that holds aggregates only.
AGGREGATE_MARTS = tuple(name for name, mart in MARTS.items() if not mart.per_payer)


def build_mart(
    con: duckdb.DuckDBPyConnection, name: str, days: DayRange, *, token_key: bytes
) -> int:
    """Replace the rows of `days` in mart `name`, in one transaction; return rows written."""
    if name not in MARTS:
        raise KeyError(f"unknown adoption mart {name!r}; known: {', '.join(MARTS)}")
    ensure_schema(con)
    mart = MARTS[name]
    table = f"{SCHEMA}.{name}"
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"DELETE FROM {table} WHERE {mart.partition_day} BETWEEN ? AND ?",
            [days.first, days.last],
        )
        if mart.setup is not None:
            con.execute(mart.setup(con, days, token_key))
        query = mart.query(con, days, token_key)
        written = con.sql(f"INSERT INTO {table} {query}").fetchall()[0][0]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(written)


def build_marts(
    con: duckdb.DuckDBPyConnection,
    first_day: dt.date,
    last_day: dt.date,
    *,
    token_key: bytes,
    names: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Build the marts (all, or `names`, in dependency order) for an inclusive range of IST days."""
    days = DayRange(first_day, last_day)
    report: dict[str, dict[str, float]] = {}
    for name in MARTS:
        if names is not None and name not in names:
            continue
        started = time.perf_counter()
        rows = build_mart(con, name, days, token_key=token_key)
        report[name] = {"rows": rows, "seconds": round(time.perf_counter() - started, 3)}
    return report
