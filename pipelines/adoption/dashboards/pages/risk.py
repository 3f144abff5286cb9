"""Risk friction: transfers and value held or blocked, and whether held payers came back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import altair as alt
import polars as pl

from pipelines.adoption.dashboards.charts import (
    DATA,
    DECISIONS,
    axis,
    color_scale,
    formatted,
    lines,
    spec,
    stacked_share,
)
from pipelines.adoption.dashboards.data import Marts, payee_labels, ratio
from pipelines.adoption.dashboards.formatting import (
    format_count,
    format_rupees,
    format_share,
    short_day,
)
from pipelines.adoption.dashboards.model import Chart, Column, Page, Table, Tile

LABEL = "Risk friction"
_STOPPED = ("HOLD", "BLOCK")
_RETENTION_COLORS = {"Not held": "#4c78a8", "Held or blocked": "#e45756"}


def build(marts: Marts) -> Page:
    page = Page(
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
    stopped = decisions.filter(pl.col("decision").is_in(_STOPPED))
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
                format_share(ratio(stopped["transfers"].sum(), total), 2),
                note="share of transfers",
            ),
            Tile(
                "Value held or blocked",
                format_share(ratio(stopped["value_paise"].sum(), total_value), 2),
                note=format_rupees(stopped["value_paise"].sum()),
            ),
            Tile("Held", format_count(held["transfers"].sum()), note="transfers"),
            Tile("Blocked", format_count(blocked["transfers"].sum()), note="transfers"),
            Tile("Scored", format_share(ratio(decided, total)), note="transfers with a decision"),
        ]
    daily = (
        decisions.group_by("day", "decision")
        .agg(pl.col("transfers").sum(), pl.col("value_paise").sum())
        .with_columns(
            transfers_share=pl.col("transfers") / pl.col("transfers").sum().over("day"),
            value_share=pl.col("value_paise") / pl.col("value_paise").sum().over("day"),
        )
    )
    # A day with transfers gets a HOLD and a BLOCK row, zero when there was none, so the chart
    # shows zero friction rather than nothing; a day without any stays a gap.
    grid = (
        daily.select("day").unique().join(pl.DataFrame({"decision": list(_STOPPED)}), how="cross")
    )
    friction = grid.join(daily, on=["day", "decision"], how="left").fill_null(0).sort("day")
    by_type = (
        payee_labels(decisions)
        .group_by("payee", "decision")
        .agg(pl.col("transfers").sum())
        .sort("payee", "decision")
    )
    retention = marts.weeks(
        """SELECT week, CASE WHEN held THEN 'Held or blocked' ELSE 'Not held' END AS payers_group,
            payers, retained, retention
        FROM {s}.friction_retention WHERE {where} ORDER BY week, held""",
        "friction_retention",
    )
    online = marts.days(
        """SELECT day, decision, fallback, decisions, latency_ms_p50, latency_ms_p99,
            latency_ms_max
        FROM {s}.online_decisions_daily WHERE {where} ORDER BY day, decision"""
    )
    page.cards = [
        *_online_cards(online, marts.window_days),
        Chart(
            "friction-transfers",
            "Share of transfers held or blocked",
            _stopped_share(friction, "transfers_share", marts.window_days),
            "Stacked: held on top of blocked.",
        ),
        Chart(
            "friction-value",
            "Share of value held or blocked",
            _stopped_share(friction, "value_share", marts.window_days),
            "Value of all transfers initiated that day.",
        ),
        Chart(
            "friction-payee",
            "Decisions by payee type",
            stacked_share(by_type, "payee", "decision", "transfers", DECISIONS),
            "All transfers of the window; UNSCORED: no decision took effect.",
            wide=True,
        ),
        Chart(
            "friction-retention",
            "Next-week retention, held vs not held",
            _friction_retention(retention),
            "Payers who tried to pay in the week, split by whether any of their transfers was "
            "held or blocked; retained: a successful payment the week after.",
            empty="No complete pair of weeks yet: this needs a week and the week after it.",
            wide=True,
        ),
        Table(
            "Retention of held and not-held payers",
            [
                Column("Week of", "day"),
                Column("Group"),
                Column("Tried to pay", "count"),
                Column("Paid the next week", "count"),
                Column("Retention", "share"),
            ],
            [
                [row["week"], row["payers_group"], row["payers"], row["retained"], row["retention"]]
                for row in retention.to_dicts()
            ],
            empty="No complete pair of weeks yet.",
        ),
    ]
    return page


def _online_cards(online: pl.DataFrame, days: list[dt.date]) -> list[Chart | Table]:
    """Decisions made online, before the money moved: how many, by decision, how many the
    fallback made, and the service's latency (per day: its median and 99th percentile)."""
    by_decision = online.group_by("day", "decision").agg(pl.col("decisions").sum())
    daily = (
        online.group_by("day")
        .agg(
            pl.col("decisions").sum(),
            pl.col("decisions").filter(pl.col("fallback")).sum().alias("fallbacks"),
            # A day's latency is its largest group's percentiles: exact when one decision type
            # dominates (ALLOW), an upper bound of the median otherwise.
            pl.col("latency_ms_p50").sort_by("decisions").last(),
            pl.col("latency_ms_p99").max(),
            pl.col("latency_ms_max").max(),
        )
        .sort("day")
    )
    return [
        Chart(
            "online-decisions",
            "Decided online, before the money moved",
            lines(by_decision, "decisions", "decision", "count", days=days, colors=DECISIONS),
            "Transfers the app asked the decision service about (POST /v1/decisions).",
            empty="No online decision in this window: the decision service was not asked.",
        ),
        Table(
            "Online decisions: fallbacks and latency",
            [
                Column("Day", "day"),
                Column("Decisions", "count"),
                Column("Fallbacks", "count"),
                Column("Latency p50"),
                Column("Latency p99"),
                Column("Slowest"),
            ],
            [
                [
                    row["day"],
                    row["decisions"],
                    row["fallbacks"],
                    _ms(row["latency_ms_p50"]),
                    _ms(row["latency_ms_p99"]),
                    _ms(row["latency_ms_max"]),
                ]
                for row in daily.to_dicts()
            ],
            note="Fallbacks: decided by the hard rules and the fallback (MODEL_UNAVAILABLE) "
            "because features or the model failed or ran past the deadline. Latency: inside "
            "the service, from request to durable record.",
            empty="No online decision in this window.",
        ),
    ]


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _stopped_share(
    friction: pl.DataFrame, share: str, days: list[dt.date]
) -> dict[str, Any] | None:
    """The daily `share` held and blocked, stacked."""
    frame = friction.select("day", "decision", share=pl.col(share))
    colors = {k: DECISIONS[k] for k in _STOPPED}
    return lines(frame, "share", "decision", "share", days=days, colors=colors, area=True)


def _friction_retention(retention: pl.DataFrame) -> dict[str, Any] | None:
    if retention.is_empty():
        return None
    frame = formatted(retention, "retention", "share")
    frame = frame.with_columns(
        week_label=pl.Series(
            [f"w/c {short_day(d)}" for d in frame["week"].to_list()], dtype=pl.String
        )
    )
    weeks = frame.sort("week")["week_label"].unique(maintain_order=True).to_list()
    drawn = (
        alt.Chart(DATA)
        .mark_bar()
        .encode(
            x=alt.X("week_label:N", sort=weeks, title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("payers_group:N", sort=list(_RETENTION_COLORS)),
            y=alt.Y(
                "retention:Q",
                axis=axis("share", "Retained next week"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=alt.Color("payers_group:N", scale=color_scale(_RETENTION_COLORS)),
            tooltip=[
                alt.Tooltip("week_label:N", title="Week"),
                alt.Tooltip("payers_group:N", title="Payers"),
                alt.Tooltip("payers:Q", title="Count", format=","),
                alt.Tooltip("label:N", title="Retention"),
            ],
        )
    )
    return spec(drawn, frame)
