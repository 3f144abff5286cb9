"""Risk model: training targets, the calibrated classifier, its evaluation and the model registry.

- `labels`     fraud outcomes and training targets as known at a moment (late labels, maturity)
- `model`      GradientBoostingRiskModel (+ compiled scoring) and the LogisticRiskModel baseline
- `forest`     a fitted HistGradientBoosting ensemble compiled for fast batch and single-row scoring
- `evaluation` prequential backtest with a delay gap; metrics (AP, precision@k, recall at hold rate)
- `registry`   models/<version>/ with checksummed artifacts, model cards, live pointer, promotion
- `policy`     the versioned policy: hard rules and thresholds to ALLOW / HOLD / BLOCK
- `reasons`    the catalogue of stable reason codes
- `loop`       train a candidate, gate its promotion, score, decide (used by Dagster and the CLI)
- `backtest`   the backtest of any ledger-v1 directory (`upi-risk backtest`)
- `synthetic`  synthetic feature frames with late labels, for tests and benchmarks
"""
