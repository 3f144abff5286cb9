"""Typology hold-out: train on worlds with one mix of fraud typologies, test on a world with
another mix and other parameters; report per typology, before and after, with the baseline.

    .venv/bin/python benchmarks/bench_typology_holdout.py                 # 40k users a world
    .venv/bin/python benchmarks/bench_typology_holdout.py --users 15000   # a quick look

Worlds (simulated once into --workdir, then ingested through the project's own ingestion and
feature engine, as `upi-risk backtest` does):
  train: two worlds (seeds 11 and 12, --train-days 60) with the default mix, parameters and
      fraud rate;
  test: one world (seed 21) where the typologies that turn weigh more, last longer or hide
      better (another mix, longer QR swaps and dormancy, a higher fraud rate, slower reports).
Training takes the targets known at each train world's end as the project's training does: a
fraud once reported, legitimate once 30 days old and unreported (younger unreported transfers
are left out), so the train worlds run 60 days; the test is the test world's last --test-days
days, judged by its ground truth.

Models, each fitted on the same training rows and scored on the same test rows:
  before: the model with its fixed hyper-parameters (no selection) on the catalogue before the
      recency features (OLD_FEATURES); its fit protocol is today's (the base refitted on every
      row, the calibration cross-fitted): the old features and hyper-parameters, not the old fit;
  after: the model with its hyper-parameters chosen inside the training window, on every feature;
  after, own hyper-parameters: every feature, the model's defaults (what the selection's choice
      costs or gains on this test world; never used to choose);
  logistic: the logistic baseline on every feature;
  ablation "- <family>": `after`'s chosen hyper-parameters, without that family of new features.
Metrics (`pipelines.risk.metrics.window_metrics`, the one evaluation definition): average
precision, ROC AUC, precision of the top 100 payers a day, recall at the 0.5% hold rate overall
and per typology. Target (issue 12): no typology under 50% recall at the 0.5% hold rate and
average precision at least 0.80. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.features.definitions import FEATURE_NAMES, LABEL_RECENCY_FEATURES
from pipelines.risk.backtest import load_ledger
from pipelines.risk.folds import fit_on_training_set, score_test_set
from pipelines.risk.labels import evaluation_targets, training_targets
from pipelines.risk.metrics import DEFAULT_HOLD_RATE, DEFAULT_REVIEW_CAPACITY, window_metrics
from pipelines.risk.model import GradientBoostingRiskModel, LogisticRiskModel
from pipelines.sandbox.simulator import SimulationConfig, simulate
from pipelines.settings import Settings

# The families of features issue 12 added; OLD_FEATURES is the catalogue before them.
NEW_FAMILIES: dict[str, tuple[str, ...]] = {
    **{f"{group} label recency": names for group, names in LABEL_RECENCY_FEATURES.items()},
    "payee first-time payers, ticket": (
        "payee_new_payer_share_7d",
        "payee_amount_ratio_mean_30d",
    ),
}
_NEW = {name for names in NEW_FAMILIES.values() for name in names}
OLD_FEATURES = tuple(name for name in FEATURE_NAMES if name not in _NEW)

TRAIN_WORLDS = {"train-a": 11, "train-b": 12}
TEST_SEED = 21
# The test world: the typologies that turn weigh more and last longer, reports come slower.
TEST_MIX = {
    "ACCOUNT_TAKEOVER": 0.10,
    "SOCIAL_ENGINEERING": 0.15,
    "MULE": 0.12,
    "MERCHANT_FRAUD": 0.08,
    "COLLECT_SCAM": 0.08,
    "QR_SWAP": 0.17,
    "DORMANT_MULE": 0.15,
    "ATO_SAME_DEVICE": 0.15,
}
TEST_PARAMETERS: dict[str, Any] = {
    "typology_mix": TEST_MIX,
    "fraud_rate": 0.006,
    "qr_swap_days": (4.0, 9.0),
    "report_delay_median_days": 6.0,
}


def world(workdir: Path, name: str, users: int, days: int, seed: int, **params: Any) -> Path:
    """Simulate a world into workdir/name once; return its directory."""
    target = workdir / f"{name}-users{users}-days{days}-seed{seed}"
    marker = target / "simulated.json"
    if not marker.exists():
        config = SimulationConfig(
            users=users, days=days, seed=seed, start=dt.date(2026, 1, 1), **params
        )
        print(f"simulating {target.name}...", file=sys.stderr)
        summary = simulate(config, target / "landing", target / "truth")
        marker.write_text(json.dumps({"transfers": summary.transfers, "frauds": summary.frauds}))
    return target


def world_features(target: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(features, labels, truth) of a simulated world, ingested once into its own warehouse."""
    features, labels, _ = load_ledger(target / "landing", target / "backtest")
    truth = pl.read_parquet(target / "truth" / "transfers.parquet")
    return features, labels, truth


def training_rows(features: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """A train world's transfers with the targets known at its end, as the project trains
    (`labels.training_targets`): a fraud once reported; legitimate only once matured
    (`maturity_days` old, unreported); younger unreported transfers are left out."""
    as_of = features["created_at"].max() + dt.timedelta(microseconds=1)
    targets = training_targets(
        features.select("transfer_id", "created_at"),
        labels,
        as_of=as_of,
        maturity_days=Settings().maturity_days,
    )
    return features.join(targets, on="transfer_id").sort("created_at")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=40_000, help="users of each world")
    parser.add_argument("--days", type=int, default=30, help="days of the test world")
    parser.add_argument(
        "--train-days",
        type=int,
        default=60,
        help="days of each train world: its labels mature over the last 30 (maturity_days)",
    )
    parser.add_argument("--test-days", type=int, default=14, help="the test world's last days")
    parser.add_argument("--hold-rate", type=float, default=DEFAULT_HOLD_RATE)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "upi-risk-holdout"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    train_parts = []
    for name, seed in TRAIN_WORLDS.items():
        features, labels, _ = world_features(
            world(args.workdir, name, args.users, args.train_days, seed)
        )
        train_parts.append(training_rows(features, labels))
    train = pl.concat(train_parts, how="vertical_relaxed").sort("created_at")
    features, labels, truth = world_features(
        world(args.workdir, "test", args.users, args.days, TEST_SEED, **TEST_PARAMETERS)
    )
    last = features["created_at"].max()
    test_start = dt.datetime.combine(
        (last - dt.timedelta(days=args.test_days - 1)).date(), dt.time(), tzinfo=dt.UTC
    )
    judged = evaluation_targets(features.select("transfer_id"), labels, truth=truth)
    test = features.filter(pl.col("created_at") >= test_start).join(judged, on="transfer_id")
    prepared = time.perf_counter() - started

    results: dict[str, dict[str, Any]] = {}

    def evaluate(name: str, model: Any, names: tuple[str, ...]) -> Any:
        began = time.perf_counter()
        fit_on_training_set(model, train, names)
        scored = score_test_set(model, test, names)
        metrics = window_metrics(
            scored, review_capacity=DEFAULT_REVIEW_CAPACITY, hold_rate=args.hold_rate
        )
        metrics["fit_seconds"] = round(time.perf_counter() - began, 1)
        results[name] = metrics
        print(f"{name}: AP {metrics['average_precision']:.3f}", file=sys.stderr)
        return model

    evaluate("before", _fixed(GradientBoostingRiskModel(random_state=0)), OLD_FEATURES)
    after = evaluate("after", GradientBoostingRiskModel(random_state=0), FEATURE_NAMES)
    # What the selection's choice costs or gains on this test: the new catalogue, own parameters.
    evaluate(
        "after, own hyper-parameters",
        _fixed(GradientBoostingRiskModel(random_state=0)),
        FEATURE_NAMES,
    )
    evaluate("logistic", LogisticRiskModel(random_state=0), FEATURE_NAMES)
    chosen = _chosen_params(after)
    for family, names in NEW_FAMILIES.items():
        kept = tuple(n for n in FEATURE_NAMES if n not in names)
        evaluate(f"- {family}", _fixed(GradientBoostingRiskModel(random_state=0, **chosen)), kept)

    _print_table(results, test)
    print(
        json.dumps(
            {
                "benchmark": "typology_holdout",
                "train_rows": train.height,
                "train_frauds": int(train["y"].sum()),
                "test_rows": test.height,
                "test_frauds": int(test["y"].sum()),
                "prepare_seconds": round(prepared, 1),
                "chosen": chosen,
                "results": {
                    name: {k: v for k, v in m.items() if k != "daily_precision"}
                    for name, m in results.items()
                },
            },
            default=str,
        )
    )


def _fixed(model: GradientBoostingRiskModel) -> GradientBoostingRiskModel:
    """The model with its own hyper-parameters: no selection."""
    return model.set_params(param_grid=None)


def _chosen_params(model: Any) -> dict[str, Any]:
    """The overrides of the defaults that `model`'s selection chose."""
    return dict(model.selection_["chosen_params"])


def _print_table(results: dict[str, dict[str, Any]], test: pl.DataFrame) -> None:
    types = sorted(test.filter(pl.col("y") == 1)["fraud_type"].drop_nulls().unique().to_list())
    header = ["model", "AP", "AUC", "card P@100/day", "recall@0.5%", *types]
    print(" | ".join(header))
    for name, m in results.items():
        by_type = m.get("recall_by_fraud_type") or {}
        cells = [
            name,
            _fmt(m.get("average_precision")),
            _fmt(m.get("roc_auc")),
            _fmt(m.get("card_precision_at_k")),
            _fmt(m.get("recall_at_hold")),
            *(_fmt(by_type.get(t)) for t in types),
        ]
        print(" | ".join(cells))


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
