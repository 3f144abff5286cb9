"""Adoption dashboards: six self-contained HTML pages drawn from the `adoption` marts.

Each page carries its data inside Vega-Lite specs (built with Altair) and the Vega JavaScript
bundle of vl-convert, so it opens from disk with no network at all. The pages read the marts
only, never the ledger, and show aggregates only: no person, not even as a token.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import polars as pl
import vl_convert

SCHEMA = "adoption"
# Every mart a page reads; payer_days is left out on purpose: it is per payer.
MARTS = (
    "daily_users",
    "activation_funnel",
    "daily_active",
    "daily_volume",
    "ticket_sizes",
    "ticket_quantiles",
    "daily_outcomes",
    "weekly_retention",
    "daily_friction",
    "friction_retention",
)
PAGES = {
    "overview": "Overview",
    "geography": "Geography",
    "merchants": "Merchants",
    "cohorts": "Cohorts",
    "funnel": "Funnel",
    "risk": "Risk friction",
}
PERIOD_DAYS = 7

PAYEE_LABELS = {"PERSON": "P2P", "MERCHANT": "P2M"}
PAYEE_COLORS = {"P2P": "#4c78a8", "P2M": "#f58518"}
CHANNELS = {"CHAT": "#4c78a8", "QR": "#f58518", "INTENT": "#54a24b", "COLLECT": "#b279a2"}
DECISIONS = {"ALLOW": "#54a24b", "HOLD": "#eca82c", "BLOCK": "#e45756", "UNSCORED": "#bab0ac"}
ACTIVE = {"DAU": "#4c78a8", "WAU": "#72b7b2", "MAU": "#9d755d"}
BAD = "#c62828"  # failures; the tiles colour changes in CSS

# ISO 3166-2:IN, with the codes retired in 2023 kept: ledgers carry both.
STATE_NAMES = {
    "IN-AN": "Andaman and Nicobar",
    "IN-AP": "Andhra Pradesh",
    "IN-AR": "Arunachal Pradesh",
    "IN-AS": "Assam",
    "IN-BR": "Bihar",
    "IN-CH": "Chandigarh",
    "IN-CG": "Chhattisgarh",
    "IN-CT": "Chhattisgarh",
    "IN-DH": "Dadra, Nagar Haveli, Daman, Diu",
    "IN-DL": "Delhi",
    "IN-GA": "Goa",
    "IN-GJ": "Gujarat",
    "IN-HP": "Himachal Pradesh",
    "IN-HR": "Haryana",
    "IN-JH": "Jharkhand",
    "IN-JK": "Jammu and Kashmir",
    "IN-KA": "Karnataka",
    "IN-KL": "Kerala",
    "IN-LA": "Ladakh",
    "IN-LD": "Lakshadweep",
    "IN-MH": "Maharashtra",
    "IN-ML": "Meghalaya",
    "IN-MN": "Manipur",
    "IN-MP": "Madhya Pradesh",
    "IN-MZ": "Mizoram",
    "IN-NL": "Nagaland",
    "IN-OD": "Odisha",
    "IN-OR": "Odisha",
    "IN-PB": "Punjab",
    "IN-PY": "Puducherry",
    "IN-RJ": "Rajasthan",
    "IN-SK": "Sikkim",
    "IN-TG": "Telangana",
    "IN-TS": "Telangana",
    "IN-TN": "Tamil Nadu",
    "IN-TR": "Tripura",
    "IN-UK": "Uttarakhand",
    "IN-UP": "Uttar Pradesh",
    "IN-UT": "Uttarakhand",
    "IN-WB": "West Bengal",
}

# Vega expressions for axis labels, so charts use lakh and crore like the tiles do.
_COMPACT = (
    "abs(datum.value) >= 1e7 ? '{p}' + format(datum.value / 1e7, '.1~f') + ' Cr' : "
    "abs(datum.value) >= 1e5 ? '{p}' + format(datum.value / 1e5, '.1~f') + ' L' : "
    "'{p}' + format(datum.value, ',~r')"
)
RUPEE_LABELS = _COMPACT.format(p="₹")
COUNT_LABELS = _COMPACT.format(p="")

CHART_CONFIG: dict[str, Any] = {
    "font": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "view": {"stroke": None},
    "axis": {
        "labelColor": "#4a5568",
        "titleColor": "#4a5568",
        "gridColor": "#edf0f4",
        "domainColor": "#cbd2d9",
        "tickColor": "#cbd2d9",
        "titleFontWeight": "normal",
    },
    "legend": {"orient": "top", "title": None, "labelColor": "#4a5568"},
    "line": {"strokeWidth": 2},
}


# --- formatting -------------------------------------------------------------------------------


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


def _compact(amount: float, prefix: str) -> str:
    sign = "-" if amount < 0 else ""
    value = abs(amount)
    if value >= 1e7:
        scaled, unit = value / 1e7, " Cr"
    elif value >= 1e5:
        scaled, unit = value / 1e5, " L"
    else:
        return f"{sign}{prefix}{indian_grouping(round(value))}"
    whole, tenth = divmod(round(scaled * 10), 10)
    return f"{sign}{prefix}{indian_grouping(whole)}.{tenth}{unit}"


def format_rupees(paise: float | None) -> str:
    """Paise as rupees the way an Indian reader expects: ₹950, ₹45,300, ₹3.4 L, ₹1.2 Cr."""
    if paise is None or (isinstance(paise, float) and math.isnan(paise)):
        return "–"
    return _compact(paise / 100, "₹")


def format_count(count: float | None) -> str:
    """A count with Indian grouping, compacted to lakh and crore from one lakh up."""
    if count is None or (isinstance(count, float) and math.isnan(count)):
        return "–"
    return _compact(count, "")


def format_share(share: float | None, digits: int = 1) -> str:
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "–"
    return f"{share * 100:.{digits}f}%"


def format_day(day: dt.date) -> str:
    return f"{day.day} {day:%b %Y}"


def _short_day(day: dt.date) -> str:
    return f"{day.day} {day:%b}"


def _state_name(code: str | None) -> str:
    if code is None:
        return "Unknown"
    return STATE_NAMES.get(code, code)


# --- reading the marts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The days a set of pages covers, and the two 7-day periods its tiles compare."""

    first: dt.date
    last: dt.date

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
        start = _short_day(self.first) if same_year else format_day(self.first)
        return f"{start} – {format_day(self.last)}"

    def period_label(self, period: tuple[dt.date, dt.date]) -> str:
        return f"{_short_day(period[0])} – {_short_day(period[1])}"


class _Marts:
    """Read-only queries on the adoption marts, limited to the window's days."""

    def __init__(self, con: duckdb.DuckDBPyConnection, window: Window | None) -> None:
        self.con = con
        self.window = window

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


def _missing_marts(con: duckdb.DuckDBPyConnection) -> list[str]:
    present = {
        row[0]
        for row in con.sql(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", params=[SCHEMA]
        ).fetchall()
    }
    return [name for name in MARTS if name not in present]


def _window(con: duckdb.DuckDBPyConnection, as_of: dt.date | None) -> Window | None:
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


# --- page model -------------------------------------------------------------------------------


@dataclass
class Tile:
    label: str
    value: str
    change: str = ""
    tone: str = "flat"  # good, bad or flat: the colour of the change
    note: str = ""


@dataclass
class Chart:
    name: str
    title: str
    spec: dict[str, Any] | None
    note: str = ""
    empty: str = "No data in this window."
    wide: bool = False


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    empty: str = "No data in this window."
    wide: bool = True


@dataclass
class Page:
    name: str
    heading: str
    intro: str = ""
    notices: list[str] = field(default_factory=list)
    tiles: list[Tile] = field(default_factory=list)
    cards: list[Chart | Table] = field(default_factory=list)


# --- chart builders ---------------------------------------------------------------------------


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows for an inline Vega dataset: dates as local midnight, so no time zone shifts a day."""
    dates = [name for name, dtype in frame.schema.items() if dtype == pl.Date]
    if dates:
        frame = frame.with_columns(pl.col(d).dt.strftime("%Y-%m-%dT00:00:00") for d in dates)
    rows = frame.to_dicts()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
    return rows


def _formatted(frame: pl.DataFrame, column: str, kind: str, into: str = "label") -> pl.DataFrame:
    fmt: Callable[[Any], str] = {
        "rupees": lambda v: format_rupees(v * 100),
        "count": format_count,
        "share": format_share,
        "hours": lambda v: "–" if v is None else f"{v:.1f} h",
    }[kind]
    return frame.with_columns(
        pl.Series(into, [fmt(v) for v in frame[column].to_list()], dtype=pl.String)
    )


def _axis(kind: str, title: str | None = None, **options: Any) -> alt.Axis:
    options.setdefault("tickCount", 6)
    if kind == "rupees":
        return alt.Axis(title=title, labelExpr=RUPEE_LABELS, **options)
    if kind == "count":
        return alt.Axis(title=title, labelExpr=COUNT_LABELS, **options)
    if kind == "share":
        return alt.Axis(title=title, format=".1~%", **options)
    return alt.Axis(title=title, **options)


def _day_axis() -> alt.Axis:
    return alt.Axis(title=None, format="%-d %b", labelAngle=0, labelOverlap=True, labelSeparation=6)


def _colors(mapping: dict[str, str], present: Sequence[str] | None = None) -> alt.Scale:
    keys = [k for k in mapping if present is None or k in present]
    return alt.Scale(domain=keys, range=[mapping[k] for k in keys])


# Charts name their data and the rows go in as the spec's inline `datasets` after validation:
# validating every row against the Vega-Lite schema took longer than everything else.
DATA = alt.Data(name="table")


def _spec(chart: alt.TopLevelMixin, frame: pl.DataFrame, height: int = 220) -> dict[str, Any]:
    spec = chart.properties(width="container", height=height).to_dict()
    spec["datasets"] = {"table": _records(frame)}
    spec["config"] = CHART_CONFIG
    spec["autosize"] = {"type": "fit-x", "contains": "padding"}
    return spec


def _lines(
    frame: pl.DataFrame,
    y: str,
    series: str,
    kind: str,
    colors: dict[str, str] | None = None,
    y_title: str | None = None,
    area: bool = False,
    zero: bool = True,
) -> dict[str, Any] | None:
    """Daily series: `day`, a `series` name and a `y` value a row."""
    if frame.is_empty():
        return None
    frame = _formatted(frame, y, kind)
    present = frame[series].unique().to_list()
    color = alt.Color(
        f"{series}:N",
        scale=_colors(colors, present) if colors else alt.Undefined,
        legend=alt.Legend(title=None),
    )
    tooltip = [
        alt.Tooltip("day:T", title="Day", format="%a %d %b %Y"),
        alt.Tooltip(f"{series}:N", title="Series"),
        alt.Tooltip("label:N", title="Value"),
    ]
    base = alt.Chart(DATA)
    mark = (
        base.mark_area(opacity=0.85, line=True)
        if area
        else base.mark_line(point=alt.OverlayMarkDef(size=18))
    )
    # An all-zero series (no friction yet) would sit mid-chart on a [0, 0] domain.
    if not frame[y].max():
        scale = alt.Scale(domain=[0, 0.05 if kind == "share" else 1])
    else:
        scale = alt.Scale(zero=zero, padding=8 if not zero else 0)
    y_enc = alt.Y(f"{y}:Q", axis=_axis(kind, y_title), scale=scale, stack="zero" if area else None)
    chart = mark.encode(x=alt.X("day:T", axis=_day_axis()), y=y_enc, color=color, tooltip=tooltip)
    return _spec(chart, frame)


def _bars(
    frame: pl.DataFrame,
    x: str,
    category: str,
    kind: str,
    title: str | None = None,
    color: str = "#4c78a8",
    sort: Sequence[str] | None = None,
    extra_tooltip: Sequence[alt.Tooltip] = (),
    dots: bool = False,
) -> dict[str, Any] | None:
    """Horizontal bars (or dots on a zoomed axis), one a category, longest first unless `sort`
    says otherwise."""
    if frame.is_empty():
        return None
    frame = _formatted(frame, x, kind)
    # One explicit order for both layers: "-x" in a layer makes Vega-Lite warn and re-sort.
    order = list(sort) if sort is not None else frame.sort(x, descending=True)[category].to_list()
    top = frame[x].max() or 0
    # Room to the right of the longest bar for its label.
    scale = (
        alt.Scale(zero=False, padding=12)
        if dots
        else alt.Scale(domain=[0, top * 1.18 if top else 1], nice=False)
    )
    base = alt.Chart(DATA)
    mark = (
        base.mark_circle(color=color, size=70, opacity=1)
        if dots
        else base.mark_bar(color=color, cornerRadiusEnd=2)
    )
    bars = mark.encode(
        y=alt.Y(
            f"{category}:N",
            sort=order,
            title=None,
            axis=alt.Axis(labelLimit=190, grid=dots),
        ),
        x=alt.X(f"{x}:Q", axis=_axis(kind, title), scale=scale),
        tooltip=[
            alt.Tooltip(f"{category}:N", title=" "),
            alt.Tooltip("label:N", title=title or x),
            *extra_tooltip,
        ],
    )
    text = base.mark_text(align="left", dx=8 if dots else 3, color="#4a5568", fontSize=10).encode(
        y=alt.Y(f"{category}:N", sort=order),
        x=alt.X(f"{x}:Q"),
        text="label:N",
    )
    return _spec(alt.layer(bars, text), frame, height=max(120, 18 * frame.height + 20))


def _stacked_share(
    frame: pl.DataFrame,
    category: str,
    part: str,
    value: str,
    colors: dict[str, str],
    sort: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """100% bars: how each `category` splits across `part`."""
    if frame.is_empty():
        return None
    totals = frame.group_by(category).agg(pl.col(value).sum().alias("_total"))
    frame = frame.join(totals, on=category).with_columns(
        share=pl.when(pl.col("_total") > 0).then(pl.col(value) / pl.col("_total")).otherwise(0.0)
    )
    frame = _formatted(frame.drop("_total"), "share", "share")
    present = frame[part].unique().to_list()
    chart = (
        alt.Chart(DATA)
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort=list(sort) if sort else alt.Undefined, title=None),
            x=alt.X("share:Q", stack="normalize", axis=_axis("share")),
            color=alt.Color(f"{part}:N", scale=_colors(colors, present)),
            order=alt.Order("part_order:Q"),
            tooltip=[
                alt.Tooltip(f"{category}:N", title=" "),
                alt.Tooltip(f"{part}:N", title="  "),
                alt.Tooltip("label:N", title="Share"),
            ],
        )
        .transform_calculate(part_order=f"indexof({json.dumps(list(colors))}, datum['{part}'])")
    )
    return _spec(chart, frame, height=max(120, 20 * frame[category].n_unique() + 30))


# --- tiles ------------------------------------------------------------------------------------


def _tile(
    label: str,
    current: float | None,
    previous: float | None,
    kind: str,
    window: Window,
    *,
    up_is_good: bool = True,
    note: str = "",
) -> Tile:
    formats = {"count": format_count, "rupees": format_rupees, "share": format_share}
    tile = Tile(label, formats[kind](current), note=note)
    if current is None or previous is None or not window.has_previous:
        tile.change = "no earlier week" if not window.has_previous else "–"
        return tile
    if kind == "share":
        delta = (current - previous) * 100
        tile.change = f"{delta:+.1f} pp"
    else:
        if previous == 0:
            tile.change = "new" if current else "no change"
            return tile
        delta = (current / previous - 1) * 100
        tile.change = f"{delta:+.1f}%"
    delta = round(delta, 1)
    if delta == 0:
        tile.change = tile.change.lstrip("+-")
        return tile
    tile.tone = "good" if (delta > 0) == up_is_good else "bad"
    tile.change = ("▲ " if delta > 0 else "▼ ") + tile.change
    return tile


def _periods(marts: _Marts, sql: str) -> dict[str, dict[str, Any]]:
    """Run a query whose `{period}` is 'current' or 'previous' and that groups by it."""
    window = marts.window
    assert window is not None
    (c0, c1), (p0, p1) = window.current, window.previous
    period = (
        "CASE WHEN day BETWEEN ? AND ? THEN 'current' WHEN day BETWEEN ? AND ? THEN 'previous' END"
    )
    text = sql.replace("{period}", period).replace("{where}", "day BETWEEN ? AND ?")
    frame = marts.frame(text, [c0, c1, p0, p1, p0, c1])
    return {row["period"]: row for row in frame.to_dicts() if row["period"]}


def _ratio(part: Any, whole: Any) -> float | None:
    return float(part) / float(whole) if part is not None and whole else None


# --- pages ------------------------------------------------------------------------------------


def _overview(marts: _Marts) -> Page:
    window = marts.window
    page = Page(
        "overview",
        "Adoption overview",
        "How many people pay, how much, how reliably, and how much risk friction they meet.",
    )
    if window is not None:
        volume = _periods(
            marts,
            """SELECT {period} AS period, sum(transfers) AS transfers,
                sum(value_paise) FILTER (status = 'SUCCESS') AS value,
                sum(value_paise) FILTER (status = 'SUCCESS' AND payee_type = 'MERCHANT') AS p2m
            FROM {s}.daily_volume WHERE {where} GROUP BY 1""",
        )
        active = _periods(
            marts,
            """SELECT {period} AS period, avg(dau) AS dau, arg_max(mau, day) AS mau
            FROM {s}.daily_active WHERE {where} GROUP BY 1""",
        )
        users = _periods(
            marts,
            """SELECT {period} AS period, sum(activated) AS activated
            FROM {s}.daily_users WHERE {where} GROUP BY 1""",
        )
        outcomes = _periods(
            marts,
            """SELECT {period} AS period,
                sum(transfers) FILTER (status = 'SUCCESS') AS ok,
                sum(transfers) FILTER (status IN ('SUCCESS', 'FAILED')) AS settled
            FROM {s}.daily_outcomes WHERE {where} GROUP BY 1""",
        )
        friction = _periods(
            marts,
            """SELECT {period} AS period, sum(transfers) AS transfers,
                sum(transfers) FILTER (decision IN ('HOLD', 'BLOCK')) AS held
            FROM {s}.daily_friction WHERE {where} GROUP BY 1""",
        )

        def get(rows: dict[str, dict[str, Any]], period: str, key: str) -> Any:
            return rows.get(period, {}).get(key)

        def pair(rows: dict[str, dict[str, Any]], key: str) -> tuple[Any, Any]:
            return get(rows, "current", key), get(rows, "previous", key)

        def ratio_pair(rows: dict[str, dict[str, Any]], part: str, whole: str) -> tuple:
            return tuple(
                _ratio(get(rows, p, part) or 0, get(rows, p, whole))
                for p in ("current", "previous")
            )

        page.tiles = [
            _tile("Transfers", *pair(volume, "transfers"), "count", window, note="initiated"),
            _tile("Value", *pair(volume, "value"), "rupees", window, note="successful"),
            _tile("Average DAU", *pair(active, "dau"), "count", window, note="payers a day"),
            _tile("MAU", *pair(active, "mau"), "count", window, note="30-day active payers"),
            _tile("New activated users", *pair(users, "activated"), "count", window),
            _tile("Success rate", *ratio_pair(outcomes, "ok", "settled"), "share", window),
            _tile("P2M share of value", *ratio_pair(volume, "p2m", "value"), "share", window),
            _tile(
                "Held or blocked",
                *ratio_pair(friction, "held", "transfers"),
                "share",
                window,
                up_is_good=False,
                note="share of transfers",
            ),
        ]
        page.intro += (
            f" Tiles: the last {PERIOD_DAYS} days ({window.period_label(window.current)}) "
            f"against the {PERIOD_DAYS} before ({window.period_label(window.previous)})."
        )

    by_type = marts.days(
        """SELECT day, payee_type, sum(transfers) AS transfers,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS'), 0) / 100.0 AS value
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL ORDER BY ALL"""
    )
    by_type = _payee_labels(by_type)
    active = marts.days(
        "SELECT day, dau AS DAU, wau AS WAU, mau AS MAU FROM {s}.daily_active WHERE {where}"
    ).unpivot(index="day", variable_name="measure", value_name="payers")
    success = _success_rates(marts)
    failures = marts.days(
        """SELECT description AS reason, sum(transfers) AS transfers
        FROM {s}.daily_outcomes WHERE status = 'FAILED' AND {where}
        GROUP BY ALL ORDER BY transfers DESC LIMIT 10"""
    )
    page.cards = [
        Chart(
            "transfers-by-type",
            "Daily transfers, P2P and P2M",
            _lines(by_type, "transfers", "payee", "count", PAYEE_COLORS),
            "All initiated transfers, whatever their outcome.",
        ),
        Chart(
            "value-by-type",
            "Daily value, P2P and P2M",
            _lines(by_type, "value", "payee", "rupees", PAYEE_COLORS, area=True),
            "Successful transfers, stacked.",
        ),
        Chart(
            "active-payers",
            "Active payers: DAU, WAU, MAU",
            _lines(active, "payers", "measure", "count", ACTIVE),
            "Payers with a successful payment that day, or within the 7 or 30 days ending it.",
        ),
        Chart(
            "success-rate",
            "Success rate",
            _lines(
                success, "rate", "payee", "share", {"All": "#333f4b", **PAYEE_COLORS}, zero=False
            ),
            "SUCCESS / (SUCCESS + FAILED); pending and reversed transfers left out.",
        ),
        Chart(
            "failure-reasons",
            "Why transfers failed",
            _bars(failures, "transfers", "reason", "count", "Failed transfers", color=BAD),
            "NPCI response codes of failed transfers over the whole window, top 10.",
            wide=True,
        ),
    ]
    return page


def _payee_labels(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        payee=pl.col("payee_type").replace_strict(PAYEE_LABELS, default=pl.col("payee_type"))
    ).drop("payee_type")


def _success_rates(marts: _Marts) -> pl.DataFrame:
    return marts.days(
        """WITH counted AS (
            SELECT day, coalesce(payee_type, 'All') AS payee_type,
                sum(transfers) FILTER (status = 'SUCCESS') AS ok,
                sum(transfers) FILTER (status IN ('SUCCESS', 'FAILED')) AS settled
            FROM {s}.daily_outcomes WHERE {where}
            GROUP BY GROUPING SETS ((day, payee_type), (day)))
        SELECT day, payee_type, coalesce(ok, 0) / settled AS rate
        FROM counted WHERE settled > 0 ORDER BY ALL"""
    ).pipe(_payee_labels)


def _geography(marts: _Marts) -> Page:
    page = Page(
        "geography",
        "Geography",
        "Where payers are, by the state on their account. Success rate: SUCCESS / (SUCCESS + "
        "FAILED).",
    )
    states = marts.days(
        """SELECT payer_state, sum(transfers) AS transfers,
            count(DISTINCT day) AS days,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS'), 0) AS value_paise,
            coalesce(sum(transfers) FILTER (status = 'SUCCESS'), 0) AS successful,
            coalesce(sum(transfers) FILTER (status IN ('SUCCESS', 'FAILED')), 0) AS settled,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS' AND payee_type = 'MERCHANT'), 0)
                AS p2m_paise
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL"""
    )
    states = states.with_columns(
        state=pl.Series([_state_name(c) for c in states["payer_state"].to_list()], dtype=pl.String),
        value=pl.col("value_paise") / 100.0,
        rate=pl.when(pl.col("settled") > 0).then(pl.col("successful") / pl.col("settled")),
    ).sort("value_paise", descending=True)
    total_value = states["value_paise"].sum() or 0
    top = states.head(15)
    rated = states.filter(pl.col("settled") >= 20).sort("rate").head(15)
    leaders = [c for c in states.head(5)["payer_state"].to_list()]
    trend = marts.days(
        """SELECT day, payer_state,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS'), 0) / 100.0 AS value
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL ORDER BY ALL"""
    ).filter(pl.col("payer_state").is_in(leaders))
    trend = trend.with_columns(
        state=pl.Series([_state_name(c) for c in trend["payer_state"].to_list()], dtype=pl.String)
    )
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2"]
    state_colors = {_state_name(c): palette[i] for i, c in enumerate(leaders)}
    mix = marts.days(
        """SELECT payer_state, payee_type, sum(transfers) AS transfers
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL"""
    ).filter(pl.col("payer_state").is_in(top["payer_state"].implode()))
    mix = _payee_labels(
        mix.with_columns(
            state=pl.Series([_state_name(c) for c in mix["payer_state"].to_list()], dtype=pl.String)
        )
    )
    page.cards = [
        Chart(
            "state-value",
            "Value by state",
            _bars(
                top,
                "value",
                "state",
                "rupees",
                "Value",
                extra_tooltip=[alt.Tooltip("transfers:Q", title="Transfers", format=",")],
            ),
            "Successful value over the window; the 15 largest states.",
        ),
        Chart(
            "state-success",
            "Success rate by state",
            _bars(
                rated,
                "rate",
                "state",
                "share",
                "Success rate",
                color="#54a24b",
                sort=rated["state"].to_list(),
                dots=True,
            ),
            "Lowest 15 among states with at least 20 settled transfers.",
        ),
        Chart(
            "state-trend",
            "Daily value, top 5 states",
            _lines(trend.drop("payer_state"), "value", "state", "rupees", state_colors),
            "Successful value a day.",
            wide=True,
        ),
        Chart(
            "state-p2m",
            "P2P and P2M transfers by state",
            _stacked_share(
                mix, "state", "payee", "transfers", PAYEE_COLORS, sort=top["state"].to_list()
            ),
            "Share of each state's transfers; the 15 largest states by value.",
            wide=True,
        ),
        Table(
            "All states",
            ["State", "Transfers", "Value", "Share of value", "Average ticket", "Success rate"],
            [
                [
                    row["state"],
                    format_count(row["transfers"]),
                    format_rupees(row["value_paise"]),
                    format_share(_ratio(row["value_paise"], total_value)),
                    format_rupees(_ratio(row["value_paise"], row["successful"])),
                    format_share(row["rate"]),
                ]
                for row in states.to_dicts()
            ],
            "Over the whole window. Average ticket: successful value / successful transfers.",
        ),
    ]
    return page


def _merchants(marts: _Marts) -> Page:
    page = Page(
        "merchants",
        "Merchants",
        "Payments to merchants (P2M) by merchant category, with P2P alongside for comparison.",
    )
    categories = marts.days(
        """SELECT category, any_value(payee_type) AS payee_type, sum(transfers) AS transfers,
            coalesce(sum(transfers) FILTER (status = 'SUCCESS'), 0) AS successful,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS'), 0) AS value_paise
        FROM {s}.daily_volume WHERE {where} GROUP BY category"""
    ).with_columns(value=pl.col("value_paise") / 100.0)
    merchant = categories.filter(pl.col("payee_type") == "MERCHANT").sort(
        "value_paise", descending=True
    )
    p2m_value = merchant["value_paise"].sum() or 0
    channel = marts.days(
        """SELECT CASE WHEN payee_type = 'MERCHANT' THEN category ELSE 'Person (P2P)' END
                AS category, channel, sum(transfers) AS transfers
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL"""
    )
    order = [*merchant["category"].to_list(), "Person (P2P)"]
    channel_share = {
        (row["category"], row["channel"]): row["transfers"] for row in channel.to_dicts()
    }
    share = marts.days(
        """SELECT day,
            sum(value_paise) FILTER (status = 'SUCCESS' AND payee_type = 'MERCHANT')
                / sum(value_paise) FILTER (status = 'SUCCESS') AS "Share of value",
            sum(transfers) FILTER (status = 'SUCCESS' AND payee_type = 'MERCHANT')
                / sum(transfers) FILTER (status = 'SUCCESS') AS "Share of transfers"
        FROM {s}.daily_volume WHERE {where} GROUP BY day ORDER BY day"""
    ).unpivot(index="day", variable_name="measure", value_name="share")
    share = share.filter(pl.col("share").is_not_null())
    buckets = marts.days(
        """SELECT payee_type, bucket, min(bucket_order) AS bucket_order,
            sum(transfers) AS transfers
        FROM {s}.ticket_sizes WHERE {where} GROUP BY ALL"""
    )
    buckets = _payee_labels(buckets).with_columns(
        share=pl.col("transfers") / pl.col("transfers").sum().over("payee")
    )
    quantiles = marts.days(
        """SELECT day, payee_type, p25_paise / 100.0 AS "p25", p50_paise / 100.0 AS "median",
            p90_paise / 100.0 AS "p90"
        FROM {s}.ticket_quantiles WHERE {where} ORDER BY ALL"""
    )
    latest = marts.frame(
        """SELECT * FROM {s}.ticket_quantiles
        WHERE day = (SELECT max(day) FROM {s}.ticket_quantiles WHERE day <= ?)
        ORDER BY payee_type""",
        [marts.window.last if marts.window else dt.date.min],
    )
    page.cards = [
        Chart(
            "category-value",
            "Value by merchant category",
            _bars(
                merchant,
                "value",
                "category",
                "rupees",
                "Value",
                extra_tooltip=[alt.Tooltip("successful:Q", title="Transfers", format=",")],
            ),
            "Successful P2M value over the window.",
        ),
        Chart(
            "category-transfers",
            "Transfers by merchant category",
            _bars(
                merchant,
                "transfers",
                "category",
                "count",
                "Transfers",
                color="#f58518",
                sort=merchant["category"].to_list(),
            ),
            "All initiated P2M transfers, in the order of the value chart.",
        ),
        Chart(
            "channel-mix",
            "Channel mix by category",
            _stacked_share(channel, "category", "channel", "transfers", CHANNELS, sort=order),
            "How payers start the transfer: chat, scanning a QR code, an app intent or a "
            "collect request.",
            wide=True,
        ),
        Chart(
            "p2m-share",
            "P2M share, daily",
            _lines(share, "share", "measure", "share"),
            "Merchant payments as a share of successful value and transfers.",
        ),
        Chart(
            "ticket-bands",
            "Ticket size bands",
            _ticket_bands(buckets),
            "Share of successful transfers in each amount band, over the window.",
        ),
        Chart(
            "ticket-quantiles",
            "Ticket size quantiles, daily",
            _ticket_quantiles(quantiles),
            "Median and the 25th-90th percentile band of successful transfers; log scale.",
            wide=True,
        ),
        Table(
            f"Ticket sizes on {format_day(latest['day'][0])}"
            if not latest.is_empty()
            else "Ticket sizes",
            ["", "Transfers", "Mean", "p10", "p25", "Median", "p75", "p90", "p99"],
            [
                [
                    PAYEE_LABELS.get(row["payee_type"], row["payee_type"]),
                    format_count(row["transfers"]),
                    *(
                        format_rupees(row[c])
                        for c in (
                            "mean_paise",
                            "p10_paise",
                            "p25_paise",
                            "p50_paise",
                            "p75_paise",
                            "p90_paise",
                            "p99_paise",
                        )
                    ),
                ]
                for row in latest.to_dicts()
            ],
            "Successful transfers of the last day of the window.",
        ),
        Table(
            "Merchant categories",
            ["Category", "Transfers", "Value", "Share of P2M value", "Average ticket", "QR share"],
            [
                [
                    row["category"],
                    format_count(row["transfers"]),
                    format_rupees(row["value_paise"]),
                    format_share(_ratio(row["value_paise"], p2m_value)),
                    format_rupees(_ratio(row["value_paise"], row["successful"])),
                    format_share(
                        _ratio(channel_share.get((row["category"], "QR"), 0), row["transfers"])
                    ),
                ]
                for row in merchant.to_dicts()
            ],
            "Over the whole window. Transfers: initiated; value and average ticket: successful.",
        ),
    ]
    return page


def _ticket_bands(buckets: pl.DataFrame) -> dict[str, Any] | None:
    if buckets.is_empty():
        return None
    buckets = _formatted(buckets, "share", "share")
    bands = buckets.sort("bucket_order")["bucket"].unique(maintain_order=True).to_list()
    chart = (
        alt.Chart(DATA)
        .mark_bar()
        .encode(
            y=alt.Y("bucket:N", sort=bands, title=None),
            yOffset=alt.YOffset("payee:N", sort=list(PAYEE_COLORS)),
            x=alt.X("share:Q", axis=_axis("share", "Share of transfers")),
            color=alt.Color("payee:N", scale=_colors(PAYEE_COLORS)),
            tooltip=[
                alt.Tooltip("payee:N", title=" "),
                alt.Tooltip("bucket:N", title="Band"),
                alt.Tooltip("label:N", title="Share"),
                alt.Tooltip("transfers:Q", title="Transfers", format=","),
            ],
        )
    )
    return _spec(chart, buckets)


def _ticket_quantiles(quantiles: pl.DataFrame) -> dict[str, Any] | None:
    if quantiles.is_empty():
        return None
    frame = _payee_labels(quantiles)
    frame = _formatted(frame, "median", "rupees", into="median_label")
    frame = _formatted(frame, "p25", "rupees", into="p25_label")
    frame = _formatted(frame, "p90", "rupees", into="p90_label")
    # The band's opacity would fade the legend's symbols.
    color = alt.Color("payee:N", scale=_colors(PAYEE_COLORS), legend=alt.Legend(symbolOpacity=1))
    base = alt.Chart(DATA).encode(x=alt.X("day:T", axis=_day_axis()), color=color)
    log = alt.Scale(type="log")
    low, high = frame["p25"].min() or 1, frame["p90"].max() or 1
    # Log axes tick at every digit by default; 1-3-10 steps read better.
    ticks = [m * 10**e for e in range(0, 9) for m in (1, 3) if low / 3 <= m * 10**e <= high * 3]
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("p25:Q", scale=log, axis=_axis("rupees", "Ticket size", values=ticks)),
        y2="p90:Q",
    )
    line = base.mark_line(point=alt.OverlayMarkDef(size=18)).encode(
        y=alt.Y("median:Q", scale=log),
        tooltip=[
            alt.Tooltip("day:T", title="Day", format="%a %d %b %Y"),
            alt.Tooltip("payee:N", title=" "),
            alt.Tooltip("p25_label:N", title="p25"),
            alt.Tooltip("median_label:N", title="Median"),
            alt.Tooltip("p90_label:N", title="p90"),
        ],
    )
    return _spec(alt.layer(band, line), frame)


def _cohorts(marts: _Marts) -> Page:
    page = Page(
        "cohorts",
        "Cohorts and engagement",
        "Payers grouped by the week (Monday to Sunday, IST) of their first successful payment, "
        "and how many of them pay again in later weeks.",
    )
    window = marts.window
    retention = marts.frame(
        """SELECT cohort_week, week, week_number, cohort_users, active_users, retention
        FROM {s}.weekly_retention WHERE week + 6 <= ? AND cohort_week >= ?
        ORDER BY cohort_week, week_number""",
        [window.last, window.first - dt.timedelta(days=6)] if window else [dt.date.min] * 2,
    )
    retention = retention.with_columns(
        cohort=pl.Series(
            [
                f"w/c {_short_day(w)} ({format_count(n)})"
                for w, n in zip(
                    retention["cohort_week"].to_list(),
                    retention["cohort_users"].to_list(),
                    strict=True,
                )
            ],
            dtype=pl.String,
        )
    )
    weighted = (
        retention.group_by("week_number")
        .agg(
            active=pl.col("active_users").sum(),
            users=pl.col("cohort_users").sum(),
            cohorts=pl.len(),
        )
        .with_columns(retention=pl.col("active") / pl.col("users"))
        .sort("week_number")
    )
    active = marts.days(
        "SELECT day, dau AS DAU, wau AS WAU, mau AS MAU FROM {s}.daily_active WHERE {where}"
    ).unpivot(index="day", variable_name="measure", value_name="payers")
    sticky = marts.days(
        """SELECT day, 'DAU / MAU' AS measure, dau_mau AS stickiness
        FROM {s}.daily_active WHERE {where} AND dau_mau IS NOT NULL
        UNION ALL
        SELECT day, 'DAU / WAU', dau / wau FROM {s}.daily_active WHERE {where} AND wau > 0
        ORDER BY ALL"""
    )
    sizes = retention.filter(pl.col("week_number") == 0).select(
        pl.col("cohort_week").alias("day"), payers=pl.col("cohort_users")
    )
    page.cards = [
        Chart(
            "retention-heatmap",
            "Weekly retention by cohort",
            _heatmap(retention),
            "Share of each cohort (size in brackets) with a successful payment in each later "
            "week; week 0 is the cohort's first week. Only complete weeks.",
            empty="No complete week yet: retention needs at least one Monday-to-Sunday week.",
            wide=True,
        ),
        Chart(
            "retention-curve",
            "Retention by weeks since first payment",
            _retention_curve(weighted),
            "All cohorts together, weighted by cohort size.",
            empty="No complete week yet.",
        ),
        Chart(
            "cohort-sizes",
            "New payers a week",
            _week_bars(sizes),
            "Payers whose first successful payment fell in the week.",
            empty="No complete week yet.",
        ),
        Chart(
            "cohort-active",
            "DAU, WAU and MAU",
            _lines(active, "payers", "measure", "count", ACTIVE),
        ),
        Chart(
            "stickiness",
            "Stickiness",
            _lines(
                sticky,
                "stickiness",
                "measure",
                "share",
                {"DAU / MAU": "#9d755d", "DAU / WAU": "#72b7b2"},
            ),
            "How many of the month's (or week's) payers pay on a given day.",
        ),
    ]
    return page


def _heatmap(retention: pl.DataFrame) -> dict[str, Any] | None:
    if retention.is_empty():
        return None
    frame = _formatted(retention, "retention", "share", into="label")
    frame = frame.with_columns(
        label_short=pl.Series(
            [format_share(v, 0) for v in frame["retention"].to_list()], dtype=pl.String
        ),
    )
    cohorts = frame.sort("cohort_week")["cohort"].unique(maintain_order=True).to_list()
    base = alt.Chart(DATA).encode(
        x=alt.X("week_number:O", title="Weeks since first payment", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("cohort:N", sort=cohorts, title=None),
    )
    cells = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color(
            "retention:Q",
            scale=alt.Scale(scheme="blues", domain=[0, 1]),
            legend=alt.Legend(format=".0%", orient="right", title=None),
        ),
        tooltip=[
            alt.Tooltip("cohort:N", title="Cohort"),
            alt.Tooltip("week_number:O", title="Week"),
            alt.Tooltip("week:T", title="Week of", format="%d %b %Y"),
            alt.Tooltip("active_users:Q", title="Active payers", format=","),
            alt.Tooltip("label:N", title="Retention"),
        ],
    )
    text = base.mark_text(fontSize=11).encode(
        text="label_short:N",
        color=alt.condition("datum.retention > 0.55", alt.value("white"), alt.value("#1f2933")),
    )
    return _spec(alt.layer(cells, text), frame, height=max(90, 28 * len(cohorts)))


def _retention_curve(weighted: pl.DataFrame) -> dict[str, Any] | None:
    if weighted.is_empty():
        return None
    frame = _formatted(weighted, "retention", "share")
    chart = (
        alt.Chart(DATA)
        .mark_line(point=True, color="#4c78a8")
        .encode(
            x=alt.X(
                "week_number:O", title="Weeks since first payment", axis=alt.Axis(labelAngle=0)
            ),
            y=alt.Y("retention:Q", axis=_axis("share"), scale=alt.Scale(domain=[0, 1])),
            tooltip=[
                alt.Tooltip("week_number:O", title="Week"),
                alt.Tooltip("label:N", title="Retention"),
                alt.Tooltip("cohorts:Q", title="Cohorts"),
            ],
        )
    )
    return _spec(chart, frame)


def _week_bars(sizes: pl.DataFrame) -> dict[str, Any] | None:
    if sizes.is_empty():
        return None
    frame = _formatted(sizes, "payers", "count")
    frame = frame.with_columns(
        week=pl.Series([f"w/c {_short_day(d)}" for d in frame["day"].to_list()], dtype=pl.String)
    )
    bars = (
        alt.Chart(DATA)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X(
                "week:N", sort=frame["week"].to_list(), title=None, axis=alt.Axis(labelAngle=0)
            ),
            y=alt.Y("payers:Q", axis=_axis("count")),
            tooltip=[alt.Tooltip("week:N", title="Week"), alt.Tooltip("label:N", title="Payers")],
        )
    )
    text = bars.mark_text(dy=-6, color="#4a5568", fontSize=10).encode(text="label:N")
    return _spec(alt.layer(bars, text), frame)


def _funnel(marts: _Marts) -> Page:
    page = Page(
        "funnel",
        "Activation funnel",
        "People who registered in the window (by registration day, IST), followed to the end "
        "of the data: bank account linked, first successful payment, fifth successful payment.",
    )
    cohorts = marts.days(
        """SELECT cohort_day AS day, registered, bank_linked, first_payment, fifth_payment,
            median_hours_to_link, median_hours_link_to_first, median_hours_first_to_fifth,
            observed_through
        FROM {s}.activation_funnel WHERE {where} ORDER BY cohort_day""",
        column="cohort_day",
    )
    steps = [
        ("Registered", "registered"),
        ("Bank linked", "bank_linked"),
        ("First payment", "first_payment"),
        ("Fifth payment", "fifth_payment"),
    ]
    totals = {column: int(cohorts[column].sum() or 0) for _, column in steps}
    funnel = pl.DataFrame(
        {
            "step": [label for label, _ in steps],
            "users": [totals[column] for _, column in steps],
        },
        schema={"step": pl.String, "users": pl.Int64},
    )
    medians = {
        column: cohorts[column].drop_nulls().median()
        for column in (
            "median_hours_to_link",
            "median_hours_link_to_first",
            "median_hours_first_to_fifth",
        )
    }
    if totals["registered"]:
        conversions = [
            ("Registered → bank linked", totals["bank_linked"], totals["registered"]),
            ("Bank linked → first payment", totals["first_payment"], totals["bank_linked"]),
            ("First → fifth payment", totals["fifth_payment"], totals["first_payment"]),
            ("Registered → first payment", totals["first_payment"], totals["registered"]),
        ]
        page.tiles = [
            Tile(label, format_share(_ratio(part, whole)), note=f"{format_count(part)} users")
            for label, part, whole in conversions
        ]
        for label, column in (
            ("Hours to link a bank", "median_hours_to_link"),
            ("Hours from link to first payment", "median_hours_link_to_first"),
            ("Hours from first to fifth payment", "median_hours_first_to_fifth"),
        ):
            value = medians[column]
            page.tiles.append(
                Tile(
                    label,
                    "–" if value is None else f"{value:.1f} h",
                    note="median across daily cohorts",
                )
            )
        observed = cohorts["observed_through"].max()
        if observed is not None:
            page.intro += f" Steps observed through {format_day(observed)}."
    else:
        funnel = funnel.clear()
    conversion = cohorts.select(
        "day",
        **{
            label: pl.when(pl.col("registered") > 0).then(pl.col(column) / pl.col("registered"))
            for label, column in steps[1:]
        },
    ).unpivot(index="day", variable_name="step", value_name="share")
    hours = cohorts.select(
        "day",
        **{
            "Registration → bank link": "median_hours_to_link",
            "Bank link → first payment": "median_hours_link_to_first",
            "First → fifth payment": "median_hours_first_to_fifth",
        },
    ).unpivot(index="day", variable_name="step", value_name="hours")
    hours = hours.filter(pl.col("hours").is_not_null())
    daily = marts.days(
        """SELECT day, registered AS "Registered", bank_linked AS "Bank linked",
            activated AS "Activated (first payment)"
        FROM {s}.daily_users WHERE {where} ORDER BY day"""
    ).unpivot(index="day", variable_name="step", value_name="users")
    step_colors = {
        "Registered": "#4c78a8",
        "Bank linked": "#72b7b2",
        "First payment": "#f58518",
        "Fifth payment": "#e45756",
    }
    page.cards = [
        Chart(
            "funnel-steps",
            "Funnel",
            _funnel_bars(funnel),
            "Users of all the window's cohorts who reached each step; percentage of registered.",
            empty="Nobody registered in this window.",
        ),
        Chart(
            "funnel-conversion",
            "Conversion by cohort day",
            _lines(conversion, "share", "step", "share", step_colors),
            "Share of each day's registrations that reached the step by the end of the data; "
            "recent cohorts have had less time.",
        ),
        Chart(
            "funnel-hours",
            "Median hours between steps, by cohort day",
            _lines(
                hours,
                "hours",
                "step",
                "hours",
                {
                    "Registration → bank link": "#72b7b2",
                    "Bank link → first payment": "#f58518",
                    "First → fifth payment": "#e45756",
                },
                y_title="hours",
            ),
        ),
        Chart(
            "funnel-daily",
            "Daily registrations and activations",
            _lines(
                daily,
                "users",
                "step",
                "count",
                {
                    "Registered": "#4c78a8",
                    "Bank linked": "#72b7b2",
                    "Activated (first payment)": "#f58518",
                },
            ),
            "Counted on the day each person reached the step, whenever they registered.",
        ),
    ]
    return page


def _funnel_bars(funnel: pl.DataFrame) -> dict[str, Any] | None:
    if funnel.is_empty():
        return None
    top = funnel["users"][0] or 1
    frame = funnel.with_columns(share=pl.col("users") / top)
    frame = frame.with_columns(
        label=pl.Series(
            [
                f"{format_count(u)} ({format_share(s, 0)})"
                for u, s in zip(frame["users"].to_list(), frame["share"].to_list(), strict=True)
            ],
            dtype=pl.String,
        )
    )
    order = frame["step"].to_list()
    colors = ["#4c78a8", "#72b7b2", "#f58518", "#e45756"]
    bars = (
        alt.Chart(DATA)
        .mark_bar(cornerRadiusEnd=2)
        .encode(
            y=alt.Y("step:N", sort=order, title=None),
            x=alt.X("users:Q", axis=_axis("count", "Users")),
            color=alt.Color("step:N", scale=alt.Scale(domain=order, range=colors), legend=None),
            tooltip=[alt.Tooltip("step:N", title="Step"), alt.Tooltip("label:N", title="Users")],
        )
    )
    text = bars.mark_text(align="left", dx=4, color="#1f2933").encode(text="label:N")
    return _spec(alt.layer(bars, text), frame, height=170)


def _risk(marts: _Marts) -> Page:
    page = Page(
        "risk",
        "Risk friction",
        "How many transfers and how much value the risk decisions held or blocked, and whether "
        "payers who met friction came back the next week.",
    )
    decisions = marts.days(
        """SELECT day, payee_type, decision, sum(transfers) AS transfers,
            sum(value_paise) AS value_paise
        FROM {s}.daily_friction WHERE {where} GROUP BY ALL ORDER BY ALL"""
    )
    decided = decisions.filter(pl.col("decision") != "UNSCORED")["transfers"].sum() or 0
    stopped = decisions.filter(pl.col("decision").is_in(["HOLD", "BLOCK"]))
    if not decisions.is_empty() and decided == 0:
        page.notices.append(
            "No risk decisions yet: every transfer in this window is UNSCORED, so nothing was "
            "held or blocked. The charts show zero friction until the risk loop scores transfers."
        )
    elif not decisions.is_empty() and stopped.is_empty():
        page.notices.append("No transfer in this window was held or blocked.")
    total = decisions["transfers"].sum() or 0
    total_value = decisions["value_paise"].sum() or 0
    if total:
        held = stopped.filter(pl.col("decision") == "HOLD")
        blocked = stopped.filter(pl.col("decision") == "BLOCK")
        page.tiles = [
            Tile(
                "Held or blocked",
                format_share(_ratio(stopped["transfers"].sum(), total), 2),
                note="share of transfers",
            ),
            Tile(
                "Value held or blocked",
                format_share(_ratio(stopped["value_paise"].sum(), total_value), 2),
                note=format_rupees(stopped["value_paise"].sum()),
            ),
            Tile("Held", format_count(held["transfers"].sum()), note="transfers"),
            Tile("Blocked", format_count(blocked["transfers"].sum()), note="transfers"),
            Tile("Scored", format_share(_ratio(decided, total)), note="transfers with a decision"),
        ]
    daily = (
        decisions.group_by("day", "decision")
        .agg(pl.col("transfers").sum(), pl.col("value_paise").sum())
        .with_columns(
            transfers_share=pl.col("transfers") / pl.col("transfers").sum().over("day"),
            value_share=pl.col("value_paise") / pl.col("value_paise").sum().over("day"),
        )
    )
    # Every day gets a HOLD and a BLOCK row, zero when there was none, so the chart shows
    # zero friction rather than nothing.
    grid = (
        daily.select("day")
        .unique()
        .join(pl.DataFrame({"decision": ["HOLD", "BLOCK"]}), how="cross")
    )
    friction = grid.join(daily, on=["day", "decision"], how="left").fill_null(0).sort("day")
    by_type = (
        _payee_labels(decisions)
        .group_by("payee", "decision")
        .agg(pl.col("transfers").sum())
        .sort("payee", "decision")
    )
    retention = marts.frame(
        """SELECT week, CASE WHEN held THEN 'Held or blocked' ELSE 'Not held' END AS payers_group,
            payers, retained, retention
        FROM {s}.friction_retention WHERE week + 13 <= ? AND week >= ?
        ORDER BY week, held""",
        [marts.window.last, marts.window.first - dt.timedelta(days=6)]
        if marts.window
        else [dt.date.min] * 2,
    )
    retention_colors = {"Not held": "#4c78a8", "Held or blocked": "#e45756"}
    page.cards = [
        Chart(
            "friction-transfers",
            "Share of transfers held or blocked",
            _lines(
                friction.rename({"transfers_share": "share"}).select("day", "decision", "share"),
                "share",
                "decision",
                "share",
                {k: DECISIONS[k] for k in ("HOLD", "BLOCK")},
                area=True,
            ),
            "Stacked: held on top of blocked.",
        ),
        Chart(
            "friction-value",
            "Share of value held or blocked",
            _lines(
                friction.rename({"value_share": "share"}).select("day", "decision", "share"),
                "share",
                "decision",
                "share",
                {k: DECISIONS[k] for k in ("HOLD", "BLOCK")},
                area=True,
            ),
            "Value of all transfers initiated that day.",
        ),
        Chart(
            "friction-payee",
            "Decisions by payee type",
            _stacked_share(by_type, "payee", "decision", "transfers", DECISIONS),
            "All transfers of the window; UNSCORED: no decision took effect.",
            wide=True,
        ),
        Chart(
            "friction-retention",
            "Next-week retention, held vs not held",
            _friction_retention(retention, retention_colors),
            "Payers who tried to pay in the week, split by whether any of their transfers was "
            "held or blocked; retained: a successful payment the week after.",
            empty="No complete pair of weeks yet: this needs a week and the week after it.",
            wide=True,
        ),
        Table(
            "Retention of held and not-held payers",
            ["Week of", "Group", "Tried to pay", "Paid the next week", "Retention"],
            [
                [
                    format_day(row["week"]),
                    row["payers_group"],
                    format_count(row["payers"]),
                    format_count(row["retained"]),
                    format_share(row["retention"]),
                ]
                for row in retention.to_dicts()
            ],
            empty="No complete pair of weeks yet.",
        ),
    ]
    return page


def _friction_retention(retention: pl.DataFrame, colors: dict[str, str]) -> dict[str, Any] | None:
    if retention.is_empty():
        return None
    frame = _formatted(retention, "retention", "share")
    frame = frame.with_columns(
        week_label=pl.Series(
            [f"w/c {_short_day(d)}" for d in frame["week"].to_list()], dtype=pl.String
        )
    )
    weeks = frame.sort("week")["week_label"].unique(maintain_order=True).to_list()
    bars = (
        alt.Chart(DATA)
        .mark_bar()
        .encode(
            x=alt.X("week_label:N", sort=weeks, title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("payers_group:N", sort=list(colors)),
            y=alt.Y(
                "retention:Q",
                axis=_axis("share", "Retained next week"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=alt.Color("payers_group:N", scale=_colors(colors)),
            tooltip=[
                alt.Tooltip("week_label:N", title="Week"),
                alt.Tooltip("payers_group:N", title="Payers"),
                alt.Tooltip("payers:Q", title="Count", format=","),
                alt.Tooltip("label:N", title="Retention"),
            ],
        )
    )
    return _spec(bars, frame)


# --- rendering --------------------------------------------------------------------------------


@functools.cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script that sets `window.vegaEmbed`.

    Built once per process: bundling takes over a second and the result is ~900 KB.
    """
    # Inline in a <script>: a closing tag inside would end the element early.
    return vl_convert.javascript_bundle().replace("</script", "<\\/script")


_CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #e4e7eb; --bg: #f5f7fa; --accent: #3b5b92; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); }
nav { display: flex; gap: 4px; align-items: center; padding: 0 24px; background: #233044;
  overflow-x: auto; }
nav .brand { color: #fff; font-weight: 600; margin-right: 16px; white-space: nowrap; }
nav a { color: #cfd8e3; text-decoration: none; padding: 12px 12px; white-space: nowrap;
  border-bottom: 3px solid transparent; }
nav a:hover { color: #fff; }
nav a[aria-current="page"] { color: #fff; border-bottom-color: #f5a623; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 8px; }
h1 { font-size: 22px; margin: 4px 0 2px; }
.window { color: var(--muted); margin: 0 0 6px; }
.intro { color: var(--muted); margin: 0 0 16px; max-width: 900px; }
.notice { background: #fff8e1; border: 1px solid #f3d98b; border-radius: 6px;
  padding: 10px 14px; margin: 0 0 16px; }
.notice.empty { background: #eef2f7; border-color: #cbd2d9; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px;
  margin-bottom: 18px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .03em; }
.tile .value { font-size: 24px; font-weight: 600; margin: 2px 0; white-space: nowrap; }
.tile .change { font-size: 13px; font-weight: 600; }
.tile .change.good { color: #1a7f37; } .tile .change.bad { color: #c62828; }
.tile .change.flat { color: var(--muted); font-weight: normal; }
.tile .note { color: var(--muted); font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
  min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.card h2 { font-size: 15px; margin: 0 0 2px; }
.card .note { color: var(--muted); font-size: 12px; margin: 0 0 8px; }
.chart { width: 100%; }
.nodata { color: var(--muted); background: var(--bg); border: 1px dashed #cbd2d9;
  border-radius: 6px; padding: 28px 12px; text-align: center; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
.scroll { max-height: 420px; overflow-y: auto; }
footer { max-width: 1240px; margin: 0 auto; padding: 16px 24px 28px; color: var(--muted);
  font-size: 12px; }
@media (max-width: 860px) { .cards { grid-template-columns: 1fr; } }
"""

# Runs after the bundle; wrapped in a function so its names cannot meet the bundle's globals.
_EMBED_JS = """
(function () {
  var body = document.body;
  var errors = [];
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  var nodes = Array.prototype.slice.call(document.querySelectorAll(".chart"));
  function finish(rendered) {
    body.dataset.chartErrors = errors.join("\\n");
    body.dataset.chartsRendered = String(rendered);
  }
  if (typeof window.vegaEmbed !== "function") {
    errors.push("vegaEmbed is not available");
    finish(0);
    return;
  }
  Promise.all(nodes.map(function (node) {
    var name = node.getAttribute("data-chart");
    return window.vegaEmbed(node, specs[name], {actions: false, renderer: "svg"})
      .then(function () { return 1; })
      .catch(function (err) {
        errors.push(name + ": " + (err && err.message ? err.message : String(err)));
        return 0;
      });
  })).then(function (done) {
    finish(done.reduce(function (a, b) { return a + b; }, 0));
  });
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _render_tile(tile: Tile) -> str:
    change = f'<div class="change {tile.tone}">{_e(tile.change)}</div>' if tile.change else ""
    note = f'<div class="note">{_e(tile.note)}</div>' if tile.note else ""
    return (
        f'<div class="tile"><div class="label">{_e(tile.label)}</div>'
        f'<div class="value">{_e(tile.value)}</div>{change}{note}</div>'
    )


def _render_card(card: Chart | Table) -> str:
    classes = "card wide" if card.wide else "card"
    note = f'<p class="note">{_e(card.note)}</p>' if card.note else ""
    if isinstance(card, Chart):
        body = (
            f'<div class="chart" data-chart="{_e(card.name)}"></div>'
            if card.spec is not None
            else f'<div class="nodata">{_e(card.empty)}</div>'
        )
    elif card.rows:
        head = "".join(f"<th>{_e(c)}</th>" for c in card.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in card.rows
        )
        body = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    else:
        body = f'<div class="nodata">{_e(card.empty)}</div>'
    return f'<section class="{classes}"><h2>{_e(card.title)}</h2>{note}{body}</section>'


def _script_json(value: object) -> str:
    # JSON inside <script>: escape what could close the element or open a comment.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(page: Page, window: Window | None) -> str:
    """One page as a complete HTML document, scripts and data inline."""
    nav = "".join(
        f'<a href="{name}.html"{" aria-current=page" if name == page.name else ""}>{_e(label)}</a>'
        for name, label in PAGES.items()
    )
    span = window.label if window else "no data"
    span_line = f"Data window: {span} (IST days)" if window else "Data window: none yet"
    notices = list(page.notices)
    empty = window is None
    if empty:
        notices.insert(
            0,
            "No data: the adoption marts have no rows for this window. Build them with "
            "build_marts (or materialize the adoption assets) and write the dashboards again.",
        )
    notice_html = "".join(
        f'<div class="notice{" empty" if empty else ""}">{_e(n)}</div>' for n in notices
    )
    tiles = (
        f'<div class="tiles">{"".join(_render_tile(t) for t in page.tiles)}</div>'
        if page.tiles
        else ""
    )
    cards = "".join(_render_card(c) for c in page.cards)
    specs = {c.name: c.spec for c in page.cards if isinstance(c, Chart) and c.spec is not None}
    title = f"{page.heading} · {span}"
    return f"""<!DOCTYPE html>
<html lang="en-IN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<nav><span class="brand">UPI adoption</span>{nav}</nav>
<main>
<h1>{_e(page.heading)}</h1>
<p class="window">{_e(span_line)}</p>
<p class="intro">{_e(page.intro)}</p>
{notice_html}
{tiles}
<div class="cards">{cards}</div>
</main>
<footer>People appear in the adoption marts only as keyed tokens (HMAC of the UPI id); these
pages show aggregates only, never a person. Money in rupees: L = lakh (1,00,000),
Cr = crore (1,00,00,000). Days are India (IST) calendar days.</footer>
<script type="application/json" id="chart-specs">{_script_json(specs)}</script>
<script>{javascript_bundle()}</script>
<script>{_EMBED_JS}</script>
</body>
</html>
"""


_BUILDERS: dict[str, Callable[[_Marts], Page]] = {
    "overview": _overview,
    "geography": _geography,
    "merchants": _merchants,
    "cohorts": _cohorts,
    "funnel": _funnel,
    "risk": _risk,
}


def write_dashboards(
    con: duckdb.DuckDBPyConnection, out_dir: Path, *, as_of: dt.date | None = None
) -> dict[str, Path]:
    """Write the six adoption pages into `out_dir` from the `adoption` marts; return their paths.

    `as_of` is the last day shown (default: the last day in `adoption.daily_volume`); the
    overview compares the 7 days ending it with the 7 before. Reads the marts only.
    """
    missing = _missing_marts(con)
    if missing:
        raise LookupError(
            f"adoption marts missing from the warehouse: {', '.join(f'{SCHEMA}.{m}' for m in missing)}; "
            "build them first (pipelines.adoption.marts.build_marts)"
        )
    window = _window(con, as_of)
    marts = _Marts(con, window)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, build in _BUILDERS.items():
        page = build(marts)
        path = out_dir / f"{name}.html"
        path.write_text(render_page(page, window), encoding="utf-8")
        written[name] = path
    return written
