"""Risk model: training targets, the calibrated classifier, its evaluation and the model registry.

- `labels`     fraud outcomes and training targets as known at a moment (late labels, maturity)
- `model`      GradientBoostingRiskModel (+ compiled scoring) and the LogisticRiskModel baseline
- `forest`     a fitted HistGradientBoosting ensemble compiled (through treelite's public API)
               for single-row scoring in microseconds; batch scoring runs at sklearn's pace
- `folds`      prequential folds with a delay gap; targets as known when training closes
- `metrics`    metrics of a window (AP, precision@k, recall and cost at a hold rate)
- `plots`      the precision-recall plot
- `evaluation` the backtest over folds and models
- `training`   train a candidate as fold 0 and compare it with the live model
- `registry`   models/<version>/ with checksummed artifacts, model cards, live pointer, promotion
- `reasons`    the catalogue of stable reason codes
- `backtest`   the backtest of any ledger-v1 directory (`upi-risk backtest`)
- `synthetic`  synthetic feature frames with late labels, for tests and benchmarks

Turning scores into decisions (the policy, the scoring pass) is `pipelines.decisions`'.
"""
