"""India's calendar: the day a payment belongs to is its India (IST) day, not its UTC day."""

from __future__ import annotations

import datetime as dt

# India has kept UTC+05:30 all year since 1945, so a fixed offset is the IST calendar. These are
# the one definition of India time: every module (SQL, Polars, numpy, Dagster schedules) uses them.
IST_OFFSET = dt.timedelta(hours=5, minutes=30)
IST_OFFSET_MINUTES = 330
IST_OFFSET_US = IST_OFFSET_MINUTES * 60 * 1_000_000
IST = dt.timezone(IST_OFFSET, "IST")
# The IANA name, for whatever takes a zone by name (Dagster schedules and partitions, Polars).
IST_TIME_ZONE = "Asia/Kolkata"
IST_DAY_SQL = f"CAST({{column}} + INTERVAL {IST_OFFSET_MINUTES} MINUTE AS DATE)"  # session in UTC


def ist_day(moment: dt.datetime) -> dt.date:
    """The India day of an aware instant."""
    return moment.astimezone(IST).date()


def changed_days(first: dt.datetime | None, last: dt.datetime | None) -> str:
    """`first/last` India days of a span of instants (partition-range form), or "" if none."""
    if first is None or last is None:
        return ""
    return f"{ist_day(first).isoformat()}/{ist_day(last).isoformat()}"
