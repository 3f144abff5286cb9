"""Prequential evaluation that respects label delay (Le Borgne et al., Fraud Detection Handbook).

Each fold is [train window] [delay gap] [test window]; fold 0's test window starts at
`test_start` and each further fold steps back by `test_days`. A fold trains only on the targets
known when its training window closes (`labels.training_targets(as_of=train_end)`): in production
the model trained today is used for the next weeks, while the frauds of those weeks are reported
only later. The test window is judged with the labels known at evaluation time (or ground truth).

Metrics of a window (one definition each, used by every path):
- roc_auc, average_precision: of the risk score against the fraud target, per transfer.
- precision_at_k: each IST day, the k payers with the highest daily score (max over their
  transfers) are what a review team of capacity k would look at; a payer is a hit if it made a
  fraudulent transfer that day. Mean over days (k = min(capacity, payers active that day)); a
  window cut at UTC midnight gives partial IST days at both ends, which count like the others.
- at a hold rate h: the threshold is the lowest that holds at most h of the window's transfers
  (`hold_threshold`; ties at the cut are left out) and a transfer is held if its score is at or
  above it. recall_at_hold = share of frauds
  held; fraud_value_caught_share = paise of held frauds / paise of all frauds; legit_payers_held_share
  = payers with no fraud in the window and >= 1 held transfer / payers with no fraud in the window;
  recall_by_fraud_type = recall_at_hold per typology.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.base import clone
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pipelines.india_time import IST_TIME_ZONE
from pipelines.risk.labels import (
    DEFAULT_MATURITY_DAYS,
    as_utc_column,
    evaluation_targets,
    training_targets,
    utc,
)
from pipelines.risk.model import GradientBoostingRiskModel, LogisticRiskModel
from pipelines.settings import Settings

# The defaults of an evaluation called without settings are the instance settings' defaults.
DEFAULT_REVIEW_CAPACITY: int = Settings.model_fields["review_capacity"].default
DEFAULT_HOLD_RATE: float = Settings.model_fields["hold_rate"].default
UNKNOWN_FRAUD_TYPE = "UNKNOWN"
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
    """Fit `model` on a `fold_training_set` frame: time-ordered, calibrated on matured rows."""
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
    if k <= 0:
        raise ValueError(f"review capacity k must be positive, got {k}")
    daily = (
        as_utc_column(frame, "created_at")
        .with_columns(day=pl.col("created_at").dt.convert_time_zone(IST_TIME_ZONE).dt.date())
        .group_by("day", "payer_vpa")
        .agg(score=pl.col("risk_score").max(), fraud=pl.col("y").max())
    )
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


def window_days(frame: pl.DataFrame) -> int:
    """The days a window covers: its UTC calendar days, first to last (windows are cut at UTC
    midnight; counting its India days instead would count the partial IST days at both ends
    as two more, and let the policy hold a seventh more than the team reviews)."""
    if frame.height == 0:
        return 0
    days = as_utc_column(frame, "created_at")["created_at"].dt.date()
    return (days.max() - days.min()).days + 1


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
    both_classes = 0 < n_fraud < n
    threshold = hold_threshold(scores, hold_rate)
    held = scores >= threshold
    amount = frame["amount_paise"].cast(pl.Int64).to_numpy()
    fraud = y == 1
    fraud_value = int(amount[fraud].sum())

    payers = (
        pl.DataFrame({"payer_vpa": frame["payer_vpa"], "fraud": fraud, "held": held})
        .group_by("payer_vpa")
        .agg(pl.col("fraud").any(), pl.col("held").any())
    )
    legit_payers = payers.filter(~pl.col("fraud"))
    legit_held = int(legit_payers["held"].sum())

    types = frame.select(
        pl.col("fraud_type").fill_null(UNKNOWN_FRAUD_TYPE), held=pl.Series(held)
    ).filter(pl.Series(fraud))
    by_type = (
        types.group_by("fraud_type")
        .agg(frauds=pl.len(), held=pl.col("held").sum())
        .sort("fraud_type")
    )

    top_k = precision_at_k(frame, review_capacity)
    return {
        "n_transfers": n,
        "n_frauds": n_fraud,
        "fraud_rate": _ratio(n_fraud, n),
        "mean_risk_score": float(scores.mean()) if n else None,
        "roc_auc": float(roc_auc_score(y, scores)) if both_classes else None,
        "average_precision": float(average_precision_score(y, scores)) if both_classes else None,
        "precision_at_k": top_k["precision_at_k"],
        "review_capacity": review_capacity,
        "days": top_k["days"],
        "hold_rate": hold_rate,
        "hold_threshold": None if not math.isfinite(threshold) else threshold,
        "capacity_threshold": _finite(
            capacity_threshold(scores, review_capacity * window_days(frame))
        ),
        "held_transfers": int(held.sum()),
        "held_share": _ratio(int(held.sum()), n),
        "recall_at_hold": _ratio(int((held & fraud).sum()), n_fraud),
        "precision_at_hold": _ratio(int((held & fraud).sum()), int(held.sum())),
        "fraud_value_paise": fraud_value,
        "fraud_value_caught_paise": int(amount[held & fraud].sum()),
        "fraud_value_caught_share": _ratio(int(amount[held & fraud].sum()), fraud_value),
        "legit_payers_active": legit_payers.height,
        "legit_payers_held": legit_held,
        "legit_payers_held_share": _ratio(legit_held, legit_payers.height),
        "frauds_by_fraud_type": {t: int(f) for t, f, _ in by_type.iter_rows()},
        "recall_by_fraud_type": {t: _ratio(int(h), int(f)) for t, f, h in by_type.iter_rows()},
    }


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
        ap = average_precision_score(y, part["risk_score"].to_numpy())
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


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


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
