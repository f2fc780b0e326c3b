"""The seed's structured rule form and its parts.

    (eml signal (add 1 (exp damping)))  =  exp(signal) - softplus(damping)

signal and damping are sums of *terms* (typically `(mul w x.f)` or `(mul w x.f x.g)`); the
damping sum may hold a bias weight. With no damping terms, damping is a bare weight, which the
canonical form folds: the rule becomes `(eml signal w0)`.
"""

from __future__ import annotations

from typing import Sequence

from evo_rules.terms import ONE, Term, node, weight

from .positions import anonymize_weights


def sum_of(terms: Sequence[Term]) -> Term:
    if not terms:
        return weight()
    if len(terms) == 1:
        return terms[0]
    return Term("add", tuple(terms))


def template(signal: Sequence[Term], damping: Sequence[Term]) -> Term:
    """The raw (not yet canonical) template term. `signal` must not be empty."""
    if not signal:
        raise ValueError("the template needs at least one signal term")
    return node("eml", sum_of(signal), node("add", ONE, node("exp", sum_of(damping))))


def split_template(t: Term) -> tuple[tuple[Term, ...], tuple[Term, ...]] | None:
    """(signal terms, damping terms) of a canonical template term, weights anonymous (so the
    parts can be recombined with `template`); None when `t` does not have the template shape.
    A bias weight of the damping sum is one of the damping terms."""
    if t.op != "eml":
        return None
    s, v = t.args
    signal = s.args if s.op == "add" else (s,)
    if v.op == "w":  # (add 1 (exp w)) folded to a weight: no damping terms
        damping: tuple[Term, ...] = ()
    elif v.op == "add" and len(v.args) == 2 and ONE in v.args:
        e = v.args[0] if v.args[1] == ONE else v.args[1]
        if e.op != "exp":
            return None
        d = e.args[0]
        damping = d.args if d.op == "add" else (d,)
    else:
        return None
    return (tuple(anonymize_weights(a) for a in signal),
            tuple(anonymize_weights(a) for a in damping))


def shape(t: Term) -> str:
    """Text with weight names dropped: equal shapes are equal terms up to weight names."""
    return anonymize_weights(t).text
