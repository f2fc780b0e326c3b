"""The winner's one-standard-error choice: metric units, paired standard errors, parsimony order."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evo_rules.fitness.arrays import ArrayTask
from evo_rules.fitness.babi import BabiTask
from evo_rules.fitness.regression import RegressionTask
from evo_rules.fitness.synthetic import SyntheticTask
from evo_rules.gate import paired_se, parsimony_order, within_one_se
from evo_rules.evaluate import evaluate_rule
from evo_rules.rule import parse

FIT = {"max_iter": 20}


def _scorer(task, text, seed=0):
    rule = parse(text)
    w = np.random.default_rng(seed).normal(0.0, 1.0, len(rule.params))
    return lambda X: rule.evaluate(X, w)


def _linear(task):
    return task.linear_rule_text()


def _arrays(loss):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 3))
    if loss == "listwise":
        return ArrayTask(X, (X[:, 0] > 0.5).astype(float), ("a", "b", "c"), loss, groups=np.repeat(np.arange(40), 6))
    y = X[:, 0] - X[:, 1] if loss == "squared" else (X[:, 0] > 0).astype(float)
    return ArrayTask(X, y, ("a", "b", "c"), loss)


TASKS = {
    "and-match": lambda: SyntheticTask("and-match"),
    "regression": lambda: RegressionTask(),
    "arrays-squared": lambda: _arrays("squared"),
    "arrays-listwise": lambda: _arrays("listwise"),
    "arrays-logistic": lambda: _arrays("logistic"),
    "babi-1": lambda: BabiTask(1),
}


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_units_average_to_the_metric(name, seed):
    task = TASKS[name]()
    scorer = _scorer(task, _linear(task), seed)
    units = task.score_units("valid", scorer)
    assert units.ndim == 1 and len(units) > 1
    assert float(np.mean(units)) == pytest.approx(task.score("valid", scorer)[task.metric_name], abs=1e-12)
    if hasattr(task, "unit_clusters"):
        assert task.unit_clusters("valid").shape == units.shape


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(2, 60), elements=st.floats(-5, 5)))
def test_clustered_se_with_one_unit_per_cluster_is_the_plain_one(d):
    plain = paired_se(d)
    assert paired_se(d, np.arange(len(d))) == pytest.approx(plain, rel=1e-9, abs=1e-12)


def test_clusters_of_copies_widen_the_standard_error():
    d = np.random.default_rng(3).normal(size=50)
    doubled = np.repeat(d, 2)  # each draw seen twice: no more information than 50 draws
    assert paired_se(doubled, np.repeat(np.arange(50), 2)) == pytest.approx(paired_se(d) * math.sqrt(1.0), rel=0.05)
    assert paired_se(doubled) < 0.75 * paired_se(d)  # the plain formula would claim ~1/sqrt(2)
    assert paired_se(np.ones(1)) == math.inf


def _fitted(text, task):
    r = evaluate_rule(text, task, FIT)
    return (r["text"], r["weights"], r["size"], r["metric"])


def test_a_smaller_rule_within_noise_goes_first_and_a_clearly_worse_one_does_not():
    task = SyntheticTask("and-match")
    big = _fitted("(eml 0 (add (exp (add (mul w x.color) (mul w x.shape))) (exp (mul w x.shape))))", task)
    near = _fitted("(eml 0 (add (exp (mul w x.color)) (exp (mul w x.shape))))", task)
    worse = _fitted("(add (mul w x.color) (mul w x.shape) (mul w x.color x.shape))", task)
    tiny = _fitted("(add (mul w x.color) (mul w x.shape))", task)
    rules = [big, near, worse, tiny]  # best first: the big rule leads (or ties) on validation
    assert big[3] >= near[3] - 0.002 and big[2] > near[2] and near[3] > worse[3] + 0.02
    flags = within_one_se(rules, task)
    assert flags == [True, True, False, False]
    order, n_near = parsimony_order(rules, task)
    assert (order, n_near) == ([1, 0, 2, 3], 2)  # the smaller of the two first, then by metric


def test_without_metric_units_the_best_rule_stays_first():
    class NoUnits:
        pass

    rules = [("a", [], 9, 0.9), ("b", [], 3, 0.89)]
    assert parsimony_order(rules, NoUnits()) == ([0, 1], 1)


def test_noise_is_the_best_rules_own_standard_error_not_the_paired_one():
    """Breiman's rule: a rule a little behind on every unit (a paired difference with almost no
    spread) is within noise when its deficit is under the standard error of the best rule's own
    metric, and out when it is over it."""
    rng = np.random.default_rng(0)
    best_units = rng.normal(0.5, 0.3, 400)
    se = float(np.std(best_units, ddof=1) / math.sqrt(400))  # about 0.015

    class Units:
        def score_units(self, part, scorer):
            return scorer({"x": np.zeros(1)}) + best_units

    rules = [("(mul 0 x.x)", [], 3, 0.5), (f"(add {-0.5 * se} (mul 0 x.x))", [], 2, 0.49),
             (f"(add {-2 * se} (mul 0 x.x))", [], 1, 0.48)]
    assert within_one_se(rules, Units()) == [True, True, False]
    assert parsimony_order(rules, Units()) == ([1, 0, 2], 2)
