"""Prequential folds that respect label delay (Le Borgne et al., Fraud Detection Handbook).

Each fold is [train window] [delay gap] [test window]; fold 0's test window starts at
`test_start` and each further fold steps back by `test_days`. A fold trains only on the targets
known when its training window closes (`labels.training_targets(as_of=train_end)`): in production
the model trained today is used for the next weeks, while the frauds of those weeks are reported
only later. The test window is judged with the labels known at evaluation time (or ground truth).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipelines.risk.labels import DEFAULT_MATURITY_DAYS, as_utc_column, training_targets, utc


@dataclass(frozen=True)
class Fold:
    """One prequential fold: train on [train_start, train_end), gap, test on [test_start, test_end)."""

    index: int
    train_start: dt.datetime | None  # None: all history before train_end
    train_end: dt.datetime  # = start of the delay gap; training labels are those known here
    test_start: dt.datetime  # = end of the delay gap
    test_end: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "train_start": None if self.train_start is None else self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def prequential_folds(
    *,
    test_start: dt.datetime,
    test_days: int,
    delay_days: int,
    folds: int,
    train_days: int | None = None,
) -> list[Fold]:
    """The folds, fold 0 testing from `test_start`, each next one `test_days` earlier."""
    if test_days <= 0 or delay_days < 0 or folds <= 0:
        raise ValueError(
            f"need test_days > 0, delay_days >= 0 and folds > 0; got {test_days}, {delay_days}, {folds}"
        )
    if train_days is not None and train_days <= 0:
        raise ValueError(f"train_days must be positive or None, got {train_days}")
    start = utc(test_start)
    out = []
    for k in range(folds):
        t0 = start - dt.timedelta(days=k * test_days)
        train_end = t0 - dt.timedelta(days=delay_days)
        out.append(
            Fold(
                index=k,
                train_start=None
                if train_days is None
                else train_end - dt.timedelta(days=train_days),
                train_end=train_end,
                test_start=t0,
                test_end=t0 + dt.timedelta(days=test_days),
            )
        )
    return out


def fold_training_set(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    fold: Fold,
    *,
    maturity_days: int = DEFAULT_MATURITY_DAYS,
) -> pl.DataFrame:
    """The fold's training rows (features + `y, fraud_type, matured`), time-ordered.

    Targets are those known at `fold.train_end`: no label reported later is used.
    """
    window = as_utc_column(features, "created_at").filter(pl.col("created_at") < fold.train_end)
    if fold.train_start is not None:
        window = window.filter(pl.col("created_at") >= fold.train_start)
    targets = training_targets(
        window.select("transfer_id", "created_at"),
        labels,
        as_of=fold.train_end,
        maturity_days=maturity_days,
    )
    return window.join(targets, on="transfer_id", how="inner").sort("created_at")


def fold_test_set(features: pl.DataFrame, targets: pl.DataFrame, fold: Fold) -> pl.DataFrame:
    """The fold's test rows: features of transfers created in the test window + `y, fraud_type`."""
    window = as_utc_column(features, "created_at").filter(
        (pl.col("created_at") >= fold.test_start) & (pl.col("created_at") < fold.test_end)
    )
    return window.join(targets, on="transfer_id", how="left").with_columns(pl.col("y").fill_null(0))


def fit_on_training_set(model: Any, train: pl.DataFrame, feature_names: Sequence[str]) -> Any:
    """Fit `model` on a `fold_training_set` frame: time-ordered; hyper-parameters chosen (for a
    model with a `param_grid`) and calibration fitted on matured rows of the window only.

    The fitted model records what it chose (`selection_`) and how it calibrated
    (`calibration_`); a frame with no fraud raises ValueError saying so.
    """
    return model.fit(
        train.select(list(feature_names)),
        train["y"],
        sample_time=train["created_at"],
        calibration_mask=train["matured"],
    )


def score_test_set(model: Any, test: pl.DataFrame, feature_names: Sequence[str]) -> pl.DataFrame:
    """`test` with a `risk_score` column from `model`."""
    scores = model.risk_score(test.select(list(feature_names)))
    return test.with_columns(risk_score=pl.Series(scores, dtype=pl.Float64))
