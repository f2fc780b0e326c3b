"""Losses the inner loop fits, each with its gradient and Gauss-Newton curvature in score space.

Every loss maps scores s (n,) to a scalar; `grad(s)` is dL/ds (n,); `curvature(s, Jt)` returns
the Gauss-Newton matrix Jt D Jt^T (k, k) for Jt = (k, n) per-weight score derivatives.
`value_state(s)` returns the value and what `grad_curvature(s, Jt, state)` can reuse of it at the
same s (the listwise loss: the exponentials and their group sums), so an accepted step's softmax
is not computed again.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

LOSSES = ("squared", "logistic", "listwise")


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class _Loss:
    def head(self, n_rows: int):
        """(this loss over the first rows, their count m): every row when n_rows >= all."""
        m = min(int(n_rows), len(self.y))
        return (self, m) if m == len(self.y) else (type(self)(self.y[:m]), m)

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
    the curvature's two sums then each take one pass per pair of weights (`_gram`).
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
        # the loss reads only labelled rows: -sum q (z - log-sum-exp of the row's group)
        self.label_rows = np.flatnonzero(self.q != 0.0)
        self.label_group = row_group[self.label_rows]
        self.label_q = self.q[self.label_rows]
        self.y, self.groups = y, groups
        self._heads: dict[int, tuple[Listwise, int]] = {}

    def head(self, n_rows: int):
        """(this loss over the first whole groups holding at least n_rows rows (or every row),
        their row count m); kept per n_rows, so a search's batch builds it once."""
        kept = self._heads.get(n_rows)
        if kept is None:
            i = int(np.searchsorted(self.bounds, n_rows))
            m = int(self.bounds[min(i, len(self.bounds) - 1)])
            kept = (self, m) if m >= len(self.y) else (Listwise(self.y[:m], self.groups[:m]), m)
            self._heads[n_rows] = kept
        return kept

    def value(self, s):
        return self.value_state(s)[0]

    def value_state(self, s):
        """(value, (e, acc)): e = exp(s - its group's max) per row and acc its sum per group,
        which `grad_curvature` at this very s turns into the softmax without an exp."""
        z = np.empty(s.shape[0])
        _shift_by_group_max(s, self.bounds, z)
        e = np.exp(z)  # NumPy's vectorized exp and log: the only transcendental work
        acc = np.empty(self.bounds.shape[0] - 1)
        _group_sums(e, self.bounds, acc)
        lse = np.log(acc)
        total = -float(self.label_q @ (z[self.label_rows] - lse[self.label_group]))
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
        grad = np.empty(s.shape[0])
        H = np.empty((Jt.shape[0], Jt.shape[0]))
        _listwise_grad_curvature(e, acc, self.q, Jt, self.bounds, self.active, float(self.G),
                                 grad, H)
        return grad, H


@njit(cache=True, nogil=True)
def _listwise_grad_curvature(e, acc, q, Jt, bounds, active, G, grad, H):
    """grad = dL/ds and H = Jt diag(p) Jt^T minus, over groups, (sum p J)(sum p J)^T, both
    divided by G: one call (its parts' NumPy set-up cost more than their work)."""
    k, n = Jt.shape
    A = np.empty((k, n))
    pj = np.empty((k, bounds.shape[0] - 1))
    _listwise_softmax(e, acc, q, Jt, bounds, active, grad, A, pj)
    for r in range(n):
        grad[r] /= G
    _gram(A, Jt, H)
    H2 = np.empty((k, k))
    _gram(pj, pj, H2)
    for i in range(k):
        for j in range(k):
            H[i, j] = (H[i, j] - H2[i, j]) / G


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
def _group_sums(e, bounds, acc):
    for g in range(bounds.shape[0] - 1):
        t = 0.0
        for r in range(bounds[g], bounds[g + 1]):
            t += e[r]
        acc[g] = t


@njit(cache=True, nogil=True)
def _listwise_softmax(e, acc, q, Jt, bounds, active, grad, A, pj):
    """The softmax p of each row's group, dL/ds = p - q, A = p * Jt (per column) and per group
    pj[:, g] = sum p J. Groups without a label count p = 0 (gradient 0: they are not part of
    the loss). Loops over whole rows where they can (A's rows vectorize); a single pass over
    rows with the weights inside, accumulating into pj through memory, was 4x slower."""
    k, n = Jt.shape
    G = bounds.shape[0] - 1
    p = np.empty(n)
    for g in range(G):
        inv = 1.0 / acc[g] if active[g] else 0.0
        for r in range(bounds[g], bounds[g + 1]):
            p[r] = e[r] * inv
    for r in range(n):
        grad[r] = p[r] - q[r]
    for i in range(k):
        for r in range(n):
            A[i, r] = p[r] * Jt[i, r]
        for g in range(G):
            t = 0.0
            for r in range(bounds[g], bounds[g + 1]):
                t += A[i, r]
            pj[i, g] = t


@njit(cache=True, nogil=True)
def _gram(A, B, out):
    """out[i, j] = sum over r of A[i, r] B[j, r] for j <= i, mirrored (A B^T when it is
    symmetric). Four partial sums per entry (independent chains, not one add waiting on the
    last), and two entries of a row of out at a time, so their chains interleave and A's row is
    read once for both; each entry's sums are added in the same order either way. A BLAS call
    on k x n by n x k with small k was slower."""
    k = A.shape[0]
    for i in range(k):
        j = 0
        while j + 1 <= i:
            _dot4x2(A, B, i, j, out)
            j += 2
        if j <= i:
            _dot4x1(A, B, i, j, out)


@njit(cache=True, nogil=True, inline="always")
def _dot4x1(A, B, i, j, out):
    n = A.shape[1]
    m = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for r in range(0, m, 4):
        s0 += A[i, r] * B[j, r]
        s1 += A[i, r + 1] * B[j, r + 1]
        s2 += A[i, r + 2] * B[j, r + 2]
        s3 += A[i, r + 3] * B[j, r + 3]
    for r in range(m, n):
        s0 += A[i, r] * B[j, r]
    out[i, j] = (s0 + s1) + (s2 + s3)
    out[j, i] = out[i, j]


@njit(cache=True, nogil=True, inline="always")
def _dot4x2(A, B, i, j, out):
    """out[i, j] and out[i, j + 1] (and their mirrors) as _dot4x1 makes them, in one pass."""
    n = A.shape[1]
    m = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    t0 = t1 = t2 = t3 = 0.0
    for r in range(0, m, 4):
        a0 = A[i, r]
        a1 = A[i, r + 1]
        a2 = A[i, r + 2]
        a3 = A[i, r + 3]
        s0 += a0 * B[j, r]
        s1 += a1 * B[j, r + 1]
        s2 += a2 * B[j, r + 2]
        s3 += a3 * B[j, r + 3]
        t0 += a0 * B[j + 1, r]
        t1 += a1 * B[j + 1, r + 1]
        t2 += a2 * B[j + 1, r + 2]
        t3 += a3 * B[j + 1, r + 3]
    for r in range(m, n):
        s0 += A[i, r] * B[j, r]
        t0 += A[i, r] * B[j + 1, r]
    out[i, j] = (s0 + s1) + (s2 + s3)
    out[j, i] = out[i, j]
    out[i, j + 1] = (t0 + t1) + (t2 + t3)
    out[j + 1, i] = out[i, j + 1]


def make_loss(name: str, y: np.ndarray, groups: np.ndarray | None):
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:  # a 1-D float64 array stays the object passed in (see _listwise_for)
        y = y.reshape(-1)
    if name == "squared":
        return Squared(y)
    if name == "logistic":
        return Logistic(y)
    if name == "listwise":
        if groups is None:
            raise ValueError("the listwise loss needs `groups`")
        return _listwise_for(y, np.asarray(groups))
    raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")


# The search fits every rule on one train batch: its listwise set-up (group bounds, targets)
# is made once and reused while the arrays passed in are the same objects with the same contents.
_LISTWISE_KEPT: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Listwise]] = {}
_LISTWISE_MAX = 8
_LISTWISE_LOCK = threading.Lock()


def _listwise_for(y: np.ndarray, groups: np.ndarray) -> Listwise:
    key = (id(y), id(groups))
    with _LISTWISE_LOCK:
        kept = _LISTWISE_KEPT.get(key)
    if kept is not None:
        y_obj, g_obj, y_copy, g_copy, loss = kept
        # the objects are held, so their ids are theirs; equal contents: not changed in place
        if (y_obj is y and g_obj is groups and np.array_equal(y, y_copy)
                and np.array_equal(groups, g_copy)):
            return loss
    loss = Listwise(y, groups)
    with _LISTWISE_LOCK:
        if len(_LISTWISE_KEPT) >= _LISTWISE_MAX:
            _LISTWISE_KEPT.pop(next(iter(_LISTWISE_KEPT)))
        _LISTWISE_KEPT[key] = (y, groups, y.copy(), groups.copy(), loss)
    return loss
