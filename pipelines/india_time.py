"""India's calendar: the day a payment belongs to is its India (IST) day, not its UTC day."""

from __future__ import annotations

import datetime as dt

# India has kept UTC+05:30 all year since 1945, so a fixed offset is the IST calendar.
IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
IST_DAY_SQL = "CAST({column} + INTERVAL 330 MINUTE AS DATE)"  # with the session in UTC


def ist_day(moment: dt.datetime) -> dt.date:
    """The India day of an aware instant."""
    return moment.astimezone(IST).date()


def changed_days(first: dt.datetime | None, last: dt.datetime | None) -> str:
    """`first/last` India days of a span of instants (partition-range form), or "" if none."""
    if first is None or last is None:
        return ""
    return f"{ist_day(first).isoformat()}/{ist_day(last).isoformat()}"
