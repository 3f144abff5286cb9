"""Merchants: P2M by merchant category, channel mix, and ticket sizes, with P2P alongside."""

from __future__ import annotations

import datetime as dt
from typing import Any

import altair as alt
import polars as pl

from pipelines.adoption.dashboards.charts import (
    CHANNELS,
    DATA,
    PAYEE_COLORS,
    axis,
    bars,
    color_scale,
    day_axis,
    every_day,
    formatted,
    lines,
    spec,
    stacked_share,
)
from pipelines.adoption.dashboards.data import PAYEE_LABELS, Marts, payee_labels, ratio
from pipelines.adoption.dashboards.formatting import format_day
from pipelines.adoption.dashboards.model import Chart, Column, Page, Table

LABEL = "Merchants"
# Columns of ticket_quantiles (`<name>_paise`) and their headings.
_QUANTILES = {
    "mean": "Mean",
    "p10": "p10",
    "p25": "p25",
    "p50": "Median",
    "p75": "p75",
    "p90": "p90",
    "p99": "p99",
}


def build(marts: Marts) -> Page:
    page = Page(
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
    buckets = payee_labels(buckets).with_columns(
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
            bars(
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
            bars(
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
            stacked_share(channel, "category", "channel", "transfers", CHANNELS, sort=order),
            "How payers start the transfer: chat, scanning a QR code, an app intent or a "
            "collect request.",
            wide=True,
        ),
        Chart(
            "p2m-share",
            "P2M share, daily",
            lines(share, "share", "measure", "share", days=marts.window_days),
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
            _ticket_quantiles(quantiles, marts.window_days),
            "Median and the 25th-90th percentile band of successful transfers; log scale.",
            wide=True,
        ),
        Table(
            f"Ticket sizes on {format_day(latest['day'][0])}"
            if not latest.is_empty()
            else "Ticket sizes",
            [
                Column(""),
                Column("Transfers", "count"),
                *(Column(heading, "paise") for heading in _QUANTILES.values()),
            ],
            [
                [
                    PAYEE_LABELS.get(row["payee_type"], row["payee_type"]),
                    row["transfers"],
                    *(row[f"{q}_paise"] for q in _QUANTILES),
                ]
                for row in latest.to_dicts()
            ],
            "Successful transfers of the last day of the window.",
        ),
        Table(
            "Merchant categories",
            [
                Column("Category"),
                Column("Transfers", "count"),
                Column("Value", "paise"),
                Column("Share of P2M value", "share"),
                Column("Average ticket", "paise"),
                Column("QR share", "share"),
            ],
            [
                [
                    row["category"],
                    row["transfers"],
                    row["value_paise"],
                    ratio(row["value_paise"], p2m_value),
                    ratio(row["value_paise"], row["successful"]),
                    ratio(channel_share.get((row["category"], "QR"), 0), row["transfers"]),
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
    buckets = formatted(buckets, "share", "share")
    bands = buckets.sort("bucket_order")["bucket"].unique(maintain_order=True).to_list()
    chart = (
        alt.Chart(DATA)
        .mark_bar()
        .encode(
            y=alt.Y("bucket:N", sort=bands, title=None),
            yOffset=alt.YOffset("payee:N", sort=list(PAYEE_COLORS)),
            x=alt.X("share:Q", axis=axis("share", "Share of transfers")),
            color=alt.Color("payee:N", scale=color_scale(PAYEE_COLORS)),
            tooltip=[
                alt.Tooltip("payee:N", title=" "),
                alt.Tooltip("bucket:N", title="Band"),
                alt.Tooltip("label:N", title="Share"),
                alt.Tooltip("transfers:Q", title="Transfers", format=","),
            ],
        )
    )
    return spec(chart, buckets)


def _ticket_quantiles(quantiles: pl.DataFrame, days: list[dt.date]) -> dict[str, Any] | None:
    if quantiles.is_empty():
        return None
    frame = every_day(payee_labels(quantiles), "payee", days)
    for column in ("median", "p25", "p90"):
        frame = formatted(frame, column, "rupees", into=f"{column}_label")
    # The band's opacity would fade the legend's symbols.
    color = alt.Color(
        "payee:N", scale=color_scale(PAYEE_COLORS), legend=alt.Legend(symbolOpacity=1)
    )
    base = alt.Chart(DATA).encode(x=alt.X("day:T", axis=day_axis()), color=color)
    log = alt.Scale(type="log")
    low, high = frame["p25"].min() or 1, frame["p90"].max() or 1
    # Log axes tick at every digit by default; 1-3-10 steps read better.
    ticks = [m * 10**e for e in range(0, 9) for m in (1, 3) if low / 3 <= m * 10**e <= high * 3]
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("p25:Q", scale=log, axis=axis("rupees", "Ticket size", values=ticks)),
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
    return spec(alt.layer(band, line), frame)
