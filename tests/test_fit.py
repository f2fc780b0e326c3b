"""The inner fitting loop."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import fit, parse


def make_X(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.uniform(0.2, 2.0, n)}


@settings(max_examples=25)
@given(st.floats(-1.5, 1.5), st.floats(-1.0, 1.0), st.floats(-2.0, 2.0), st.integers(0, 100))
def test_fit_recovers_weights_of_an_eml_rule(a, b, c, seed):
    r = parse("(eml (add (mul w x.a) w) (add 1 (exp (mul w x.b))))")
    X = make_X(500, seed)
    truth = np.array([a, b, c])
    y = r.evaluate(X, truth)
    res = fit(r, X, y, loss="squared")
    assert res.valid
    assert res.iterations <= 20
    assert np.allclose(r.evaluate(X, res.weights), y, atol=1e-4)
    assert np.allclose(res.weights, truth, atol=1e-3)


def test_linear_weights_are_solved_from_data():
    r = parse("(add (mul w x.a) (mul w x.b) w)")
    X = make_X(200)
    y = 3 * X["a"] - 2 * X["b"] + 0.5
    res = fit(r, X, y)
    assert np.allclose(res.weights, [3, -2, 0.5], atol=1e-8)
    assert res.iterations <= 2


def test_logistic_fit_recovers_direction():
    rng = np.random.default_rng(1)
    X = make_X(4000, 1)
    z = 2 * X["a"] - X["b"]
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z))).astype(float)
    res = fit(parse("(add (mul w x.a) (mul w x.b))"), X, y, loss="logistic")
    assert res.valid and np.allclose(res.weights, [2, -1], atol=0.25)


def test_listwise_fit_picks_the_labelled_candidate():
    rng = np.random.default_rng(2)
    n, c = 4000, 8
    X = make_X(n, 2)
    groups = np.repeat(np.arange(n // c), c)
    util = 2 * X["a"] + 1 * X["b"] + rng.gumbel(size=n)
    y = np.zeros(n)
    for g in range(n // c):
        y[g * c + np.argmax(util[g * c:(g + 1) * c])] = 1.0
    res = fit(parse("(add (mul w x.a) (mul w x.b))"), X, y, loss="listwise", groups=groups)
    assert res.valid and np.allclose(res.weights, [2, 1], atol=0.3)


def test_rule_never_finite_is_invalid_not_an_exception():
    r = parse("(log (mul -1 (exp (mul w x.a))))")  # log of a negative number everywhere
    X = make_X(50)
    res = fit(r, X, np.zeros(50))
    assert not res.valid and res.loss == float("inf")


def test_bad_loss_and_mismatched_rows_are_clear_errors():
    r = parse("(mul w x.a)")
    X = make_X(10)
    with pytest.raises(ValueError, match="unknown loss"):
        fit(r, X, np.zeros(10), loss="hinge")
    with pytest.raises(ValueError, match="rows"):
        fit(r, X, np.zeros(9))
    with pytest.raises(ValueError, match="groups"):
        fit(r, X, np.zeros(10), loss="listwise")


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.booleans())
def test_listwise_gradient_and_curvature_match_finite_differences(seed, ragged):
    from evo_rules.losses import Listwise

    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, 12) if ragged else np.full(12, 5)
    groups = np.repeat(np.arange(12), sizes)
    y = np.zeros(len(groups))
    for g, start in enumerate(np.r_[0, np.cumsum(sizes)[:-1]]):
        if g % 4:  # some groups have no target: they are ignored
            y[start + rng.integers(sizes[g])] = 1.0
    L = Listwise(y, groups)
    s = rng.normal(0, 2, len(y))
    g, H = L.grad_curvature(s, np.eye(len(y)))  # J = identity: H is the Hessian in s
    eps = 1e-6
    for r in range(len(y)):
        e = np.zeros(len(y))
        e[r] = eps
        assert g[r] == pytest.approx((L.value(s + e) - L.value(s - e)) / (2 * eps), abs=1e-6)
        col = (L.grad(s + e) - L.grad(s - e)) / (2 * eps)
        assert np.allclose(H[:, r], col, atol=1e-5)


@settings(max_examples=200)
@given(st.integers(1, 6), st.integers(0, 10_000), st.floats(1e-12, 1e3))
def test_the_damped_step_solves_the_damped_system(k, seed, lam):
    """The fit's Cholesky step equals NumPy's solve of (H + lam diag(scale)) step = -g, and the
    decrease it reports is the quadratic model's."""
    from evo_rules.fitting import _damped_step

    rng = np.random.default_rng(seed)
    J = rng.normal(size=(k, 3 * k))
    H = J @ J.T + 1e-8 * np.eye(k)
    g = rng.normal(size=k)
    scale = np.maximum(np.diag(H), 1e-12)
    step = np.empty(k)
    predicted = _damped_step(H, g, lam, scale, step)
    want = np.linalg.solve(H + lam * np.diag(scale), -g)
    assert np.allclose(step, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    assert math.isclose(predicted, -(g @ want + 0.5 * want @ H @ want), rel_tol=1e-6, abs_tol=1e-12)


def test_the_damped_step_refuses_a_matrix_that_is_not_positive_definite():
    from evo_rules.fitting import _damped_step

    H = np.array([[1.0, 0.0], [0.0, -5.0]])
    step = np.zeros(2)
    assert math.isnan(_damped_step(H, np.ones(2), 1e-3, np.ones(2), step))


def test_a_curvature_that_overflows_never_reaches_least_squares(monkeypatch):
    """Features near 1e200 give a finite Jacobian whose Gram matrix overflows; the Cholesky step
    fails on it and LAPACK's least squares, which never returns on NaN input (a search hung
    there), must not be called with it: such steps are rejected."""
    real = np.linalg.lstsq

    def finite_only(A, b, *args, **kwargs):
        assert np.all(np.isfinite(A)) and np.all(np.isfinite(b)), "lstsq called on non-finite input"
        return real(A, b, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "lstsq", finite_only)
    rng = np.random.default_rng(0)
    X = {"a": rng.uniform(1, 2, 50) * 1e200, "b": rng.uniform(1, 2, 50) * 1e200}
    y = rng.normal(size=50)
    for text in ("(add (mul w x.a) (mul w x.b))", "(add (mul w x.a) (mul w x.b) (exp (mul w x.a)))"):
        res = fit(parse(text), X, y)
        assert res.iterations <= 20
