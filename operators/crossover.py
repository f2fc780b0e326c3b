"""Crossover of two canonical rules: subtree crossover, and blend (their sum and their mean)."""

from __future__ import annotations

from evo_rules.rule import Rule
from evo_rules.terms import Term, num, replace_at

from .grammar import Grammar
from .positions import node_table, pick, rename_weights

ATTEMPTS = 8


def subtree_crossover(a: Rule, b: Rule, g: Grammar, rng) -> tuple[Rule, Rule]:
    """Swap a subtree of `a` with a subtree of `b` (proper subtrees, mostly inner nodes).

    The point in `b` is drawn among those whose swap keeps both children within max_size and
    max_depth (raw sizes; the canonical form never grows a term). Each child is accepted on its
    own: canonical, admitted by the grammar, and not equal to either parent. A child that no
    try produces is replaced by its parent (`a` for the first, `b` for the second).
    Grafted weights are renamed apart: a graft never shares a weight with its new tree.
    """
    na = node_table(a.term)[1:]
    nb = node_table(b.term)[1:]
    if not na or not nb:
        return a, b
    parents = (a.key, b.key)
    c1 = c2 = None
    for _ in range(ATTEMPTS):
        pa = pick(rng, na)
        fits = []
        for m in nb:
            if c1 is None and (a.size - pa.size + m.size > g.max_size
                               or pa.level + m.height > g.max_depth):
                continue
            if c2 is None and (b.size - m.size + pa.size > g.max_size
                               or m.level + pa.height > g.max_depth):
                continue
            fits.append(m)
        if not fits:
            continue
        pb = pick(rng, fits)
        if c1 is None:
            c1 = _child(replace_at(a.term, pa.path, rename_weights(pb.term, "b")), g, parents)
        if c2 is None:
            c2 = _child(replace_at(b.term, pb.path, rename_weights(pa.term, "a")), g, parents)
        if c1 is not None and c2 is not None:
            break
    return (c1 if c1 is not None else a), (c2 if c2 is not None else b)


def blend(a: Rule, b: Rule, g: Grammar, rng) -> tuple[Rule, Rule]:
    """The pair (a + b, (a + b) / 2): both parents' effects at once, and their average. For a
    black-box rule whose numbers are not fitted (a correction to an optimizer's step, say) two
    good parts found apart are one graft of a whole rule away, which subtree crossover, swapping
    proper subtrees, seldom makes. `b`'s weights are renamed apart; a child the grammar refuses
    (too large, say) or equal to a parent is replaced by that parent. `rng` is not used: the
    children are determined by the parents. Two equal parents give back themselves: their sum
    would be the rule doubled (the scale move) and their mean the rule again."""
    if "add" not in g.operators or "mul" not in g.operators or a.key == b.key:
        return a, b
    both = Term("add", (a.term, rename_weights(b.term, "b")))
    parents = (a.key, b.key)
    c1 = _child(both, g, parents)
    c2 = _child(Term("mul", (both, num(0.5))), g, parents)
    return (c1 if c1 is not None else a), (c2 if c2 is not None else b)


def _child(t, g: Grammar, parents: tuple[str, str]) -> Rule | None:
    r = Rule(t)
    if r.key in parents or not g.admits(r):
        return None
    return r


__all__ = ["ATTEMPTS", "blend", "subtree_crossover"]
