"""Ranking: the array task's query splits and metric, and the EvoRulesRanker estimator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from evo_rules.evaluate import evaluate_rule
from evo_rules.fitted import FittedRule
from evo_rules.sklearn import EvoRulesRanker
from evo_rules.fitness.arrays import ArrayTask, reciprocal_ranks

FEATURES = ("a", "b", "c")


def _queries(n_queries: int, seed: int, per_query: int = 8):
    """Queries of `per_query` candidates; the relevant one maximises a*b. A linear scorer cannot
    rank them: with a, b symmetric about 0, a*b is uncorrelated with a, b and c."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_queries * per_query, 3))
    ids = np.repeat(np.arange(n_queries), per_query)
    y = np.zeros(len(ids))
    best = np.argmax((X[:, 0] * X[:, 1]).reshape(n_queries, per_query), axis=1)
    y[np.arange(n_queries) * per_query + best] = 1.0
    return X, y, ids


def _mrr_by_hand(scores, y, ids) -> float:
    """The metric's definition, one query at a time: 1 / (1 + the less relevant rows scored at
    or above the best-scored most relevant row), averaged over queries with a relevant row."""
    out = []
    for q in np.unique(ids):
        s, r = scores[ids == q], y[ids == q]
        if r.max() <= 0:
            continue
        top = r == r.max()
        out.append(1.0 / (1 + np.sum(~top & (s >= s[top].max()))))
    return float(np.mean(out))


@given(st.data())
def test_reciprocal_ranks_match_the_definition(data):
    n = data.draw(st.integers(1, 30))
    groups = np.sort(data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 5))))
    y = data.draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.0, 1.0, 2.0])))
    s = data.draw(hnp.arrays(np.float64, n, elements=st.integers(-2, 2).map(float)))  # many ties
    rr = reciprocal_ranks(s, y, groups)
    if not np.any(y > 0):
        assert rr.size == 0
    else:
        assert rr.mean() == pytest.approx(_mrr_by_hand(s, y, groups))
        assert np.all((rr > 0) & (rr <= 1))


@given(seed=st.integers(0, 2**32), valid_fraction=st.floats(0.1, 0.9), n_queries=st.integers(2, 12))
def test_whole_queries_go_to_one_split_and_adjacency_does_not_matter(seed, valid_fraction, n_queries):
    X, y, ids = _queries(n_queries, seed=1, per_query=3)
    task = ArrayTask(X, y, FEATURES, "listwise", seed, valid_fraction, groups=ids)
    train, valid = task.batch("train"), task.batch("valid")
    assert train.n_rows + valid.n_rows == len(y)
    n_valid = len(np.unique(valid.groups))
    assert n_valid == min(max(1, round(valid_fraction * n_queries)), n_queries - 1)
    for b in (train, valid):  # ids 0..g-1, each query whole and contiguous
        assert np.array_equal(b.groups, np.repeat(np.arange(b.n_rows // 3), 3))
        assert np.all(b.y.reshape(-1, 3).sum(axis=1) == 1)
    # the same queries with their rows interleaved (round robin) and string ids split alike
    inter = np.argsort(np.tile(np.arange(3), n_queries), kind="stable")
    names = np.array([f"q{i:03d}" for i in ids])
    other = ArrayTask(X[inter], y[inter], FEATURES, "listwise", seed, valid_fraction, groups=names[inter])
    for part in ("train", "valid"):
        a, b = task.batch(part), other.batch(part)
        assert np.array_equal(a.groups, b.groups) and np.array_equal(a.y, b.y)
        assert all(np.array_equal(a.X[f], b.X[f]) for f in FEATURES)


def test_ranker_finds_the_product_a_linear_scorer_cannot():
    X, y, ids = _queries(120, seed=0)
    Xt, yt, idt = _queries(150, seed=1)  # fresh queries
    est = EvoRulesRanker(population=32, generations=6, random_state=0).fit(X, y, group=ids)
    assert {"x0", "x1"} <= set(est.rule_.features)
    assert np.array_equal(est.predict(Xt), est.best_.predict(Xt, columns=("x0", "x1", "x2")))
    mrr = est.score(Xt, yt, group=idt)
    assert mrr == pytest.approx(_mrr_by_hand(est.predict(Xt), yt, idt))
    assert mrr > 0.9
    # the best linear scorer: the linear rule fitted with the same listwise loss on the same rows
    task = ArrayTask(X, y, ("x0", "x1", "x2"), "listwise", 0, 0.25, groups=ids)
    lin = evaluate_rule(task.linear_rule_text(), task, {"max_iter": 50})
    linear = FittedRule.from_text(lin["text"], lin["weights"])
    lin_mrr = _mrr_by_hand(linear.predict(Xt, columns=("x0", "x1", "x2")), yt, idt)
    assert lin_mrr < 0.6 and mrr > lin_mrr + 0.3  # measured: 1.0 against 0.49
    assert est.hall_of_fame_[0].metrics["mrr"] >= max(h.metrics["mrr"] for h in est.hall_of_fame_)


def test_ranker_params_and_budget():
    est = EvoRulesRanker(population=16, generations=50, max_seconds=1e-6, random_state=3)
    assert est.get_params()["max_seconds"] == 1e-6 and est.set_params(max_size=9).max_size == 9
    X, y, ids = _queries(20, seed=2)
    assert est.fit(X, y, group=ids).n_iter_ == 1


@pytest.mark.parametrize("group, y_change, fragment", [
    (None, None, "needs group="),
    (np.arange(5), None, "group has 5 entries for 80 rows"),
    (np.zeros(80), None, "at least 2 queries"),
    ("ids", -1.0, "relevance labels y must be finite and >= 0"),
    ("ids", 0.0, "has a relevant row"),
])
def test_ranker_input_errors(group, y_change, fragment):
    X, y, ids = _queries(10, seed=4)
    if y_change is not None:
        y = np.full_like(y, y_change)
    with pytest.raises(ValueError, match=fragment):
        EvoRulesRanker(population=8, generations=0).fit(X, y, group=ids if isinstance(group, str) else group)
