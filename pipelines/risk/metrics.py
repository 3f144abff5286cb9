"""Metrics of a window (one definition each, used by every path):
- roc_auc, average_precision: of the risk score against the fraud target, per transfer.
- precision_at_k: each IST day, the k payers with the highest daily score (max over their
  transfers) are what a review team of capacity k would look at; a payer is a hit if it made a
  fraudulent transfer that day. Mean over days (k = min(capacity, payers active that day)); a
  window cut at UTC midnight gives partial IST days at both ends, which count like the others.
- at a hold rate h: the threshold is the lowest that holds at most h of the window's transfers
  (`hold_threshold`; ties at the cut are left out) and a transfer is held if its score is at or
  above it. recall_at_hold = share of frauds held; fraud_value_caught_share = paise of held
  frauds / paise of all frauds; legit_payers_held_share = payers with no fraud in the window and
  >= 1 held transfer / payers with no fraud in the window (`held_metrics`, for any held set);
  recall_by_fraud_type = recall_at_hold per typology (`recall_by_fraud_type`).
- card_precision_at_k: the published daily card precision@k (Le Borgne et al., Fraud Detection
  Handbook, "Precision top-k metrics"): each IST day, payers ranked by their daily score (max over
  their transfers), the k first reviewed; precision = payers with a fraud that day among them / k
  (always k, even on a day with fewer payers). A payer found (a fraud in the top k) on an earlier
  day of the window is left out of later days: an investigator who found it has blocked it, so
  finding it again is no new catch. Mean over days.
- roc_auc and average_precision are defined once (`ranking_metrics`); None when the window has
  one class only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines.india_time import IST_TIME_ZONE
from pipelines.risk.labels import as_utc_column
from pipelines.settings import Settings

# The defaults of an evaluation called without settings are the instance settings' defaults.
DEFAULT_REVIEW_CAPACITY: int = Settings.model_fields["review_capacity"].default


DEFAULT_HOLD_RATE: float = Settings.model_fields["hold_rate"].default


UNKNOWN_FRAUD_TYPE = "UNKNOWN"


def hold_threshold(scores: np.ndarray, hold_rate: float) -> float:
    """The lowest score threshold that holds at most `hold_rate` of `scores` (a transfer is held
    when its score is at or above it). Scores tied at the cut are all left out, so the rate is
    never exceeded: the one meaning of a hold rate, in evaluation and in the live policy."""
    if not 0.0 < hold_rate < 1.0:
        raise ValueError(f"hold_rate must be in (0, 1), got {hold_rate}")
    # The epsilon keeps 0.005 * 1000 at 5, not 4.999...
    return capacity_threshold(scores, math.floor(hold_rate * len(scores) + 1e-9))


def capacity_threshold(scores: np.ndarray, capacity: int) -> float:
    """The lowest score threshold that holds at most `capacity` of `scores` (-inf when they
    are that few): what the review team can work through, whatever the hold rate."""
    if capacity >= len(scores):
        return -math.inf
    if capacity <= 0:
        return math.inf
    kth = np.partition(scores, len(scores) - capacity - 1)[len(scores) - capacity - 1]
    return float(np.nextafter(kth, math.inf))  # strictly above the first score left out


def precision_at_k(frame: pl.DataFrame, k: int = DEFAULT_REVIEW_CAPACITY) -> dict[str, Any]:
    """Daily precision of the top-k payers (see module docstring); `frame` has created_at,
    payer_vpa, y, risk_score."""
    daily = _daily_payers(frame, k)
    if daily.height == 0:
        return {"precision_at_k": None, "k": k, "days": 0, "daily_precision": []}
    per_day = (
        daily.sort(["day", "score", "payer_vpa"], descending=[False, True, False])
        .group_by("day", maintain_order=True)
        .head(k)
        .group_by("day", maintain_order=True)
        .agg(precision=pl.col("fraud").cast(pl.Float64).mean())
    )
    return {
        "precision_at_k": float(per_day["precision"].mean()),
        "k": k,
        "days": per_day.height,
        "daily_precision": [{"day": d.isoformat(), "precision": p} for d, p in per_day.iter_rows()],
    }


def _daily_payers(frame: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per IST day and payer: its highest score and whether it made a fraud that day."""
    if k <= 0:
        raise ValueError(f"review capacity k must be positive, got {k}")
    return (
        as_utc_column(frame, "created_at")
        .with_columns(day=pl.col("created_at").dt.convert_time_zone(IST_TIME_ZONE).dt.date())
        .group_by("day", "payer_vpa")
        .agg(score=pl.col("risk_score").max(), fraud=pl.col("y").max())
    )


def card_precision_at_k(frame: pl.DataFrame, k: int = DEFAULT_REVIEW_CAPACITY) -> dict[str, Any]:
    """The published daily card precision@k (see module docstring); `frame` has created_at,
    payer_vpa, y, risk_score."""
    daily = _daily_payers(frame, k).sort(
        ["day", "score", "payer_vpa"], descending=[False, True, False]
    )
    found: set[str] = set()
    rows = []
    # Days in order: who was found on a day is left out of the days after it.
    for (day,), part in daily.group_by("day", maintain_order=True):
        top = part.filter(~pl.col("payer_vpa").is_in(list(found))).head(k)
        hits = top.filter(pl.col("fraud") == 1)["payer_vpa"].to_list()
        found.update(hits)
        rows.append({"day": day.isoformat(), "precision": len(hits) / k})
    return {
        "card_precision_at_k": float(np.mean([r["precision"] for r in rows])) if rows else None,
        "k": k,
        "days": len(rows),
        "daily_precision": rows,
    }


def ranking_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """ROC AUC and average precision of `scores` against the 0/1 target `y`; None when `y`
    holds one class only (neither is defined then)."""
    y = np.asarray(y).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n_fraud = int(y.sum())
    if not 0 < n_fraud < len(y):
        return {"roc_auc": None, "average_precision": None}
    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
    }


def recall_by_fraud_type(
    frame: pl.DataFrame, held: np.ndarray, *, fraud_column: str = "y"
) -> dict[str, dict[str, Any]]:
    """Frauds and the share of them held, per fraud type (null types count as UNKNOWN);
    `frame` has `fraud_column` (0/1 or bool) and fraud_type."""
    fraud = frame[fraud_column].cast(pl.Int64).to_numpy() == 1
    by_type = (
        frame.select(pl.col("fraud_type").fill_null(UNKNOWN_FRAUD_TYPE), held=pl.Series(held))
        .filter(pl.Series(fraud))
        .group_by("fraud_type")
        .agg(frauds=pl.len(), held=pl.col("held").sum())
        .sort("fraud_type")
    )
    return {
        "frauds_by_fraud_type": {t: int(f) for t, f, _ in by_type.iter_rows()},
        "recall_by_fraud_type": {t: _ratio(int(h), int(f)) for t, f, h in by_type.iter_rows()},
    }


def window_days(frame: pl.DataFrame) -> int:
    """The days a window covers: its UTC calendar days, first to last (windows are cut at UTC
    midnight; counting its India days instead would count the partial IST days at both ends
    as two more, and let the policy hold a seventh more than the team reviews)."""
    if frame.height == 0:
        return 0
    days = as_utc_column(frame, "created_at")["created_at"].dt.date()
    return (days.max() - days.min()).days + 1


def held_metrics(
    frame: pl.DataFrame, held: np.ndarray, *, payer_column: str = "payer_vpa"
) -> dict[str, Any]:
    """What holding the rows `held` buys and costs (the definitions in the module docstring);
    `frame` has y, amount_paise and a payer column. The evaluation and the model notebook use
    this one definition."""
    y = frame["y"].cast(pl.Int64).to_numpy()
    fraud = y == 1
    amount = frame["amount_paise"].cast(pl.Int64).to_numpy()
    fraud_value = int(amount[fraud].sum())
    payers = (
        pl.DataFrame({"payer": frame[payer_column], "fraud": fraud, "held": held})
        .group_by("payer")
        .agg(pl.col("fraud").any(), pl.col("held").any())
    )
    legit_payers = payers.filter(~pl.col("fraud"))
    legit_held = int(legit_payers["held"].sum())
    caught = held & fraud
    return {
        "held_transfers": int(held.sum()),
        "held_share": _ratio(int(held.sum()), len(y)),
        "recall_at_hold": _ratio(int(caught.sum()), int(fraud.sum())),
        "precision_at_hold": _ratio(int(caught.sum()), int(held.sum())),
        "fraud_value_paise": fraud_value,
        "fraud_value_caught_paise": int(amount[caught].sum()),
        "fraud_value_caught_share": _ratio(int(amount[caught].sum()), fraud_value),
        "legit_payers_active": legit_payers.height,
        "legit_payers_held": legit_held,
        "legit_payers_held_share": _ratio(legit_held, legit_payers.height),
    }


def window_metrics(
    frame: pl.DataFrame,
    *,
    review_capacity: int = DEFAULT_REVIEW_CAPACITY,
    hold_rate: float = DEFAULT_HOLD_RATE,
) -> dict[str, Any]:
    """All metrics of one scored window; `frame` has created_at, payer_vpa, amount_paise, y,
    fraud_type, risk_score. JSON-serialisable (None where a metric is undefined)."""
    y = frame["y"].cast(pl.Int64).to_numpy()
    scores = frame["risk_score"].cast(pl.Float64).to_numpy()
    n, n_fraud = len(y), int(y.sum())
    threshold = hold_threshold(scores, hold_rate)
    held = scores >= threshold
    top_k = precision_at_k(frame, review_capacity)
    return {
        "n_transfers": n,
        "n_frauds": n_fraud,
        "fraud_rate": _ratio(n_fraud, n),
        "mean_risk_score": float(scores.mean()) if n else None,
        **ranking_metrics(y, scores),
        "precision_at_k": top_k["precision_at_k"],
        "card_precision_at_k": card_precision_at_k(frame, review_capacity)["card_precision_at_k"],
        "review_capacity": review_capacity,
        "days": top_k["days"],
        "hold_rate": hold_rate,
        "hold_threshold": None if not math.isfinite(threshold) else threshold,
        "capacity_threshold": _finite(
            capacity_threshold(scores, review_capacity * window_days(frame))
        ),
        **held_metrics(frame, held, payer_column="payer_vpa"),
        **recall_by_fraud_type(frame, held),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
