"""The activation funnel: registration, bank link, first and fifth payment, by cohort day."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from pipelines.adoption.dashboards.charts import DATA, axis, lines, spec
from pipelines.adoption.dashboards.data import Marts, ratio
from pipelines.adoption.dashboards.formatting import (
    format_count,
    format_day,
    format_hours,
    format_share,
)
from pipelines.adoption.dashboards.model import Chart, Page, Tile

LABEL = "Funnel"
# The steps in order: label, column of activation_funnel, colour.
_STEPS = (
    ("Registered", "registered", "#4c78a8"),
    ("Bank linked", "bank_linked", "#72b7b2"),
    ("First payment", "first_payment", "#f58518"),
    ("Fifth payment", "fifth_payment", "#e45756"),
)
# The median hours between steps: label, column, colour.
_HOURS = (
    ("Registration → bank link", "median_hours_to_link", "#72b7b2"),
    ("Bank link → first payment", "median_hours_link_to_first", "#f58518"),
    ("First → fifth payment", "median_hours_first_to_fifth", "#e45756"),
)


def build(marts: Marts) -> Page:
    page = Page(
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
    totals = {column: int(cohorts[column].sum() or 0) for _, column, _ in _STEPS}
    funnel = pl.DataFrame(
        {
            "step": [label for label, _, _ in _STEPS],
            "users": [totals[column] for _, column, _ in _STEPS],
        },
        schema={"step": pl.String, "users": pl.Int64},
    )
    if totals["registered"]:
        conversions = [
            ("Registered → bank linked", totals["bank_linked"], totals["registered"]),
            ("Bank linked → first payment", totals["first_payment"], totals["bank_linked"]),
            ("First → fifth payment", totals["fifth_payment"], totals["first_payment"]),
            ("Registered → first payment", totals["first_payment"], totals["registered"]),
        ]
        page.tiles = [
            Tile(label, format_share(ratio(part, whole)), note=f"{format_count(part)} users")
            for label, part, whole in conversions
        ]
        for label, column in (
            ("Hours to link a bank", "median_hours_to_link"),
            ("Hours from link to first payment", "median_hours_link_to_first"),
            ("Hours from first to fifth payment", "median_hours_first_to_fifth"),
        ):
            median = cohorts[column].drop_nulls().median()
            page.tiles.append(Tile(label, format_hours(median), note="median across daily cohorts"))
        observed = cohorts["observed_through"].max()
        if observed is not None:
            page.intro += f" Steps observed through {format_day(observed)}."
    else:
        funnel = funnel.clear()
    conversion = cohorts.select(
        "day",
        **{
            label: pl.when(pl.col("registered") > 0).then(pl.col(column) / pl.col("registered"))
            for label, column, _ in _STEPS[1:]
        },
    ).unpivot(index="day", variable_name="step", value_name="share")
    hours = cohorts.select("day", **{label: column for label, column, _ in _HOURS}).unpivot(
        index="day", variable_name="step", value_name="hours"
    )
    hours = hours.filter(pl.col("hours").is_not_null())
    daily = marts.days(
        """SELECT day, registered AS "Registered", bank_linked AS "Bank linked",
            activated AS "Activated (first payment)"
        FROM {s}.daily_users WHERE {where} ORDER BY day"""
    ).unpivot(index="day", variable_name="step", value_name="users")
    days = marts.window_days
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
            lines(
                conversion,
                "share",
                "step",
                "share",
                days=days,
                colors={label: color for label, _, color in _STEPS},
            ),
            "Share of each day's registrations that reached the step by the end of the data; "
            "recent cohorts have had less time.",
        ),
        Chart(
            "funnel-hours",
            "Median hours between steps, by cohort day",
            lines(
                hours,
                "hours",
                "step",
                "hours",
                days=days,
                colors={label: color for label, _, color in _HOURS},
                y_title="hours",
            ),
        ),
        Chart(
            "funnel-daily",
            "Daily registrations and activations",
            lines(
                daily,
                "users",
                "step",
                "count",
                days=days,
                colors={
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
    colors = [color for _, _, color in _STEPS]
    drawn = (
        alt.Chart(DATA)
        .mark_bar(cornerRadiusEnd=2)
        .encode(
            y=alt.Y("step:N", sort=order, title=None),
            x=alt.X("users:Q", axis=axis("count", "Users")),
            color=alt.Color("step:N", scale=alt.Scale(domain=order, range=colors), legend=None),
            tooltip=[alt.Tooltip("step:N", title="Step"), alt.Tooltip("label:N", title="Users")],
        )
    )
    text = drawn.mark_text(align="left", dx=4, color="#1f2933").encode(text="label:N")
    return spec(alt.layer(drawn, text), frame, height=170)
