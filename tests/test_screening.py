"""The product screen (evo_rules.screening): a score test that ranks planted interactions first,
whose gradient is the loss's derivative, and the `[search] screen_products` seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from evo_rules import app
from evo_rules.config import ConfigError, from_dict
from evo_rules.fitting import fit
from evo_rules.losses import make_loss
from evo_rules.rule import parse
from evo_rules.screening import (linear_text, product_scores, product_text, screen_products,
                                 screened_seeds)

FIT = {"max_iter": 20}
NAMES = ("a", "b", "c", "d", "e")


class Rows:
    """A task over arrays: what the screen reads (features, loss, batch("train"))."""

    def __init__(self, X, y, groups, loss):
        self.features = tuple(X)
        self.loss = loss
        self._batch = type("B", (), {"X": X, "y": y, "groups": groups})()

    def batch(self, part):
        return self._batch


def _columns(rng, n):
    """a, b, c 0/1 (of different frequencies), d and e continuous."""
    return {"a": (rng.random(n) < 0.5) * 1.0, "b": (rng.random(n) < 0.3) * 1.0,
            "c": (rng.random(n) < 0.15) * 1.0, "d": rng.normal(size=n), "e": rng.random(n)}


def planted(loss: str, seed: int = 0, n_groups: int = 400, size: int = 6) -> Rows:
    """Labels drawn from a model with linear terms and the product a * c."""
    rng = np.random.default_rng(seed)
    n = n_groups * size
    X = _columns(rng, n)
    s = 0.8 * X["a"] - 0.5 * X["b"] + 0.7 * X["d"] + 3.0 * X["a"] * X["c"]
    if loss == "squared":
        return Rows(X, s + rng.normal(scale=0.5, size=n), None, loss)
    if loss == "logistic":
        return Rows(X, (rng.random(n) < 1 / (1 + np.exp(-(s - 0.5)))) * 1.0, None, loss)
    groups = np.repeat(np.arange(n_groups), size)
    y = np.zeros(n)
    for g in range(n_groups):  # one target per group, drawn from the softmax of s
        z = s[g * size:(g + 1) * size]
        p = np.exp(z - z.max())
        y[g * size + rng.choice(size, p=p / p.sum())] = 1.0
    return Rows(X, y, groups, loss)


@pytest.mark.parametrize("loss", ["listwise", "logistic", "squared"])
def test_planted_product_ranks_first(loss):
    top = screen_products(planted(loss), FIT, 3)
    assert {top[0][0], top[0][1]} == {"a", "c"}
    assert abs(top[0][2]) > 2 * abs(top[1][2])  # well clear of the rest, not a near tie


def test_no_planted_product_no_strong_statistic():
    """Without an interaction the statistic is about N(0, 1) for every pair (rare or frequent)."""
    rng = np.random.default_rng(3)
    n_groups, size = 600, 5
    X = _columns(rng, n_groups * size)
    s = 0.8 * X["a"] + 0.7 * X["d"]
    y = np.zeros(len(s))
    for g in range(n_groups):
        z = np.exp(s[g * size:(g + 1) * size])
        y[g * size + rng.choice(size, p=z / z.sum())] = 1.0
    task = Rows(X, y, np.repeat(np.arange(n_groups), size), "listwise")
    _, _, stat = product_scores(task, FIT)
    assert np.max(np.abs(stat)) < 4.5  # 15 pairs of N(0, 1): a planted product scores far above


def _fitted(task):
    b = task.batch("train")
    rule = parse(linear_text(task.features))
    res = fit(rule, b.X, b.y, loss=task.loss, groups=b.groups, max_iter=20)
    return b, rule.evaluate(b.X, np.asarray(res.weights))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), loss=st.sampled_from(["listwise", "logistic", "squared"]),
       i=st.integers(0, 4), j=st.integers(0, 4))
def test_gradient_is_the_derivative_of_the_training_loss(seed, loss, i, j):
    """g_ij = d/dbeta of the fit loss at beta = 0 with beta * f_i * f_j added to the fitted rule
    (central finite difference)."""
    task = planted(loss, seed, n_groups=60, size=5)
    names, grad, _ = product_scores(task, FIT)
    b, s = _fitted(task)
    L = make_loss(loss, b.y, b.groups)
    z = b.X[names[i]] * b.X[names[j]]
    h = 1e-5
    fd = (L.value(s + h * z) - L.value(s - h * z)) / (2 * h)
    assert grad[i, j] == pytest.approx(fd, rel=1e-4, abs=1e-9)
    assert grad[j, i] == pytest.approx(grad[i, j], rel=1e-12, abs=1e-15)


def test_listwise_statistic_is_gradient_over_its_standard_deviation():
    """The normalisation: sqrt(sum over groups of the within-group variance of z under the
    fitted softmax) / G, computed here group by group."""
    task = planted("listwise", 5, n_groups=50, size=4)
    names, grad, stat = product_scores(task, FIT)
    b, s = _fitted(task)
    G = 50
    for i, j in [(0, 2), (1, 3), (3, 4), (2, 4)]:
        z = b.X[names[i]] * b.X[names[j]]
        var = 0.0
        for g in range(G):
            sl = slice(4 * g, 4 * g + 4)
            p = np.exp(s[sl] - s[sl].max())
            p /= p.sum()
            var += p @ z[sl] ** 2 - (p @ z[sl]) ** 2
        assert stat[i, j] == pytest.approx(grad[i, j] / np.sqrt(var / G**2), rel=1e-6)


def test_left_out_pairs_score_zero():
    """Squares of 0/1 features (the feature itself) and products constant within every group
    (a listwise loss cannot see them) are not proposed."""
    task = planted("listwise", 1, n_groups=100, size=5)
    X = dict(task.batch("train").X)
    X["h"] = np.repeat(np.arange(100) % 3, 5) * 1.0  # the same for every row of a group
    X["k"] = np.repeat(np.arange(100) % 2, 5) * 1.0
    task = Rows(X, task.batch("train").y, task.batch("train").groups, "listwise")
    names, _, stat = product_scores(task, FIT)
    at = {f: n for n, f in enumerate(names)}
    for f in "abc":
        assert stat[at[f], at[f]] == 0.0
    assert stat[at["d"], at["d"]] != 0.0  # a continuous feature's square is a new term
    assert stat[at["h"], at["k"]] == 0.0
    assert all({"h", "k"} != {p, q} for p, q, _ in screen_products(task, FIT, 30))


def test_identical_product_columns_are_proposed_once():
    task = planted("listwise", 2)
    X = dict(task.batch("train").X)
    X["c2"] = X["c"].copy()  # a second name for the same column: a * c2 = a * c
    task = Rows(X, task.batch("train").y, task.batch("train").groups, "listwise")
    top = screen_products(task, FIT, 5)
    assert {top[0][0], top[0][1]} in ({"a", "c"}, {"a", "c2"})
    assert all({p, q} not in ({"a", "c"}, {"a", "c2"}) for p, q, _ in top[1:])


def test_screened_seeds_are_the_start_plus_products():
    task = planted("listwise")
    start = "(add (mul w x.a) (mul w x.d))"
    pairs = screen_products(task, FIT, 3)
    seeds = screened_seeds(task, FIT, 3, start)
    assert len(seeds) == 4
    for text, (p, q, _) in zip(seeds, pairs):
        assert parse(text).key == parse(product_text(start, p, q)).key
    every = parse(seeds[-1])
    assert set(every.features) == {"a", "d"} | {f for p, q, _ in pairs for f in (p, q)}
    assert every.size == parse(start).size + 4 * 3  # three (mul w x.p x.q) terms in one flat sum


def _config(**search):
    return from_dict({"task": {"name": "and-match"}, "search": search}, source="t.toml")


@pytest.mark.parametrize("value, message", [
    (-1, "must be in [0, 1,000], got -1"),
    (1001, "must be in [0, 1,000], got 1001"),
    ("8", "must be an integer, got '8'"),
    (True, "must be an integer, got True"),
    (2.0, "must be an integer, got 2.0"),
])
def test_config_refuses_bad_screen_products(value, message):
    with pytest.raises(ConfigError) as err:
        _config(screen_products=value)
    assert str(err.value) == f"t.toml: [search].screen_products: {message}"


def test_screen_products_zero_leaves_the_seeds_unchanged(monkeypatch):
    task = planted("listwise")
    rules = ["(mul w x.a)", "(add (mul w x.a) (mul w x.d))"]

    def never(*args, **kwargs):
        raise AssertionError("screened with screen_products = 0")

    monkeypatch.setattr(app, "screened_seeds", never)
    cfg = _config(seed_rules=rules, seed_reference=False)
    assert cfg.search.screen_products == 0
    assert app.seed_texts(cfg, task) == rules


def test_screen_products_adds_seeds_on_the_first_seed_rule():
    task = planted("listwise")
    rules = ["(add (mul w x.a) (mul w x.d))", "(mul w x.b)"]
    cfg = _config(seed_rules=rules, seed_reference=False, screen_products=2)
    texts = app.seed_texts(cfg, task)
    assert texts[:2] == rules
    assert texts[2:] == screened_seeds(task, cfg.fit_settings, 2, rules[0])
    assert len(texts) == 5
