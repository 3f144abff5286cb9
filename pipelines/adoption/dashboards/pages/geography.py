"""Geography: value, success rate and P2P/P2M mix by the state on the payer's account."""

from __future__ import annotations

import altair as alt
import polars as pl

from pipelines.adoption.dashboards.charts import PAYEE_COLORS, bars, lines, stacked_share
from pipelines.adoption.dashboards.data import Marts, payee_labels, ratio
from pipelines.adoption.dashboards.model import Chart, Column, Page, Table

LABEL = "Geography"
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
_PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2"]


def state_name(code: str | None) -> str:
    if code is None:
        return "Unknown"
    return STATE_NAMES.get(code, code)


def _with_state_names(frame: pl.DataFrame) -> pl.DataFrame:
    names = [state_name(code) for code in frame["payer_state"].to_list()]
    return frame.with_columns(state=pl.Series(names, dtype=pl.String))


def build(marts: Marts) -> Page:
    page = Page(
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
    states = (
        _with_state_names(states)
        .with_columns(
            value=pl.col("value_paise") / 100.0,
            rate=pl.when(pl.col("settled") > 0).then(pl.col("successful") / pl.col("settled")),
        )
        .sort("value_paise", descending=True)
    )
    total_value = states["value_paise"].sum() or 0
    top = states.head(15)
    rated = states.filter(pl.col("settled") >= 20).sort("rate").head(15)
    leaders = states.head(5)["payer_state"].to_list()
    trend = marts.days(
        """SELECT day, payer_state,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS'), 0) / 100.0 AS value
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL ORDER BY ALL"""
    ).filter(pl.col("payer_state").is_in(leaders))
    trend = _with_state_names(trend).drop("payer_state")
    state_colors = {state_name(c): _PALETTE[i] for i, c in enumerate(leaders)}
    mix = marts.days(
        """SELECT payer_state, payee_type, sum(transfers) AS transfers
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL"""
    ).filter(pl.col("payer_state").is_in(top["payer_state"].implode()))
    mix = payee_labels(_with_state_names(mix))
    page.cards = [
        Chart(
            "state-value",
            "Value by state",
            bars(
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
            bars(
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
            lines(trend, "value", "state", "rupees", days=marts.window_days, colors=state_colors),
            "Successful value a day.",
            wide=True,
        ),
        Chart(
            "state-p2m",
            "P2P and P2M transfers by state",
            stacked_share(
                mix, "state", "payee", "transfers", PAYEE_COLORS, sort=top["state"].to_list()
            ),
            "Share of each state's transfers; the 15 largest states by value.",
            wide=True,
        ),
        Table(
            "All states",
            [
                Column("State"),
                Column("Transfers", "count"),
                Column("Value", "paise"),
                Column("Share of value", "share"),
                Column("Average ticket", "paise"),
                Column("Success rate", "share"),
            ],
            [
                [
                    row["state"],
                    row["transfers"],
                    row["value_paise"],
                    ratio(row["value_paise"], total_value),
                    ratio(row["value_paise"], row["successful"]),
                    row["rate"],
                ]
                for row in states.to_dicts()
            ],
            "Over the whole window. Average ticket: successful value / successful transfers.",
        ),
    ]
    return page
