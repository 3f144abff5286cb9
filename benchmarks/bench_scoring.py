"""Benchmark risk scoring: transfers/s of the compiled model vs sklearn's predict_proba, and latency.

    .venv/bin/python benchmarks/bench_scoring.py                      # 1M rows x 40 features
    .venv/bin/python benchmarks/bench_scoring.py --rows 2000000 --repeat 7 --lightgbm

Trains the default `GradientBoostingRiskModel` on synthetic transfers (`risk.synthetic`), then
scores `--rows` other synthetic transfers: the compiled forest + calibration (what the pipeline
uses), the same model through sklearn's `HistGradientBoostingClassifier.predict_proba` (the
baseline), end to end from a Polars frame, and one row at a time. Optionally LightGBM's own
predict on a LightGBM model of the same size, for the record.

The batch paths run in `--repeat` rounds, each round every path once, in an order that rotates
from round to round, so that a change in the machine's load falls on all of them alike. Prints
each path's median seconds and its ratio to sklearn's median, the median of the per-round ratios
of the compiled path, a closing `speedup vs sklearn predict_proba` line, and one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.risk.forest import numba_available
from pipelines.risk.model import GradientBoostingRiskModel, feature_matrix, score_transfers
from pipelines.risk.synthetic import synthetic_risk_data


def _interleaved_seconds(
    paths: dict[str, Callable[[], Any]], rounds: int
) -> dict[str, list[float]]:
    """Seconds of each path in each of `rounds` rounds; the order rotates from round to round."""
    names = list(paths)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            paths[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _latency_us(fn: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """Median and 99th percentile of one call, in microseconds."""
    samples = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        samples[i] = time.perf_counter() - start
    return float(np.median(samples) * 1e6), float(np.percentile(samples, 99) * 1e6)


def main(argv: list[str] | None = None) -> int:
    """Train once, then time each scoring path and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows scored (default 1M)")
    parser.add_argument("--features", type=int, default=40, help="feature columns (default 40)")
    parser.add_argument("--train-rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the batch paths (median)")
    parser.add_argument("--latency-calls", type=int, default=2_000, help="single-row calls")
    parser.add_argument("--threads", type=int, default=None, help="scoring threads (default: all)")
    parser.add_argument("--lightgbm", action="store_true", help="also time LightGBM's predict")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    train = synthetic_risk_data(args.train_rows, n_features=args.features, days=60, seed=args.seed)
    t = time.perf_counter()
    model = GradientBoostingRiskModel(random_state=0, n_threads=args.threads).fit(
        train.features.select(train.feature_names),
        train.truth["is_fraud"].cast(int),
        sample_time=train.features["created_at"],
    )
    fit_seconds = time.perf_counter() - t
    data = synthetic_risk_data(args.rows, n_features=args.features, days=30, seed=args.seed + 1)
    frame = data.features
    X = feature_matrix(frame, data.feature_names)
    X_c = np.ascontiguousarray(X)
    n = X.shape[0]

    model.risk_score(X[:1000])  # compile or load the kernel from numba's cache
    fast = model.risk_score(X)
    reference = copy.deepcopy(model).set_params(fast_predict=False).risk_score(X)  # via sklearn
    max_diff = float(np.max(np.abs(fast - reference)))

    compiled = "compiled forest + calibration (numpy, column-major)"
    baseline = "sklearn HistGradientBoosting.predict_proba (baseline)"
    paths = {
        compiled: lambda: model.risk_score(X),
        "compiled forest + calibration (numpy, row-major)": lambda: model.risk_score(X_c),
        "end to end from a Polars frame (to_numpy + score)": lambda: score_transfers(
            model, frame, data.feature_names
        ),
        baseline: lambda: model.base_.predict_proba(X),
    }
    lightgbm = "lightgbm Booster.predict, same size model"
    if args.lightgbm and (predict := _lightgbm(model, train, X, args)) is not None:
        paths[lightgbm] = predict
    times = _interleaved_seconds(paths, args.repeat)
    rows = [(name, statistics.median(seconds)) for name, seconds in times.items()]
    fast_s, fast_c_s, e2e_s, sk_s = (seconds for _, seconds in rows[:4])
    round_ratios = [sk / fast for sk, fast in zip(times[baseline], times[compiled], strict=True)]

    one_fast = _latency_us(lambda i: model.risk_score(X[i : i + 1]), args.latency_calls)
    rows_as_dicts = frame.select(data.feature_names).head(args.latency_calls).to_dicts()
    one_dict = _latency_us(
        lambda i: model.risk_score_one(rows_as_dicts[i % len(rows_as_dicts)]), args.latency_calls
    )
    one_sk = _latency_us(
        lambda i: model.base_.predict_proba(X[i : i + 1]), max(args.latency_calls // 10, 50)
    )

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"risk scoring: {n:,} transfers x {X.shape[1]} features; model {model.forest_.n_trees} "
        f"trees (max depth {int(model.forest_.depths.max())}), fitted in {fit_seconds:.1f} s; "
        f"{cpus} CPUs; numba={'yes' if numba_available() else 'no (numpy fallback)'}"
    )
    print(
        f"{'path (median of ' + str(args.repeat) + ' rounds)':58s} {'seconds':>9s} "
        f"{'transfers/s':>13s} {'vs sklearn':>10s}"
    )
    for name, seconds in rows:
        print(f"{name:58s} {seconds:9.3f} {n / seconds:13,.0f} {sk_s / seconds:9.2f}x")
    print(
        f"single row: compiled median {one_fast[0]:.1f} us (p99 {one_fast[1]:.1f} us); "
        f"from a dict (risk_score_one) {one_dict[0]:.1f} us (p99 {one_dict[1]:.1f} us); "
        f"sklearn median {one_sk[0]:.1f} us (p99 {one_sk[1]:.1f} us)"
    )
    print(f"max |compiled - sklearn| risk_score over all rows: {max_diff:.3g}")
    print(
        f"speedup vs sklearn predict_proba: {sk_s / fast_s:.2f}x (medians: {n / fast_s:,.0f} vs "
        f"{n / sk_s:,.0f} transfers/s; per-round ratios {', '.join(f'{r:.2f}' for r in round_ratios)}"
        f", median {statistics.median(round_ratios):.2f}x)"
    )
    result = {
        "benchmark": "risk_scoring",
        "rows": n,
        "features": X.shape[1],
        "trees": model.forest_.n_trees,
        "repeat": args.repeat,
        "cpus": cpus,
        "numba": numba_available(),
        "fit_seconds": round(fit_seconds, 2),
        "compiled_rows_per_s": round(n / fast_s),
        "compiled_row_major_rows_per_s": round(n / fast_c_s),
        "end_to_end_polars_rows_per_s": round(n / e2e_s),
        "sklearn_rows_per_s": round(n / sk_s),
        "speedup_vs_sklearn": round(sk_s / fast_s, 2),
        "speedup_round_ratios": [round(r, 2) for r in round_ratios],
        "single_row_median_us": round(one_fast[0], 1),
        "single_row_p99_us": round(one_fast[1], 1),
        "single_row_from_dict_median_us": round(one_dict[0], 1),
        "sklearn_single_row_median_us": round(one_sk[0], 1),
        "max_abs_diff_vs_sklearn": max_diff,
        "lightgbm_rows_per_s": (
            round(n / statistics.median(times[lightgbm])) if lightgbm in times else None
        ),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return 0


def _lightgbm(
    model: GradientBoostingRiskModel, train: Any, X: np.ndarray, args: argparse.Namespace
) -> Callable[[], Any] | None:
    """LightGBM's own predict over X, with a model of the same number of trees and leaves."""
    try:
        import lightgbm as lgb
    except ImportError:
        print("lightgbm is not installed: skipped")
        return None
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": model.max_leaf_nodes,
            "max_depth": model.max_depth or -1,
            "min_data_in_leaf": model.min_samples_leaf,
            "learning_rate": model.learning_rate,
            "verbose": -1,
            "num_threads": args.threads or 0,
        },
        lgb.Dataset(
            feature_matrix(train.features, train.feature_names),
            label=train.truth["is_fraud"].cast(int).to_numpy(),
        ),
        num_boost_round=model.max_iter,
    )
    threads = args.threads or 0
    booster.predict(X[:1000], num_threads=threads)
    return lambda: booster.predict(X, num_threads=threads)


if __name__ == "__main__":
    raise SystemExit(main())
