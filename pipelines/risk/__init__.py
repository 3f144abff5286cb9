"""Risk model: training targets, the calibrated classifier, its evaluation and the model registry.

- `labels`     fraud outcomes and training targets as known at a moment (late labels, maturity)
- `model`      GradientBoostingRiskModel (+ compiled scoring) and the LogisticRiskModel baseline
- `selection`  hyper-parameters chosen on a time-ordered validation slice inside the window
- `forest`     a fitted HistGradientBoosting ensemble compiled (through treelite's public API)
               for single-row scoring in microseconds; batch scoring runs at sklearn's pace
- `folds`      prequential folds with a delay gap; targets as known when training closes
- `metrics`    metrics of a window (AP, precision@k, card precision@k, recall and cost at a
               hold rate, per fraud type): the one evaluation definition
- `plots`      the precision-recall plot
- `evaluation` the backtest over folds and models, in two protocols (labels known now, and
               the published delayed-label one)
- `training`   train a candidate as fold 0 and compare it with the live model
- `registry`   models/<version>/ with checksummed artifacts, model cards, live pointer, promotion
- `reasons`    the catalogue of stable reason codes
- `backtest`   the backtest of any ledger-v1 directory (`upi-risk backtest`)
- `synthetic`  synthetic feature frames with late labels, for tests and benchmarks

Turning scores into decisions (the policy, the scoring pass) is `pipelines.decisions`'.
"""
