"""Prequential evaluation that respects label delay: the backtest of a model against baselines.

The folds are in `folds` (train, delay gap, test; targets as known when training closes), the
metrics of a window in `metrics`, the plots in `plots`; this module runs them over every fold and
model and keeps what they measured. Their public names are importable from here too.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HOLD_RATE",
    "DEFAULT_REVIEW_CAPACITY",
    "TABLE_METRICS",
    "BacktestResult",
    "Fold",
    "backtest",
    "capacity_threshold",
    "default_models",
    "fit_on_training_set",
    "fold_test_set",
    "fold_training_set",
    "hold_threshold",
    "pr_curve_png",
    "precision_at_k",
    "prequential_folds",
    "score_test_set",
    "window_days",
    "window_metrics",
]

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.base import clone

from pipelines.risk.folds import (
    Fold,
    fit_on_training_set,
    fold_test_set,
    fold_training_set,
    prequential_folds,
    score_test_set,
)
from pipelines.risk.labels import (
    DEFAULT_MATURITY_DAYS,
    as_utc_column,
    evaluation_targets,
    utc,
)
from pipelines.risk.metrics import (
    DEFAULT_HOLD_RATE,
    DEFAULT_REVIEW_CAPACITY,
    capacity_threshold,
    hold_threshold,
    precision_at_k,
    window_days,
    window_metrics,
)
from pipelines.risk.model import GradientBoostingRiskModel, LogisticRiskModel
from pipelines.risk.plots import pr_curve_png

FEATURE_FRAME_COLUMNS = ("transfer_id", "created_at", "payer_vpa", "amount_paise")
# Metrics where a higher value is better, in the order the comparison table shows them.
TABLE_METRICS = (
    "average_precision",
    "roc_auc",
    "precision_at_k",
    "recall_at_hold",
    "fraud_value_caught_share",
    "precision_at_hold",
    "legit_payers_held_share",
    "mean_risk_score",
    "fraud_rate",
    "n_transfers",
    "n_frauds",
    "train_rows",
    "train_frauds",
)


@dataclass
class BacktestResult:
    """What `backtest` measured: JSON-ready metrics, the test scores, the folds."""

    metrics: dict[str, Any]
    scores: pl.DataFrame  # transfer_id, fold, model, risk_score, decision, y
    folds: list[Fold]
    training_sets: dict[int, pl.DataFrame] = field(default_factory=dict)  # if kept: fold -> rows
    fitted: dict[int, dict[str, Any]] = field(default_factory=dict)  # fold -> name -> model

    @property
    def model_names(self) -> list[str]:
        return list(self.metrics["models"])

    def folds_summary(self) -> str:
        """How many folds each model ran, and why any was skipped: a mean over one fold must
        not read as a mean over several."""
        lines = []
        for name, result in self.metrics["models"].items():
            entries = result["folds"]
            ran = sum(1 for e in entries if "skipped" not in e)
            line = f"{name}: {ran} of {len(entries)} folds ran"
            skipped = [
                f"fold {e['fold']} skipped ({e['skipped']})" for e in entries if "skipped" in e
            ]
            lines.append(line + ("; " + "; ".join(skipped) if skipped else ""))
        return "\n".join(lines)

    def table(self, model: str | None = None, baseline: str | None = None) -> pl.DataFrame:
        """Mean metrics over folds, model vs baseline: `metric, <model>, <baseline>, difference`."""
        names = self.model_names
        model = model or names[0]
        baseline = baseline or (names[1] if len(names) > 1 else names[0])
        means = {name: self.metrics["models"][name]["mean"] for name in (model, baseline)}
        keys = [m for m in TABLE_METRICS if m in means[model] or m in means[baseline]]
        types = sorted(
            set(means[model].get("recall_by_fraud_type", {}))
            | set(means[baseline].get("recall_by_fraud_type", {}))
        )
        rows = []
        for key in keys:
            rows.append((key, means[model].get(key), means[baseline].get(key)))
        for t in types:
            rows.append(
                (
                    f"recall_at_hold[{t}]",
                    means[model].get("recall_by_fraud_type", {}).get(t),
                    means[baseline].get("recall_by_fraud_type", {}).get(t),
                )
            )
        return pl.DataFrame(
            {
                "metric": [r[0] for r in rows],
                model: [_float(r[1]) for r in rows],
                baseline: [_float(r[2]) for r in rows],
                "difference": [
                    None if r[1] is None or r[2] is None else float(r[1]) - float(r[2])
                    for r in rows
                ],
            },
            schema={
                "metric": pl.String,
                model: pl.Float64,
                baseline: pl.Float64,
                "difference": pl.Float64,
            },
            strict=False,
        )

    def pr_curve_png(self) -> bytes:
        """Precision-recall curves of each model, test windows of all folds pooled, as PNG."""
        return pr_curve_png(self.scores)


def default_models(random_state: int | None = 0) -> dict[str, Any]:
    """The risk model and its baseline, as the backtest compares them."""
    return {
        "gbdt": GradientBoostingRiskModel(random_state=random_state),
        "logistic": LogisticRiskModel(random_state=random_state),
    }


def backtest(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    feature_names: Sequence[str],
    *,
    test_start: dt.datetime,
    test_days: int,
    delay_days: int,
    folds: int,
    train_days: int | None = None,
    maturity_days: int = DEFAULT_MATURITY_DAYS,
    review_capacity: int = DEFAULT_REVIEW_CAPACITY,
    hold_rate: float = DEFAULT_HOLD_RATE,
    truth: pl.DataFrame | None = None,
    random_state: int | None = 0,
    models: Mapping[str, Any] | None = None,
    keep_training_sets: bool = False,
) -> BacktestResult:
    """Train and test each model (default: gbdt, then the logistic baseline) on every fold.

    `features`: transfer_id, created_at, payer_vpa, amount_paise and the `feature_names` columns.
    `labels`: the ledger labels (all known now). `truth`, if given (transfer_id, is_fraud,
    fraud_type), overrides the labels when judging the test windows, never when training.
    `models` maps names to unfitted estimators of this module's fit protocol; each fold fits a
    clone. A fold without frauds to train or test on is reported as skipped, with the reason.
    """
    missing = [c for c in (*FEATURE_FRAME_COLUMNS, *feature_names) if c not in features.columns]
    if missing:
        raise ValueError(f"features: missing column(s) {missing}")
    feature_names = list(feature_names)
    models = dict(models) if models is not None else default_models(random_state)
    plan = prequential_folds(
        test_start=test_start,
        test_days=test_days,
        delay_days=delay_days,
        folds=folds,
        train_days=train_days,
    )
    features = as_utc_column(features, "created_at")
    judged = evaluation_targets(features.select("transfer_id"), labels, truth=truth)

    per_model: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    score_frames: list[pl.DataFrame] = []
    kept: dict[int, pl.DataFrame] = {}
    fitted: dict[int, dict[str, Any]] = {}
    for fold in plan:
        train = fold_training_set(features, labels, fold, maturity_days=maturity_days)
        test = fold_test_set(features, judged, fold)
        if keep_training_sets:
            kept[fold.index] = train.select(
                "transfer_id", "created_at", "y", "fraud_type", "matured"
            )
        skip = _skip_reason(train, test)
        for name, estimator in models.items():
            entry: dict[str, Any] = {
                **fold.as_dict(),
                "train_rows": train.height,
                "train_frauds": int(train["y"].sum()),
            }
            if skip:
                per_model[name].append({**entry, "skipped": skip})
                continue
            model = clone(estimator)
            try:
                fit_on_training_set(model, train, feature_names)
            except ValueError as exc:  # e.g. no fraud in the calibration slice
                per_model[name].append({**entry, "skipped": f"fit failed: {exc}"})
                continue
            fitted.setdefault(fold.index, {})[name] = model
            scored = score_test_set(model, test, feature_names)
            metrics = window_metrics(scored, review_capacity=review_capacity, hold_rate=hold_rate)
            per_model[name].append({**entry, **metrics})
            threshold = metrics["hold_threshold"]
            score_frames.append(
                scored.select(
                    "transfer_id",
                    fold=pl.lit(fold.index, dtype=pl.Int32),
                    model=pl.lit(name),
                    risk_score="risk_score",
                    decision=pl.when(pl.col("risk_score") >= threshold)
                    .then(pl.lit("HOLD"))
                    .otherwise(pl.lit("ALLOW")),
                    y=pl.col("y").cast(pl.Int8),
                )
            )

    result_metrics = {
        "protocol": {
            "test_start": utc(test_start).isoformat(),
            "test_days": test_days,
            "delay_days": delay_days,
            "folds": folds,
            "train_days": train_days,
            "maturity_days": maturity_days,
            "review_capacity": review_capacity,
            "hold_rate": hold_rate,
            "judged_by": "ground truth" if truth is not None else "labels known now",
        },
        "folds": [f.as_dict() for f in plan],
        "models": {
            name: {"folds": entries, "mean": _mean_metrics(entries)}
            for name, entries in per_model.items()
        },
    }
    scores = (
        pl.concat(score_frames)
        if score_frames
        else pl.DataFrame(
            schema={
                "transfer_id": pl.String,
                "fold": pl.Int32,
                "model": pl.String,
                "risk_score": pl.Float64,
                "decision": pl.String,
                "y": pl.Int8,
            }
        )
    )
    return BacktestResult(
        metrics=_jsonable(result_metrics),
        scores=scores,
        folds=plan,
        training_sets=kept,
        fitted=fitted,
    )


def _skip_reason(train: pl.DataFrame, test: pl.DataFrame) -> str | None:
    if train.height == 0:
        return "no training rows before the gap"
    if int(train["y"].sum()) == 0:
        return "no fraud known at the training cutoff"
    if test.height == 0:
        return "no transfers in the test window"
    return None


def _mean_metrics(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over the folds that ran of each numeric metric (and of each per-type recall)."""
    ran = [e for e in entries if "skipped" not in e]
    mean: dict[str, Any] = {"folds_run": len(ran), "folds_skipped": len(entries) - len(ran)}
    if not ran:
        return mean
    for key, value in ran[0].items():
        if key == "fold" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        values = [e[key] for e in ran if isinstance(e.get(key), int | float)]
        mean[key] = float(np.mean(values)) if values else None
    types = sorted({t for e in ran for t in e.get("recall_by_fraud_type", {})})
    mean["recall_by_fraud_type"] = {}
    for t in types:
        values = [
            e["recall_by_fraud_type"][t]
            for e in ran
            if e.get("recall_by_fraud_type", {}).get(t) is not None
        ]
        mean["recall_by_fraud_type"][t] = float(np.mean(values)) if values else None
    return mean


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/inf become None, numpy scalars Python numbers, datetimes strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value
