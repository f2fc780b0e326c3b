"""Mutations of one canonical rule: subtree, point, hoist, shrink, insert, scale.

Every mutation is a pure function of (rule, grammar, rng): the same generator state gives the
same child. A child is canonical, admitted by the grammar (`Grammar.admits`) and differs from
its parent (same key = a wasted evaluation, so it counts as a failed try). After `ATTEMPTS`
failed tries the parent itself is returned.
"""

from __future__ import annotations

from evo_rules.rule import Rule
from evo_rules.terms import BINARY, NARY, UNARY, Term, feature, num, replace_at, weight

from .generate import feature_term, pick_feature, random_feature, random_subtree
from .grammar import Grammar
from .positions import Node, choose, node_table, pick

ATTEMPTS = 8
# point mutation: an operator swap (else a leaf swap) with this probability
P_POINT_OPERATOR = 0.5
# shrink: replacement of the chosen subtree
P_SHRINK_DELETE = 0.35  # drop it from its add/mul parent (when that leaves an argument)
P_SHRINK_WEIGHT = 0.6  # else: a weight; else a feature or constant leaf
SCALE_FACTORS = (0.5, 2.0)


def child_of(parent: Rule, g: Grammar, t: Term) -> Rule | None:
    """The canonical child of raw term `t`, or None when the grammar rejects it or it is the
    parent again."""
    r = Rule(t)
    if r.key == parent.key or not g.admits(r):
        return None
    return r


# ------------------------------------------------------------------ subtree


def subtree_mutation(rule: Rule, g: Grammar, rng) -> Rule:
    """Replace a subtree (mostly an inner one, never the root unless it is all there is) by a
    random subtree that fits the room left under max_size and max_depth."""
    nodes = node_table(rule.term)
    cands = nodes[1:] or nodes
    for _ in range(ATTEMPTS):
        n = pick(rng, cands)
        room_size = g.max_size - (rule.size - n.size)
        room_depth = g.max_depth - n.level
        if room_size < 1 or room_depth < 1:
            continue
        child = child_of(rule, g, replace_at(rule.term, n.path,
                                             random_subtree(g, rng, room_depth, room_size)))
        if child is not None:
            return child
    return rule


# ------------------------------------------------------------------ point


def _swaps(n: Node, g: Grammar) -> tuple[str, ...]:
    """Operators that can take the place of inner node `n` (same number of arguments). With
    the default operators: add/mul, exp/log, and eml with a two-argument add/mul, in the order
    earlier versions offered them (the same draws: existing runs reproduce)."""
    op, k = n.term.op, len(n.term.args)
    binary = tuple(o for o in BINARY if o != op and o in g.operators)
    if op in NARY:
        same = tuple(o for o in NARY if o != op and o in g.operators)
        return same + (binary if k == 2 else ())
    if op in BINARY:
        return tuple(o for o in NARY if o in g.operators) + binary
    return tuple(o for o in UNARY if o != op and o in g.operators)


def _other_leaf(leaf: Term, g: Grammar, rng) -> Term:
    """A leaf of another kind or value than `leaf`."""
    kinds = []
    if leaf.op != "x" or len(g.features) > 1:
        kinds.append("x")
    if leaf.op != "w":
        kinds.append("w")
    if g.constants and (leaf.op != "num" or len(g.constants) > 1):
        kinds.append("num")
    kind = choose(rng, kinds)
    if kind == "w":
        return weight()
    if kind == "x":
        if leaf.op == "x":
            return Term("x", (), pick_feature(g, rng, exclude=leaf.value))
        return random_feature(g, rng)
    others = [c for c in g.constants if not (leaf.op == "num" and c == leaf.value)]
    return num(choose(rng, others))


def point_mutation(rule: Rule, g: Grammar, rng) -> Rule:
    """Swap one operator for another of the same arity (add/mul; the unary operators among
    themselves; eml, div, pow and a two-argument add/mul), or one leaf for another (feature,
    weight or grammar constant). A new non-commutative binary operator gets its arguments in
    either order."""
    nodes = node_table(rule.term)
    inner = [(n, s) for n in nodes if n.size > 1 for s in (_swaps(n, g),) if s]
    leaves = [n for n in nodes if n.size == 1]
    for _ in range(ATTEMPTS):
        if inner and (not leaves or rng.random() < P_POINT_OPERATOR):
            n, ops = choose(rng, inner)
            args = n.term.args
            op = choose(rng, ops)
            if op in BINARY and rng.random() < 0.5:
                args = args[::-1]
            new = Term(op, args)
        elif leaves:
            n = choose(rng, leaves)
            new = _other_leaf(n.term, g, rng)
        else:
            break
        child = child_of(rule, g, replace_at(rule.term, n.path, new))
        if child is not None:
            return child
    return rule


# ------------------------------------------------------------------ hoist


def hoist(rule: Rule, g: Grammar, rng) -> Rule:
    """Replace the rule by one of its proper subtrees that still holds a feature."""
    cands = [n for n in node_table(rule.term)[1:] if n.has_feature]
    if not cands:
        return rule
    for _ in range(ATTEMPTS):
        child = child_of(rule, g, pick(rng, cands).term)
        if child is not None:
            return child
    return rule


# ------------------------------------------------------------------ shrink


def shrink(rule: Rule, g: Grammar, rng) -> Rule:
    """Replace a proper subtree by a weight or a leaf, or drop an argument of an add/mul:
    the child is smaller than its parent."""
    nodes = node_table(rule.term)
    cands = [n for n in nodes[1:] if n.size > 1 or _deletable(n)]
    if not cands:
        return rule
    for _ in range(ATTEMPTS):
        n = pick(rng, cands)
        if _deletable(n) and (n.size == 1 or rng.random() < P_SHRINK_DELETE):
            new = num(0.0 if n.parent.op == "add" else 1.0)  # the identity: folded away
        elif rng.random() < P_SHRINK_WEIGHT:
            new = weight()
        elif g.constants and rng.random() < 0.3:
            new = num(choose(rng, g.constants))
        else:
            new = random_feature(g, rng)
        child = child_of(rule, g, replace_at(rule.term, n.path, new))
        if child is not None and child.size < rule.size:
            return child
    return rule


# ------------------------------------------------------------------ insert


def insert(rule: Rule, g: Grammar, rng) -> Rule:
    """Add one feature term, `(mul w x.f)` or `(mul w x.f x.g)`, as a new argument of an `add`
    (a new `add` around the root when the rule has none): the step from a weighted sum to a
    weighted sum with one more piece of evidence, which subtree mutation rarely takes."""
    if "mul" not in g.operators:
        return rule
    nodes = node_table(rule.term)
    sums = [n for n in nodes if n.term.op == "add"]
    for _ in range(ATTEMPTS):
        new = feature_term(g, rng)
        if sums:
            n = choose(rng, sums)
            t = replace_at(rule.term, n.path, Term("add", n.term.args + (new,)))
        elif "add" in g.operators:
            t = Term("add", (rule.term, new))
        else:
            return rule
        child = child_of(rule, g, t)
        if child is not None:
            return child
    return rule


# ------------------------------------------------------------------ scale


def scale(rule: Rule, g: Grammar, rng) -> Rule:
    """The whole rule halved or doubled: the step-size move of an evolution strategy. For a
    black-box task, whose numbers are not fitted, the size of a rule (a correction to an
    optimizer's step, say) matters as much as its form; repeated, the move reaches sizes the
    grammar's constants do not hold (0.5 x 0.5 x -0.1 w = -0.025 w). A task that fits weights
    gains nothing from it (a fitted weight absorbs the factor): it is off unless configured."""
    if "mul" not in g.operators:
        return rule
    for _ in range(ATTEMPTS):
        child = child_of(rule, g, Term("mul", (rule.term, num(choose(rng, SCALE_FACTORS)))))
        if child is not None:
            return child
    return rule


# the feature `fade` reads as training's progress, from 0 at the start to 1 at the end
PROGRESS = "t"


def fade(rule: Rule, g: Grammar, rng) -> Rule:
    """The whole rule times (1 - t) (its effect fades out as training ends) or times t (fades
    in), t being the grammar's progress feature `t` (the optimizer track's step fraction). A
    change to an optimizer's step that helps early and hurts late (a larger step, say) is one
    such factor away from one that keeps the early gain, and subtree variation seldom builds the
    factor (it needs two constants and a sum in the right place). Returns the rule unchanged when
    the grammar has no `t`, or lacks `add` or `mul`; off unless configured."""
    if PROGRESS not in g.feature_set or "mul" not in g.operators or "add" not in g.operators:
        return rule
    t = feature(PROGRESS)
    factors = (Term("add", (num(1.0), Term("mul", (num(-1.0), t)))), t)
    for _ in range(ATTEMPTS):
        child = child_of(rule, g, Term("mul", (rule.term, choose(rng, factors))))
        if child is not None:
            return child
    return rule


def _deletable(n: Node) -> bool:
    return n.parent is not None and n.parent.op in NARY and len(n.parent.args) > 1


__all__ = ["ATTEMPTS", "PROGRESS", "child_of", "fade", "hoist", "insert", "point_mutation", "scale", "shrink",
           "subtree_mutation"]
