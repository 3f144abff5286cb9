"""Compiled forest: the same probabilities as scikit-learn on a trained risk model, read through
public APIs only, and a loud failure for models or library versions it cannot score exactly."""

from __future__ import annotations

import ast
import copy
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import treelite
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from pipelines.risk.forest import CompiledForest, UnsupportedModelError
from pipelines.risk.model import GradientBoostingRiskModel, feature_matrix
from pipelines.risk.synthetic import synthetic_risk_data

SMALL = {"max_iter": 40, "min_samples_leaf": 20, "learning_rate": 0.15, "param_grid": None}
VERSIONS = f"scikit-learn {version('scikit-learn')}, treelite {version('treelite')}"
PRODUCT_FILES = ("pipelines/risk/forest.py", "pipelines/risk/model.py")


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Any:
    """One OpenMP thread: spinning OpenMP teams on a busy 2-core machine slow fits many times."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    """The risk model fitted on synthetic transfers (40 features, nulls), and other transfers."""
    train = synthetic_risk_data(30_000, n_features=40, days=30, seed=3)
    model = GradientBoostingRiskModel(**SMALL, random_state=0).fit(
        train.features.select(train.feature_names),
        train.truth["is_fraud"].cast(int),
        sample_time=train.features["created_at"],
    )
    test = synthetic_risk_data(20_000, n_features=40, days=30, seed=4)
    X = model._matrix(feature_matrix(test.features, test.feature_names))
    return {"model": model, "X": X, "frame": test.features.select(test.feature_names)}


def test_probabilities_equal_sklearn_predict_proba_on_a_trained_model(
    trained: dict[str, Any],
) -> None:
    model, X = trained["model"], trained["X"]
    assert np.isnan(X).any()  # missing values take their learned direction in both
    booster = model.base_
    raw = model.forest_.raw_predict(X)
    np.testing.assert_allclose(expit(raw), booster.predict_proba(X)[:, 1], rtol=0, atol=1e-9)
    assert np.array_equal(raw, booster.decision_function(X))  # bit-identical log-odds
    assert np.array_equal(model.forest_.raw_predict(X, n_threads=2), raw)
    # End to end, calibrated: fast path against the same model scoring through sklearn.
    through_sklearn = copy.deepcopy(model).set_params(fast_predict=False)
    np.testing.assert_allclose(
        model.predict_proba(trained["frame"]),
        through_sklearn.predict_proba(trained["frame"]),
        rtol=0,
        atol=1e-9,
    )


def test_compiled_arrays_are_checked_against_sklearn_when_fitted(trained: dict[str, Any]) -> None:
    forest = trained["model"].forest_
    assert forest.n_trees == SMALL["max_iter"]
    forest.check_against(trained["model"].base_)  # passes: no exception
    probe = forest.probe_rows(4_096)
    assert np.isnan(probe).any() and np.isinf(probe).any()


@pytest.mark.parametrize("params", [{"min_samples_leaf": 400}, {"max_leaf_nodes": 2}])
def test_single_leaf_and_stump_trees_compile_exactly(params: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    estimator = HistGradientBoostingClassifier(max_iter=5, **params).fit(X, X[:, 0] > 0)
    forest = CompiledForest.from_hist_gradient_boosting(estimator)
    assert forest.depths.max() == (0 if "min_samples_leaf" in params else 1)
    assert np.array_equal(forest.raw_predict(X), estimator.decision_function(X))


def _private_reads(path: Path) -> list[str]:
    """`obj._name` and `getattr(obj, "_name")` on anything but self / cls, and `_names` imported
    from other packages: reads of another library's private API."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}):
                found.append(f"{path}:{node.lineno} .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr"}
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and _private(str(node.args[1].value))
        ):
            found.append(f"{path}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("pipelines"):
            module = node.module or ""
            if any(_private(part) for part in module.split(".")):
                found.append(f"{path}:{node.lineno} from {module}")
            found += [f"{path}:{node.lineno} {a.name}" for a in node.names if _private(a.name)]
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_product_code_reads_no_private_api_of_other_libraries() -> None:
    root = Path(__file__).resolve().parents[1]
    assert [r for f in PRODUCT_FILES for r in _private_reads(root / f)] == []


def _fitted_hgb(**params: Any) -> HistGradientBoostingClassifier:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + rng.normal(size=600) > 0).astype(int)
    if params.pop("classes", 2) == 3:
        y = y + (X[:, 1] > 1)
    if params.get("categorical_features") is not None:
        X[:, 2] = rng.integers(0, 4, size=600)
    return HistGradientBoostingClassifier(max_iter=5, **params).fit(X, y)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RandomForestClassifier(n_estimators=2).fit([[0.0], [1.0]], [0, 1]), "got Random"),
        (lambda: _fitted_hgb(classes=3), "only binary classifiers compile; this one has 3"),
        (lambda: _fitted_hgb(categorical_features=[2]), "categorical features"),
    ],
    ids=["random-forest", "multiclass", "categorical"],
)
def test_unsupported_estimators_fail_loudly(make: Any, message: str) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        CompiledForest.from_hist_gradient_boosting(make())


def test_an_unfitted_estimator_is_refused() -> None:
    with pytest.raises(NotFittedError):
        CompiledForest.from_hist_gradient_boosting(HistGradientBoostingClassifier())


def test_a_scikit_learn_that_treelite_cannot_read_fails_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(estimator: Any) -> Any:
        raise AssertionError  # what treelite's importer raises when sklearn's internals moved

    monkeypatch.setattr(treelite.sklearn, "import_model", refuse)
    with pytest.raises(UnsupportedModelError, match=f"could not read the model \\({VERSIONS}\\)"):
        CompiledForest.from_hist_gradient_boosting(_fitted_hgb())


@pytest.mark.parametrize("field", ["default_left", "threshold"])
def test_a_model_read_differently_fails_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """A release whose models treelite reads without error but wrongly (a field moved, say)."""
    real_import = treelite.sklearn.import_model

    def misread(estimator: Any) -> Any:
        model = real_import(estimator)
        for tree_id in range(model.num_tree):
            tree = model.get_tree_accessor(tree_id)
            values = tree.get_field(field)
            tree.set_field(field, (1 - values) if field == "default_left" else values + 0.5)
        return model

    monkeypatch.setattr(treelite.sklearn, "import_model", misread)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2_000, 3))
    X[rng.random(X.shape) < 0.2] = np.nan
    y = ((np.nan_to_num(X[:, 0], nan=3.0) + rng.normal(size=2_000)) > 0).astype(int)
    estimator = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    with pytest.raises(UnsupportedModelError, match=f"decision_function .*\\({VERSIONS}\\)"):
        CompiledForest.from_hist_gradient_boosting(estimator)


def test_fast_predict_off_compiles_nothing_and_says_so_if_switched_on() -> None:
    frame = synthetic_risk_data(4_000, n_features=8, days=10, fraud_rate=0.05, seed=5)
    model = GradientBoostingRiskModel(**SMALL, fast_predict=False, random_state=0).fit(
        frame.features.select(frame.feature_names), frame.truth["is_fraud"].cast(int)
    )
    assert model.forest_ is None
    assert np.all(np.isfinite(model.risk_score(frame.features.select(frame.feature_names))))
    with pytest.raises(ValueError, match="fitted with fast_predict=False"):
        model.set_params(fast_predict=True).risk_score(frame.features.select(frame.feature_names))
