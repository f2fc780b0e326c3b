"""The scikit-learn estimators: scikit-learn's own checks, a real search, fitted attributes."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from evo_rules.sklearn import EvoRulesClassifier, EvoRulesRegressor  # noqa: E402

# small searches: check_estimator fits each estimator some 50 times
SMALL = {"population": 16, "generations": 2}


@parametrize_with_checks([EvoRulesRegressor(**SMALL), EvoRulesClassifier(**SMALL)])
def test_scikit_learn_checks(estimator, check):
    # none is expected to fail; scikit-learn itself skips its array-API check unless
    # SCIPY_ARRAY_API=1 is set (the estimators take NumPy input only)
    check(estimator)


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.exp(0.8 * X[:, 0]) + 0.5 * X[:, 2]


def test_regressor_finds_the_formula_and_exposes_the_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = _data()
    est = EvoRulesRegressor(population=64, generations=10, random_state=0).fit(X, y)
    assert est.score(X, y) > 0.99
    assert est.n_features_in_ == 3 and est.feature_names_ == ("x0", "x1", "x2")
    assert 1 <= len(est.hall_of_fame_) <= 10
    assert est.rule_ == est.hall_of_fame_[0].rule
    assert np.array_equal(est.weights_, est.hall_of_fame_[0].weights)
    names = ["x0", "x1", "x2"]
    assert np.array_equal(est.predict(X), est.rule_.evaluate(X, est.weights_, names=names))
    metrics = [h.metrics["r2"] for h in est.hall_of_fame_]
    assert metrics == sorted(metrics, reverse=True)
    assert os.listdir(tmp_path) == []  # no run folder in the working folder


def test_same_seed_same_rule_and_params_roundtrip():
    X, y = _data(80, seed=1)
    a = EvoRulesRegressor(**SMALL, random_state=5).fit(X, y)
    b = clone(a).fit(X, y)
    assert a.rule_ == b.rule_ and np.array_equal(a.weights_, b.weights_)
    assert a.get_params()["population"] == 16
    assert a.set_params(generations=3).generations == 3


def test_dataframe_names_become_the_rule_features():
    pd = pytest.importorskip("pandas")
    X, y = _data(120, seed=2)
    df = pd.DataFrame(X, columns=["growth", "noise", "level"])
    est = EvoRulesRegressor(**SMALL, random_state=0).fit(df, y)
    assert list(est.feature_names_in_) == ["growth", "noise", "level"]
    assert set(est.rule_.features) <= {"growth", "noise", "level"}
    assert np.array_equal(est.predict(df), est.best_.predict(df))


def test_classifier_is_binary_with_probabilities():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 2))
    y = np.where(X[:, 0] - 0.5 * X[:, 1] > 0, "yes", "no")
    est = EvoRulesClassifier(**SMALL, random_state=0).fit(X, y)
    assert list(est.classes_) == ["no", "yes"]
    assert est.score(X, y) > 0.9
    p = est.predict_proba(X)
    assert p.shape == (150, 2) and np.allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(est.predict(X), est.classes_[(p[:, 1] > 0.5).astype(int)])
    with pytest.raises(ValueError, match="Only binary"):
        est.fit(X, rng.integers(0, 3, 150))


def test_time_budget_stops_early():
    X, y = _data(60, seed=4)
    est = EvoRulesRegressor(population=16, generations=1000, max_seconds=1e-6, random_state=0).fit(X, y)
    assert est.n_iter_ == 1  # the first population is evaluated, then the spent budget stops it
    assert est.score(X, y) > 0  # a fitted model all the same (at least the linear seed)
    assert clone(est).get_params()["max_seconds"] == 1e-6


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "10", True])
def test_a_bad_time_budget_is_refused_before_the_search(bad):
    X, y = _data(40, seed=4)
    with pytest.raises(ValueError, match="max_seconds must be a finite number > 0 or None"):
        EvoRulesRegressor(**SMALL, max_seconds=bad).fit(X, y)


def test_operators_widen_the_regressor_to_a_sine():
    rng = np.random.default_rng(2)
    X = rng.uniform(-3, 3, size=(240, 1))
    y = 2.0 * np.sin(1.5 * X[:, 0]) + 0.05 * rng.normal(size=240)
    wide = EvoRulesRegressor(population=80, generations=10, random_state=0,
                             operators=["add", "mul", "sin", "cos", "div"]).fit(X, y)
    assert wide.score(X, y) > 0.99 and "sin" in wide.rule_.text
    assert "sin" not in EvoRulesRegressor(**SMALL, random_state=0).fit(X, y).rule_.text
    with pytest.raises(ValueError, match="tan"):
        EvoRulesRegressor(**SMALL, operators=["add", "tan"]).fit(X, y)
