"""Algebraic simplification and the canonical form (DESIGN.md section 2).

`simplify` folds constants, removes +0 / *1 / *0, flattens add and mul, rewrites
log(exp u) -> u and eml(u, 1) -> exp(u), and (for rules, not gradients) folds every subterm
made only of weights and numbers into one fresh weight. `canonical` adds the ordering of
commutative children and the renumbering of weights w0..wk in pre-order.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .terms import NARY, ONE, ZERO, Term, is_pure_weight, num, weight

_MAX_PASSES = 8


def _fold_numbers(op: str, values: list[float]) -> float:
    """Exact sum / ordered product; inf when it overflows (the caller then leaves it unfolded)."""
    if op == "add":
        try:
            return math.fsum(values)
        except OverflowError:  # "intermediate overflow": round the exact sum instead
            exact = sum(map(Fraction, values))
            try:
                return float(exact)
            except OverflowError:
                return math.inf if exact > 0 else -math.inf
    p = 1.0
    for v in sorted(values):  # a fixed order: the product does not depend on argument order
        p *= v
    return p


def _apply(op: str, vals: list[float]) -> float | None:
    """Value of op on numbers, or None when not finite (left unfolded)."""
    try:
        if op == "exp":
            r = math.exp(vals[0])
        elif op == "log":
            r = math.log(vals[0]) if vals[0] > 0 else math.nan
        elif op == "eml":
            r = math.exp(vals[0]) - (math.log(vals[1]) if vals[1] > 0 else math.nan)
        else:
            r = _fold_numbers(op, vals)
    except OverflowError:
        return None
    return r if math.isfinite(r) else None


def _simplify_once(t: Term, fold_weights: bool) -> Term:
    if t.is_leaf:
        return t
    op = t.op
    # flatten nested add/add, mul/mul before folding numbers, so grouping cannot change rounding
    raw = _flatten(t) if op in NARY else t.args
    args = [_simplify_once(a, fold_weights) for a in raw]
    if op in NARY:
        out = _simplify_nary(op, args, fold_weights)
    elif all(a.op == "num" for a in args):
        v = _apply(op, [a.value for a in args])
        out = num(v) if v is not None else Term(op, tuple(args))
    elif op == "log" and args[0].op == "exp":
        out = args[0].args[0]
    elif op == "eml" and args[1] == ONE:
        out = Term("exp", (args[0],))
    else:
        out = Term(op, tuple(args))
    if fold_weights and out.op != "w" and is_pure_weight(out):
        return weight()
    return out


def _flatten(t: Term) -> list[Term]:
    out: list[Term] = []
    for a in t.args:
        out.extend(_flatten(a) if a.op == t.op else (a,))
    return out


def _simplify_nary(op: str, args: list[Term], fold_weights: bool) -> Term:
    flat: list[Term] = []
    for a in args:
        flat.extend(a.args if a.op == op else (a,))
    identity = 0.0 if op == "add" else 1.0
    nums = [a.value for a in flat if a.op == "num"]
    if op == "mul" and 0.0 in nums:
        return ZERO
    if fold_weights:
        pure = [a for a in flat if a.op != "num" and is_pure_weight(a)]
    else:
        pure = []
    pure_ids = {id(a) for a in pure}  # identity, not equality: linear in the number of children
    rest = [a for a in flat if a.op != "num" and id(a) not in pure_ids]
    children = list(rest)
    if pure:
        # numbers and pure-weight parts merge into one weight (a bare weight keeps its name)
        if len(pure) == 1 and pure[0].op == "w" and not nums:
            children.append(pure[0])
        else:
            children.append(weight())
    else:
        c = _fold_numbers(op, nums) if nums else identity
        if not math.isfinite(c):
            children.extend(num(v) for v in nums)
        elif c != identity:
            children.append(num(c))
    if not children:
        return num(identity)
    if len(children) == 1:
        return children[0]
    return Term(op, tuple(children))


def simplify(t: Term, fold_weights: bool = True) -> Term:
    """Simplify to a fixpoint."""
    for _ in range(_MAX_PASSES):
        s = _simplify_once(t, fold_weights)
        if s == t:
            return s
        t = s
    return t


# ---------------------------------------------------------------- canonical ordering


def _shape_text(t: Term) -> str:
    """Text with every weight printed as plain `w`: the sort key that ignores weight names."""
    if t.op == "w":
        return "w"
    if t.is_leaf:
        return t.text
    return "(" + t.op + "".join(" " + _shape_text(a) for a in t.args) + ")"


def _sort_commutative(t: Term, named: bool) -> Term:
    if t.is_leaf:
        return t
    args = [_sort_commutative(a, named) for a in t.args]
    if t.op in NARY:
        if named:
            args.sort(key=lambda a: (_shape_text(a), a.text))
        else:
            args.sort(key=_shape_text)
    return Term(t.op, tuple(args))


def _renumber(t: Term) -> Term:
    """Weights become w0..wk in pre-order; each anonymous `w` is a weight of its own."""
    mapping: dict[str, str] = {}

    def rec(n: Term) -> Term:
        if n.op == "w":
            if n.value == "":
                name = str(len(mapping))
                mapping[f"#anon{len(mapping)}"] = name
                return weight(name)
            if n.value not in mapping:
                mapping[n.value] = str(len(mapping))
            return weight(mapping[n.value])
        if n.is_leaf:
            return n
        return Term(n.op, tuple(rec(a) for a in n.args))

    return rec(t)


def canonical(t: Term) -> Term:
    t = simplify(t, fold_weights=True)
    t = _renumber(_sort_commutative(t, named=False))
    # ties in the shape order are broken by the (renumbered) names; repeat to a fixpoint
    for _ in range(_MAX_PASSES):
        s = _renumber(_sort_commutative(t, named=True))
        if s == t:
            break
        t = s
    return t
