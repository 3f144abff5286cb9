"""Reading the marts for the pages: the window of days shown, and read-only queries over it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from pipelines.adoption.dashboards.formatting import format_day, short_day
from pipelines.adoption.marts import AGGREGATE_MARTS, MARTS, SCHEMA, WEEK_DAYS

PERIOD_DAYS = 7
PAYEE_LABELS = {"PERSON": "P2P", "MERCHANT": "P2M"}


@dataclass(frozen=True)
class Window:
    """The days a set of pages covers, and the two 7-day periods its tiles compare."""

    first: dt.date
    last: dt.date

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    @property
    def current(self) -> tuple[dt.date, dt.date]:
        return self.last - dt.timedelta(days=PERIOD_DAYS - 1), self.last

    @property
    def previous(self) -> tuple[dt.date, dt.date]:
        start = self.last - dt.timedelta(days=2 * PERIOD_DAYS - 1)
        return start, start + dt.timedelta(days=PERIOD_DAYS - 1)

    @property
    def has_previous(self) -> bool:
        # A partly covered previous week would make every change look like growth.
        return self.first <= self.previous[0]

    @property
    def label(self) -> str:
        if self.first == self.last:
            return format_day(self.last)
        same_year = self.first.year == self.last.year
        start = short_day(self.first) if same_year else format_day(self.first)
        return f"{start} – {format_day(self.last)}"

    def period_label(self, period: tuple[dt.date, dt.date]) -> str:
        return f"{short_day(period[0])} – {short_day(period[1])}"


class Marts:
    """Read-only queries on the adoption marts (`{s}` is their schema), limited to the window."""

    def __init__(self, con: duckdb.DuckDBPyConnection, window: Window | None) -> None:
        self.con = con
        self.window = window

    @property
    def window_days(self) -> list[dt.date]:
        """Every day of the window: the x axis of a daily chart."""
        return self.window.days if self.window else []

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        frame = self.con.sql(sql.replace("{s}", SCHEMA), params=list(params)).pl()
        # DuckDB sums BIGINTs into HUGEINT, which arrives as Decimal: plain numbers chart better.
        return frame.with_columns(
            pl.col(name).cast(pl.Int64 if dtype.scale == 0 else pl.Float64)
            for name, dtype in frame.schema.items()
            if isinstance(dtype, pl.Decimal)
        )

    def days(self, sql: str, column: str = "day") -> pl.DataFrame:
        """Rows of a daily query whose `{where}` becomes the window's days."""
        if self.window is None:
            return self.frame(sql.replace("{where}", "false"))
        where = f"{column} BETWEEN ? AND ?"
        count = sql.count("{where}")
        return self.frame(
            sql.replace("{where}", where), [self.window.first, self.window.last] * count
        )

    def weeks(self, sql: str, mart: str, column: str = "week") -> pl.DataFrame:
        """Rows of weekly `mart` whose `{where}` becomes its complete weeks in the window: those
        written by a partition of the window whose week (in `column`) overlaps it."""
        if self.window is None:
            return self.frame(sql.replace("{where}", "false"))
        where = f"{MARTS[mart].partition_day} <= ? AND {column} >= ?"
        first_week = self.window.first - dt.timedelta(days=WEEK_DAYS - 1)
        return self.frame(sql.replace("{where}", where), [self.window.last, first_week])


def missing_marts(con: duckdb.DuckDBPyConnection) -> list[str]:
    present = {
        row[0]
        for row in con.sql(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", params=[SCHEMA]
        ).fetchall()
    }
    return [name for name in AGGREGATE_MARTS if name not in present]


def read_window(con: duckdb.DuckDBPyConnection, as_of: dt.date | None) -> Window | None:
    """The days the marts cover up to `as_of` (default: their last day), or None if none."""
    if as_of is None:
        last = con.sql(f"SELECT max(day) FROM {SCHEMA}.daily_volume").fetchall()[0][0]
        if last is None:
            return None
    else:
        last = as_of
    first = con.sql(
        f"SELECT min(day) FROM {SCHEMA}.daily_volume WHERE day <= ?", params=[last]
    ).fetchall()[0][0]
    return None if first is None else Window(first, last)


def active_payers(marts: Marts) -> pl.DataFrame:
    """DAU, WAU and MAU a day: one row per day and `measure`, the count in `payers`."""
    return marts.days(
        "SELECT day, dau AS DAU, wau AS WAU, mau AS MAU FROM {s}.daily_active WHERE {where}"
    ).unpivot(index="day", variable_name="measure", value_name="payers")


def ratio(part: Any, whole: Any) -> float | None:
    return float(part) / float(whole) if part is not None and whole else None


def payee_labels(frame: pl.DataFrame) -> pl.DataFrame:
    """`payee_type` (PERSON, MERCHANT) as `payee` (P2P, P2M)."""
    return frame.with_columns(
        payee=pl.col("payee_type").replace_strict(PAYEE_LABELS, default=pl.col("payee_type"))
    ).drop("payee_type")
