"""Vega-Lite specs (built with Altair) of the charts the pages share: daily lines, bars, shares."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import altair as alt
import polars as pl

from pipelines.adoption.dashboards.formatting import (
    COUNT_AXIS_LABELS,
    RUPEE_AXIS_LABELS,
    SHARE_AXIS_FORMAT,
    format_count,
    format_hours,
    format_rupees,
    format_share,
)

PAYEE_COLORS = {"P2P": "#4c78a8", "P2M": "#f58518"}
CHANNELS = {"CHAT": "#4c78a8", "QR": "#f58518", "INTENT": "#54a24b", "COLLECT": "#b279a2"}
DECISIONS = {"ALLOW": "#54a24b", "HOLD": "#eca82c", "BLOCK": "#e45756", "UNSCORED": "#bab0ac"}
ACTIVE = {"DAU": "#4c78a8", "WAU": "#72b7b2", "MAU": "#9d755d"}
BAD = "#c62828"  # failures; the tiles colour changes in CSS

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

# Charts name their data and the rows go in as the spec's inline `datasets` after validation:
# validating every row against the Vega-Lite schema took longer than everything else.
DATA = alt.Data(name="table")

# What a chart's values are, and how one reads in a tooltip or a label.
_FORMATS: dict[str, Callable[[Any], str]] = {
    "rupees": lambda rupees: format_rupees(rupees * 100),
    "count": format_count,
    "share": format_share,
    "hours": format_hours,
}


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
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


def formatted(frame: pl.DataFrame, column: str, kind: str, into: str = "label") -> pl.DataFrame:
    """`frame` with `column` formatted as `kind` in a new column `into`."""
    fmt = _FORMATS[kind]
    labels = ["–" if v is None else fmt(v) for v in frame[column].to_list()]
    return frame.with_columns(pl.Series(into, labels, dtype=pl.String))


def axis(kind: str, title: str | None = None, **options: Any) -> alt.Axis:
    options.setdefault("tickCount", 6)
    if kind == "rupees":
        return alt.Axis(title=title, labelExpr=RUPEE_AXIS_LABELS, **options)
    if kind == "count":
        return alt.Axis(title=title, labelExpr=COUNT_AXIS_LABELS, **options)
    if kind == "share":
        return alt.Axis(title=title, format=SHARE_AXIS_FORMAT, **options)
    return alt.Axis(title=title, **options)


def day_axis() -> alt.Axis:
    return alt.Axis(title=None, format="%-d %b", labelAngle=0, labelOverlap=True, labelSeparation=6)


def color_scale(mapping: dict[str, str], present: Sequence[str] | None = None) -> alt.Scale:
    keys = [k for k in mapping if present is None or k in present]
    return alt.Scale(domain=keys, range=[mapping[k] for k in keys])


def spec(chart: alt.TopLevelMixin, frame: pl.DataFrame, height: int = 220) -> dict[str, Any]:
    """The chart's Vega-Lite spec with `frame` inline as its data."""
    out = chart.properties(width="container", height=height).to_dict()
    out["datasets"] = {"table": records(frame)}
    out["config"] = CHART_CONFIG
    out["autosize"] = {"type": "fit-x", "contains": "padding"}
    return out


def every_day(frame: pl.DataFrame, series: str, days: Sequence[dt.date]) -> pl.DataFrame:
    """`frame` with a row for each of `days` and each series, its values null where it had none."""
    grid = pl.DataFrame({"day": days}, schema={"day": pl.Date}).join(
        frame.select(series).unique(maintain_order=True), how="cross"
    )
    return grid.join(frame, on=["day", series], how="left")


def lines(
    frame: pl.DataFrame,
    y: str,
    series: str,
    kind: str,
    *,
    days: Sequence[dt.date],
    colors: dict[str, str] | None = None,
    y_title: str | None = None,
    area: bool = False,
    zero: bool = True,
) -> dict[str, Any] | None:
    """Daily series over `days`: `day`, a `series` name and a `y` value a row. A day with no
    value breaks its line (Vega-Lite draws no path through a null): a gap looks like a gap."""
    if frame.is_empty():
        return None
    frame = formatted(every_day(frame, series, days), y, kind)
    present = frame[series].unique().to_list()
    color = alt.Color(
        f"{series}:N",
        scale=color_scale(colors, present) if colors else alt.Undefined,
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
    y_enc = alt.Y(f"{y}:Q", axis=axis(kind, y_title), scale=scale, stack="zero" if area else None)
    chart = mark.encode(x=alt.X("day:T", axis=day_axis()), y=y_enc, color=color, tooltip=tooltip)
    return spec(chart, frame)


def bars(
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
    frame = formatted(frame, x, kind)
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
    drawn = mark.encode(
        y=alt.Y(
            f"{category}:N",
            sort=order,
            title=None,
            axis=alt.Axis(labelLimit=190, grid=dots),
        ),
        x=alt.X(f"{x}:Q", axis=axis(kind, title), scale=scale),
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
    return spec(alt.layer(drawn, text), frame, height=max(120, 18 * frame.height + 20))


def stacked_share(
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
    frame = formatted(frame.drop("_total"), "share", "share")
    present = frame[part].unique().to_list()
    chart = (
        alt.Chart(DATA)
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", sort=list(sort) if sort else alt.Undefined, title=None),
            x=alt.X("share:Q", stack="normalize", axis=axis("share")),
            color=alt.Color(f"{part}:N", scale=color_scale(colors, present)),
            order=alt.Order("part_order:Q"),
            tooltip=[
                alt.Tooltip(f"{category}:N", title=" "),
                alt.Tooltip(f"{part}:N", title="  "),
                alt.Tooltip("label:N", title="Share"),
            ],
        )
        .transform_calculate(part_order=f"indexof({json.dumps(list(colors))}, datum['{part}'])")
    )
    return spec(chart, frame, height=max(120, 20 * frame[category].n_unique() + 30))
