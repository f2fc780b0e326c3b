"""Readable infix text of a term: `exp(u) - log(v)` for eml (`softplus` where v = 1 + exp z),
features by their bare names, weights by name or, given fitted values, as numbers (4
significant digits; constants exact). The wider operators print as sin(u), cos(u), sqrt(u),
abs(u), sign(u), `u / v` and `u^v` (pow binds tightest; its base and exponent are parenthesized
unless they are atoms or function calls)."""

from __future__ import annotations

from typing import Mapping

from .terms import Term, format_number

_PREC = {"add": 1, "mul": 2, "div": 2, "pow": 3}
FUNCTIONS = ("exp", "log", "sin", "cos", "sqrt", "abs", "sign")


def _num(v: float) -> str:
    return format_number(v) if float(v) == int(v) else f"{float(v):.4g}"


def to_infix(t: Term, weights: Mapping[str, float] | None = None) -> str:
    return _infix(t, weights or {}, 0)


def _infix(t: Term, w: Mapping[str, float], outer: int) -> str:
    op = t.op
    if op == "num":
        s = format_number(t.value)  # constants are exact; only fitted weights are rounded
        return f"({s})" if s.startswith("-") and outer > 1 else s
    if op == "w":
        name = "w" + str(t.value)
        if name in w:
            s = _num(w[name])
            return f"({s})" if s.startswith("-") and outer > 1 else s
        return name
    if op == "x":
        return str(t.value)
    if op in FUNCTIONS:
        return f"{op}({_infix(t.args[0], w, 0)})"
    if op == "eml":
        u, v = t.args
        # log(1 + exp z) is softplus(z): the seed's damping form, written as such
        if v.op == "add" and len(v.args) == 2 and any(a.op == "num" and a.value == 1.0 for a in v.args) \
                and any(a.op == "exp" for a in v.args):
            z = next(a for a in v.args if a.op == "exp").args[0]
            s = f"exp({_infix(u, w, 0)}) - softplus({_infix(z, w, 0)})"
        else:
            s = f"exp({_infix(u, w, 0)}) - log({_infix(v, w, 0)})"
        return f"({s})" if outer >= 1 else s
    prec = _PREC[op]
    parts = [_infix(a, w, prec) for a in t.args]
    if op in ("div", "pow"):
        s = parts[0] + (" / " if op == "div" else "^") + parts[1]
        return f"({s})" if outer >= prec else s
    if op == "add":
        s = parts[0]
        for p in parts[1:]:
            s += f" - {p[1:]}" if p.startswith("-") else f" + {p}"
    else:
        s = " * ".join(parts)
    return f"({s})" if outer >= prec else s
