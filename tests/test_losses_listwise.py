"""The listwise loss: numba pass against the NumPy formula, state reuse, finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules.losses import Listwise, make_loss


def numpy_listwise(y, groups, s, Jt):
    """The listwise loss as NumPy reductions (the formula before the numba pass): value,
    gradient dL/ds and Gauss-Newton curvature Jt (diag p - p p^T per group) Jt^T, over the
    groups with a labelled row."""
    change = np.r_[True, groups[1:] != groups[:-1]]
    starts = np.flatnonzero(change)
    row_group = np.cumsum(change) - 1
    mass = np.add.reduceat(y, starts)
    has = mass > 0
    q = np.where(has[row_group], y / np.where(mass > 0, mass, 1.0)[row_group], 0.0)
    active = has[row_group].astype(float)
    G = max(int(has.sum()), 1)
    z = s - np.maximum.reduceat(s, starts)[row_group]
    lp = z - np.log(np.add.reduceat(np.exp(z), starts))[row_group]
    p = np.exp(lp) * active
    value = -float(np.sum(q * lp)) / G
    grad = (p - q) / G
    Jp = Jt * p
    P = np.add.reduceat(Jp, starts, axis=1).T
    H = (Jp @ Jt.T - P.T @ P) / G
    return value, grad, H


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_groups = draw(st.integers(1, 25))
    sizes = rng.integers(1, 9, n_groups) if draw(st.booleans()) else np.full(n_groups, 6)
    groups = np.repeat(np.arange(n_groups), sizes)
    y = np.zeros(len(groups))
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    for g, a in enumerate(starts):
        kind = rng.integers(4)
        if kind == 0:
            continue  # no label: the group is ignored
        if kind == 3 and sizes[g] > 1:  # two labelled rows with unequal mass
            y[a] = 1.0
            y[a + sizes[g] - 1] = 0.5
        else:
            y[a + rng.integers(sizes[g])] = 1.0
    k = draw(st.integers(0, 7))
    scale = draw(st.sampled_from([0.1, 2.0, 30.0]))
    s = rng.normal(0.0, scale, len(y))
    Jt = rng.normal(size=(k, len(y)))
    return y, groups, s, Jt


@settings(max_examples=150)
@given(problems())
def test_numba_pass_equals_the_numpy_formula(problem):
    y, groups, s, Jt = problem
    L = Listwise(y, groups)
    value, grad, H = numpy_listwise(y, groups, s, Jt)
    assert L.value(s) == pytest.approx(value, rel=1e-12, abs=1e-12)
    g, Hn = L.grad_curvature(s, Jt)
    np.testing.assert_allclose(g, grad, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(Hn, H, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(Hn, Hn.T)


@settings(max_examples=100)
@given(problems())
def test_the_value_state_gives_bit_identical_gradients(problem):
    """What the fit reuses of an accepted step's value (each group's log-sum-exp) changes no bit."""
    y, groups, s, Jt = problem
    L = Listwise(y, groups)
    v, state = L.value_state(s)
    assert v == L.value(s)
    g1, H1 = L.grad_curvature(s, Jt, state)
    g2, H2 = L.grad_curvature(s, Jt)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(H1, H2)


@settings(max_examples=40)
@given(problems())
def test_gradient_matches_finite_differences_through_a_jacobian(problem):
    """d L(s(w)) / dw = Jt dL/ds with s linear in w: s = s0 + Jt^T w."""
    y, groups, s0, Jt = problem
    if Jt.shape[0] == 0:
        return
    L = Listwise(y, groups)
    g, _ = L.grad_curvature(s0, Jt)
    dw = Jt @ g
    eps = 1e-6
    for i in range(Jt.shape[0]):
        e = np.zeros(Jt.shape[0])
        e[i] = eps
        fd = (L.value(s0 + Jt.T @ e) - L.value(s0 - Jt.T @ e)) / (2 * eps)
        assert dw[i] == pytest.approx(fd, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", ["squared", "logistic"])
def test_other_losses_state_is_plain(name):
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=20) < 0.5).astype(float)
    L = make_loss(name, y, None)
    s = rng.normal(size=20)
    Jt = rng.normal(size=(3, 20))
    v, state = L.value_state(s)
    assert v == L.value(s)
    g, H = L.grad_curvature(s, Jt, state)
    np.testing.assert_array_equal(g, L.grad(s))
    np.testing.assert_array_equal(H, L.curvature(s, Jt))
