"""Prequential evaluation that respects label delay: the backtest of a model against baselines.

Two protocols (`PROTOCOLS`), over the same folds (train, delay gap, test; each further fold
`test_days` earlier):

- `labels-known-now` (the project's own): a fold trains on the targets known when its training
  window closes (`folds.fold_training_set`, unlabelled rows count as legitimate once
  `maturity_days` old) and is judged on every transfer of its test window, with the labels known
  now (or ground truth). Windows are cut at UTC midnight.
- `delayed-labels` (the published one: Le Borgne et al., Fraud Detection Handbook, "Validation
  strategies" and "Precision top-k metrics"): a fold trains on its training window with the
  labels known at the end of the delay period (the delay is there for them to arrive, so an
  unlabelled training transfer counts as legitimate); each test day (an IST day) drops the
  transfers of payers already known as compromised: a FRAUD label reported before that day about
  one of their transfers since the training window opened (so every fraud known for training,
  and every one revealed during the delay period or earlier test days). The kept transfers are
  judged like the other protocol's, and the card precision@k of the published design is
  reported with the rest (`metrics.card_precision_at_k`).

The metrics of a window are in `metrics`, the plots in `plots`; this module runs them over every
fold and model and keeps what they measured. Their public names are importable from here too.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HOLD_RATE",
    "DEFAULT_REVIEW_CAPACITY",
    "DELAYED_LABELS",
    "LABELS_KNOWN_NOW",
    "PROTOCOLS",
    "TABLE_METRICS",
    "BacktestResult",
    "Fold",
    "backtest",
    "capacity_threshold",
    "card_precision_at_k",
    "default_models",
    "delayed_label_folds",
    "delayed_label_test_set",
    "delayed_label_training_set",
    "fit_on_training_set",
    "fold_test_set",
    "fold_training_set",
    "hold_threshold",
    "pr_curve_png",
    "precision_at_k",
    "prequential_folds",
    "ranking_metrics",
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

from pipelines.india_time import IST, IST_TIME_ZONE
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
    card_precision_at_k,
    hold_threshold,
    precision_at_k,
    ranking_metrics,
    window_days,
    window_metrics,
)
from pipelines.risk.model import GradientBoostingRiskModel, LogisticRiskModel
from pipelines.risk.plots import pr_curve_png

FEATURE_FRAME_COLUMNS = ("transfer_id", "created_at", "payer_vpa", "amount_paise")
LABELS_KNOWN_NOW = "labels-known-now"
DELAYED_LABELS = "delayed-labels"
PROTOCOLS = (LABELS_KNOWN_NOW, DELAYED_LABELS)
# Metrics where a higher value is better, in the order the comparison table shows them.
TABLE_METRICS = (
    "average_precision",
    "roc_auc",
    "precision_at_k",
    "card_precision_at_k",
    "recall_at_hold",
    "fraud_value_caught_share",
    "precision_at_hold",
    "legit_payers_held_share",
    "mean_risk_score",
    "fraud_rate",
    "n_transfers",
    "n_frauds",
    "dropped_transfers",
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
    model_features: Mapping[str, Sequence[str]] | None = None,
    keep_training_sets: bool = False,
    protocol: str = LABELS_KNOWN_NOW,
) -> BacktestResult:
    """Train and test each model (default: gbdt, then the logistic baseline) on every fold.

    `features`: transfer_id, created_at, payer_vpa, amount_paise and the `feature_names` columns.
    `labels`: the ledger labels (all known now). `truth`, if given (transfer_id, is_fraud,
    fraud_type), overrides the labels when judging the test windows, never when training.
    `models` maps names to unfitted estimators of this module's fit protocol; each fold fits a
    clone. `model_features` gives a model columns of its own instead of `feature_names` (a
    published baseline on its published features, on the very same split). `protocol`: one of
    `PROTOCOLS` (module docstring); `maturity_days` applies to `labels-known-now` only. A fold
    without frauds to train or test on is reported as skipped, with the reason.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    models = dict(models) if models is not None else default_models(random_state)
    columns_of = {name: list((model_features or {}).get(name, feature_names)) for name in models}
    wanted = {c for cols in columns_of.values() for c in cols}
    missing = [c for c in (*FEATURE_FRAME_COLUMNS, *sorted(wanted)) if c not in features.columns]
    if missing:
        raise ValueError(f"features: missing column(s) {missing}")
    if protocol == LABELS_KNOWN_NOW:
        plan = prequential_folds(
            test_start=test_start,
            test_days=test_days,
            delay_days=delay_days,
            folds=folds,
            train_days=train_days,
        )
    else:
        plan = delayed_label_folds(
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
        extra: dict[str, Any] = {}
        if protocol == LABELS_KNOWN_NOW:
            train = fold_training_set(features, labels, fold, maturity_days=maturity_days)
            test = fold_test_set(features, judged, fold)
        else:
            train = delayed_label_training_set(features, labels, fold)
            test, dropped = delayed_label_test_set(features, judged, labels, fold)
            extra = {
                "dropped_transfers": dropped["transfers"],
                "dropped_payers": dropped["payers"],
            }
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
                **extra,
            }
            if skip:
                per_model[name].append({**entry, "skipped": skip})
                continue
            model = clone(estimator)
            try:
                fit_on_training_set(model, train, columns_of[name])
            except ValueError as exc:  # e.g. no fraud in the calibration slice
                per_model[name].append({**entry, "skipped": f"fit failed: {exc}"})
                continue
            fitted.setdefault(fold.index, {})[name] = model
            scored = score_test_set(model, test, columns_of[name])
            metrics = window_metrics(scored, review_capacity=review_capacity, hold_rate=hold_rate)
            # What the fold chose inside its training window, beside what it scored.
            chosen = {
                record: getattr(model, f"{record}_", None)
                for record in ("selection", "calibration")
            }
            per_model[name].append({**entry, **metrics, **chosen})
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
            "name": protocol,
            "test_start": utc(plan[0].test_start).isoformat(),
            "test_days": test_days,
            "delay_days": delay_days,
            "folds": folds,
            "train_days": train_days,
            # The delayed-label protocol counts an unlabelled training transfer as legitimate
            # once the delay period has passed: that is the published design's assumption.
            "maturity_days": maturity_days if protocol == LABELS_KNOWN_NOW else delay_days,
            "review_capacity": review_capacity,
            "hold_rate": hold_rate,
            "days": "UTC" if protocol == LABELS_KNOWN_NOW else "IST",
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


def _ist_midnight(moment: dt.datetime | dt.date) -> dt.datetime:
    """The IST midnight that starts `moment`'s day (a date is an IST day; a datetime is taken
    by its own IST day), as an aware UTC datetime."""
    day = utc(moment).astimezone(IST).date() if isinstance(moment, dt.datetime) else moment
    return dt.datetime.combine(day, dt.time(), tzinfo=IST).astimezone(dt.UTC)


def delayed_label_folds(
    *,
    test_start: dt.datetime | dt.date,
    test_days: int,
    delay_days: int,
    folds: int,
    train_days: int | None = None,
) -> list[Fold]:
    """The delayed-label protocol's folds, cut at IST midnight (the published design's days are
    the days payments belong to): fold 0 tests from `test_start`'s IST day, each next fold
    `test_days` earlier; `train_end` is the start of the delay period."""
    first = _ist_midnight(test_start)
    plan = prequential_folds(
        test_start=first,
        test_days=test_days,
        delay_days=delay_days,
        folds=folds,
        train_days=train_days,
    )
    return plan


def delayed_label_training_set(
    features: pl.DataFrame, labels: pl.DataFrame, fold: Fold
) -> pl.DataFrame:
    """The fold's training rows under the delayed-label protocol: transfers of the training
    window with the targets known when the delay period ends (`fold.test_start`); an unlabelled
    one counts as legitimate (matured), since the delay period is there for labels to arrive."""
    known_at = Fold(
        index=fold.index,
        train_start=fold.train_start,
        train_end=fold.test_start,
        test_start=fold.test_start,
        test_end=fold.test_end,
    )
    delay_days = (fold.test_start - fold.train_end) / dt.timedelta(days=1)
    # maturity = the delay: every training transfer is at least that old when the labels are read.
    train = fold_training_set(
        features, labels, known_at, maturity_days=math.floor(delay_days + 1e-9)
    )
    return train.filter(pl.col("created_at") < fold.train_end)


def delayed_label_test_set(
    features: pl.DataFrame, targets: pl.DataFrame, labels: pl.DataFrame, fold: Fold
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The fold's test rows under the delayed-label protocol, and how many were dropped.

    Each IST day of the test window keeps the transfers of payers not yet known as compromised,
    as the published protocol has it: a payer is known with a fraud among its transfers in the
    training window (on every test day, whenever it was reported: the protocol takes the
    training labels as known), or with a FRAUD label reported before that day starts about one
    of its transfers created since (after the training window opened; all history when it has
    no start)."""
    test = fold_test_set(features, targets, fold).with_columns(
        _day_start=pl.col("created_at")
        .dt.convert_time_zone(IST_TIME_ZONE)
        .dt.truncate("1d")
        # back to UTC: the day's IST midnight, compared with reported_at
        .dt.convert_time_zone("UTC")
    )
    # Any FRAUD label counts from the moment it was reported, even if a later verdict overturned
    # it: the report is what made the payer known on those days.
    reports = as_utc_column(
        labels.filter(pl.col("label") == "FRAUD").select("transfer_id", "reported_at"),
        "reported_at",
    ).join(
        as_utc_column(features.select("transfer_id", "created_at", "payer_vpa"), "created_at"),
        on="transfer_id",
        how="inner",
    )
    if fold.train_start is not None:
        reports = reports.filter(pl.col("created_at") >= fold.train_start)
    train_end = pl.lit(fold.train_end, dtype=pl.Datetime("us", "UTC"))
    known_at = (
        pl.when(pl.col("created_at") < train_end)
        .then(pl.min_horizontal("reported_at", train_end))  # before every test day
        .otherwise(pl.col("reported_at"))
    )
    # One date per payer answers every day: the payer is known from then on.
    first_known = reports.group_by("payer_vpa").agg(known_from=known_at.min())
    marked = test.join(first_known, on="payer_vpa", how="left").with_columns(
        _drop=pl.col("known_from").is_not_null() & (pl.col("known_from") < pl.col("_day_start"))
    )
    kept = marked.filter(~pl.col("_drop")).drop("known_from", "_drop", "_day_start")
    dropped = marked.filter(pl.col("_drop"))
    return kept, {"transfers": dropped.height, "payers": dropped["payer_vpa"].n_unique()}


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
