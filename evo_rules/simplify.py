"""Algebraic simplification and the canonical form (DESIGN.md section 2).

`simplify` folds constants, removes +0 / *1 / *0, flattens add and mul, rewrites
log(exp u) -> u and eml(u, 1) -> exp(u), merges like terms of a sum (c1*m + c2*m -> (c1+c2)*m
for constant c1, c2 and the same monomial m, so `w0*f + w1*f -> w*f` and `f + f -> 2*f`) and
exponentials of a product (exp(u) * exp(v) -> exp(u + v)), and (for rules, not gradients) folds
every subterm made only of weights and numbers into one fresh weight. `canonical` adds the
ordering of commutative children and the renumbering of weights w0..wk in pre-order.

Every rewrite is exact for the weights it is given (tests: values agree before and after on
random data, with pure-weight folding off); folding then maps a constant subterm to one weight
that can take its value. A monomial holding an anonymous weight `w` never merges: each anonymous
weight is a parameter of its own, so two equal-looking monomials are different functions.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .terms import NARY, ONE, ZERO, Term, is_pure_weight, num, walk, weight

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


# the wider operator set (terms.WIDE) on numbers; math raises outside the domain (sqrt(-1),
# 1/0, pow(-8, 1/3)) where NumPy gives NaN/inf: either way the node stays unfolded
_WIDE_FOLD = {"sin": math.sin, "cos": math.cos, "sqrt": math.sqrt, "abs": abs,
              "sign": lambda v: float((v > 0) - (v < 0)), "div": lambda u, v: u / v, "pow": math.pow}


def _apply(op: str, vals: list[float]) -> float | None:
    """Value of op on numbers, or None when not finite (left unfolded)."""
    try:
        if op == "exp":
            r = math.exp(vals[0])
        elif op == "log":
            r = math.log(vals[0]) if vals[0] > 0 else math.nan
        elif op == "eml":
            r = math.exp(vals[0]) - (math.log(vals[1]) if vals[1] > 0 else math.nan)
        elif op in _WIDE_FOLD:
            r = _WIDE_FOLD[op](*vals)
        else:
            r = _fold_numbers(op, vals)
    except (OverflowError, ValueError, ZeroDivisionError):  # outside the domain: left unfolded
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
    rest = _merge_like_terms(rest) if op == "add" else _merge_exponentials(rest)
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


def _has_feature(t: Term) -> bool:
    return any(n.op == "x" for n in walk(t))


def _has_anonymous_weight(t: Term) -> bool:
    return any(n.op == "w" and n.value == "" for n in walk(t))


def _order_free_text(t: Term) -> str:
    """Text with the children of add/mul sorted: equal for terms that differ only in order."""
    if t.is_leaf:
        return t.text
    parts = [_order_free_text(a) for a in t.args]
    if t.op in NARY:
        parts.sort()
    return "(" + t.op + "".join(" " + p for p in parts) + ")"


def _merge_like_terms(children: list[Term]) -> list[Term]:
    """Sum children c1*m, c2*m, ... with constant factors c and one monomial m -> (c1+c2+...)*m."""
    if len(children) < 2:
        return children
    # cheap necessary condition first (this runs on every sum of every new rule): like terms
    # read the same features, since their constant factors read none
    feature_sets = [frozenset(n.value for n in walk(a) if n.op == "x") for a in children]
    if len(set(feature_sets)) == len(feature_sets):
        return children
    shared = {fs for fs in feature_sets if feature_sets.count(fs) > 1}
    groups: dict[str, list[tuple[Term, list[Term], tuple[Term, ...]]]] = {}
    slots: list[str | Term] = []  # in first-seen order: a group's key, or a child left alone
    for a, fs in zip(children, feature_sets):
        if fs not in shared:
            slots.append(a)
            continue
        factors = a.args if a.op == "mul" else (a,)
        coef = [f for f in factors if not _has_feature(f)]
        mono = tuple(f for f in factors if _has_feature(f))
        if not mono or any(_has_anonymous_weight(f) for f in mono):
            slots.append(a)
            continue
        key = " ".join(sorted(_order_free_text(f) for f in mono))
        if key not in groups:
            groups[key] = []
            slots.append(key)
        groups[key].append((a, coef, mono))
    if all(len(g) == 1 for g in groups.values()):
        return children  # nothing to merge (the common case): keep the terms as they are
    out: list[Term] = []
    for s in slots:
        members = groups[s] if isinstance(s, str) else None
        if members is None:
            out.append(s)
        elif len(members) == 1:
            out.append(members[0][0])
        else:
            total = Term("add", tuple(ONE if not c else c[0] if len(c) == 1 else Term("mul", tuple(c))
                                      for _, c, _ in members))
            out.append(Term("mul", (total, *members[0][2])))
    return out


def _merge_exponentials(children: list[Term]) -> list[Term]:
    """Product children exp(u), exp(v), ... -> one exp(u + v + ...)."""
    # constant factors such as exp(w) stay coefficients (see _merge_like_terms)
    exps = [a for a in children if a.op == "exp" and _has_feature(a)]
    if len(exps) < 2:
        return children
    ids = {id(e) for e in exps}
    return [a for a in children if id(a) not in ids] + [Term("exp", (Term("add", tuple(e.args[0] for e in exps)),))]


def simplify(t: Term, fold_weights: bool = True) -> Term:
    """Simplify to a fixpoint."""
    for _ in range(_MAX_PASSES):
        s = _simplify_once(t, fold_weights)
        if s == t:
            return s
        t = s
    return t


# ---------------------------------------------------------------- canonical ordering


def shape_text(t: Term) -> str:
    """Text with every weight printed as plain `w`: the sort key that ignores weight names."""
    if t.op == "w":
        return "w"
    if t.is_leaf:
        return t.text
    return "(" + t.op + "".join(" " + shape_text(a) for a in t.args) + ")"


def _sort_commutative(t: Term, named: bool) -> Term:
    if t.is_leaf:
        return t
    args = [_sort_commutative(a, named) for a in t.args]
    if t.op in NARY:
        if named:
            args.sort(key=lambda a: (shape_text(a), a.text))
        else:
            args.sort(key=shape_text)
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
