"""Losses the inner loop fits, each with its gradient and Gauss-Newton curvature in score space.

Every loss maps scores s (n,) to a scalar; `grad(s)` is dL/ds (n,); `curvature(s, Jt)` returns
the Gauss-Newton matrix Jt D Jt^T (k, k) for Jt = (k, n) per-weight score derivatives.
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
    def grad_curvature(self, s, Jt):
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
    The per-group work runs in one numba pass (`_listwise_*`): the loss and its curvature
    were half of a fit's time as NumPy reductions.
    """

    def __init__(self, y: np.ndarray, groups: np.ndarray):
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups has shape {groups.shape}, labels {y.shape}")
        if len(y) and np.any(y < 0):
            raise ValueError("listwise labels must be >= 0")
        change = np.r_[True, groups[1:] != groups[:-1]] if len(y) else np.zeros(0, bool)
        starts = np.flatnonzero(change)
        if len(np.unique(groups)) != len(starts):
            raise ValueError("listwise loss needs each group's rows to be contiguous")
        row_group = np.cumsum(change) - 1
        mass = np.add.reduceat(y, starts) if len(y) else np.zeros(0)
        has_target = mass > 0
        self.q = np.where(has_target[row_group], y / np.where(mass > 0, mass, 1.0)[row_group], 0.0)
        self.bounds = np.r_[starts, len(y)].astype(np.int64)
        self.active = has_target.astype(np.bool_)
        self.G = max(int(has_target.sum()), 1)

    def value(self, s):
        return _listwise_value(s, self.q, self.bounds, self.active) / self.G

    def grad(self, s):
        return self.grad_curvature(s, np.zeros((0, s.shape[0])))[0]  # no weights: gradient only

    def curvature(self, s, Jt):
        return self.grad_curvature(s, Jt)[1]

    def grad_curvature(self, s, Jt):
        g, H = _listwise_grad_curvature(s, self.q, np.ascontiguousarray(Jt), self.bounds, self.active)
        return g / self.G, H / self.G


@njit(cache=True, nogil=True)
def _group_lse(s, a, b):
    m = -np.inf
    for r in range(a, b):
        if s[r] > m:
            m = s[r]
    acc = 0.0
    for r in range(a, b):
        acc += np.exp(s[r] - m)
    return m + np.log(acc)


@njit(cache=True, nogil=True)
def _listwise_value(s, q, bounds, active):
    total = 0.0
    for g in range(bounds.shape[0] - 1):
        if not active[g]:
            continue
        a, b = bounds[g], bounds[g + 1]
        lse = _group_lse(s, a, b)
        for r in range(a, b):
            if q[r] != 0.0:
                total -= q[r] * (s[r] - lse)
    return total


@njit(cache=True, nogil=True)
def _listwise_grad_curvature(s, q, Jt, bounds, active):
    """dL/ds, and the sum over groups of J^T (diag p - p p^T) J with J = Jt.T, in one pass."""
    k = Jt.shape[0]
    grad = np.zeros(s.shape[0])
    H = np.zeros((k, k))
    pj = np.zeros(k)
    for g in range(bounds.shape[0] - 1):
        if not active[g]:
            continue
        a, b = bounds[g], bounds[g + 1]
        lse = _group_lse(s, a, b)
        pj[:] = 0.0
        for r in range(a, b):
            p = np.exp(s[r] - lse)
            grad[r] = p - q[r]
            for i in range(k):
                pji = p * Jt[i, r]
                pj[i] += pji
                for j in range(i + 1):
                    H[i, j] += pji * Jt[j, r]
        for i in range(k):
            for j in range(i + 1):
                H[i, j] -= pj[i] * pj[j]
    for i in range(k):
        for j in range(i):
            H[j, i] = H[i, j]
    return grad, H


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
