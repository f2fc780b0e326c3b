"""Symbolic differentiation with respect to one weight.

Division is written in the term language as ``v' * exp(-log v)``: the rule already needs
``log v`` (so v > 0 wherever the rule is defined), and the compiler turns the pattern into a
reciprocal. The derivative of the stable softplus ``log(1 + exp z)`` is written
``z' * exp(z - log(1 + exp z))``, the sigmoid, which the compiler evaluates stably.
"""

from __future__ import annotations

from functools import lru_cache

from .simplify import _sort_commutative, simplify
from .terms import MINUS_ONE, ONE, ZERO, Term, node, weights_in


def is_softplus_arg(v: Term) -> Term | None:
    """For v = (add 1 (exp z)) return z, else None."""
    if v.op == "add" and len(v.args) == 2:
        a, b = v.args
        if a == ONE and b.op == "exp":
            return b.args[0]
        if b == ONE and a.op == "exp":
            return a.args[0]
    return None


def _neg(t: Term) -> Term:
    return node("mul", MINUS_ONE, t)


def _d_log(v: Term, dv: Term, wname: str) -> Term:
    z = is_softplus_arg(v)
    if z is not None:
        dz = _diff(z, wname)
        return node("mul", dz, node("exp", node("add", z, _neg(node("log", v)))))
    return node("mul", dv, node("exp", _neg(node("log", v))))


@lru_cache(maxsize=65536)
def _contains(t: Term, wname: str) -> bool:
    return wname in weights_in(t)


def _diff(t: Term, wname: str) -> Term:
    op = t.op
    if op == "w":
        return ONE if "w" + str(t.value) == wname else ZERO
    if op in ("num", "x") or not _contains(t, wname):
        return ZERO
    if op == "add":
        return node("add", *(_diff(a, wname) for a in t.args))
    if op == "mul":
        terms = []
        for i, a in enumerate(t.args):
            da = _diff(a, wname)
            if da == ZERO:
                continue
            others = t.args[:i] + t.args[i + 1 :]
            terms.append(node("mul", da, *others))
        return node("add", *terms) if terms else ZERO
    if op == "exp":
        return node("mul", t, _diff(t.args[0], wname))
    if op == "log":
        return _d_log(t.args[0], _diff(t.args[0], wname), wname)
    if op == "eml":
        u, v = t.args
        du = _diff(u, wname)
        dv = _diff(v, wname)
        parts = []
        if du != ZERO:
            parts.append(node("mul", node("exp", u), du))
        if dv != ZERO:
            parts.append(_neg(_d_log(v, dv, wname)))
        return node("add", *parts) if parts else ZERO
    raise ValueError(f"cannot differentiate operator {op!r}")


def derivative(t: Term, wname: str) -> Term:
    """d t / d wname, simplified (without weight folding) and with commutative children sorted."""
    d = _diff(t, wname)
    return _sort_commutative(simplify(d, fold_weights=False), named=True)
