"""Grammar sweeps over the seed's template (operators/sweep.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import parse
from evo_rules.terms import depth
from evo_rules.operators import Grammar, enumerate_rules, expand, term_vocabulary
from evo_rules.operators.sweep import count_rules
from evo_rules.operators.template import shape, split_template

SIX = ("color", "stale", "dist", "freq", "pos", "len_")


def check_sweep(s, round_trip=True):
    assert s.unique == s.enumerated - s.duplicates - s.rejected
    keys = [r.key for r in s.rules]
    assert len(set(keys)) == len(keys)
    assert list(s.rules) == sorted(s.rules, key=lambda r: (r.size, r.text))
    for r in s.rules if round_trip else s.rules[::97]:
        back = parse(r.text)
        assert back.text == r.text and back.key == r.key
        assert split_template(r.term) is not None, r.text


def test_vocabulary():
    v = term_vocabulary(SIX)
    assert len(v) == 6 + 15
    assert [t.text for t in v] == sorted(t.text for t in v)
    assert "(mul w x.color)" in [t.text for t in v]
    assert len(term_vocabulary(SIX, pairs=False)) == 6
    assert len(term_vocabulary(SIX, pairs=False, squares=True, log1p=True)) == 18
    assert term_vocabulary(list(reversed(SIX))) == v  # order of names does not matter
    assert term_vocabulary(Grammar(features=SIX)) == v


def test_six_features_smallest_sweep():
    s = enumerate_rules(SIX, max_signal=1, max_damping=1)
    check_sweep(s)
    assert s.enumerated == count_rules(21, 1, 1) == 21 * 22
    assert s.duplicates == 0 and s.rejected == 0
    assert s.rules[0].text == "(eml (mul w0 x.color) w1)"
    assert "(eml (mul w0 x.color) (add (exp (add (mul w1 x.stale) w2)) 1))" in {
        r.text for r in s.rules}
    assert s.parents == (None,) * s.unique
    assert "462 enumerated" in s.summary()


def test_sizes_for_six_features():
    assert count_rules(21, 2, 1) == 5082  # enumerating them takes ~1.5 s: not done here
    assert count_rules(21, 1, 2) == 21 * (1 + 21 + 210)
    s = enumerate_rules(SIX, 2, 1, vocabulary=term_vocabulary(SIX, pairs=False))
    check_sweep(s, round_trip=False)
    assert s.enumerated == count_rules(6, 2, 1) == 21 * 7


@settings(max_examples=15)
@given(st.lists(st.sampled_from(SIX), min_size=1, max_size=3, unique=True),
       st.integers(1, 2), st.integers(0, 1), st.booleans(), st.booleans())
def test_counts_consistent(features, S, D, pairs, bias):
    vocab = term_vocabulary(features, pairs=pairs, squares=True)
    s = enumerate_rules(features, S, D, vocabulary=vocab, damping_bias=bias)
    check_sweep(s)
    assert s.enumerated == count_rules(len(vocab), S, D)
    again = enumerate_rules(list(reversed(features)), S, D, vocabulary=vocab, damping_bias=bias)
    assert [r.key for r in again.rules] == [r.key for r in s.rules]


def test_duplicates_are_counted():
    # (mul w x.a x.a) and a hand-written equal term: every rule using one has a twin
    from evo_rules.terms import Term, feature, weight
    vocab = term_vocabulary(["a"], squares=True) + (
        Term("mul", (feature("a"), weight(), feature("a"))),)
    s = enumerate_rules(["a"], 1, 0, vocabulary=vocab)
    assert s.enumerated == 3 and s.duplicates == 1 and s.unique == 2
    check_sweep(s)


def test_grammar_limits_apply():
    g = Grammar(features=SIX[:4], max_size=12, max_depth=5)
    s = enumerate_rules(g, 2, 1)
    check_sweep(s)
    assert s.rejected > 0
    assert all(r.size <= 12 and depth(r.term) <= 5 for r in s.rules)


def test_expand_adds_one_term():
    base = enumerate_rules(SIX[:3], 1, 1)
    vocab = term_vocabulary(SIX[:3])
    e = expand(base.rules, vocab)
    check_sweep(e)
    by_key = {r.key: r for r in base.rules}
    assert set(by_key).isdisjoint(r.key for r in e.rules)
    for r, pk in zip(e.rules, e.parents):
        p = by_key[pk]
        (ps, pd), (cs, cd) = split_template(p.term), split_template(r.term)
        grew_signal = len(cs) == len(ps) + 1 and sorted(map(shape, cd)) == sorted(map(shape, pd))
        n_damp = lambda d: sum(t.op != "w" for t in d)  # noqa: E731
        grew_damping = (sorted(map(shape, cs)) == sorted(map(shape, ps))
                        and n_damp(cd) == n_damp(pd) + 1)
        assert grew_signal != grew_damping, (p.text, r.text)
    # (a) + b and (b) + a are one rule: duplicates are counted
    assert e.duplicates > 0
    # order of survivors does not matter
    e2 = expand(list(reversed(base.rules)), vocab)
    assert [r.key for r in e2.rules] == [r.key for r in e.rules] and e2.parents == e.parents


def test_expand_from_feature_names_and_limits():
    survivors = [parse("(eml (mul w x.color) (add 1 (exp (add (mul w x.stale) w))))"),
                 parse("(add (mul w x.color) x.stale)")]  # not the template: skipped
    e = expand(survivors, ["color", "stale"])
    check_sweep(e)
    # 3 vocabulary terms; signal: 2 new, damping: 2 new
    assert e.enumerated == 4 and e.unique == 4
    e_small = expand(survivors, Grammar(features=("color", "stale"), max_size=14))
    assert e_small.rejected > 0 and e_small.unique < 4
    assert expand(survivors, ["color", "stale"], damping=False).enumerated == 2


def test_bad_counts():
    with pytest.raises(ValueError, match="min_signal"):
        enumerate_rules(SIX, 1, 1, min_signal=0)
    with pytest.raises(ValueError, match="term counts"):
        enumerate_rules(SIX, 1, 1, min_damping=2)
