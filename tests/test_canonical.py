"""The canonical form's passes: each one needed, the single-pass shortcut exact (issue 11)."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import parse
from evo_rules.reference import tree_eval
from evo_rules.simplify import _renumber, _sort_commutative, canonical, shape_text, simplify
from evo_rules.terms import NARY, Term, to_text
from strategies import FEATURES, terms


def old_sort(t: Term, named: bool) -> Term:
    """The commutative sort as written before issue 11 (sort keys rebuilt at every level)."""
    if t.is_leaf:
        return t
    args = [old_sort(a, named) for a in t.args]
    if t.op in NARY:
        args.sort(key=(lambda a: (shape_text(a), a.text)) if named else shape_text)
    return Term(t.op, tuple(args))


def multi_pass_canonical(t: Term) -> Term:
    """The canonical form as it was written before the single-pass shortcut: the shape sort,
    then the named sort repeated to a fixpoint, always."""
    return _named_fixpoint(_renumber(old_sort(simplify(t, fold_weights=True), named=False)))


def _named_fixpoint(t: Term) -> Term:
    for _ in range(8):
        s = _renumber(old_sort(t, named=True))
        if s == t:
            break
        t = s
    return t


def without_shape_sort(t: Term) -> Term:
    """The canonical form with its first (shape-only) sort removed."""
    return _named_fixpoint(_renumber(old_sort(simplify(t, fold_weights=True), named=True)))


# Two sums of one shape, w_a * exp(w_b * a) + w_c * exp(w_a * a): the weight shared across them
# makes the order of the two, and so the numbering, depend on the names when names break the tie.
SHARED = "(add (mul w{a} (exp (mul w{b} x.a))) (mul w{c} (exp (mul w{a} x.a))))"


def _namings():
    return [SHARED.format(a=p[0], b=p[1], c=p[2]) for p in itertools.permutations("xyz")]


def test_the_shape_sort_makes_the_form_independent_of_weight_names():
    texts = {parse(t).text for t in _namings()}
    assert len(texts) == 1, texts


def test_without_the_shape_sort_weight_names_change_the_form():
    """Why canonical() sorts by shape before it sorts by name: this test fails if it does not."""
    from evo_rules.parse import parse_term

    forms = {to_text(without_shape_sort(parse_term(t))) for t in _namings()}
    assert len(forms) > 1
    assert {to_text(canonical(parse_term(t))) for t in _namings()} == {parse(_namings()[0]).text}


@settings(max_examples=300)
@given(terms())
def test_single_pass_equals_the_multi_pass_form(t):
    assert canonical(t) == multi_pass_canonical(t)


@settings(max_examples=200)
@given(terms())
def test_canonical_is_idempotent(t):
    c = canonical(t)
    assert canonical(c) == c
    assert parse(to_text(c)).text == to_text(c)


@settings(max_examples=200)
@given(terms(named_weights=True), st.booleans(), st.integers(0, 1000))
def test_ordering_and_renumbering_keep_the_value(t, named, seed):
    """Sorting commutative children and renaming weights w0..wk do not change what a term
    computes (weights mapped along with their names)."""
    rng = np.random.default_rng(seed)
    X = {f: rng.uniform(0.1, 2.0, 32) for f in FEATURES}
    s = simplify(t, fold_weights=False)
    if any(n.op == "w" and n.value == "" for n in _nodes(s)):
        return  # anonymous weights have no name to map
    names = sorted({n.value for n in _nodes(s) if n.op == "w"})
    W = {"w" + n: rng.uniform(-1.5, 1.5) for n in names}
    ordered = _sort_commutative(s, named)
    renamed = _renumber(ordered)
    # the renumbering maps names by first occurrence in pre-order
    order = list(dict.fromkeys(n.value for n in _nodes_pre(ordered) if n.op == "w"))
    W2 = {f"w{i}": W["w" + n] for i, n in enumerate(order)}
    a, b, c = (tree_eval(s, X, W, 32), tree_eval(ordered, X, W, 32), tree_eval(renamed, X, W2, 32))
    ok = np.isfinite(a) & (np.abs(a) < 1e12)
    assert np.allclose(a[ok], b[ok], rtol=1e-9, atol=1e-9)
    assert np.allclose(b[ok], c[ok], rtol=1e-12, atol=1e-12)


def _nodes(t: Term):
    yield t
    for a in t.args:
        yield from _nodes(a)


def _nodes_pre(t: Term):
    return list(_nodes(t))
