"""Training a candidate model behind the promotion gate (the Dagster assets and the CLI call it).

The candidate is trained exactly as fold 0 of the prequential evaluation (labels known at the
start of the delay gap), so the live model and a candidate can be compared on a test window
neither has seen; its hyper-parameters are chosen inside its training window
(`selection`), as every fold's are. Production therefore scores with a model whose training data ends
`test_days + delay_days` before the newest transfer: the price of an honest promotion gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.risk.evaluation import (
    BacktestResult,
    backtest,
    fit_on_training_set,
    fold_test_set,
    fold_training_set,
    prequential_folds,
    window_metrics,
)
from pipelines.risk.labels import evaluation_targets
from pipelines.risk.model import GradientBoostingRiskModel
from pipelines.risk.registry import ModelRegistry, PromotionDecision
from pipelines.settings import ENV_PREFIX, Settings


@dataclass
class TrainingOutcome:
    """A registered candidate, the live model's metrics on its test window, the evaluation."""

    version: str
    evaluation: BacktestResult
    candidate_metrics: dict[str, Any]
    live_version: str | None
    live_metrics: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    def promotion(self, registry: ModelRegistry, *, dry_run: bool = False) -> PromotionDecision:
        """Promote the candidate if it beats the live model on its test window."""
        return registry.promote(self.version, live_metrics=self.live_metrics, dry_run=dry_run)


def latest_test_start(features: pl.DataFrame, settings: Settings) -> datetime:
    """Fold 0's test window: the latest whole days that leave `delay_days` for labels after it."""
    last: datetime = features["created_at"].max()
    day = (last - timedelta(days=settings.test_days + settings.delay_days)).date()
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def train_candidate(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    registry: ModelRegistry,
    settings: Settings,
    *,
    truth: pl.DataFrame | None = None,
) -> TrainingOutcome:
    """Evaluate model vs baseline prequentially and register fold 0's model as a candidate."""
    test_start = latest_test_start(features, settings)
    evaluation = backtest(
        features,
        labels,
        FEATURE_NAMES,
        test_start=test_start,
        test_days=settings.test_days,
        delay_days=settings.delay_days,
        folds=settings.folds,
        maturity_days=settings.maturity_days,
        review_capacity=settings.review_capacity,
        hold_rate=settings.hold_rate,
        truth=truth,
        random_state=settings.random_state,
    )
    fold = prequential_folds(
        test_start=test_start,
        test_days=settings.test_days,
        delay_days=settings.delay_days,
        folds=1,
    )[0]
    train = fold_training_set(features, labels, fold, maturity_days=settings.maturity_days)
    if train.is_empty() or train["y"].sum() == 0:
        raise ValueError(
            f"no frauds known by {fold.train_end:%Y-%m-%d} to train on: the ledger needs more "
            "history before the test window, or smaller delay_days / maturity_days settings "
            f"(settings.toml, {ENV_PREFIX}DELAY_DAYS / {ENV_PREFIX}MATURITY_DAYS, or the backtest's "
            "--delay-days / --maturity-days)"
        )
    # The backtest fitted this very model (same fold, same estimator) as its fold 0.
    model = evaluation.fitted.get(fold.index, {}).get("gbdt")
    if model is None or evaluation.folds[0] != fold:
        model = fit_on_training_set(
            GradientBoostingRiskModel(random_state=settings.random_state), train, FEATURE_NAMES
        )
    judged = evaluation_targets(features.select("transfer_id"), labels, truth=truth)
    test = fold_test_set(features, judged, fold)
    metrics = _window_metrics(model, test, settings)
    live_metrics = None
    live = registry.live_version()
    if live is not None:
        live_metrics = _window_metrics(registry.load(live), test, settings)
    manifest = registry.register(
        model,
        kind="gbdt",
        feature_names=FEATURE_NAMES,
        training_window=(fold.train_start, fold.train_end),
        test_window=(fold.test_start, fold.test_end),
        metrics=metrics,
        label_policy={
            "maturity_days": settings.maturity_days,
            "delay_days": settings.delay_days,
            "labels_known_at": fold.train_end.isoformat(),
            "judged_by": "ground truth" if truth is not None else "ledger labels",
        },
        notes=(
            "Trained as fold 0 of the prequential evaluation; hyper-parameters chosen and "
            "calibration fitted inside its training window (sections below)."
        ),
    )
    return TrainingOutcome(
        version=manifest["version"],
        evaluation=evaluation,
        candidate_metrics=metrics,
        live_version=live,
        live_metrics=live_metrics,
        extra={
            "train_rows": train.height,
            "train_frauds": int(train["y"].sum()),
            "selection": manifest.get("selection"),
            "calibration": manifest.get("calibration"),
        },
    )


def _window_metrics(model: Any, test: pl.DataFrame, settings: Settings) -> dict[str, Any]:
    scored = test.with_columns(
        risk_score=pl.Series(model.risk_score(test.select(FEATURE_NAMES)), dtype=pl.Float64)
    )
    return window_metrics(
        scored, review_capacity=settings.review_capacity, hold_rate=settings.hold_rate
    )
