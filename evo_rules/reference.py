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


def _ev(t: Term, X, W, n):
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
