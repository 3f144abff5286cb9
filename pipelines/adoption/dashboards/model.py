"""What a page is made of: tiles, charts (Vega-Lite specs) and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pipelines.adoption.dashboards.formatting import (
    count_column,
    format_day,
    format_share,
    rupee_column,
)

NO_DATA = "No data in this window."


@dataclass
class Tile:
    label: str
    value: str
    change: str = ""
    tone: str = "flat"  # good, bad or flat: the colour of the change
    note: str = ""


@dataclass
class Chart:
    kind: ClassVar[str] = "chart"

    name: str
    title: str
    spec: dict[str, Any] | None
    note: str = ""
    empty: str = NO_DATA
    wide: bool = False


ColumnKind = Literal["text", "count", "paise", "share", "day"]


@dataclass(frozen=True)
class Column:
    title: str
    kind: ColumnKind = "text"


@dataclass
class Table:
    """Rows of raw values; each column is formatted as a whole, so it shows one unit."""

    kind: ClassVar[str] = "table"

    title: str
    columns: list[Column]
    rows: list[list[Any]]
    note: str = ""
    empty: str = NO_DATA
    wide: bool = True

    def cells(self) -> list[list[str]]:
        columns = [
            _format_column(column.kind, [row[i] for row in self.rows])
            for i, column in enumerate(self.columns)
        ]
        return [list(row) for row in zip(*columns, strict=True)]


def _format_column(kind: ColumnKind, values: list[Any]) -> list[str]:
    if kind == "count":
        return count_column(values)
    if kind == "paise":
        return rupee_column(values)
    if kind == "share":
        return [format_share(v) for v in values]
    if kind == "day":
        return [format_day(v) for v in values]
    return ["–" if v is None else str(v) for v in values]


@dataclass
class Page:
    heading: str
    intro: str = ""
    notices: list[str] = field(default_factory=list)
    tiles: list[Tile] = field(default_factory=list)
    cards: list[Chart | Table] = field(default_factory=list)
