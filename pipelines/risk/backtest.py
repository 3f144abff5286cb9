"""Backtest on any ledger-v1 landing directory: ingest, features, prequential evaluation, files out.

The ledger goes into a warehouse of its own inside the output directory, through the same
ingestion, quality rules and feature engine as production, so a backtest of data the project
did not write exercises exactly the code that would run on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from pipelines.features.definitions import FEATURE_NAMES
from pipelines.features.table import read_features, refresh_feature_table
from pipelines.ledger.current import refresh_accounts, refresh_transfers
from pipelines.ledger.ingest import ingest_landing
from pipelines.risk.labels import read_labels
from pipelines.risk.training import latest_test_start
from pipelines.settings import DataDir, Settings
from pipelines.warehouse import warehouse


def load_ledger(
    ledger_dir: Path, out_dir: Path, *, progress: Callable[[str], None] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Ingest `ledger_dir` into the warehouse of `out_dir` (the backtest's instance); return
    features, labels, counts."""
    if not ledger_dir.is_dir():
        raise FileNotFoundError(f"ledger directory {ledger_dir} does not exist")
    if not (ledger_dir / "transfers").is_dir():
        raise FileNotFoundError(
            f"{ledger_dir} has no transfers/ folder: expected a ledger-v1 landing directory "
            "with transfers/, accounts/ and labels/"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with warehouse(DataDir(root=out_dir).warehouse) as con:
        if progress:
            progress("ingesting the ledger")
        report = ingest_landing(con, ledger_dir)
        refresh_transfers(con)
        refresh_accounts(con)
        if progress:
            progress("computing point-in-time features")
        refresh_feature_table(con)
        features = read_features(con)
        labels = read_labels(con)
    return features, labels, report.as_dict()


def run_backtest(
    ledger_dir: Path,
    out_dir: Path,
    *,
    settings: Settings,
    test_start: date | None = None,
    train_days: int | None = None,
    truth_path: Path | None = None,
    protocol: str = "labels-known-now",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Backtest the model and the logistic baseline; write metrics.json and scores.parquet.

    `protocol` is one of `evaluation.PROTOCOLS` (labels known now, or the published delayed-label
    protocol); its windows, hold rate and review capacity are `settings`'."""
    from pipelines.risk.evaluation import PROTOCOLS, backtest

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")

    features, labels, ingest_counts = load_ledger(ledger_dir, out_dir, progress=progress)
    if features.is_empty():
        raise ValueError(f"{ledger_dir} holds no valid transfers to backtest")
    start = test_start or latest_test_start(features, settings).date()
    test_days, delay_days, folds = settings.test_days, settings.delay_days, settings.folds
    maturity_days = settings.maturity_days
    truth = pl.read_parquet(truth_path) if truth_path is not None else None
    if progress:
        progress(f"training and testing {folds} fold(s) from {start} ({protocol})")
    result = backtest(
        features,
        labels,
        FEATURE_NAMES,
        test_start=datetime.combine(start, datetime.min.time(), tzinfo=UTC),
        test_days=test_days,
        delay_days=delay_days,
        folds=folds,
        train_days=train_days,
        maturity_days=maturity_days,
        review_capacity=settings.review_capacity,
        hold_rate=settings.hold_rate,
        truth=truth,
        random_state=settings.random_state,
        protocol=protocol,
    )
    metrics = {
        "ledger": str(ledger_dir),
        "window": {
            "protocol": protocol,
            "test_start": start.isoformat(),
            "test_days": test_days,
            "delay_days": delay_days,
            "folds": folds,
            "train_days": train_days,
            "maturity_days": maturity_days,
        },
        "ingest": ingest_counts,
        **result.metrics,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    # scores.parquet holds the model's scores; the baseline's are in metrics.json only.
    scores = result.scores.filter(pl.col("model") == result.model_names[0])
    scores.select("transfer_id", "risk_score", "decision", "fold").write_parquet(
        out_dir / "scores.parquet"
    )
    return {
        "metrics": metrics,
        "table": result.table(),
        "folds": result.folds_summary(),
        "out_dir": str(out_dir),
    }
