"""Pruning a fitted rule: terms the fit does not need are dropped, needed ones stay."""

import numpy as np
import pytest

from evo_rules.prune import prune
from evo_rules.fitness.arrays import ArrayTask

FIT = {"max_iter": 20}


def _task(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = 2.0 * X[:, 0] + 0.5 * X[:, 1] * X[:, 0] + 0.1 * rng.normal(size=n)  # c plays no part
    return ArrayTask(X, y, ("a", "b", "c"))


def test_prune_drops_what_the_fit_does_not_use_and_keeps_the_rest():
    task = _task()
    res = prune("(add (mul w0 x.a) (mul w1 x.a x.b) (mul w2 x.c) (mul w3 x.c x.c) w4)", task, FIT)
    assert res["text"] == "(add (mul w0 x.a x.b) (mul w1 x.a))"
    assert len(res["dropped"]) == 3  # c, c*c and the intercept (y has mean 0)
    assert res["fit_loss"] <= res["full_fit_loss"] * (1 + 1e-3)
    assert np.allclose(res["weights"], [0.5, 2.0], atol=0.01)


def test_prune_keeps_a_rule_whose_terms_all_matter():
    res = prune("(add (mul w0 x.a) (mul w1 x.a x.b))", _task(), FIT)
    assert res["dropped"] == [] and res["text"] == "(add (mul w0 x.a x.b) (mul w1 x.a))"


def test_prune_tolerance_bounds_the_loss_it_may_cost():
    task = _task()
    strict = prune("(add (mul w0 x.a) (mul w1 x.a x.b))", task, FIT, tol=1e-3)
    # without a*b the loss rises ~26x, without a ~400x: a tolerance of 100x drops only a*b
    loose = prune("(add (mul w0 x.a) (mul w1 x.a x.b))", task, FIT, tol=100.0)
    assert strict["dropped"] == [] and loose["text"] == "(mul w0 x.a)"
    assert loose["fit_loss"] <= loose["full_fit_loss"] * 101


def test_prune_refuses_text_that_is_no_rule():
    with pytest.raises(ValueError):
        prune("(add x.a", _task(n=100), FIT)


def test_prune_makes_an_unneeded_feature_of_a_product_a_constant():
    rng = np.random.default_rng(1)
    X = rng.uniform(0.5, 1.5, size=(20_000, 2))
    y = 3.0 * np.exp(0.5 * X[:, 0]) + 0.01 * rng.normal(size=20_000)  # b plays no part
    task = ArrayTask(X, y, ("a", "b"))
    res = prune("(mul w0 (exp (mul w1 x.a x.b)))", task, FIT)
    assert res["text"] == "(mul (exp (mul w0 x.a)) w1)"
    assert res["dropped"] == ["x.b"]
