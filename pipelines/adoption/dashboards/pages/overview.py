"""The overview: this week against the last in tiles, daily transfers, value, payers, success."""

from __future__ import annotations

from typing import Any

import polars as pl

from pipelines.adoption.dashboards.charts import ACTIVE, BAD, PAYEE_COLORS, bars, lines
from pipelines.adoption.dashboards.data import (
    PERIOD_DAYS,
    Marts,
    Window,
    active_payers,
    payee_labels,
    ratio,
)
from pipelines.adoption.dashboards.formatting import format_count, format_rupees, format_share
from pipelines.adoption.dashboards.model import Chart, Page, Tile

LABEL = "Overview"


def build(marts: Marts) -> Page:
    page = Page(
        "Adoption overview",
        "How many people pay, how much, how reliably, and how much risk friction they meet.",
    )
    if marts.window is not None:
        page.tiles = _tiles(marts, marts.window)
        window = marts.window
        page.intro += (
            f" Tiles: the last {PERIOD_DAYS} days ({window.period_label(window.current)}) "
            f"against the {PERIOD_DAYS} before ({window.period_label(window.previous)})."
        )

    by_type = marts.days(
        """SELECT day, payee_type, sum(transfers) AS transfers,
            coalesce(sum(value_paise) FILTER (status = 'SUCCESS'), 0) / 100.0 AS value
        FROM {s}.daily_volume WHERE {where} GROUP BY ALL ORDER BY ALL"""
    )
    by_type = payee_labels(by_type)
    active = active_payers(marts)
    success = _success_rates(marts)
    failures = marts.days(
        """SELECT description AS reason, sum(transfers) AS transfers
        FROM {s}.daily_outcomes WHERE status = 'FAILED' AND {where}
        GROUP BY ALL ORDER BY transfers DESC LIMIT 10"""
    )
    days = marts.window_days
    page.cards = [
        Chart(
            "transfers-by-type",
            "Daily transfers, P2P and P2M",
            lines(by_type, "transfers", "payee", "count", days=days, colors=PAYEE_COLORS),
            "All initiated transfers, whatever their outcome.",
        ),
        Chart(
            "value-by-type",
            "Daily value, P2P and P2M",
            lines(by_type, "value", "payee", "rupees", days=days, colors=PAYEE_COLORS, area=True),
            "Successful transfers, stacked.",
        ),
        Chart(
            "active-payers",
            "Active payers: DAU, WAU, MAU",
            lines(active, "payers", "measure", "count", days=days, colors=ACTIVE),
            "Payers with a successful payment that day, or within the 7 or 30 days ending it.",
        ),
        Chart(
            "success-rate",
            "Success rate",
            lines(
                success,
                "rate",
                "payee",
                "share",
                days=days,
                colors={"All": "#333f4b", **PAYEE_COLORS},
                zero=False,
            ),
            "SUCCESS / (SUCCESS + FAILED); pending and reversed transfers left out.",
        ),
        Chart(
            "failure-reasons",
            "Why transfers failed",
            bars(failures, "transfers", "reason", "count", "Failed transfers", color=BAD),
            "NPCI response codes of failed transfers over the whole window, top 10.",
            wide=True,
        ),
    ]
    return page


def _tiles(marts: Marts, window: Window) -> list[Tile]:
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

    def pair(rows: dict[str, dict[str, Any]], key: str) -> tuple[Any, Any]:
        return rows.get("current", {}).get(key), rows.get("previous", {}).get(key)

    def ratio_pair(rows: dict[str, dict[str, Any]], part: str, whole: str) -> tuple:
        return tuple(
            ratio(rows.get(p, {}).get(part) or 0, rows.get(p, {}).get(whole))
            for p in ("current", "previous")
        )

    return [
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


def _periods(marts: Marts, sql: str) -> dict[str, dict[str, Any]]:
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


def _success_rates(marts: Marts) -> pl.DataFrame:
    return marts.days(
        """WITH counted AS (
            SELECT day, coalesce(payee_type, 'All') AS payee_type,
                sum(transfers) FILTER (status = 'SUCCESS') AS ok,
                sum(transfers) FILTER (status IN ('SUCCESS', 'FAILED')) AS settled
            FROM {s}.daily_outcomes WHERE {where}
            GROUP BY GROUPING SETS ((day, payee_type), (day)))
        SELECT day, payee_type, coalesce(ok, 0) / settled AS rate
        FROM counted WHERE settled > 0 ORDER BY ALL"""
    ).pipe(payee_labels)
