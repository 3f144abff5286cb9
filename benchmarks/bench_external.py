"""Detection on data the project did not write: our models against the published baseline.

    .venv/bin/python benchmarks/bench_external.py                       # 3 worlds, both protocols
    .venv/bin/python benchmarks/bench_external.py --seeds 0 --protocols delayed-labels --ablation

Each world is the Fraud Detection Handbook's transaction simulator (`pipelines.sandbox.handbook`,
seeded; cached in the work directory). Each goes through the backtest's own ingestion and feature
engine (`risk.backtest.load_ledger`), then both protocols of `risk.evaluation.backtest` run on the
handbook's split (train 2018-07-25 to 07-31, delay to 08-07, test 08-08 to 08-14) with three
models side by side on the very same folds: our gbdt and logistic baseline on the project's
features, and the published baseline, a random forest on the handbook's baseline features
(`published_features`). Judged by the world's ground truth. Prints the median over worlds and
one JSON line; writes `results.json` in the work directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from bench_typology_holdout import NEW_FAMILIES, OLD_FEATURES  # one definition of the families
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.table import CATALOGUE_VERSION
from pipelines.india_time import IST_TIME_ZONE
from pipelines.risk.backtest import load_ledger
from pipelines.risk.evaluation import DELAYED_LABELS, LABELS_KNOWN_NOW, backtest, default_models
from pipelines.risk.model import GradientBoostingRiskModel
from pipelines.sandbox.handbook import FRAUD_SCENARIOS, HandbookConfig, write_handbook_ledger
from pipelines.settings import Settings

# The handbook's split (chapter "Baseline fraud detection system"): 7 days each.
TEST_START = dt.date(2018, 8, 8)
TRAIN_DAYS = DELAY_DAYS = TEST_DAYS = 7
WINDOWS_DAYS = (1, 7, 30)
PUBLISHED_FEATURES = (
    "hb_amount",
    "hb_during_weekend",
    "hb_during_night",
    *(f"hb_customer_nb_tx_{w}d" for w in WINDOWS_DAYS),
    *(f"hb_customer_avg_amount_{w}d" for w in WINDOWS_DAYS),
    *(f"hb_terminal_nb_tx_{w}d" for w in WINDOWS_DAYS),
    *(f"hb_terminal_risk_{w}d" for w in WINDOWS_DAYS),
)


def published_features(features: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The handbook's baseline features ("Baseline feature transformation") per transfer_id.

    Customer (payer): transactions and mean amount over the last 1, 7, 30 days, the current one
    included. Terminal (payee): transactions and fraud share over the 1, 7, 30 days that end
    `DELAY_DAYS` before the transfer, as published: the fraud flag is the ledger's FRAUD label
    whatever its reported_at (every fraud of these worlds is reported, around a week late), so
    this baseline knows a fraud exactly a week on, a little earlier than a reported label allows.
    Times of day and weekends are IST."""
    frauds = labels.filter(pl.col("label") == "FRAUD")["transfer_id"].unique()
    frame = (
        features.select("transfer_id", "created_at", "payer_vpa", "payee_vpa", "amount_paise")
        .sort("created_at")
        .with_columns(
            local=pl.col("created_at").dt.convert_time_zone(IST_TIME_ZONE),
            amount=pl.col("amount_paise") / 100,
            fraud=pl.col("transfer_id").is_in(frauds.implode()).cast(pl.Float64),
            one=pl.lit(1.0),
        )
    )
    by = "created_at"
    columns = [
        pl.col("amount").alias("hb_amount"),
        (pl.col("local").dt.weekday() >= 6).cast(pl.Int8).alias("hb_during_weekend"),
        (pl.col("local").dt.hour() <= 6).cast(pl.Int8).alias("hb_during_night"),
    ]
    for w in WINDOWS_DAYS:
        columns += [
            pl.col("one")
            .rolling_sum_by(by, f"{w}d")
            .over("payer_vpa")
            .alias(f"hb_customer_nb_tx_{w}d"),
            pl.col("amount")
            .rolling_mean_by(by, f"{w}d")
            .over("payer_vpa")
            .alias(f"hb_customer_avg_amount_{w}d"),
        ]
    delay = f"{DELAY_DAYS}d"
    terminal = [
        pl.col("one").rolling_sum_by(by, delay).over("payee_vpa").alias("_tx_delay"),
        pl.col("fraud").rolling_sum_by(by, delay).over("payee_vpa").alias("_fraud_delay"),
    ]
    for w in WINDOWS_DAYS:
        span = f"{DELAY_DAYS + w}d"
        terminal += [
            pl.col("one").rolling_sum_by(by, span).over("payee_vpa").alias(f"_tx_{w}"),
            pl.col("fraud").rolling_sum_by(by, span).over("payee_vpa").alias(f"_fraud_{w}"),
        ]
    out = frame.with_columns(*columns, *terminal)
    risk = []
    for w in WINDOWS_DAYS:
        tx = pl.col(f"_tx_{w}") - pl.col("_tx_delay")
        fraud = pl.col(f"_fraud_{w}") - pl.col("_fraud_delay")
        risk += [
            tx.alias(f"hb_terminal_nb_tx_{w}d"),
            pl.when(tx > 0).then(fraud / tx).otherwise(0.0).alias(f"hb_terminal_risk_{w}d"),
        ]
    return out.with_columns(*risk).select("transfer_id", *PUBLISHED_FEATURES)


class PublishedRandomForest(ClassifierMixin, BaseEstimator):
    """The handbook's random forest (its model selection's choice: 100 trees, depth 20), in the
    evaluation's fit protocol; the score is the forest's fraud probability, uncalibrated, as
    published."""

    def __init__(self, n_estimators: int = 100, max_depth: int | None = 20, random_state: int = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.random_state = random_state

    def fit(self, X: pl.DataFrame, y: pl.Series, sample_time=None, calibration_mask=None):
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            random_state=self.random_state,
            n_jobs=-1,
        ).fit(X.to_numpy(), np.asarray(y))
        return self

    def risk_score(self, X: pl.DataFrame) -> np.ndarray:
        return self.forest_.predict_proba(X.to_numpy())[:, 1]


def world(work_dir: Path, seed: int) -> tuple[Path, Path, float | None]:
    """The world of `seed` in the work directory, generated once; (landing, truth, seconds)."""
    root = work_dir / f"world-{seed}"
    landing, truth = root / "landing", root / "truth"
    if (truth / "transfers.parquet").exists():
        return landing, truth / "transfers.parquet", None
    made = write_handbook_ledger(HandbookConfig(seed=seed), landing, truth)
    return landing, made.truth_path, made.seconds


def run_world(
    work_dir: Path, seed: int, protocols: list[str], ablation: bool = False
) -> dict[str, Any]:
    """`protocols` on one world, three models each (more with `ablation`); their metrics."""
    landing, truth_path, gen_seconds = world(work_dir, seed)
    started = time.perf_counter()
    cache = work_dir / f"world-{seed}" / "features.parquet"
    labels_cache = cache.with_name("labels.parquet")
    stamp = cache.with_name("catalogue.txt")
    fresh = cache.exists() and stamp.exists() and stamp.read_text() == CATALOGUE_VERSION
    if fresh and labels_cache.exists():
        # The feature table of this world as the backtest's engine computed it on a run before
        # (with today's catalogue: a cache of another one is computed again).
        features, labels = pl.read_parquet(cache), pl.read_parquet(labels_cache)
        quarantined = None
    else:
        features, labels, ingest = load_ledger(landing, work_dir / f"world-{seed}" / "backtest")
        quarantined = sum(s["quarantined"] for s in ingest.values())
        features.write_parquet(cache)
        labels.write_parquet(labels_cache)
        stamp.write_text(CATALOGUE_VERSION)
    load_seconds = time.perf_counter() - started
    features = features.join(published_features(features, labels), on="transfer_id", how="left")
    truth = pl.read_parquet(truth_path)
    settings = Settings()
    models = {**default_models(settings.random_state), "published_rf": PublishedRandomForest()}
    columns = {"published_rf": PUBLISHED_FEATURES}
    if ablation:
        # As in the typology hold-out: the catalogue before issue 12, and without each new family,
        # with the model's own hyper-parameters (no selection).
        fixed = GradientBoostingRiskModel(random_state=settings.random_state, param_grid=None)
        models["before"], columns["before"] = fixed, OLD_FEATURES
        for family, names in NEW_FAMILIES.items():
            models[f"- {family}"] = clone(fixed)
            columns[f"- {family}"] = tuple(n for n in FEATURE_NAMES if n not in names)
    out: dict[str, Any] = {
        "seed": seed,
        "generate_seconds": gen_seconds,
        "ingest_and_features_seconds": round(load_seconds, 1),
        "quarantined": quarantined,
        "protocols": {},
    }
    plans = {
        # The published one: a week of training, labels as known after the delay.
        DELAYED_LABELS: (TRAIN_DAYS, settings.maturity_days),
        # Ours as the project runs it: all history, unlabelled rows legit once 30 days old.
        LABELS_KNOWN_NOW: (None, settings.maturity_days),
    }
    for protocol in protocols:
        train_days, maturity = plans[protocol]
        t0 = time.perf_counter()
        result = backtest(
            features,
            labels,
            FEATURE_NAMES,
            test_start=dt.datetime.combine(TEST_START, dt.time(), tzinfo=dt.UTC),
            test_days=TEST_DAYS,
            delay_days=DELAY_DAYS,
            folds=1,
            train_days=train_days,
            maturity_days=maturity,
            review_capacity=settings.review_capacity,
            hold_rate=settings.hold_rate,
            truth=truth,
            random_state=settings.random_state,
            models=models,
            model_features=columns,
            protocol=protocol,
        )
        out["protocols"][protocol] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "models": {name: m["mean"] for name, m in result.metrics["models"].items()},
        }
    return out


ROWS = (
    ("average_precision", "AP"),
    ("roc_auc", "ROC AUC"),
    ("card_precision_at_k", "card precision@100 a day"),
    ("precision_at_k", "precision@100 payers a day"),
    ("recall_at_hold", "recall at 0.5% hold"),
    *((f"recall_by_fraud_type.{s}", f"  recall at 0.5% [{s}]") for s in FRAUD_SCENARIOS),
    ("n_transfers", "test transfers (kept)"),
    ("dropped_transfers", "dropped (payer known)"),
    ("train_rows", "training rows"),
    ("train_frauds", "training frauds known"),
)


def _value(mean: dict[str, Any], key: str) -> float | None:
    if "." in key:
        outer, inner = key.split(".", 1)
        return (mean.get(outer) or {}).get(inner)
    return mean.get(key)


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Median over worlds: protocol -> model -> metric."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for protocol in runs[0]["protocols"]:
        out[protocol] = {}
        for name in runs[0]["protocols"][protocol]["models"]:
            out[protocol][name] = {}
            for key, _ in ROWS:
                values = [_value(r["protocols"][protocol]["models"][name], key) for r in runs]
                values = [v for v in values if v is not None]
                out[protocol][name][key] = statistics.median(values) if values else None
    return out


def print_table(medians: dict[str, dict[str, dict[str, float | None]]], n_worlds: int) -> None:
    for protocol, models in medians.items():
        names = list(models)
        print(f"\n{protocol} (median over {n_worlds} world(s))")
        print(f"{'metric':34}" + "".join(f"{n:>14}" for n in names))
        for key, label in ROWS:
            cells = []
            for n in names:
                v = models[n][key]
                cells.append(
                    f"{'-':>14}" if v is None else f"{v:>14.0f}" if v >= 100 else f"{v:>14.3f}"
                )
            print(f"{label:34}" + "".join(cells))


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the worlds, run both protocols on each, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "upi-risk-external",
        help="where the worlds and their backtest warehouses are cached",
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=[DELAYED_LABELS, LABELS_KNOWN_NOW],
        default=[DELAYED_LABELS, LABELS_KNOWN_NOW],
        help="labels-known-now trains on all history: minutes per world",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also the gbdt on the catalogue before issue 12, and without each new family",
    )
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        print(f"world {seed} ...", file=sys.stderr, flush=True)
        runs.append(run_world(args.work_dir, seed, args.protocols, args.ablation))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "protocols"}), file=sys.stderr)
    medians = summary(runs)
    (args.work_dir / "results.json").write_text(
        json.dumps({"runs": runs, "median": medians}, indent=2, default=str)
    )
    print_table(medians, len(runs))
    print(json.dumps({"benchmark": "external", "seeds": args.seeds, "median": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
