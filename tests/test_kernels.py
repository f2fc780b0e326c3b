"""Compiled kernels against the NumPy tree walk, and gradients against finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import parse
from evo_rules.reference import tree_eval, tree_eval_nudged
from evo_rules.terms import to_text
from strategies import FEATURES, terms

N = 300  # more than one kernel block of 256 rows


def data(seed):
    rng = np.random.default_rng(seed)
    return {f: rng.uniform(0.1, 2.0, N) for f in FEATURES}


@settings(max_examples=150)
@given(terms(), st.integers(0, 10_000))
def test_kernel_matches_tree_walk(t, seed):
    r = parse(to_text(t))
    X = data(seed)
    rng = np.random.default_rng(seed + 1)
    w = rng.uniform(-1.0, 1.0, len(r.params))
    got = r.evaluate(X, w)
    wd = dict(zip(r.params, w))
    want = tree_eval(r.term, X, wd, N)
    # rows where the function is ill-conditioned (log of a cancellation such as exp(log a) - a,
    # sin of a huge exp) differ by rounding alone, between any two correct evaluators (the
    # kernel's exp is within 3 ulp of NumPy's): a relative nudge of the inputs and weights by
    # 1e-13 that moves the value by more than 1e-9 (a condition number over 1e4) finds them,
    # and only well-conditioned rows are compared
    # Also nudged: every inner result, which finds a cancellation's rounding residual fed on
    # (pow(exp(log b) - b, a) is NaN or not by the sign of a residual each evaluator rounds its
    # own way, and nudging the inputs alone moves both evaluators' residuals alike)
    with np.errstate(all="ignore"):
        nudged = [tree_eval(r.term, {f: v * (1 + d) for f, v in X.items()},
                            {k: v * (1 + d) for k, v in wd.items()}, N) for d in (1e-13, -1e-13)]
        nudged += [tree_eval_nudged(r.term, X, wd, N, d) for d in (1e-13, -1e-13, 3e-12, -3e-12)]
    conditioned = np.ones(N, bool)
    for v in nudged:
        conditioned &= (np.isfinite(v) == np.isfinite(want))
        with np.errstate(all="ignore"):
            conditioned &= ~np.isfinite(want) | np.isclose(v, want, rtol=1e-9, atol=1e-11)
    ok = np.isfinite(want) & conditioned
    assert np.array_equal(np.isfinite(got)[ok], ok[ok])
    assert np.allclose(got[ok], want[ok], rtol=1e-10, atol=1e-12)


@settings(max_examples=150)
@given(terms(), st.integers(0, 10_000))
def test_jacobian_matches_central_differences(t, seed):
    r = parse(to_text(t))
    if not r.params:
        return
    X = data(seed)
    rng = np.random.default_rng(seed + 2)
    w = rng.uniform(-1.0, 1.0, len(r.params))
    s, J = r.jacobian(X, w)
    assert J.shape == (N, len(r.params))
    assert np.allclose(s, r.evaluate(X, w), equal_nan=True)
    for k in range(len(r.params)):
        # a weight near 0 under a division (sin(a / w), w ~ 0.002) turns a step of 1e-6 into a
        # phase change of 0.1-1 rad, where no difference quotient is near the derivative and two
        # step sizes can still agree by chance; shrinking h with w^2 below |w| = 0.05 keeps the
        # phase change per step near 1e-3 (the derivative grows as 1 / w^2 too, so rounding stays
        # small beside it)
        h = 1e-6 * max(1.0, abs(w[k])) * min(1.0, max((abs(w[k]) / 0.05) ** 2, 1e-4))
        wp, wm = w.copy(), w.copy()
        wp[k] += h
        wm[k] -= h
        wp2, wm2 = w.copy(), w.copy()
        wp2[k] += 4 * h
        wm2[k] -= 4 * h
        with np.errstate(all="ignore"):
            fd = (r.evaluate(X, wp) - r.evaluate(X, wm)) / (2 * h)
            fd4 = (r.evaluate(X, wp2) - r.evaluate(X, wm2)) / (8 * h)
        # rows next to a singularity (log of ~0) or where the rule oscillates within a few steps
        # (sin(a / w) for w ~ 0.002) have no reliable finite difference: there the differences at
        # step h and 4h disagree, and only the rows where they agree to the tolerance asked of the
        # Jacobian below are compared (agreement to 1e-3 let in a row whose fd was off by 9e-4
        # while fd4 happened to be near the truth; the Jacobian was right to 1e-12, by mpmath)
        stable = np.isclose(fd, fd4, rtol=1e-4, atol=1e-6)
        ok = np.isfinite(fd) & np.isfinite(J[:, k]) & np.isfinite(s) & (np.abs(s) < 1e6) & stable
        assert np.allclose(J[ok, k], fd[ok], rtol=1e-4, atol=1e-5 * (1 + np.abs(s[ok]).max(initial=0)))


def test_softplus_and_sigmoid_are_stable_for_large_arguments():
    r = parse("(eml x.a (add 1 (exp (mul w x.b))))")
    X = {"a": np.zeros(3), "b": np.array([-1000.0, 0.0, 1000.0])}
    s, J = r.jacobian(X, [1.0])
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(J))
    assert s[2] == pytest.approx(1.0 - 1000.0)
    assert J[2, 0] == pytest.approx(-1000.0)
    assert J[0, 0] == pytest.approx(0.0)


def test_program_shares_forward_subterms_with_gradients():
    r = parse("(eml (add (mul w x.color) w) (add 1 (exp (mul w x.stale))))")
    # forward alone has 11 slots; the gradients add only a few more, not a copy of the forward
    assert len(r.program) <= len(r.forward_program) + 6


def test_missing_feature_is_a_clear_key_error():
    r = parse("(mul w x.color)")
    with pytest.raises(KeyError, match="color"):
        r.evaluate({"shape": np.ones(3)}, [1.0])


def test_two_dimensional_input_with_names():
    r = parse("(add (mul w x.a) x.b)")
    X = np.array([[1.0, 10.0], [2.0, 20.0]])
    assert np.allclose(r.evaluate(X, [2.0], names=["a", "b"]), [12.0, 24.0])
    with pytest.raises(ValueError, match="weight"):
        r.evaluate(X, [1.0, 2.0], names=["a", "b"])


def test_division_by_zero_in_a_gradient_is_invalid_not_an_exception():
    r = parse("(add (eml x.b w) (log x.a))")
    X = {"a": np.array([1.0, 2.0]), "b": np.array([0.0, 1.0])}
    s, J = r.jacobian(X, [0.0])  # d/dw of -log(w) at w = 0 divides by zero
    assert not np.all(np.isfinite(J))
