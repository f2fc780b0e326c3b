"""Immutable expression terms and their text form.

A term is a tree of `Term` nodes. Leaves: a number (`num`), a weight (`w`, value = its name or
"" when anonymous), a feature (`x`, value = its name). Inner nodes: `add` and `mul` (n-ary),
`exp` and `log` (unary), `eml` (binary, ``exp(u) - ln(v)``): the default operators.

The wider set (`WIDE`, switched on per run in `[grammar] operators`): `sin`, `cos`, `sqrt`,
`abs`, `sign` (unary; sign is abs' derivative) and `div` (u / v), `pow` (u ^ v, real exponent,
NumPy's `power`) (binary). Outside an operator's domain (log of <= 0, sqrt of < 0, div by 0,
pow of a negative base to a non-integer) the value is NaN or infinite, and a rule that is not
finite on a training row is invalid, as it always was for log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

NARY = ("add", "mul")
UNARY = ("exp", "log", "sin", "cos", "sqrt", "abs", "sign")
BINARY = ("eml", "div", "pow")
# the five operators of EML rules come first, in their historical order (a grammar lists its
# operators in this order, so the default grammar's text is unchanged); then the wider set
DEFAULT_OPERATORS = ("add", "mul", "exp", "log", "eml")
WIDE = ("sin", "cos", "sqrt", "abs", "sign", "div", "pow")
OPERATORS = DEFAULT_OPERATORS + WIDE
LEAVES = ("num", "w", "x")
ARITY = {**{o: 1 for o in UNARY}, **{o: 2 for o in BINARY}}
_KNOWN_OPS = frozenset(OPERATORS + LEAVES)  # the constructor's check: one hash lookup
_LEAF_OPS = frozenset(LEAVES)

# Largest rule the parser accepts (README "Limits and errors"). The recursive passes over a
# rule (simplify, canonical form, printing, infix) use at most ~4 Python frames per level, so
# 64 levels need under 300 of the default 1000; the size bound keeps the canonical form,
# gradients and program of the largest rule well under 1 s (benchmarks/fuzz_rules.py).
MAX_DEPTH = 64  # levels, a leaf being 1 (see `depth`)
MAX_SIZE = 1000  # nodes
MAX_TEXT = 50_000  # characters of rule text


@dataclass(frozen=True, slots=True)
class Term:
    op: str
    args: tuple["Term", ...] = ()
    value: float | str | None = None

    def __post_init__(self):
        if not isinstance(self.op, str) or self.op not in _KNOWN_OPS:
            raise ValueError(f"unknown term operator {self.op!r}")

    @property
    def is_leaf(self) -> bool:
        return self.op in _LEAF_OPS

    @property
    def text(self) -> str:
        return to_text(self)

    def __str__(self) -> str:
        return to_text(self)

    def __repr__(self) -> str:
        return f"Term({to_text(self)!r})"


def num(v: float) -> Term:
    v = float(v)
    if v == 0.0:
        v = 0.0  # no negative zero: one spelling per value
    return Term("num", (), v)


def weight(name: str = "") -> Term:
    return Term("w", (), name)


def feature(name: str) -> Term:
    return Term("x", (), name)


def node(op: str, *args: Term) -> Term:
    return Term(op, tuple(args))


ONE = num(1.0)
ZERO = num(0.0)
MINUS_ONE = num(-1.0)


def format_number(v: float) -> str:
    if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def to_text(t: Term) -> str:
    parts: list[str] = []
    _write(t, parts)
    return "".join(parts)


def _write(t: Term, out: list[str]) -> None:
    # recursive, one frame per level: fine within MAX_DEPTH and for gradients of such rules
    op = t.op
    if op == "num":
        out.append(format_number(t.value))
    elif op == "w":
        out.append("w" + str(t.value))
    elif op == "x":
        out.append("x." + str(t.value))
    else:
        out.append("(" + op)
        for a in t.args:
            out.append(" ")
            _write(a, out)
        out.append(")")


def walk(t: Term) -> Iterator[Term]:
    """Pre-order traversal."""
    stack = [t]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.args))


def walk_unique(t: Term) -> Iterator[Term]:
    """Pre-order traversal that visits a shared subterm object once: linear in the size of a
    term built as a DAG (gradients share subterms), where `walk` follows every path."""
    seen: set[int] = set()
    stack = [t]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        stack.extend(reversed(n.args))


def size(t: Term) -> int:
    """Number of nodes of the tree (a shared subterm counts once per occurrence)."""
    return sum(1 for _ in walk(t))


def dag_size(t: Term) -> int:
    """Number of distinct node objects: the size of a term built with shared subterms."""
    return sum(1 for _ in walk_unique(t))


def depth(t: Term) -> int:
    """Levels of the tree, a leaf being 1."""
    best = 0
    levels: dict[int, int] = {}  # id -> level already seen (a shared node need not be re-entered)
    stack = [(t, 1)]
    while stack:
        n, d = stack.pop()
        if levels.get(id(n), 0) >= d:
            continue
        levels[id(n)] = d
        best = max(best, d)
        stack.extend((a, d + 1) for a in n.args)
    return best


def weights_in(t: Term) -> tuple[str, ...]:
    """Weight names in first-occurrence pre-order."""
    seen: dict[str, None] = {}
    visited: set[int] = set()  # a repeated subterm holds no weight not seen on its first visit
    stack = [t]
    while stack:  # walk_unique's order, without a generator (this is part of every set-up)
        n = stack.pop()
        if id(n) in visited:
            continue
        visited.add(id(n))
        if n.op == "w":
            seen.setdefault("w" + str(n.value), None)
        elif n.args:
            stack.extend(reversed(n.args))
    return tuple(seen)


def features_in(t: Term) -> tuple[str, ...]:
    return tuple(sorted({str(n.value) for n in walk_unique(t) if n.op == "x"}))


def summary(t: Term) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """(size, weights_in(t), features_in(t)) in one walk of the tree."""
    count = 0
    weights: dict[str, None] = {}
    features: set[str] = set()
    stack = [t]
    while stack:
        n = stack.pop()
        count += 1
        op = n.op
        if op == "w":
            weights.setdefault("w" + str(n.value), None)
        elif op == "x":
            features.add(str(n.value))
        elif n.args:
            stack.extend(reversed(n.args))
    return count, tuple(weights), tuple(sorted(features))


def has_weight(t: Term) -> bool:
    return any(n.op == "w" for n in walk(t))


def is_pure_weight(t: Term) -> bool:
    """True when the term holds only weights and numbers, and at least one weight."""
    saw_weight = False
    for n in walk(t):  # rules are trees: the plain walk is the faster one
        if n.op == "x":
            return False
        if n.op == "w":
            saw_weight = True
    return saw_weight


def subterm_positions(t: Term) -> list[tuple[int, ...]]:
    """Paths (tuples of child indices) to every node, pre-order."""
    out: list[tuple[int, ...]] = []
    stack: list[tuple[Term, tuple[int, ...]]] = [(t, ())]
    while stack:
        n, path = stack.pop()
        out.append(path)
        stack.extend((n.args[i], path + (i,)) for i in reversed(range(len(n.args))))
    return out


def get_at(t: Term, path: tuple[int, ...]) -> Term:
    for i in path:
        t = t.args[i]
    return t


def replace_at(t: Term, path: tuple[int, ...], new: Term) -> Term:
    if not path:
        return new
    i = path[0]
    args = list(t.args)
    args[i] = replace_at(args[i], path[1:], new)
    return Term(t.op, tuple(args), t.value)
