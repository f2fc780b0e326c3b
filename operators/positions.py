"""Node tables of a term, choosing variation points, and weight renaming for grafts."""

from __future__ import annotations

from typing import NamedTuple, Sequence

from evo_rules.terms import Term

# Koza's 90/10: most variation points are inner nodes, where a change matters
INTERNAL_SHARE = 0.9


class Node(NamedTuple):
    path: tuple[int, ...]
    term: Term
    size: int  # nodes in this subtree
    height: int  # depth of this subtree (a leaf: 1)
    level: int  # len(path): the root is 0
    parent: Term | None
    has_feature: bool


def node_table(t: Term) -> list[Node]:
    """Every node of `t` in pre-order (index 0 is the root), with sizes and heights."""
    out: list[Node | None] = []

    def rec(n: Term, path: tuple[int, ...], parent: Term | None) -> tuple[int, int, bool]:
        i = len(out)
        out.append(None)
        if n.args:
            s, h, f = 1, 0, False
            for k, a in enumerate(n.args):
                cs, ch, cf = rec(a, path + (k,), n)
                s += cs
                if ch > h:
                    h = ch
                f = f or cf
            h += 1
        else:
            s, h, f = 1, 1, n.op == "x"
        out[i] = Node(path, n, s, h, len(path), parent, f)
        return s, h, f

    rec(t, (), None)
    return out  # type: ignore[return-value]


def pick(rng, nodes: Sequence[Node], internal_share: float = INTERNAL_SHARE) -> Node:
    """One node: an inner node with probability `internal_share` when there are both kinds."""
    inner = [n for n in nodes if n.size > 1]
    if inner and len(inner) < len(nodes):
        if rng.random() < internal_share:
            return inner[int(rng.integers(len(inner)))]
        leaves = [n for n in nodes if n.size == 1]
        return leaves[int(rng.integers(len(leaves)))]
    return nodes[int(rng.integers(len(nodes)))]


def choose(rng, items: Sequence):
    return items[int(rng.integers(len(items)))]


def rename_weights(t: Term, prefix: str) -> Term:
    """Prefix every weight name, so a graft shares no weight with the tree it joins
    (weights tied inside the graft stay tied)."""
    if t.op == "w":
        return t if t.value == "" else Term("w", (), prefix + str(t.value))
    if not t.args:
        return t
    return Term(t.op, tuple(rename_weights(a, prefix) for a in t.args))


def anonymize_weights(t: Term) -> Term:
    """Every weight becomes an anonymous weight of its own."""
    if t.op == "w":
        return Term("w", (), "")
    if not t.args:
        return t
    return Term(t.op, tuple(anonymize_weights(a) for a in t.args))
