"""A plain NumPy tree walk over terms: the slow, obviously-correct reference.

Tests check the compiled kernels and the simplifier against it; benchmarks time it as a peer.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .terms import Term


_WIDE = {"sin": np.sin, "cos": np.cos, "sqrt": np.sqrt, "abs": np.abs, "sign": np.sign,
         "div": np.divide, "pow": np.power}


def tree_eval(t: Term, X: Mapping[str, np.ndarray], weights: Mapping[str, float], n: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return _ev(t, X, weights, n)


def tree_eval_nudged(t: Term, X: Mapping[str, np.ndarray], weights: Mapping[str, float], n: int,
                     d: float) -> np.ndarray:
    """The tree walk with every inner node's result scaled by 1 + d: rows whose value then moves
    far more than d are ill-conditioned (a cancellation's rounding residual fed on), where two
    correct evaluators differ by rounding alone."""
    with np.errstate(all="ignore"):
        return _ev(t, X, weights, n, d)


def _ev(t: Term, X, W, n, d=0.0):
    if d and t.args:
        return _ev(Term(t.op, tuple(Term("x", (), f"_{i}") for i in range(len(t.args))), t.value),
                   {f"_{i}": _ev(a, X, W, n, d) for i, a in enumerate(t.args)}, W, n) * (1 + d)
    op = t.op
    if op == "num":
        return np.full(n, float(t.value))
    if op == "w":
        return np.full(n, float(W["w" + str(t.value)]))
    if op == "x":
        return np.asarray(X[str(t.value)], dtype=np.float64)
    vals = [_ev(a, X, W, n) for a in t.args]
    if op == "add":
        out = vals[0]
        for v in vals[1:]:
            out = out + v
        return out
    if op == "mul":
        out = vals[0]
        for v in vals[1:]:
            out = out * v
        return out
    if op == "exp":
        return np.exp(vals[0])
    if op == "log":
        return np.log(vals[0])
    if op == "eml":
        return np.exp(vals[0]) - np.log(vals[1])
    if op in _WIDE:
        return _WIDE[op](*vals)
    raise ValueError(f"unknown operator {op!r}")
