"""Train a risk model on a window, test it after a delay gap, register it, and challenge the live one.

The same steps as one backtest fold (`evaluation`), so a registered model's metrics mean what the
backtest's mean. The live model is re-scored on the candidate's test window, so the promotion
compares both on the same transfers and the same labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipelines.risk.evaluation import (
    DEFAULT_HOLD_RATE,
    DEFAULT_REVIEW_CAPACITY,
    Fold,
    fit_on_training_set,
    fold_test_set,
    fold_training_set,
    prequential_folds,
    score_test_set,
    window_metrics,
)
from pipelines.risk.labels import DEFAULT_MATURITY_DAYS, as_utc_column, evaluation_targets
from pipelines.risk.model import make_model
from pipelines.risk.registry import ModelRegistry, PromotionDecision


@dataclass
class TrainingRun:
    """A model trained on `fold`'s training window and its metrics on `fold`'s test window."""

    kind: str
    model: Any
    fold: Fold
    feature_names: list[str]
    train_rows: int
    train_frauds: int
    metrics: dict[str, Any]
    version: str | None = None
    live_metrics: dict[str, Any] | None = None
    decision: PromotionDecision | None = None


def train_and_evaluate(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    feature_names: Sequence[str],
    *,
    test_start: dt.datetime,
    test_days: int = 7,
    delay_days: int = 7,
    train_days: int | None = None,
    maturity_days: int = DEFAULT_MATURITY_DAYS,
    kind: str = "gbdt",
    params: Mapping[str, Any] | None = None,
    truth: pl.DataFrame | None = None,
    review_capacity: int = DEFAULT_REVIEW_CAPACITY,
    hold_rate: float = DEFAULT_HOLD_RATE,
    random_state: int | None = 0,
) -> TrainingRun:
    """Train a `kind` model on the window before the gap and measure it on the test window."""
    fold = prequential_folds(
        test_start=test_start,
        test_days=test_days,
        delay_days=delay_days,
        folds=1,
        train_days=train_days,
    )[0]
    features = as_utc_column(features, "created_at")
    train = fold_training_set(features, labels, fold, maturity_days=maturity_days)
    if int(train["y"].sum()) == 0:
        raise ValueError(
            f"no fraud known at {fold.train_end.isoformat()} among {train.height} training rows"
        )
    model = make_model(kind, random_state=random_state, **dict(params or {}))
    fit_on_training_set(model, train, feature_names)
    metrics = _test_metrics(
        model, features, labels, feature_names, fold, truth, review_capacity, hold_rate
    )
    return TrainingRun(
        kind=kind,
        model=model,
        fold=fold,
        feature_names=list(feature_names),
        train_rows=train.height,
        train_frauds=int(train["y"].sum()),
        metrics=metrics,
    )


def register_and_challenge(
    registry: ModelRegistry,
    run: TrainingRun,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    maturity_days: int = DEFAULT_MATURITY_DAYS,
    truth: pl.DataFrame | None = None,
    review_capacity: int = DEFAULT_REVIEW_CAPACITY,
    hold_rate: float = DEFAULT_HOLD_RATE,
    version: str | None = None,
) -> TrainingRun:
    """Register `run`'s model, re-score the live model on the same test window, try promotion.

    Returns `run` with its version, the live model's metrics and the promotion decision.
    """
    manifest = registry.register(
        run.model,
        kind=run.kind,
        feature_names=run.feature_names,
        training_window=(run.fold.train_start, run.fold.train_end),
        test_window=(run.fold.test_start, run.fold.test_end),
        metrics={**run.metrics, "train_rows": run.train_rows, "train_frauds": run.train_frauds},
        version=version,
        label_policy={"maturity_days": maturity_days, "labels_known_before": "train_end"},
    )
    run.version = manifest["version"]
    live = registry.live_version()
    if live is not None and live != run.version:
        live_model = registry.load(live)
        live_features = registry.manifest(live)["feature_names"]
        missing = [name for name in live_features if name not in features.columns]
        if missing:
            # The live model cannot be scored on today's features: compare nothing, promote
            # nothing; an operator decides (promote(force=True)) after looking at why.
            run.decision = registry.promote(
                run.version,
                live_metrics={"average_precision": None, "missing_features": missing},
            )
            return run
        run.live_metrics = _test_metrics(
            live_model,
            as_utc_column(features, "created_at"),
            labels,
            live_features,
            run.fold,
            truth,
            review_capacity,
            hold_rate,
        )
    run.decision = registry.promote(run.version, live_metrics=run.live_metrics)
    return run


def _test_metrics(
    model: Any,
    features: pl.DataFrame,
    labels: pl.DataFrame,
    feature_names: Sequence[str],
    fold: Fold,
    truth: pl.DataFrame | None,
    review_capacity: int,
    hold_rate: float,
) -> dict[str, Any]:
    window = features.filter(
        (pl.col("created_at") >= fold.test_start) & (pl.col("created_at") < fold.test_end)
    )
    targets = evaluation_targets(window.select("transfer_id"), labels, truth=truth)
    test = fold_test_set(window, targets, fold)
    if test.height == 0:
        raise ValueError(
            f"no transfers in the test window {fold.test_start.isoformat()} to "
            f"{fold.test_end.isoformat()}"
        )
    scored = score_test_set(model, test, feature_names)
    return window_metrics(scored, review_capacity=review_capacity, hold_rate=hold_rate)
