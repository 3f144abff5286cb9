"""Numbers, money and days the way an Indian reader expects them: lakh and crore, IST days."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

LAKH, CRORE = 100_000, 10_000_000
# Largest first: (size, suffix).
_UNITS = ((CRORE, " Cr"), (LAKH, " L"), (1, ""))


def indian_grouping(number: int) -> str:
    """Digits grouped the Indian way: 12,34,56,789."""
    sign, digits = ("-" if number < 0 else ""), str(abs(int(number)))
    if len(digits) <= 3:
        return sign + digits
    head, tail = digits[:-3], digits[-3:]
    pairs = []
    while len(head) > 2:
        pairs.insert(0, head[-2:])
        head = head[:-2]
    return sign + ",".join([head, *pairs, tail])


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _unit_of(amount: float) -> tuple[int, str]:
    """The unit an amount reads best in on its own: crore, lakh, or plain from one lakh down."""
    return next((size, suffix) for size, suffix in _UNITS if abs(amount) >= size or size == 1)


def _in_unit(amount: float, prefix: str, unit: tuple[int, str]) -> str:
    size, suffix = unit
    sign = "-" if amount < 0 else ""
    if size == 1:
        return f"{sign}{prefix}{indian_grouping(round(abs(amount)))}"
    whole, tenth = divmod(round(abs(amount) / size * 10), 10)
    return f"{sign}{prefix}{indian_grouping(whole)}.{tenth}{suffix}"


def format_rupees(paise: float | None) -> str:
    """Paise as rupees the way an Indian reader expects: ₹950, ₹45,300, ₹3.4 L, ₹1.2 Cr."""
    if _missing(paise):
        return "–"
    return _in_unit(paise / 100, "₹", _unit_of(paise / 100))


def format_count(count: float | None) -> str:
    """A count with Indian grouping, compacted to lakh and crore from one lakh up."""
    if _missing(count):
        return "–"
    return _in_unit(count, "", _unit_of(count))


def format_share(share: float | None, digits: int = 1) -> str:
    if _missing(share):
        return "–"
    return f"{share * 100:.{digits}f}%"


def format_hours(hours: float | None) -> str:
    return "–" if _missing(hours) else f"{hours:.1f} h"


def format_day(day: dt.date) -> str:
    return f"{day.day} {day:%b %Y}"


def short_day(day: dt.date) -> str:
    return f"{day.day} {day:%b}"


def _column(values: Sequence[float | None], prefix: str, scale: float) -> list[str]:
    """Amounts of one table column, all in one unit: the unit of its smallest amount, so that
    none reads as zero and the column compares at a glance."""
    present = [abs(v) / scale for v in values if not _missing(v) and v]
    unit = _unit_of(min(present)) if present else _UNITS[-1]
    return ["–" if _missing(v) else _in_unit(v / scale, prefix, unit) for v in values]


def count_column(counts: Sequence[float | None]) -> list[str]:
    """Counts of one table column in one unit: 98,203 and 1,10,234, never 98,203 and 1.1 L."""
    return _column(counts, "", 1)


def rupee_column(paise: Sequence[float | None]) -> list[str]:
    """Paise of one table column as rupees in one unit (see `count_column`)."""
    return _column(paise, "₹", 100)


# Axis labels. Shares: d3 chooses as many decimals as the tick step needs when the format gives
# none, and `~` drops trailing zeros: 0.05%, 0.1%, 0.15%. Money and counts: Vega expressions
# in lakh and crore like the tiles, with the decimals a tick value has (up to three).
SHARE_AXIS_FORMAT = "~%"


def _compact_axis_labels(prefix: str) -> str:
    return (
        f"abs(datum.value) >= {CRORE} ? '{prefix}' + format(datum.value / {CRORE}, '.3~f') + ' Cr' : "
        f"abs(datum.value) >= {LAKH} ? '{prefix}' + format(datum.value / {LAKH}, '.3~f') + ' L' : "
        f"'{prefix}' + format(datum.value, ',~r')"
    )


RUPEE_AXIS_LABELS = _compact_axis_labels("₹")
COUNT_AXIS_LABELS = _compact_axis_labels("")
