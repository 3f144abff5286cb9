"""Risk model: targets as known at a cutoff, calibrated models, compiled scoring, prequential
backtest, metrics by hand, and the model registry."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
import json
import pickle
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.metrics import average_precision_score, roc_auc_score
from threadpoolctl import threadpool_limits

from pipelines.decisions.policy import live_policy
from pipelines.risk import forest as forest_module
from pipelines.risk.evaluation import (
    BacktestResult,
    backtest,
    hold_threshold,
    pr_curve_png,
    precision_at_k,
    prequential_folds,
    window_metrics,
)
from pipelines.risk.folds import fit_on_training_set, fold_training_set
from pipelines.risk.forest import CompiledForest
from pipelines.risk.labels import evaluation_targets, known_outcomes, training_targets
from pipelines.risk.model import (
    MIN_CALIBRATION_FRAUDS,
    GradientBoostingRiskModel,
    LinearLogOdds,
    LogisticRiskModel,
    feature_matrix,
    logistic_pipeline,
    score_transfers,
)
from pipelines.risk.registry import ArtifactIntegrityError, ModelRegistry
from pipelines.risk.selection import average_precision
from pipelines.risk.synthetic import synthetic_risk_data

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
# No hyper-parameter selection (one fit): the selection has tests of its own below.
SMALL_GBDT = {"max_iter": 40, "min_samples_leaf": 20, "learning_rate": 0.15, "param_grid": None}


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Any:
    """One OpenMP thread per test process: `pytest -n 2` already fills both cores, and spinning
    OpenMP teams on an oversubscribed machine make HistGradientBoosting fits 5-10x slower."""
    with threadpool_limits(1):
        yield


def _ts(values: list[dt.datetime]) -> pl.Series:
    return pl.Series(values, dtype=pl.Datetime("us", "UTC"))


def _labels(rows: list[tuple[str, str, str | None, str, dt.datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "transfer_id": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "fraud_type": pl.Series([r[2] for r in rows], dtype=pl.String),
            "source": [r[3] for r in rows],
            "reported_at": _ts([r[4] for r in rows]),
        }
    )


# --- labels ----------------------------------------------------------------------------------


def test_training_targets_respect_as_of_maturity_and_precedence() -> None:
    as_of = T0
    day = dt.timedelta(days=1)
    created = {
        "OLD_FRAUD_KNOWN": as_of - 40 * day,
        "OLD_FRAUD_LATE": as_of - 40 * day,  # reported only after as_of: not usable
        "OLD_UNLABELLED": as_of - 31 * day,
        "EXACTLY_MATURE": as_of - 30 * day,
        "YOUNG_UNLABELLED": as_of - 5 * day,  # not matured, no label: excluded
        "YOUNG_FRAUD": as_of - 5 * day,
        "YOUNG_LEGIT_VERDICT": as_of - 5 * day,
        "REPORT_THEN_VERDICT": as_of - 40 * day,
        "VERDICT_AFTER_AS_OF": as_of - 40 * day,
        "VERDICT_THEN_REPORT": as_of - 40 * day,
        "VERDICT_REVISED": as_of - 40 * day,
        "REPORTED_AT_AS_OF": as_of - 3 * day,  # reported_at == as_of is not before it
        "FUTURE": as_of + day,
    }
    transfers = pl.DataFrame(
        {"transfer_id": list(created), "created_at": _ts(list(created.values()))}
    )
    labels = _labels(
        [
            ("OLD_FRAUD_KNOWN", "FRAUD", "MULE", "VICTIM_REPORT", as_of - 30 * day),
            ("OLD_FRAUD_LATE", "FRAUD", "MULE", "VICTIM_REPORT", as_of + day),
            ("YOUNG_FRAUD", "FRAUD", "ACCOUNT_TAKEOVER", "VICTIM_REPORT", as_of - 2 * day),
            ("YOUNG_LEGIT_VERDICT", "LEGIT", None, "REVIEW_VERDICT", as_of - day),
            ("REPORT_THEN_VERDICT", "FRAUD", "MULE", "VICTIM_REPORT", as_of - 20 * day),
            ("REPORT_THEN_VERDICT", "LEGIT", None, "REVIEW_VERDICT", as_of - 10 * day),
            (
                "VERDICT_AFTER_AS_OF",
                "FRAUD",
                "SOCIAL_ENGINEERING",
                "VICTIM_REPORT",
                as_of - 9 * day,
            ),
            ("VERDICT_AFTER_AS_OF", "LEGIT", None, "BANK_CONFIRMED", as_of + 2 * day),
            ("VERDICT_THEN_REPORT", "LEGIT", None, "REVIEW_VERDICT", as_of - 20 * day),
            ("VERDICT_THEN_REPORT", "FRAUD", "MULE", "VICTIM_REPORT", as_of - 10 * day),
            ("VERDICT_REVISED", "LEGIT", None, "REVIEW_VERDICT", as_of - 20 * day),
            ("VERDICT_REVISED", "FRAUD", None, "BANK_CONFIRMED", as_of - 10 * day),
            ("REPORTED_AT_AS_OF", "FRAUD", "MULE", "VICTIM_REPORT", as_of),
            ("FUTURE", "FRAUD", "MULE", "VICTIM_REPORT", as_of - day),
        ]
    )
    targets = training_targets(transfers, labels, as_of=as_of, maturity_days=30)
    got = {tid: (y, ft, m) for tid, y, ft, m in targets.iter_rows()}
    assert got == {
        "OLD_FRAUD_KNOWN": (1, "MULE", True),
        "OLD_FRAUD_LATE": (0, None, True),
        "OLD_UNLABELLED": (0, None, True),
        "EXACTLY_MATURE": (0, None, True),
        "YOUNG_FRAUD": (1, "ACCOUNT_TAKEOVER", False),
        "YOUNG_LEGIT_VERDICT": (0, None, False),
        "REPORT_THEN_VERDICT": (0, None, True),
        "VERDICT_AFTER_AS_OF": (1, "SOCIAL_ENGINEERING", True),
        "VERDICT_THEN_REPORT": (0, None, True),
        "VERDICT_REVISED": (1, None, True),  # the later verdict revises the earlier one
    }
    assert targets.schema["y"] == pl.Int8
    # Later, the late report is known and the young transfer has matured.
    later = training_targets(transfers, labels, as_of=as_of + 40 * day)
    later_y = dict(zip(later["transfer_id"], later["y"], strict=True))
    assert later_y["OLD_FRAUD_LATE"] == 1
    assert later_y["YOUNG_UNLABELLED"] == 0
    assert later_y["REPORTED_AT_AS_OF"] == 1
    assert later_y["VERDICT_AFTER_AS_OF"] == 0  # the bank's LEGIT overrides the victim report


def test_known_outcomes_take_the_fraud_type_of_any_fraud_label() -> None:
    labels = _labels(
        [
            ("A", "FRAUD", "MULE", "VICTIM_REPORT", T0),
            ("A", "FRAUD", None, "BANK_CONFIRMED", T0 + dt.timedelta(days=1)),
        ]
    )
    out = known_outcomes(labels)
    assert out.row(0) == ("A", "FRAUD", "MULE", "BANK_CONFIRMED", T0 + dt.timedelta(days=1))


def test_evaluation_targets_use_all_labels_and_truth_overrides() -> None:
    transfers = pl.DataFrame({"transfer_id": ["A", "B", "C", "D"]})
    labels = _labels(
        [
            ("A", "FRAUD", "MULE", "VICTIM_REPORT", T0 + dt.timedelta(days=300)),
            ("B", "FRAUD", "MULE", "VICTIM_REPORT", T0),
        ]
    )
    from_labels = evaluation_targets(transfers, labels)
    assert from_labels["y"].to_list() == [1, 1, 0, 0]
    truth = pl.DataFrame(
        {
            "transfer_id": ["B", "C"],
            "is_fraud": [False, True],
            "fraud_type": [None, "COLLECT_SCAM"],
        }
    )
    judged = evaluation_targets(transfers, labels, truth=truth)
    assert judged.rows() == [
        ("A", 1, "MULE"),
        ("B", 0, None),
        ("C", 1, "COLLECT_SCAM"),
        ("D", 0, None),
    ]


# --- model -----------------------------------------------------------------------------------


def _nonlinear_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fraud lives in a quadrant interaction and a ring: invisible to a linear model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    z = -7.0 + 5.5 * ((X[:, 0] > 0.8) & (X[:, 1] > 0.8)) + 4.5 * (X[:, 2] ** 2 > 4.0)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    X[rng.random(X.shape) < 0.03] = np.nan
    return X, y


@pytest.fixture(scope="module")
def nonlinear() -> dict[str, Any]:
    X, y = _nonlinear_problem(40_000, seed=1)
    Xt, yt = _nonlinear_problem(40_000, seed=2)
    gbdt = GradientBoostingRiskModel(**SMALL_GBDT, random_state=0).fit(X, y)
    logistic = LogisticRiskModel(random_state=0).fit(X, y)
    return {"X": X, "y": y, "Xt": Xt, "yt": yt, "gbdt": gbdt, "logistic": logistic}


def test_gradient_boosting_beats_logistic_on_a_nonlinear_signal(nonlinear: dict[str, Any]) -> None:
    yt = nonlinear["yt"]
    p_gb = nonlinear["gbdt"].risk_score(nonlinear["Xt"])
    p_lr = nonlinear["logistic"].risk_score(nonlinear["Xt"])
    assert 100 < yt.sum() < 2000
    assert average_precision_score(yt, p_gb) > average_precision_score(yt, p_lr) + 0.1
    assert roc_auc_score(yt, p_gb) > roc_auc_score(yt, p_lr) + 0.03


@pytest.mark.parametrize("name", ["gbdt", "logistic"])
def test_scores_are_probabilities_and_roughly_calibrated(
    nonlinear: dict[str, Any], name: str
) -> None:
    model = nonlinear[name]
    p = model.risk_score(nonlinear["Xt"])
    assert np.all((p >= 0.0) & (p <= 1.0))
    base_rate = nonlinear["yt"].mean()
    # Class weights inflate raw scores many times over; the calibration must bring them back.
    assert 0.7 * base_rate < p.mean() < 1.4 * base_rate
    proba = model.predict_proba(nonlinear["Xt"][:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(model.classes_) == [0, 1]


def test_calibration_uses_the_latest_eligible_slice_not_a_random_one() -> None:
    X, y = _nonlinear_problem(10_000, seed=3)
    times = np.arange(len(y))[::-1].copy()  # rows given newest first
    eligible = times < 9_000  # the newest 1,000 rows are not matured: not for calibration
    model = LogisticRiskModel(calibration_fraction=0.25).fit(
        X, y, sample_time=times, calibration_mask=eligible
    )
    assert model.n_calibration_ == 2_250
    assert model.calibration_start_ == 9_000 - 2_250  # the latest eligible rows, by time


def test_calibration_slice_reaches_back_until_it_holds_enough_frauds() -> None:
    """A month whose latest days hold no matured fraud still calibrates: the slice reaches back
    from the latest 20% to the tenth-latest fraud, never past half the rows; with fewer frauds
    there, earlier time blocks are added, each scored by a model fitted without it."""
    X, y = _nonlinear_problem(2_000, seed=4)
    y[:] = 0
    y[100:140] = 1  # early frauds, for the base model
    late = np.arange(1_300, 1_580, 20)  # 14 frauds, none in the latest 20% (rows 1,600+)
    y[late] = 1
    model = LogisticRiskModel().fit(X, y, sample_time=np.arange(len(y)))
    tenth_latest = int(late[-MIN_CALIBRATION_FRAUDS])
    assert model.n_calibration_frauds_ == MIN_CALIBRATION_FRAUDS
    assert model.calibration_start_ == tenth_latest
    assert model.n_calibration_ == 2_000 - tenth_latest
    # With 3 late frauds the slice stops at half the rows, and the blocks before it are added,
    # newest first, until the 40 early frauds are in.
    y[late[:-3]] = 0
    wider = LogisticRiskModel().fit(X, y, sample_time=np.arange(len(y)))
    blocks = wider.calibration_["blocks"]
    assert [(b["rows"], b["frauds"]) for b in blocks] == [
        (1_000, 3),
        (250, 0),
        (250, 0),
        (250, 0),
        (250, 40),
    ]
    assert blocks[0]["start"] == 1_000 and blocks[-1]["start"] == 0
    assert wider.n_calibration_ == 2_000 and wider.n_calibration_frauds_ == 43
    assert wider.calibration_["map"]["slope_fixed"] is False


def test_a_short_history_whose_matured_rows_hold_no_fraud_still_fits_and_ranks() -> None:
    """Demo fold 1: ten days of history, the three matured ones hold no fraud, the frauds known
    are all younger than the maturity. The fit keeps the slope of its log-odds (intercept only)."""
    rng = np.random.default_rng(8)
    n = 4_000
    X = rng.normal(size=(n, 3))
    matured = np.arange(n) < 3_000
    y = np.zeros(n, dtype=np.int64)
    young = np.flatnonzero(~matured)
    frauds = young[X[young, 0] > 1.2]  # the young rows kept: frauds (and a few LEGIT labels)
    y[frauds] = 1
    keep = matured | (X[:, 0] > 1.0)
    X, y, matured = X[keep], y[keep], matured[keep]
    assert y[matured].sum() == 0 and y.sum() >= 20
    for model in (
        GradientBoostingRiskModel(**{**SMALL_GBDT, "min_samples_leaf": 5}, random_state=0),
        LogisticRiskModel(),
    ):
        model.fit(X, y, sample_time=np.arange(len(y)), calibration_mask=matured)
        assert "intercept only" in model.calibration_["method"]
        assert model.calibration_["frauds"] == 0 and model.calibration_["rows"] == 3_000
        probe = np.array([[2.5, 0.0, 0.0], [-1.0, 0.0, 0.0]])
        risky, calm = model.risk_score(probe)
        assert 0.0 < calm < risky < 1.0  # ranks as the log-odds do
        # Matured rows hold no fraud, so the level is low there (Platt's target 1 / (n + 2)).
        assert model.risk_score(X[matured]).mean() < 0.01


def test_a_history_without_any_fraud_is_refused_with_a_clear_error() -> None:
    X, y = _nonlinear_problem(2_000, seed=4)
    y[:] = 0
    for model in (GradientBoostingRiskModel(**SMALL_GBDT), LogisticRiskModel()):
        with pytest.raises(ValueError, match=r"2000 training rows hold 0 frauds: a model needs"):
            model.fit(X, y)
    y[:] = 0
    y[-5:] = 1  # frauds, but no matured one: no row allowed to calibrate on
    with pytest.raises(ValueError, match=r"no training row is allowed to calibrate"):
        LogisticRiskModel().fit(X, y, calibration_mask=np.zeros(len(y), dtype=bool))


# --- hyper-parameter selection ---------------------------------------------------------------


def _beyond_the_cap(n: int, seed: int) -> pl.DataFrame:
    """Fraud among accounts 100-200 hours old: a model that caps ages at 72 h cannot see it."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0.0, 400.0, n)
    other = rng.normal(size=n)
    z = -5.5 + 4.0 * ((age > 100) & (age < 200)) + 1.0 * (other > 1)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pl.DataFrame({"payer_hours_since_registration": age, "other": other, "y": y})


SELECTION_GRID = ({}, {"age_cap_hours": None}, {"l2_regularization": 5.0001})


def test_selection_chooses_on_the_validation_slice_and_prefers_the_first_on_ties(
    tmp_path: Any,
) -> None:
    frame = _beyond_the_cap(20_000, seed=11)
    params = {**SMALL_GBDT, "param_grid": SELECTION_GRID, "random_state": 0}
    model = GradientBoostingRiskModel(**params)
    assert clone(model).get_params()["param_grid"] == SELECTION_GRID
    model.fit(frame.drop("y"), frame["y"])
    record = model.selection_
    ap = [c["average_precision"] for c in record["candidates"]]
    # Uncapped ages see the fraud: it wins by far more than its noise ...
    assert ap[1] > ap[0] + 0.1 and record["chosen"] == 1
    assert model.best_params_["age_cap_hours"] is None
    assert record["chosen_params"] == {"age_cap_hours": None}
    # ... and the fitted model scores with the chosen cap, batch and online alike.
    probe = pl.DataFrame({"payer_hours_since_registration": [150.0, 350.0], "other": [0.0, 0.0]})
    inside, outside = model.risk_score(probe)
    assert inside > 2 * outside
    assert model.risk_score_one({"payer_hours_since_registration": 150.0, "other": 0.0}) == inside
    # A candidate within noise of the defaults (L2 5 vs 5.0001) never displaces them.
    near = {**params, "param_grid": ({}, {"l2_regularization": 5.0001})}
    tie = GradientBoostingRiskModel(**near).fit(frame.drop("y"), frame["y"])
    assert tie.selection_["chosen"] == 0
    a, b = (c["average_precision"] for c in tie.selection_["candidates"])
    assert abs(a - b) <= tie.selection_["candidates"][1]["se_of_difference_from_best"] + 1e-12
    # The slice is the latest 20% (reaching back for frauds); candidates saw only rows before it.
    assert record["validation"]["rows"] >= 4_000 and record["fitted_on"]["rows"] == (
        20_000 - record["validation"]["rows"]
    )
    # The model card records the grid, each candidate's score, the choice and the calibration.
    manifest = ModelRegistry(tmp_path).register(
        model,
        kind="gbdt",
        feature_names=["payer_hours_since_registration", "other"],
        training_window=(None, T0),
        test_window=(T0, T0 + dt.timedelta(days=7)),
        metrics={"average_precision": 0.5},
    )
    assert manifest["selection"]["chosen"] == 1
    assert [c["params"] for c in manifest["selection"]["candidates"]] == list(SELECTION_GRID)
    assert manifest["selection"]["fitted_params"]["age_cap_hours"] is None
    assert manifest["calibration"]["rows"] == model.n_calibration_
    card = (tmp_path / manifest["version"] / "model_card.md").read_text()
    assert "## Hyper-parameter selection" in card and "## Calibration" in card
    assert f'| 1 (chosen) | `{{"age_cap_hours": null}}` | {ap[1]:.4f} |' in card
    assert model.calibration_["method"] in card
    # Features carry their catalogue meaning; a name the catalogue lacks is listed bare.
    assert "- `payer_hours_since_registration`: hours since the payer's latest REGISTERED" in card
    assert "- `other`\n" in card


def test_selection_never_looks_past_the_training_window(synthetic: Any) -> None:
    """Labels and features after the training window, rewritten to favour another candidate,
    change neither the choice nor the model."""
    names = synthetic.feature_names
    fold = prequential_folds(
        test_start=dt.datetime(2026, 3, 1, tzinfo=UTC), test_days=7, delay_days=7, folds=1
    )[0]
    grid = ({}, {"max_depth": 2, "max_leaf_nodes": 3}, {"learning_rate": 0.02})
    params = {**SMALL_GBDT, "param_grid": grid, "random_state": 0}

    def fitted(features: pl.DataFrame, labels: pl.DataFrame) -> GradientBoostingRiskModel:
        train = fold_training_set(features, labels, fold, maturity_days=14)
        return fit_on_training_set(GradientBoostingRiskModel(**params), train, names)

    honest = fitted(synthetic.features, synthetic.labels)
    record = honest.selection_
    assert len([c for c in record["candidates"] if c["average_precision"] is not None]) == 3
    # Validation rows are matured rows of the window; the candidates learnt before them.
    matured_until = (fold.train_end - dt.timedelta(days=14)).replace(tzinfo=None)
    assert dt.datetime.fromisoformat(record["validation"]["end"]) <= matured_until
    assert record["fitted_on"]["end"] < record["validation"]["start"]
    # After the window: every transfer whose first feature is low becomes a reported fraud,
    # at once, and the features are scrambled. Were the test window looked at, a shallow
    # model would win there.
    after = pl.col("created_at") >= fold.train_end
    features = synthetic.features.with_columns(
        [pl.when(after).then(-pl.col(n)).otherwise(pl.col(n)).alias(n) for n in names]
    )
    late = features.filter(after & (pl.col(names[0]) < 0)).select("transfer_id")
    forged = late.with_columns(
        label=pl.lit("FRAUD"),
        fraud_type=pl.lit("MULE"),
        source=pl.lit("BANK"),
        reported_at=pl.lit(fold.train_end + dt.timedelta(days=1)).cast(pl.Datetime("us", "UTC")),
    ).select(synthetic.labels.columns)
    labels = pl.concat([synthetic.labels, forged.cast(synthetic.labels.schema)])
    rewritten = fitted(features, labels)
    assert rewritten.selection_ == record
    assert rewritten.calibration_ == honest.calibration_
    probe = synthetic.features.select(names).head(500)
    np.testing.assert_array_equal(rewritten.risk_score(probe), honest.risk_score(probe))


def test_average_precision_matches_scikit_learn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(3_000) < 0.05).astype(np.int64)
    score = np.round(rng.normal(size=3_000) + y, 1)  # many ties
    weights = rng.poisson(1.0, size=(3, 3_000)).astype(float)
    ours = average_precision(y, score, weights)
    for row, value in zip(weights, ours, strict=True):
        assert value == pytest.approx(average_precision_score(y, score, sample_weight=row))
    assert average_precision(y, score)[0] == pytest.approx(average_precision_score(y, score))


def test_compiled_forest_equals_sklearn_predict_proba(nonlinear: dict[str, Any]) -> None:
    model = nonlinear["gbdt"]
    Xt = nonlinear["Xt"].copy()
    Xt[:20, 0] = np.inf
    Xt[20:40, 1] = -np.inf
    fast = model.predict_proba(Xt)
    slow = copy.deepcopy(model).set_params(fast_predict=False).predict_proba(Xt)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    # The raw log-odds are bit-identical to sklearn's, in batch, one row, and column-major input.
    booster = model.base_
    raw = booster.decision_function(Xt)
    assert np.array_equal(model.forest_.raw_predict(Xt), raw)
    assert np.array_equal(model.forest_.raw_predict(Xt[7:8]), raw[7:8])
    assert np.array_equal(model.forest_.raw_predict(np.asfortranarray(Xt)), raw)
    assert np.array_equal(model.forest_.raw_predict(Xt, n_threads=2), raw)
    np.testing.assert_allclose(
        expit_(model.forest_.raw_predict(Xt)), booster.predict_proba(Xt)[:, 1]
    )
    assert model.forest_.n_trees == SMALL_GBDT["max_iter"]


def test_linear_part_equals_its_sklearn_pipeline_and_blends_as_weighted(
    nonlinear: dict[str, Any],
) -> None:
    Xt = nonlinear["Xt"].copy()
    Xt[:, 3] = np.nan  # a feature missing everywhere at scoring time
    pipeline = logistic_pipeline(random_state=0).fit(nonlinear["X"], nonlinear["y"])
    np.testing.assert_allclose(
        LinearLogOdds(pipeline).log_odds(Xt), pipeline.decision_function(Xt), rtol=0, atol=1e-9
    )
    blended = GradientBoostingRiskModel(**SMALL_GBDT, linear_weight=0.5, random_state=0).fit(
        nonlinear["X"], nonlinear["y"]
    )
    np.testing.assert_allclose(
        blended.decision_function(Xt),
        0.5 * blended.forest_.raw_predict(Xt) + 0.5 * blended.linear_.log_odds(Xt),
    )
    trees_only = GradientBoostingRiskModel(**SMALL_GBDT, linear_weight=0.0, random_state=0).fit(
        nonlinear["X"], nonlinear["y"]
    )
    assert trees_only.linear_ is None
    assert np.array_equal(trees_only.decision_function(Xt), trees_only.forest_.raw_predict(Xt))


def test_account_ages_are_capped_so_older_accounts_score_like_three_day_olds() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    age = rng.exponential(200.0, n)
    other = rng.normal(size=n)
    z = -5.0 + 3.0 * (age < 24) + 1.5 * (other > 1)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    frame = pl.DataFrame({"payer_hours_since_registration": age, "other": other})
    model = GradientBoostingRiskModel(**SMALL_GBDT, random_state=0).fit(frame, y)
    probe = pl.DataFrame(
        {"payer_hours_since_registration": [80.0, 5_000.0, 2.0, None], "other": [0.0] * 4}
    )
    scores = model.risk_score(probe)
    assert scores[0] == scores[1]  # past the 72-hour cap, age says nothing more
    assert scores[2] > scores[0]  # a two-hour-old account is riskier
    assert np.isfinite(scores[3])  # no registration known: still scored
    assert model.risk_score_one({"payer_hours_since_registration": 5_000.0, "other": 0.0}) == (
        pytest.approx(scores[1])
    )


def expit_(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_compiled_forest_numpy_fallback_matches(
    nonlinear: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    forest: CompiledForest = nonlinear["gbdt"].forest_
    Xt = nonlinear["Xt"][:3_000]
    monkeypatch.setattr(forest_module, "_compiled_kernel", lambda: None)
    assert np.array_equal(forest.raw_predict(Xt), nonlinear["gbdt"].base_.decision_function(Xt))
    with pytest.raises(ValueError, match="6 feature columns"):
        forest.raw_predict(Xt[:, :5])


def test_polars_frames_with_nulls_score_like_nan_arrays(nonlinear: dict[str, Any]) -> None:
    names = [f"f{i}" for i in range(6)]
    Xt = nonlinear["Xt"][:500]
    frame = pl.DataFrame({n: Xt[:, i] for i, n in enumerate(names)}).with_columns(
        pl.col(n).fill_nan(None) for n in names
    )
    assert frame["f0"].null_count() > 0
    frame = frame.with_columns(transfer_id=pl.Series([f"T{i}" for i in range(500)]))
    np.testing.assert_array_equal(feature_matrix(frame, names), Xt)
    scored = score_transfers(nonlinear["gbdt"], frame, names)
    assert scored.columns == ["transfer_id", "risk_score"]
    np.testing.assert_array_equal(scored["risk_score"].to_numpy(), nonlinear["gbdt"].risk_score(Xt))
    with pytest.raises(ValueError, match=r"feature column\(s\) \['nope'\] missing"):
        feature_matrix(frame, ["nope"])


# --- evaluation ------------------------------------------------------------------------------


def test_prequential_folds_step_back_and_never_overlap() -> None:
    folds = prequential_folds(test_start=T0, test_days=7, delay_days=10, folds=3, train_days=20)
    assert [f.test_start for f in folds] == [T0 - dt.timedelta(days=7 * k) for k in range(3)]
    for f in folds:
        assert f.test_end - f.test_start == dt.timedelta(days=7)
        assert f.test_start - f.train_end == dt.timedelta(days=10)  # the gap
        assert f.train_end - f.train_start == dt.timedelta(days=20)
        assert f.train_start < f.train_end < f.test_start < f.test_end
    tests = sorted((f.test_start, f.test_end) for f in folds)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(tests))
    unbounded = prequential_folds(test_start=T0, test_days=7, delay_days=0, folds=1)
    assert unbounded[0].train_start is None and unbounded[0].train_end == T0


class _SpyModel(LogisticRiskModel):
    """Logistic model that records what each fit was actually given."""

    fits: ClassVar[list[dict[str, Any]]] = []

    def fit(self, X, y, *, sample_time=None, calibration_mask=None, sample_weight=None):  # type: ignore[override]
        _SpyModel.fits.append(
            {
                "rows": len(y),
                "frauds": int(np.asarray(y).sum()),
                "latest": pl.Series(sample_time).max(),
                "earliest": pl.Series(sample_time).min(),
            }
        )
        return super().fit(X, y, sample_time=sample_time, calibration_mask=calibration_mask)


@pytest.fixture(scope="module")
def synthetic() -> Any:
    return synthetic_risk_data(60_000, n_features=10, days=70, seed=5)


def test_backtest_never_trains_on_labels_reported_after_the_cutoff(synthetic: Any) -> None:
    _SpyModel.fits.clear()
    result = backtest(
        synthetic.features,
        synthetic.labels,
        synthetic.feature_names,
        test_start=dt.datetime(2026, 3, 1, tzinfo=UTC),
        test_days=7,
        delay_days=7,
        folds=2,
        train_days=35,
        maturity_days=14,
        truth=synthetic.truth,
        models={"spy": _SpyModel(), "gbdt": GradientBoostingRiskModel(**SMALL_GBDT)},
        keep_training_sets=True,
    )
    labels, features = synthetic.labels, synthetic.features
    assert len(_SpyModel.fits) == 2
    for fold in result.folds:
        train = result.training_sets[fold.index]
        spy = _SpyModel.fits[fold.index]
        # What the model was given is exactly the kept training set.
        assert spy["rows"] == train.height and spy["frauds"] == int(train["y"].sum())
        assert spy["latest"] < fold.train_end
        assert spy["earliest"] >= fold.train_start
        # Every fraud target had a FRAUD label reported before the cutoff ...
        known = labels.filter(
            (pl.col("label") == "FRAUD") & (pl.col("reported_at") < fold.train_end)
        )["transfer_id"]
        positives = train.filter(pl.col("y") == 1)["transfer_id"]
        assert positives.is_in(known.implode()).all()
        # ... and frauds reported only later are not trained on as frauds (the test can fail:
        # there are such late frauds in the window).
        late = labels.filter(
            (pl.col("label") == "FRAUD") & (pl.col("reported_at") >= fold.train_end)
        ).join(
            features.filter(pl.col("created_at") < fold.train_end).select("transfer_id"),
            on="transfer_id",
        )["transfer_id"]
        late = late.filter(~late.is_in(known.implode()))
        assert len(late) > 0
        assert not train.filter(pl.col("y") == 1)["transfer_id"].is_in(late.implode()).any()
        # Unlabelled transfers younger than the maturity are left out.
        young = train.filter(pl.col("created_at") > fold.train_end - dt.timedelta(days=14))
        assert (young["y"] == 1).all() or young.filter(pl.col("y") == 0)["transfer_id"].is_in(
            labels.filter(pl.col("label") == "LEGIT")["transfer_id"].implode()
        ).all()
        # Train, gap and test do not overlap; scores cover exactly the test window.
        scored = result.scores.filter((pl.col("fold") == fold.index) & (pl.col("model") == "spy"))
        scored_at = features.join(scored, on="transfer_id")["created_at"]
        assert scored_at.min() >= fold.test_start and scored_at.max() < fold.test_end
        assert train["created_at"].max() < fold.train_end <= fold.test_start
    means = result.metrics["models"]
    assert means["gbdt"]["mean"]["folds_run"] == 2
    json.dumps(result.metrics)  # JSON-serialisable as is
    table = result.table()
    assert table.columns == ["metric", "spy", "gbdt", "difference"]
    ap = table.filter(pl.col("metric") == "average_precision").row(0)
    assert ap[3] == pytest.approx(ap[1] - ap[2])
    assert set(result.scores["decision"].unique()) == {"HOLD", "ALLOW"}


def test_precision_recall_curve_is_a_png() -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(np.int8)
    scores = pl.DataFrame(
        {
            "model": ["gbdt"] * 200 + ["logistic"] * 200,
            "risk_score": np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1),
            "y": y,
        }
    )
    png = pr_curve_png(scores)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def _tiny_window() -> pl.DataFrame:
    """Two IST days, payers p1..p6; scores chosen so the ranking is clear."""
    d1 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # 11:30 IST
    d2 = dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    rows = [
        # payer, day, score, fraud, amount (paise), type
        ("p1", d1, 0.90, 1, 50_000, "MULE"),
        ("p1", d1, 0.10, 0, 1_000, None),
        ("p2", d1, 0.80, 0, 2_000, None),
        ("p3", d1, 0.70, 1, 30_000, "ACCOUNT_TAKEOVER"),
        ("p4", d1, 0.05, 0, 1_000, None),
        ("p5", d1, 0.04, 0, 1_000, None),
        ("p1", d2, 0.95, 0, 1_000, None),
        ("p2", d2, 0.20, 1, 20_000, "MULE"),
        ("p6", d2, 0.30, 0, 1_000, None),
        ("p4", d2, 0.01, 0, 1_000, None),
    ]
    return pl.DataFrame(
        {
            "transfer_id": [f"T{i}" for i in range(len(rows))],
            "payer_vpa": [r[0] for r in rows],
            "created_at": _ts([r[1] for r in rows]),
            "risk_score": [r[2] for r in rows],
            "y": [r[3] for r in rows],
            "amount_paise": [r[4] for r in rows],
            "fraud_type": pl.Series([r[5] for r in rows], dtype=pl.String),
        }
    )


def test_metrics_match_a_hand_computation() -> None:
    frame = _tiny_window()
    # Day 1 payers by max score: p1 .90 (fraud), p2 .80, p3 .70 (fraud), p4, p5. Top 2: 1/2.
    # Day 2: p1 .95, p6 .30, p2 .20 (fraud), p4. Top 2: 0/2. Mean 0.25.
    top = precision_at_k(frame, k=2)
    assert top["precision_at_k"] == pytest.approx(0.25)
    assert [d["precision"] for d in top["daily_precision"]] == [0.5, 0.0]
    # k beyond the payers of a day: the day's precision is over the payers it has.
    assert precision_at_k(frame, k=10)["precision_at_k"] == pytest.approx((2 / 5 + 1 / 4) / 2)

    # Hold 30% of 10 transfers: the 3 highest scores (.95, .90, .80) are held, .70 is not.
    assert 0.70 < hold_threshold(frame["risk_score"].to_numpy(), 0.3) <= 0.80
    m = window_metrics(frame, review_capacity=2, hold_rate=0.3)
    assert m["held_transfers"] == 3
    assert m["n_frauds"] == 3
    assert m["recall_at_hold"] == pytest.approx(1 / 3)  # only T0 of the 3 frauds
    assert m["precision_at_hold"] == pytest.approx(1 / 3)
    assert m["fraud_value_paise"] == 100_000
    assert m["fraud_value_caught_paise"] == 50_000
    assert m["fraud_value_caught_share"] == pytest.approx(0.5)
    # Legit payers (no fraud in the window): p4, p5, p6; none held. p2 has a fraud on day 2.
    assert m["legit_payers_active"] == 3 and m["legit_payers_held"] == 0
    assert m["legit_payers_held_share"] == 0.0
    assert m["recall_by_fraud_type"] == {"ACCOUNT_TAKEOVER": 0.0, "MULE": 0.5}
    assert m["frauds_by_fraud_type"] == {"ACCOUNT_TAKEOVER": 1, "MULE": 2}
    assert m["precision_at_k"] == pytest.approx(0.25)
    # Hold 60%: the 6 highest, .95 .90 .80 .70 .30 .20 (the 7th is lower): all frauds, and p6
    # is a held legit payer.
    assert hold_threshold(frame["risk_score"].to_numpy(), 0.6) <= 0.20
    m = window_metrics(frame, review_capacity=2, hold_rate=0.6)
    assert m["held_transfers"] == 6 and m["recall_at_hold"] == 1.0
    assert m["legit_payers_held"] == 1 and m["legit_payers_held_share"] == pytest.approx(1 / 3)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(frame["y"], frame["risk_score"]))
    # Review capacity 2 a day over 2 days: at most 4 held, the 4 highest (.95 .90 .80 .70).
    scores = frame["risk_score"].to_numpy()
    assert 0.30 < m["capacity_threshold"] <= 0.70
    assert (scores >= m["capacity_threshold"]).sum() == 4
    assert window_metrics(frame, review_capacity=5, hold_rate=0.6)["capacity_threshold"] is None


def test_live_policy_holds_no_more_than_the_team_can_review(
    tmp_path: Any, fitted_small: LogisticRiskModel
) -> None:
    """The policy's threshold is the hold-rate one, raised to the capacity one when higher; a
    rate that holds nothing of the test window (no threshold, or one above every score) holds
    only a certain score, never an arbitrary 0.5."""
    cases = [
        ("v1", 0.3, 0.6, 0.6),
        ("v2", 0.3, 0.1, 0.3),
        ("v3", 0.3, None, 0.3),
        ("v4", None, None, 1.0),
        ("v5", float(np.nextafter(1.0, 2.0)), 0.2, 1.0),
    ]
    for version, rate_threshold, capacity, want in cases:
        registry = ModelRegistry(tmp_path / version)  # one model: one registry per case
        registry.register(
            fitted_small,
            kind="logistic",
            feature_names=["f0", "f1"],
            training_window=(None, T0),
            test_window=(T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=8)),
            metrics={
                "average_precision": 0.5,
                "hold_threshold": rate_threshold,
                "capacity_threshold": capacity,
            },
            version=version,
        )
        registry.promote(version, force=True)
        assert live_policy(registry).hold_threshold == want


# --- registry --------------------------------------------------------------------------------


def _register(
    registry: ModelRegistry, model: Any, version: str, ap: float, window_end: int = 8
) -> dict[str, Any]:
    return registry.register(
        model,
        kind="logistic",
        feature_names=["f0", "f1"],
        training_window=(None, T0),
        test_window=(T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=window_end)),
        metrics={"average_precision": ap, "roc_auc": 0.9, "recall_by_fraud_type": {"MULE": 0.5}},
        version=version,
        label_policy={"maturity_days": 30},
        created_at=T0 + dt.timedelta(hours=len(registry.versions())),
    )


def fitted_small_again() -> LogisticRiskModel:
    X, y = _nonlinear_problem(3_000, seed=6)
    return LogisticRiskModel().fit(X[:, :2], y)


@pytest.fixture
def fitted_small() -> LogisticRiskModel:
    return fitted_small_again()


def test_registry_round_trip(tmp_path: Any, fitted_small: LogisticRiskModel) -> None:
    registry = ModelRegistry(tmp_path / "models")
    manifest = _register(registry, fitted_small, "v1", ap=0.3)
    folder = tmp_path / "models" / "v1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "model.pkl",
        "model_card.md",
    ]
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == manifest
    assert (
        on_disk["artifact"]["sha256"]
        == hashlib.sha256((folder / "model.pkl").read_bytes()).hexdigest()
    )
    assert on_disk["feature_names"] == ["f0", "f1"] and on_disk["kind"] == "logistic"
    assert "scikit-learn" in on_disk["library_versions"]
    card = (folder / "model_card.md").read_text()
    assert "label" in card.lower() and "| average_precision | 0.3000 |" in card
    loaded = registry.load("v1")
    X, _ = _nonlinear_problem(200, seed=7)
    np.testing.assert_array_equal(loaded.risk_score(X[:, :2]), fitted_small.risk_score(X[:, :2]))
    assert registry.versions() == ["v1"]
    with pytest.raises(Exception, match="already exists"):
        _register(registry, fitted_small, "v1", ap=0.3)
    with pytest.raises(Exception, match="invalid model version"):
        _register(registry, fitted_small, "../escape", ap=0.3)


def test_the_same_model_registered_again_is_the_same_version(
    tmp_path: Any, fitted_small: LogisticRiskModel
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    first = registry.register(
        fitted_small,
        kind="logistic",
        feature_names=["f0", "f1"],
        training_window=(None, T0),
        test_window=(T0, T0 + dt.timedelta(days=7)),
        metrics={"average_precision": 0.3},
    )
    again = registry.register(
        fitted_small_again(),  # a retrain on the same data: equal bytes
        kind="logistic",
        feature_names=["f0", "f1"],
        training_window=(None, T0),
        test_window=(T0, T0 + dt.timedelta(days=7)),
        metrics={"average_precision": 0.3},
    )
    assert again == first and registry.versions() == [first["version"]]


def test_registry_refuses_a_tampered_or_missing_artifact_before_unpickling(
    tmp_path: Any, fitted_small: LogisticRiskModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    manifest = _register(registry, fitted_small, "v1", ap=0.3)
    artifact = tmp_path / "models" / "v1" / "model.pkl"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    unpickled: list[bytes] = []
    monkeypatch.setattr(pickle, "loads", lambda b, *a, **k: unpickled.append(b))
    with pytest.raises(ArtifactIntegrityError) as err:
        registry.load("v1")
    message = str(err.value)
    assert str(artifact) in message
    assert manifest["artifact"]["sha256"] in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert unpickled == []  # refused before any unpickling
    with pytest.raises(ArtifactIntegrityError):
        registry.promote("v1")  # a version that cannot load never goes live
    assert registry.live_version() is None
    artifact.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        registry.load("v1")


def test_promotion_only_on_improvement_and_challengers_kept(
    tmp_path: Any, fitted_small: LogisticRiskModel
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    _register(registry, fitted_small, "v1", ap=0.30)
    first = registry.promote("v1")
    assert first.promoted and registry.live_version() == "v1"
    assert (tmp_path / "models" / "LIVE").read_text().strip() == "v1"

    _register(registry, fitted_small, "v2", ap=0.25)  # worse
    worse = registry.promote("v2")
    assert not worse.promoted and "stays a challenger" in worse.reason
    assert worse.candidate_value == 0.25 and worse.live_value == 0.30
    registry.promote("v2")  # the same decision again (a re-run job) is not logged twice
    assert len(registry.promotions()) == 2

    _register(registry, fitted_small, "v3", ap=0.30)  # a tie does not promote
    tie = registry.promote("v3")
    assert not tie.promoted and "ties" in tie.reason
    assert registry.live_version() == "v1"
    assert registry.challengers() == ["v3", "v2"]

    _register(registry, fitted_small, "v4", ap=0.35, window_end=9)  # another test window
    asked = registry.promote("v4", live_metrics={"average_precision": 0.31}, dry_run=True)
    assert asked.promoted and registry.live_version() == "v1"  # a dry run changes nothing
    other = registry.promote("v4")
    assert not other.promoted and "not comparable" in other.reason
    rescored = registry.promote("v4", live_metrics={"average_precision": 0.31})
    assert rescored.promoted and rescored.live_before == "v1" and rescored.live_after == "v4"
    assert registry.live_version() == "v4"
    assert registry.challengers() == []  # older versions stop being scored in shadow
    assert isinstance(registry.load(), LogisticRiskModel)  # the live one
    log = registry.promotions()
    assert [d["promoted"] for d in log] == [True, False, False, False, True]
    # Rolling back and forth: every change of the live version is logged, repeats included.
    registry.promote("v1", force=True)
    registry.promote("v4", force=True)
    registry.promote("v1", force=True)
    moves = [(d["live_before"], d["live_after"]) for d in registry.promotions()[len(log) :]]
    assert moves == [("v4", "v1"), ("v1", "v4"), ("v4", "v1")]
    json.dumps(rescored.as_dict())


def test_risk_score_one_from_a_mapping_equals_the_batch_score(synthetic: Any) -> None:
    names = synthetic.feature_names
    frame = synthetic.features.head(20_000)
    model = GradientBoostingRiskModel(**SMALL_GBDT).fit(
        frame.select(names), synthetic.truth["is_fraud"].head(20_000).cast(int)
    )
    rows = frame.select(names).head(50)
    batch = model.risk_score(rows)
    for i, values in enumerate(rows.to_dicts()):
        assert model.risk_score_one(values) == batch[i]
    partial = {names[0]: 1.0}  # everything else unknown
    expected = model.risk_score(np.array([[1.0] + [np.nan] * (len(names) - 1)]))[0]
    assert model.risk_score_one(partial) == expected


def test_capacity_counts_the_days_the_window_covers() -> None:
    """A 7-day test window cut at UTC midnight spans 8 India days; the team reviews 7 days of
    holds, not 8."""
    start = dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    hours = range(0, 7 * 24, 3)
    frame = pl.DataFrame(
        {
            "transfer_id": [f"T{h}" for h in hours],
            "payer_vpa": [f"p{h}" for h in hours],
            "created_at": _ts([start + dt.timedelta(hours=h, minutes=30) for h in hours]),
            "risk_score": [h / 1000 for h in hours],
            "y": [h % 2 for h in hours],
            "amount_paise": [1_000 for _ in hours],
            "fraud_type": pl.Series([None for _ in hours], dtype=pl.String),
        }
    )
    m = window_metrics(frame, review_capacity=3, hold_rate=0.5)
    assert m["days"] == 8  # India days with payers, for precision@k
    scores = frame["risk_score"].to_numpy()
    assert (scores >= m["capacity_threshold"]).sum() == 3 * 7


def test_a_skipped_fold_is_reported_with_its_reason() -> None:
    ran = {"fold": 0, "average_precision": 0.7}
    skipped = {"fold": 1, "skipped": "fit failed: no fraud in the calibration slice"}
    result = BacktestResult(
        metrics={
            "models": {
                "gbdt": {"folds": [ran, skipped], "mean": {"folds_run": 1}},
                "logistic": {"folds": [ran, {"fold": 1, **ran}], "mean": {"folds_run": 2}},
            }
        },
        scores=pl.DataFrame(),
        folds=[],
    )
    assert result.folds_summary().splitlines() == [
        "gbdt: 1 of 2 folds ran; fold 1 skipped (fit failed: no fraud in the calibration slice)",
        "logistic: 2 of 2 folds ran",
    ]
