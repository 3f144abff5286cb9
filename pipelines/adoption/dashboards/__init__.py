"""Adoption dashboards: six self-contained HTML pages drawn from the `adoption` marts.

Each page carries its data inside Vega-Lite specs (built with Altair) and the Vega JavaScript
bundle of vl-convert, so it opens from disk with no network at all. The pages read the marts
only, never the ledger, and show aggregates only: no person, not even as a token.

`pages/` has one module per page; `charts` the chart specs they share; `formatting` numbers,
money and days; `render` and `templates/` the HTML around them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from pipelines.adoption.dashboards.data import Marts, missing_marts, read_window
from pipelines.adoption.dashboards.formatting import (
    format_count,
    format_day,
    format_rupees,
    format_share,
    indian_grouping,
)
from pipelines.adoption.dashboards.pages import PAGE_MODULES, PAGES
from pipelines.adoption.dashboards.render import javascript_bundle, render_page
from pipelines.adoption.marts import SCHEMA

__all__ = [
    "PAGES",
    "format_count",
    "format_day",
    "format_rupees",
    "format_share",
    "indian_grouping",
    "javascript_bundle",
    "render_page",
    "write_dashboards",
]


def write_dashboards(
    con: duckdb.DuckDBPyConnection, out_dir: Path, *, as_of: dt.date | None = None
) -> dict[str, Path]:
    """Write the six adoption pages into `out_dir` from the `adoption` marts; return their paths.

    `as_of` is the last day shown (default: the last day in `adoption.daily_volume`); the
    overview compares the 7 days ending it with the 7 before. Reads the marts only.
    """
    missing = missing_marts(con)
    if missing:
        raise LookupError(
            f"adoption marts missing from the warehouse: {', '.join(f'{SCHEMA}.{m}' for m in missing)}; "
            "build them first (pipelines.adoption.marts.build_marts)"
        )
    window = read_window(con, as_of)
    marts = Marts(con, window)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, module in PAGE_MODULES.items():
        path = out_dir / f"{name}.html"
        path.write_text(render_page(name, module.build(marts), window, PAGES), encoding="utf-8")
        written[name] = path
    return written
