"""Helpers for asset metadata shown in the Dagster UI."""

import polars as pl


def markdown_table(frame: pl.DataFrame) -> str:
    """A frame as a Markdown table (`_none_` when empty)."""
    if frame.is_empty():
        return "_none_"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    rows = [
        "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
        for row in frame.iter_rows()
    ]
    return head + "\n".join(rows)
