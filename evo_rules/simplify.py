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
from operator import is_

from .terms import LEAVES, NARY, ONE, ZERO, Term, format_number, num, weight

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


_NO_FEATURES: frozenset = frozenset()
_LEAF_OPS = frozenset(LEAVES)


class _Simplifier:
    """One `simplify` call. Results and facts are memoised by object identity: a pass returns an
    unchanged subterm as the same object, so the next pass (the fixpoint check) redoes only what
    changed, and the facts a rewrite asks about a subterm (its features, whether it holds a
    weight) are found once, not by a walk per question. Each memo keeps its keys' objects alive,
    so an id is never reused while it is in there."""

    def __init__(self, fold_weights: bool):
        self.fold_weights = fold_weights
        self.done: dict[int, tuple[Term, Term]] = {}
        self.facts_of: dict[int, tuple[Term, tuple]] = {}

    def facts(self, t: Term) -> tuple[frozenset, bool, bool]:
        """(feature names, holds a weight, holds an anonymous weight) of t."""
        hit = self.facts_of.get(id(t))
        if hit is not None:
            return hit[1]
        op = t.op
        if op == "x":
            f = (frozenset((t.value,)), False, False)
        elif op == "w":
            f = (_NO_FEATURES, True, t.value == "")
        elif op == "num":
            f = (_NO_FEATURES, False, False)
        else:
            feats, has_w, anon = _NO_FEATURES, False, False
            for a in t.args:
                fa = self.facts(a)
                if fa[0]:
                    feats = fa[0] if not feats else feats | fa[0]
                has_w = has_w or fa[1]
                anon = anon or fa[2]
            f = (feats, has_w, anon)
        self.facts_of[id(t)] = (t, f)
        return f

    def has_feature(self, t: Term) -> bool:
        return bool(self.facts(t)[0])

    def is_pure_weight(self, t: Term) -> bool:
        """Only weights and numbers, and at least one weight (terms.is_pure_weight)."""
        feats, has_w, _ = self.facts(t)
        return has_w and not feats

    def once(self, t: Term) -> Term:
        hit = self.done.get(id(t))
        if hit is not None:
            return hit[1]
        op = t.op
        out = t if op in _LEAF_OPS else self._node(t, op)
        self.done[id(t)] = (t, out)
        return out

    def _node(self, t: Term, op: str) -> Term:
        # flatten nested add/add, mul/mul before folding numbers, so grouping cannot change rounding
        raw = _flatten(t) if op in NARY else t.args
        args = [self.once(a) for a in raw]
        if op in NARY:
            out = self.nary(op, args)
        elif all(a.op == "num" for a in args):
            v = _apply(op, [a.value for a in args])
            out = num(v) if v is not None else _rebuilt(t, args)
        elif op == "log" and args[0].op == "exp":
            out = args[0].args[0]
        elif op == "eml" and args[1] == ONE:
            out = Term("exp", (args[0],))
        else:
            out = _rebuilt(t, args)
        if self.fold_weights and out.op != "w" and self.is_pure_weight(out):
            return weight()
        if out is not t and out.op == op and _same_objects(out.args, t.args):
            return t  # nothing changed: keep the object (the next pass finds it memoised)
        return out

    def nary(self, op: str, args: list[Term]) -> Term:
        flat: list[Term] = []
        for a in args:
            flat.extend(a.args if a.op == op else (a,))
        identity = 0.0 if op == "add" else 1.0
        nums = [a.value for a in flat if a.op == "num"]
        if op == "mul" and 0.0 in nums:
            return ZERO
        if self.fold_weights:
            pure = [a for a in flat if a.op != "num" and self.is_pure_weight(a)]
        else:
            pure = []
        pure_ids = {id(a) for a in pure}  # identity, not equality: linear in the number of children
        rest = [a for a in flat if a.op != "num" and id(a) not in pure_ids]
        merged = self.merge_like_terms(rest) if op == "add" else self.merge_exponentials(rest)
        children = list(merged)
        extra = None  # the one child that numbers and pure-weight parts become, if any
        if pure:
            # numbers and pure-weight parts merge into one weight (a bare weight keeps its name)
            if len(pure) == 1 and pure[0].op == "w" and not nums:
                extra = pure[0]
            else:
                extra = weight()
        else:
            c = _fold_numbers(op, nums) if nums else identity
            if not math.isfinite(c):
                children.extend(num(v) for v in nums)
            elif c != identity:
                # a lone number keeps its object (an unchanged term stays the same object)
                lone = len(nums) == 1 and type(nums[0]) is float and nums[0] == c
                extra = next(a for a in flat if a.op == "num") if lone else num(c)
        if extra is not None:
            # where the first number or pure part stood, when nothing merged (so a term already
            # simplified comes out as the same object); else last. Its shape is the only one of
            # its kind among the children, so the canonical sort never sees the difference
            at = len(children)
            if merged is rest:
                at = next(i for i, a in enumerate(flat) if a.op == "num" or id(a) in pure_ids)
            children.insert(at, extra)
        if not children:
            return num(identity)
        if len(children) == 1:
            return children[0]
        return Term(op, tuple(children))

    def merge_like_terms(self, children: list[Term]) -> list[Term]:
        """Sum children c1*m, c2*m, ... with constant factors c and one monomial m ->
        (c1+c2+...)*m."""
        if len(children) < 2:
            return children
        # cheap necessary condition first (this runs on every sum of every new rule): like terms
        # read the same features, since their constant factors read none
        feature_sets = [self.facts(a)[0] for a in children]
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
            coef = [f for f in factors if not self.has_feature(f)]
            mono = tuple(f for f in factors if self.has_feature(f))
            if not mono or any(self.facts(f)[2] for f in mono):
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

    def merge_exponentials(self, children: list[Term]) -> list[Term]:
        """Product children exp(u), exp(v), ... -> one exp(u + v + ...)."""
        # constant factors such as exp(w) stay coefficients (see merge_like_terms)
        exps = [a for a in children if a.op == "exp" and self.has_feature(a)]
        if len(exps) < 2:
            return children
        ids = {id(e) for e in exps}
        return [a for a in children if id(a) not in ids] + [Term("exp", (Term("add", tuple(e.args[0] for e in exps)),))]


def _same_objects(a: tuple[Term, ...], b: tuple[Term, ...]) -> bool:
    return len(a) == len(b) and all(map(is_, a, b))


def _rebuilt(t: Term, args: list[Term]) -> Term:
    """t itself when its simplified children are its own, else a new node over them."""
    return t if _same_objects(tuple(args), t.args) else Term(t.op, tuple(args))


def _flatten(t: Term) -> list[Term]:
    out: list[Term] = []
    for a in t.args:
        out.extend(_flatten(a) if a.op == t.op else (a,))
    return out


def _order_free_text(t: Term) -> str:
    """Text with the children of add/mul sorted: equal for terms that differ only in order."""
    if t.is_leaf:
        return t.text
    parts = [_order_free_text(a) for a in t.args]
    if t.op in NARY:
        parts.sort()
    return "(" + t.op + "".join(" " + p for p in parts) + ")"


def simplify(t: Term, fold_weights: bool = True) -> Term:
    """Simplify to a fixpoint."""
    s = _Simplifier(fold_weights)
    for _ in range(_MAX_PASSES):
        n = s.once(t)
        if n is t or n == t:
            return n
        t = n
    return t


# ---------------------------------------------------------------- canonical ordering


def shape_text(t: Term) -> str:
    """Text with every weight printed as plain `w`: the sort key that ignores weight names."""
    if t.op == "w":
        return "w"
    if t.is_leaf:
        return t.text
    return "(" + t.op + "".join(" " + shape_text(a) for a in t.args) + ")"


def _sorted(t: Term, named: bool) -> tuple[Term, str, str, bool]:
    """(t with the children of every add/mul sorted, its shape text, its text (named only, else
    ""), whether some add/mul of t has two children of one shape). Sort keys are built bottom-up
    once: shape (weights as plain `w`), then, when `named`, the text with the weights' names.
    Subterms that are already in order are kept as the same objects."""
    op = t.op
    if op == "w":
        return t, "w", ("w" + str(t.value) if named else ""), False
    if op == "x":
        text = "x." + str(t.value)
        return t, text, text, False
    if op == "num":
        text = format_number(t.value)
        return t, text, text, False
    parts = [_sorted(a, named) for a in t.args]
    tied = any([p[3] for p in parts])
    if op in NARY:
        parts.sort(key=_by_shape_text if named else _by_shape)
        tied = tied or any([parts[i][1] == parts[i + 1][1] for i in range(len(parts) - 1)])
    shape = "(" + op + " " + " ".join([p[1] for p in parts]) + ")"
    text = "(" + op + " " + " ".join([p[2] for p in parts]) + ")" if named else ""
    return _rebuilt(t, [p[0] for p in parts]), shape, text, tied


def _by_shape(p: tuple) -> str:
    return p[1]


def _by_shape_text(p: tuple) -> tuple[str, str]:
    return p[1], p[2]


def _sort_commutative(t: Term, named: bool) -> Term:
    """Children of add/mul sorted by shape text, ties (when `named`) by text."""
    return _sorted(t, named)[0]


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
            name = mapping[n.value]
            return n if name == n.value else weight(name)
        if n.is_leaf:
            return n
        return _rebuilt(n, [rec(a) for a in n.args])

    return rec(t)


def canonical(t: Term) -> Term:
    """Simplified, commutative children sorted, weights renumbered w0..wk in pre-order.

    The first sort uses shapes only (weights as plain `w`), so the order, and the names the
    renumbering then gives, do not depend on the names the weights came in with: sorting by the
    incoming names instead gives two canonical forms to rules that differ only in weight names
    (tests/test_canonical.py shows one). Children of one shape are then ordered by their texts
    under the new names, repeated to a fixpoint. When no add/mul has two children of one shape,
    that tie-break cannot move anything, and the form is done after the first pass."""
    t = simplify(t, fold_weights=True)
    t, _, _, tied = _sorted(t, named=False)
    t = _renumber(t)
    if not tied:
        return t
    for _ in range(_MAX_PASSES):
        s = _renumber(_sorted(t, named=True)[0])
        if s is t or s == t:
            break
        t = s
    return t
