"""Symbolic gradients, built once for all weights by reverse accumulation over shared subterms.

Every node of the rule gets one adjoint term (d rule / d node), the sum of what its parents
pass down; a weight's gradient is its adjoint. Terms are hash-consed (one object per distinct
subterm) and every adjoint is built from its parent's adjoint object, so the gradients form a
DAG whose number of distinct nodes grows linearly with the rule, whatever the number of
weights (written out as trees they can be much larger: walk them with `walk_unique`).

Division is written in the term language as ``v' * exp(-log v)``: the rule already needs
``log v`` (so v > 0 wherever the rule is defined), and the compiler turns the pattern into a
reciprocal. The derivative of the stable softplus ``log(1 + exp z)`` is written
``z' * exp(z - log(1 + exp z))``, the sigmoid, which the compiler evaluates stably.

The wider operators (terms.WIDE) differentiate with `div` and `pow` of the term language:
sin' = cos, cos' = -sin, sqrt(u)' = 0.5 / sqrt(u), abs' = sign, sign' = 0 (weights under a sign
alone get a zero gradient), (u / v)' = u' / v - v' (u / v) / v, and (u ^ v)' = u' v u^(v-1) +
v' u^v log u (the second part only when v holds a weight).
"""

from __future__ import annotations

import math
from operator import is_

from .terms import MINUS_ONE, ONE, ZERO, Term, num, weights_in


def is_softplus_arg(v: Term) -> Term | None:
    """For v = (add 1 (exp z)) return z, else None."""
    if v.op == "add" and len(v.args) == 2:
        a, b = v.args
        if a == ONE and b.op == "exp":
            return b.args[0]
        if b == ONE and a.op == "exp":
            return a.args[0]
    return None


class _Builder:
    """Hash-consing constructors with the local simplifications a gradient needs."""

    def __init__(self):
        self.table: dict[tuple, Term] = {}

    def make(self, op: str, args: tuple[Term, ...] = (), value=None) -> Term:
        key = (op, value, tuple(map(id, args)))  # children are already unique objects
        t = self.table.get(key)
        if t is None:
            t = self.table[key] = Term(op, args, value)
        return t

    def intern(self, t: Term) -> tuple[Term, list[Term], dict[int, bool]]:
        """(the unique object of t, its unique nodes with every node after all of its parents
        (reverse post-order, children left to right), whether each holds a weight, by id).
        Recursive: t is a rule, which the canonical form (recursive too) has already walked."""
        table = self.table
        done: dict[int, Term] = {}  # id of a node of t -> its unique object
        post: list[Term] = []
        has_w: dict[int, bool] = {}

        def rec(n: Term) -> Term:
            u = done.get(id(n))
            if u is not None:
                return u
            nargs = n.args
            args = tuple([rec(a) for a in nargs]) if nargs else nargs
            key = (n.op, n.value, tuple(map(id, args)))
            u = table.get(key)
            if u is None:
                # n itself is the unique object when its children are: no copy of the rule
                same = all(map(is_, args, nargs))
                u = table[key] = n if same else Term(n.op, args, n.value)
            if id(u) not in has_w:  # first time this subterm is met
                post.append(u)
                has_w[id(u)] = n.op == "w" or any(has_w[id(a)] for a in args)
            done[id(n)] = u
            return u

        root = rec(t)
        post.reverse()
        return root, post, has_w

    def mul(self, *factors: Term) -> Term:
        c = 1.0
        rest = []
        for f in factors:
            if f.op == "num":
                c *= f.value
            else:
                rest.append(f)
        if c == 0.0:
            return ZERO_U
        if not math.isfinite(c):  # left as it is: evaluates non-finite, the rule is invalid
            return self.make("mul", factors)
        if c == -1.0 and len(rest) == 1 and _is_neg(rest[0]):
            return rest[0].args[1]  # -(-a) = a
        if c != 1.0:
            rest.insert(0, self.make("num", (), num(c).value))
        if not rest:
            return ONE_U
        return rest[0] if len(rest) == 1 else self.make("mul", tuple(rest))

    def add(self, terms: list[Term]) -> Term:
        terms = [t for t in terms if t is not ZERO_U]
        if not terms:
            return ZERO_U
        return terms[0] if len(terms) == 1 else self.make("add", tuple(terms))

    def neg(self, t: Term) -> Term:
        return self.mul(MINUS_ONE_U, t)

    def recip(self, v: Term) -> Term:
        """1 / v as exp(-log v) (compiled to a reciprocal)."""
        return self.make("exp", (self.neg(self.make("log", (v,))),))

    def sigmoid(self, z: Term, v: Term) -> Term:
        """d softplus(z) / dz for v = 1 + exp z, as exp(z - log v) (compiled stably)."""
        return self.make("exp", (self.make("add", (z, self.neg(self.make("log", (v,))))),))


# the shared constants, as the unique objects every builder starts from
ZERO_U, ONE_U, MINUS_ONE_U = ZERO, ONE, MINUS_ONE


def _new_builder() -> _Builder:
    b = _Builder()
    for c in (ZERO_U, ONE_U, MINUS_ONE_U):
        b.table[(c.op, c.value, ())] = c
    return b


def _is_neg(t: Term) -> bool:
    return t.op == "mul" and len(t.args) == 2 and t.args[0] is MINUS_ONE_U


def gradients(t: Term) -> dict[str, Term]:
    """d t / d w for every weight w of t, in `weights_in` order, as terms sharing subterms."""
    b = _new_builder()
    root, order, has_w = b.intern(t)
    parts: dict[int, list[Term]] = {id(root): [ONE_U]}
    adjoint: dict[int, Term] = {}

    def give(child: Term, term: Term) -> None:
        if has_w[id(child)] and term is not ZERO_U:
            parts.setdefault(id(child), []).append(term)

    for n in order:  # parents before children: each adjoint is complete when it is read
        if not has_w[id(n)]:
            continue
        a = adjoint[id(n)] = b.add(parts.pop(id(n), []))
        if a is ZERO_U or not n.args:
            continue
        op = n.op
        if op == "add":
            for c in n.args:
                give(c, a)
        elif op == "mul":
            for i, others in _others(b, n.args, [has_w[id(c)] for c in n.args]):
                give(n.args[i], b.mul(a, *others))
        elif op == "exp":
            give(n.args[0], b.mul(a, n))
        elif op == "log":
            _give_log(b, give, n.args[0], a)
        elif op == "eml":
            u, v = n.args
            if has_w[id(u)]:
                give(u, b.mul(a, b.make("exp", (u,))))
            if has_w[id(v)]:
                _give_log(b, give, v, b.neg(a))
        elif op in _WIDE:
            _WIDE[op](b, give, n, a, [has_w[id(c)] for c in n.args])
        else:
            raise ValueError(f"cannot differentiate operator {op!r}")
    return {w: adjoint.get(id(b.make("w", (), w[1:])), ZERO_U) for w in weights_in(root)}


def _others(b: _Builder, args: tuple[Term, ...], wanted: list[bool]):
    """(i, factors whose product is that of every arg but args[i]) for each wanted i. Up to 3
    factors directly; beyond, one shared prefix product times one shared suffix product, so a
    long product costs O(k) nodes for all k partial derivatives, not O(k^2)."""
    k = len(args)
    if k <= 3:
        for i in range(k):
            if wanted[i]:
                yield i, args[:i] + args[i + 1:]
        return
    prefix = [ONE_U]  # prefix[i] = args[0] * ... * args[i-1]
    for x in args[:-1]:
        prefix.append(b.mul(prefix[-1], x))
    suffix = [ONE_U]  # suffix[j] = args[k-j] * ... * args[k-1]
    for x in reversed(args[1:]):
        suffix.append(b.mul(x, suffix[-1]))
    for i in range(k):
        if wanted[i]:
            yield i, (prefix[i], suffix[k - 1 - i])


def _give_log(b: _Builder, give, v: Term, a: Term) -> None:
    """Adjoint a of log(v) passed down: to z through the sigmoid when v = 1 + exp z."""
    z = is_softplus_arg(v)
    if z is not None:
        give(z, b.mul(a, b.sigmoid(z, v)))
    else:
        give(v, b.mul(a, b.recip(v)))


# ---------------------------------------------------------------- the wider operator set
# each: (builder, give, node n, adjoint a of n, which children hold a weight) -> None


def _d_sin(b, give, n, a, _):
    give(n.args[0], b.mul(a, b.make("cos", n.args)))


def _d_cos(b, give, n, a, _):
    give(n.args[0], b.mul(MINUS_ONE_U, a, b.make("sin", n.args)))


def _d_sqrt(b, give, n, a, _):
    give(n.args[0], b.mul(b.make("num", (), 0.5), a, b.make("div", (ONE_U, n))))


def _d_abs(b, give, n, a, _):
    give(n.args[0], b.mul(a, b.make("sign", n.args)))


def _d_sign(b, give, n, a, _):
    pass  # piecewise constant: nothing flows to the argument


def _d_div(b, give, n, a, wanted):
    u, v = n.args
    if wanted[0]:
        give(u, b.make("div", (a, v)))
    if wanted[1]:
        give(v, b.mul(MINUS_ONE_U, a, b.make("div", (n, v))))


def _d_pow(b, give, n, a, wanted):
    u, v = n.args
    if wanted[0]:
        if v.op == "num":
            lower = b.make("num", (), num(v.value - 1.0).value)
        else:
            lower = b.add([v, MINUS_ONE_U])
        give(u, b.mul(a, v, b.make("pow", (u, lower))))
    if wanted[1]:
        give(v, b.mul(a, n, b.make("log", (u,))))


_WIDE = {"sin": _d_sin, "cos": _d_cos, "sqrt": _d_sqrt, "abs": _d_abs, "sign": _d_sign,
         "div": _d_div, "pow": _d_pow}


def derivative(t: Term, wname: str) -> Term:
    """d t / d wname (ZERO when t does not hold that weight)."""
    return gradients(t).get(wname, ZERO)
