"""Plots of an evaluation, drawn without pyplot (no global backend or GUI state)."""

from __future__ import annotations

import io

import polars as pl
from sklearn.metrics import precision_recall_curve

from pipelines.risk.metrics import ranking_metrics


def pr_curve_png(scores: pl.DataFrame, *, title: str = "Precision-recall, test windows") -> bytes:
    """A PNG of each model's precision-recall curve from a scores frame (model, risk_score, y)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("pr_curve_png needs matplotlib: install 'matplotlib>=3.8'") from exc

    # Figure + Agg canvas directly: no pyplot, so no global backend or GUI state is touched.
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in scores["model"].unique(maintain_order=True).to_list():
        part = scores.filter(pl.col("model") == name)
        y = part["y"].to_numpy()
        if y.sum() == 0 or y.sum() == len(y):
            continue
        precision, recall, _ = precision_recall_curve(y, part["risk_score"].to_numpy())
        ap = ranking_metrics(y, part["risk_score"].to_numpy())["average_precision"]
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
