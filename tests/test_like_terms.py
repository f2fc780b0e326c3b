"""Like terms merge in the canonical form (issue 9): soundly, idempotently, and smaller."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import parse
from evo_rules.reference import tree_eval
from evo_rules.simplify import simplify
from evo_rules.terms import Term, feature, num, to_text, weight
from strategies import FEATURES, terms

ROWS = 48


def test_like_terms_merge_into_one():
    assert parse("(add (mul w0 x.a) (mul w1 x.a))").text == "(mul w0 x.a)"
    assert parse("(add x.color x.color)").text == "(mul 2 x.color)"
    assert parse("(add x.a (mul -1 x.a) x.b)").text == "x.b"
    assert parse("(add (mul w0 x.a x.b) (mul x.b w1 x.a) x.c)").text == "(add (mul w0 x.a x.b) x.c)"
    assert parse("(add (mul 2 x.a) (mul 3 x.a))").text == "(mul 5 x.a)"
    # a constant factor that is not a single weight still counts as a coefficient
    assert parse("(add (mul (exp w0) x.a) x.a)").text == "(mul w0 x.a)"


def test_exponentials_of_a_product_merge():
    assert parse("(mul (exp (mul w0 x.a)) (exp (mul w1 x.b)))").text == \
        "(exp (add (mul w0 x.a) (mul w1 x.b)))"
    # exp(u)^2 -> exp(2u): the 2 goes into the weight
    assert parse("(mul (exp (mul w0 x.a)) (exp (mul w0 x.a)))").text == "(exp (mul w0 x.a))"


def test_monomials_that_only_look_alike_stay_apart():
    # each anonymous `w` is a weight of its own: w*exp(w*a) + w*exp(w*a) has two exponents
    r = parse("(add (mul w (exp (mul w x.a))) (mul w (exp (mul w x.a))))")
    assert r.text.count("exp") == 2 and len(r.params) == 4
    # different weights inside: different functions
    assert parse("(add (exp (mul w1 x.a)) (exp (mul w2 x.a)))").text.count("exp") == 2
    # the same named weight inside: the same function, twice
    assert parse("(add (exp (mul w1 x.a)) (exp (mul w1 x.a)))").text == "(mul (exp (mul w0 x.a)) 2)"


def test_order_inside_a_monomial_does_not_matter():
    a = parse("(add (exp (add x.a x.b)) (exp (add x.b x.a)))")
    assert a.text == "(mul (exp (add x.a x.b)) 2)"


def _sum_of_like_terms(draw_monos, draw_coefs):
    children = []
    for m, c in zip(draw_monos, draw_coefs):
        children.append(Term("mul", (c, m)) if c is not None else m)
    return Term("add", tuple(children))


MONOMIALS = [feature("a"), Term("mul", (feature("a"), feature("b"))),
             Term("exp", (Term("mul", (weight("1"), feature("c"))),)),
             Term("log", (Term("add", (feature("b"), num(2.0))),))]
COEFS = [None, weight("1"), weight("2"), weight("3"), num(2.0), num(-1.0),
         Term("exp", (weight("2"),)), Term("mul", (weight("1"), weight("3")))]


@settings(max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(MONOMIALS), st.sampled_from(COEFS)), min_size=2, max_size=7),
       st.integers(0, 1000))
def test_merging_is_sound_and_leaves_one_term_per_monomial(pairs, seed):
    t = _sum_of_like_terms([m for m, _ in pairs], [c for _, c in pairs])
    rng = np.random.default_rng(seed)
    X = {f: rng.uniform(0.1, 2.0, ROWS) for f in FEATURES}
    W = {"w" + n: rng.uniform(-1.5, 1.5) for n in ["", "1", "2", "3"]}
    merged = simplify(t, fold_weights=False)  # keeps the weights: values must agree
    before, after = tree_eval(t, X, W, ROWS), tree_eval(merged, X, W, ROWS)
    assert np.allclose(before, after, rtol=1e-9, atol=1e-9)
    # at most one term per distinct monomial is left
    distinct = len({to_text(m) for m, _ in pairs})
    kids = merged.args if merged.op == "add" else (merged,)
    assert len(kids) <= distinct
    # canonical form (weights folded): no more parameters than the sum had weights
    assert len(parse(to_text(t)).params) <= max(1, to_text(t).count("w"))


@settings(max_examples=150)
@given(terms())
def test_canonical_form_is_idempotent(t):
    once = parse(to_text(t))
    assert parse(once.text).text == once.text
