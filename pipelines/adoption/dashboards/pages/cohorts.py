"""Cohorts and engagement: weekly retention by first-payment week, active payers, stickiness."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from pipelines.adoption.dashboards.charts import ACTIVE, DATA, axis, formatted, lines, spec
from pipelines.adoption.dashboards.data import Marts, active_payers
from pipelines.adoption.dashboards.formatting import format_count, format_share, short_day
from pipelines.adoption.dashboards.model import Chart, Page

LABEL = "Cohorts"


def build(marts: Marts) -> Page:
    page = Page(
        "Cohorts and engagement",
        "Payers grouped by the week (Monday to Sunday, IST) of their first successful payment, "
        "and how many of them pay again in later weeks.",
    )
    retention = marts.weeks(
        """SELECT cohort_week, week, week_number, cohort_users, active_users, retention
        FROM {s}.weekly_retention WHERE {where} ORDER BY cohort_week, week_number""",
        "weekly_retention",
        column="cohort_week",
    )
    retention = retention.with_columns(
        cohort=pl.Series(
            [
                f"w/c {short_day(w)} ({format_count(n)})"
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
    days = marts.window_days
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
            lines(active_payers(marts), "payers", "measure", "count", days=days, colors=ACTIVE),
        ),
        Chart(
            "stickiness",
            "Stickiness",
            lines(
                sticky,
                "stickiness",
                "measure",
                "share",
                days=days,
                colors={"DAU / MAU": "#9d755d", "DAU / WAU": "#72b7b2"},
            ),
            "How many of the month's (or week's) payers pay on a given day.",
        ),
    ]
    return page


def _heatmap(retention: pl.DataFrame) -> dict[str, Any] | None:
    if retention.is_empty():
        return None
    frame = formatted(retention, "retention", "share", into="label")
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
    return spec(alt.layer(cells, text), frame, height=max(90, 28 * len(cohorts)))


def _retention_curve(weighted: pl.DataFrame) -> dict[str, Any] | None:
    if weighted.is_empty():
        return None
    frame = formatted(weighted, "retention", "share")
    chart = (
        alt.Chart(DATA)
        .mark_line(point=True, color="#4c78a8")
        .encode(
            x=alt.X(
                "week_number:O", title="Weeks since first payment", axis=alt.Axis(labelAngle=0)
            ),
            y=alt.Y("retention:Q", axis=axis("share"), scale=alt.Scale(domain=[0, 1])),
            tooltip=[
                alt.Tooltip("week_number:O", title="Week"),
                alt.Tooltip("label:N", title="Retention"),
                alt.Tooltip("cohorts:Q", title="Cohorts"),
            ],
        )
    )
    return spec(chart, frame)


def _week_bars(sizes: pl.DataFrame) -> dict[str, Any] | None:
    if sizes.is_empty():
        return None
    frame = formatted(sizes, "payers", "count")
    frame = frame.with_columns(
        week=pl.Series([f"w/c {short_day(d)}" for d in frame["day"].to_list()], dtype=pl.String)
    )
    drawn = (
        alt.Chart(DATA)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X(
                "week:N", sort=frame["week"].to_list(), title=None, axis=alt.Axis(labelAngle=0)
            ),
            y=alt.Y("payers:Q", axis=axis("count")),
            tooltip=[alt.Tooltip("week:N", title="Week"), alt.Tooltip("label:N", title="Payers")],
        )
    )
    text = drawn.mark_text(dy=-6, color="#4a5568", fontSize=10).encode(text="label:N")
    return spec(alt.layer(drawn, text), frame)
