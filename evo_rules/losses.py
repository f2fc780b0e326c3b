"""Losses the inner loop fits, each with its gradient and Gauss-Newton curvature in score space.

Every loss maps scores s (n,) to a scalar; `grad(s)` is dL/ds (n,); `curvature(s, Jt)` returns
the Gauss-Newton matrix Jt D Jt^T (k, k) for Jt = (k, n) per-weight score derivatives.
"""

from __future__ import annotations

import numpy as np

LOSSES = ("squared", "logistic", "listwise")


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Squared:
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


class Logistic:
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


class Listwise:
    """Softmax cross-entropy over each group's candidates against the labelled one(s).

    Groups must be contiguous runs of equal ids. Groups with no labelled row are ignored.
    """

    def __init__(self, y: np.ndarray, groups: np.ndarray):
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups has shape {groups.shape}, labels {y.shape}")
        if len(y) and np.any(y < 0):
            raise ValueError("listwise labels must be >= 0")
        change = np.r_[True, groups[1:] != groups[:-1]] if len(y) else np.zeros(0, bool)
        self.starts = np.flatnonzero(change)
        if len(np.unique(groups)) != len(self.starts):
            raise ValueError("listwise loss needs each group's rows to be contiguous")
        self.row_group = np.cumsum(change) - 1
        mass = np.add.reduceat(y, self.starts) if len(y) else np.zeros(0)
        self.has_target = mass > 0
        self.q = np.where(self.has_target[self.row_group], y / np.where(mass > 0, mass, 1.0)[self.row_group], 0.0)
        self.active = self.has_target[self.row_group].astype(np.float64)
        self.G = max(int(self.has_target.sum()), 1)
        # equal-size groups (the common case) take a reshape fast path instead of reduceat
        sizes = np.diff(np.r_[self.starts, len(y)])
        self.width = int(sizes[0]) if len(sizes) and np.all(sizes == sizes[0]) else 0

    def _log_softmax(self, s):
        # value, grad and curvature are asked for the same scores in turn: compute once
        if s is getattr(self, "_last_s", None):
            return self._last_lp
        lp = self._log_softmax_of(s)
        self._last_s, self._last_lp = s, lp
        return lp

    def _log_softmax_of(self, s):
        if self.width:
            z = s.reshape(-1, self.width)
            z = z - z.max(axis=1, keepdims=True)
            return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).reshape(-1)
        gmax = np.maximum.reduceat(s, self.starts)
        z = s - gmax[self.row_group]
        lse = np.log(np.add.reduceat(np.exp(z), self.starts))
        return z - lse[self.row_group]

    def value(self, s):
        lp = self._log_softmax(s)
        return -float(np.sum(self.q * lp)) / self.G

    def grad(self, s):
        p = np.exp(self._log_softmax(s))
        return (p * self.active - self.q) / self.G

    def curvature(self, s, Jt):
        p = np.exp(self._log_softmax(s)) * self.active
        Jp = Jt * p
        H = Jp @ Jt.T
        if self.width:
            P = Jp.reshape(Jt.shape[0], -1, self.width).sum(axis=2).T  # (G, k): sum_g p J
        else:
            P = np.add.reduceat(Jp, self.starts, axis=1).T  # along contiguous rows: fast
        return (H - P.T @ P) / self.G


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
