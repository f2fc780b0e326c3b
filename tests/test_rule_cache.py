"""Rules kept by canonical text (set-up once per process), and the evaluation entry points."""

from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import ParseError, parse
from evo_rules import rule as rule_mod
from evo_rules.rule import Rule, _RuleCache
from evo_rules.terms import Term, feature, num, to_text
from strategies import FEATURES, terms


def data(seed=0, n=50):
    rng = np.random.default_rng(seed)
    return {f: rng.uniform(0.1, 2.0, n) for f in FEATURES}


@pytest.fixture
def fresh_cache(monkeypatch):
    cache = _RuleCache()
    monkeypatch.setattr(rule_mod, "_RULES", cache)
    return cache


def test_a_text_seen_again_costs_no_set_up(fresh_cache):
    a = parse("(eml (add (mul w x.a) w) (add 1 (exp (mul w x.b))))")
    prog = a.program
    b = parse(a.text)
    assert b is a and b.program is prog


def test_a_rule_built_again_from_a_term_shares_the_programs(fresh_cache):
    a = parse("(add (mul w x.a) (exp (mul w x.b)))")
    b = Rule(a.term)
    assert b is not a
    assert b.program is a.program and b.forward_program is a.forward_program
    assert b.gradients is a.gradients


@settings(max_examples=60)
@given(terms(), st.integers(0, 1000))
def test_kept_programs_give_the_numbers_of_fresh_ones(t, seed):
    rule_mod._RULES.clear()
    cached_first = parse(to_text(t))
    kept = parse(cached_first.text)  # from the cache
    rule_mod._RULES.clear()
    fresh = Rule(cached_first.term)  # built anew
    assert kept.text == fresh.text
    X = data(seed)
    w = np.random.default_rng(seed).uniform(-1, 1, len(fresh.params))
    with np.errstate(all="ignore"):
        for jac in (False, True):
            a, ok_a = kept.run(kept.feature_matrix(X), w, jac)
            b, ok_b = fresh.run(fresh.feature_matrix(X), w, jac)
            assert ok_a == ok_b
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(kept.program.code, fresh.program.code)


def test_the_forward_program_is_the_start_of_the_full_one():
    r = parse("(eml (add (mul w x.a) w) (add 1 (exp (mul w x.b x.c))))")
    f, p = r.forward_program, r.program
    n = len(f)
    for name in ("code", "arg_a", "arg_b", "consts"):
        np.testing.assert_array_equal(getattr(f, name), getattr(p, name)[:n])
    assert f.outputs[0] == p.outputs[0]


def test_the_cache_is_bounded(fresh_cache):
    small = _RuleCache(max_rules=5, max_nodes=40)
    for i in range(30):
        r = parse(f"(mul {i + 2} x.a)")
        small.add(r)
        assert len(small) <= 5 and small.nodes <= 40
    big = parse("(add " + " ".join(f"(mul w x.f{i})" for i in range(30)) + ")")
    assert big.size > 40
    small.add(big)  # bigger than the node budget alone: kept (the newest rule always stays)
    assert small.get(big.text) is big and len(small) == 1


def test_the_constant_check_still_applies_to_a_kept_text(fresh_cache):
    big = num(1e308)
    r = Rule(Term("add", (big, big, feature("a"))))  # built by an operator: unfolded sum kept
    with pytest.raises(ParseError, match="overflow"):
        parse(r.text)
    assert parse(r.text, check_constants=False) is r
    with pytest.raises(ParseError):
        parse(r.text + ")")  # a kept rule never hides a malformed text


# ------------------------------------------------------------------ evaluation entry points


def test_dict_fast_path_equals_the_checked_path():
    r = parse("(add (mul w x.a) (mul w x.b x.c))")
    X = data(3)
    F = r.feature_matrix(X)
    assert F.flags.c_contiguous and F.dtype == np.float64 and F.shape == (3, 50)
    slow = rule_mod.feature_matrix(r.features, _Mapping(X))
    np.testing.assert_array_equal(F, slow)
    ints = {k: (v * 100).astype(np.int64) for k, v in X.items()}
    np.testing.assert_array_equal(r.feature_matrix(ints), (F * 100).astype(np.int64).astype(float))
    grid = {k: v.reshape(5, 10) for k, v in X.items()}  # 2-D columns are flattened
    np.testing.assert_array_equal(r.feature_matrix(grid), F)


class _Mapping(Mapping):
    """A Mapping that is not a dict: takes the checked path."""

    def __init__(self, d):
        self.d = d

    def __getitem__(self, k):
        return self.d[k]

    def __iter__(self):
        return iter(self.d)

    def __len__(self):
        return len(self.d)


def test_dict_errors_name_the_problem():
    r = parse("(add (mul w x.a) (mul w x.b))")
    with pytest.raises(KeyError, match="'b' is not in the data"):
        r.evaluate({"a": np.ones(3)}, [1.0, 1.0])
    with pytest.raises(ValueError, match="differ in length"):
        r.evaluate({"a": np.ones(3), "b": np.ones(4)}, [1.0, 1.0])


def test_scores_on_a_prebuilt_matrix():
    r = parse("(eml (mul w x.c) (add 1 (exp (mul w x.a))))")
    X = data(4)
    names = ("c", "b", "a")
    rows = np.column_stack([X[n] for n in names])  # rows x names, another order than the rule's
    cols = r.columns(names)
    F = np.ascontiguousarray(rows[:, cols].T)
    w = [0.3, -0.7]
    np.testing.assert_array_equal(r.scores(F, w), r.evaluate(X, w))
    np.testing.assert_array_equal(r.scores(rows[:, cols].T, w), r.evaluate(rows, w, names=names))
    with pytest.raises(ValueError, match="one row per feature"):
        r.scores(rows, w)
    with pytest.raises(KeyError, match="'a' is not in the data"):
        r.columns(("b", "c"))
