"""Losses the inner loop fits, each with its gradient and Gauss-Newton curvature in score space.

Every loss maps scores s (n,) to a scalar; `grad(s)` is dL/ds (n,); `curvature(s, Jt)` returns
the Gauss-Newton matrix Jt D Jt^T (k, k) for Jt = (k, n) per-weight score derivatives.
`value_state(s)` returns the value and what `grad_curvature(s, Jt, state)` can reuse of it at the
same s (the listwise loss: the exponentials and their group sums), so an accepted step's softmax
is not computed again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LOSSES = ("squared", "logistic", "listwise")


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class _Loss:
    def value_state(self, s):
        return self.value(s), None

    def grad_curvature(self, s, Jt, state=None):
        return self.grad(s), self.curvature(s, Jt)


class Squared(_Loss):
    """Mean of (s - y)^2 / 2."""

    def __init__(self, y: np.ndarray):
        self.y = y
        self.n = max(len(y), 1)

    def value(self, s):
        r = s - self.y
        return 0.5 * float(r @ r) / self.n

    def grad(self, s):
        return (s - self.y) / self.n

    def curvature(self, s, Jt):
        return (Jt @ Jt.T) / self.n


class Logistic(_Loss):
    """Binary cross-entropy of sigmoid(s) against labels y in {0, 1}."""

    def __init__(self, y: np.ndarray):
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("logistic loss needs labels that are 0 or 1")
        self.y = y
        self.n = max(len(y), 1)

    def value(self, s):
        return float(np.sum(_softplus(s) - self.y * s)) / self.n

    def grad(self, s):
        return (_sigmoid(s) - self.y) / self.n

    def curvature(self, s, Jt):
        p = _sigmoid(s)
        d = p * (1.0 - p) / self.n
        return (Jt * d) @ Jt.T


class Listwise(_Loss):
    """Softmax cross-entropy over each group's candidates against the labelled one(s).

    Groups must be contiguous runs of equal ids. Groups with no labelled row are ignored.
    Per value: one numba pass for the group maxima, NumPy's vectorized exp, one numba pass for
    the group sums and the loss (the scalar exp of a numba loop was most of a fit's time). The
    softmax, gradient and per-group sums come from the stored exponentials in one numba pass;
    the curvature's two sums are then matrix products (BLAS).
    """

    def __init__(self, y: np.ndarray, groups: np.ndarray):
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups has shape {groups.shape}, labels {y.shape}")
        if len(y) and np.any(y < 0):
            raise ValueError("listwise labels must be >= 0")
        change = np.r_[True, groups[1:] != groups[:-1]] if len(y) else np.zeros(0, bool)
        starts = np.flatnonzero(change)
        # contiguous exactly when no id starts two runs (the runs' ids: G values, not n rows)
        if len(np.unique(groups[starts])) != len(starts):
            raise ValueError("listwise loss needs each group's rows to be contiguous")
        row_group = np.cumsum(change) - 1
        mass = np.add.reduceat(y, starts) if len(y) else np.zeros(0)
        has_target = mass > 0
        self.q = np.where(has_target[row_group], y / np.where(mass > 0, mass, 1.0)[row_group], 0.0)
        self.bounds = np.r_[starts, len(y)].astype(np.int64)
        self.active = has_target.astype(np.bool_)
        self.G = max(int(has_target.sum()), 1)

    def value(self, s):
        return self.value_state(s)[0]

    def value_state(self, s):
        """(value, (e, acc)): e = exp(s - its group's max) per row and acc its sum per group,
        which `grad_curvature` at this very s turns into the softmax without an exp."""
        z = np.empty(s.shape[0])
        _shift_by_group_max(s, self.bounds, z)
        e = np.exp(z)  # NumPy's vectorized exp: the only transcendental work per row
        acc = np.empty(self.bounds.shape[0] - 1)
        total = _listwise_value(z, e, self.q, self.bounds, self.active, acc)
        return total / self.G, (e, acc)

    def grad(self, s):
        return self.grad_curvature(s, np.zeros((0, s.shape[0])))[0]  # no weights: gradient only

    def curvature(self, s, Jt):
        return self.grad_curvature(s, Jt)[1]

    def grad_curvature(self, s, Jt, state=None):
        """dL/ds and sum over groups of Jt (diag p - p p^T) Jt^T. state: `value_state(s)[1]`
        at this very s, or None (then computed here)."""
        e, acc = self.value_state(s)[1] if state is None else state
        Jt = np.ascontiguousarray(Jt, dtype=np.float64)
        n, k = s.shape[0], Jt.shape[0]
        grad = np.empty(n)
        p = np.empty(n)
        pj = np.empty((self.bounds.shape[0] - 1, k))
        _listwise_softmax(e, acc, self.q, Jt, self.bounds, self.active, grad, p, pj)
        # the two sums as matrix products: Jt diag(p) Jt^T, and per group (p J)(p J)^T
        H = (Jt * p) @ Jt.T - pj.T @ pj
        H = 0.5 * (H + H.T)  # exactly symmetric
        return grad / self.G, H / self.G


@njit(cache=True, nogil=True)
def _shift_by_group_max(s, bounds, z):
    """z = s - the maximum of s over the row's group (so exp(z) <= 1: no overflow)."""
    for g in range(bounds.shape[0] - 1):
        a, b = bounds[g], bounds[g + 1]
        m = -np.inf
        for r in range(a, b):
            if s[r] > m:
                m = s[r]
        for r in range(a, b):
            z[r] = s[r] - m


@njit(cache=True, nogil=True)
def _listwise_value(z, e, q, bounds, active, acc_out):
    """The summed loss -sum q (z - log sum e) over labelled groups; each group's sum of e is
    written to acc_out."""
    total = 0.0
    for g in range(bounds.shape[0] - 1):
        a, b = bounds[g], bounds[g + 1]
        acc = 0.0
        for r in range(a, b):
            acc += e[r]
        acc_out[g] = acc
        if not active[g]:
            continue
        lse = np.log(acc)
        for r in range(a, b):
            if q[r] != 0.0:
                total -= q[r] * (z[r] - lse)
    return total


@njit(cache=True, nogil=True)
def _listwise_softmax(e, acc, q, Jt, bounds, active, grad, p, pj):
    """Per row the softmax p of its group and dL/ds = p - q; per group pj[g] = sum p J. Rows of
    groups without a label: p = 0, gradient 0 (they are not part of the loss)."""
    k = Jt.shape[0]
    for g in range(bounds.shape[0] - 1):
        a, b = bounds[g], bounds[g + 1]
        if not active[g]:
            for r in range(a, b):
                p[r] = 0.0
                grad[r] = 0.0
            for i in range(k):
                pj[g, i] = 0.0
            continue
        inv = 1.0 / acc[g]
        for r in range(a, b):
            p[r] = e[r] * inv
            grad[r] = p[r] - q[r]
        for i in range(k):
            t = 0.0
            for r in range(a, b):
                t += p[r] * Jt[i, r]
            pj[g, i] = t


def make_loss(name: str, y: np.ndarray, groups: np.ndarray | None):
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if name == "squared":
        return Squared(y)
    if name == "logistic":
        return Logistic(y)
    if name == "listwise":
        if groups is None:
            raise ValueError("the listwise loss needs `groups`")
        return Listwise(y, groups)
    raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")
