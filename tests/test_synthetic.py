"""The synthetic and-match task suite (fitness/synthetic.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules.fitness import synthetic as S
from evo_rules.fitness.base import PARTS, top1_accuracy

VARIANTS = list(S.VARIANTS)
SMALL = dict(n_train=40, n_valid=20, n_test=30)


def small(variant="and-match", **kw):
    return S.SyntheticTask(variant, **{**SMALL, **kw})


def arrays(task):
    out = []
    for part in PARTS:
        b = task.batch(part)
        out += [b.X[f] for f in sorted(b.X)] + [b.y, b.groups]
    return out


# ----------------------------------------------------------------- determinism


@settings(max_examples=20)
@given(st.sampled_from(VARIANTS), st.integers(0, 2**32 - 1), st.integers(2, 9))
def test_same_seed_same_data_and_fingerprint(variant, seed, candidates):
    a = small(variant, seed=seed, candidates=candidates)
    b = small(variant, seed=seed, candidates=candidates)
    assert a.fingerprint == b.fingerprint
    for x, y in zip(arrays(a), arrays(b)):
        assert np.array_equal(x, y)


@settings(max_examples=20)
@given(st.sampled_from(VARIANTS), st.integers(0, 2**31), st.integers(1, 1000))
def test_different_seed_different_data(variant, seed, delta):
    a, b = small(variant, seed=seed), small(variant, seed=seed + delta)
    assert a.fingerprint != b.fingerprint
    assert not np.array_equal(a.batch("train").X["color"], b.batch("train").X["color"])


def test_resample_redraws_with_the_same_settings():
    t = small("and-match-recent", seed=5, candidates=6)
    r = t.resample(6)
    assert (r.name, r.sizes, r.candidates, r.seed) == (t.name, t.sizes, t.candidates, 6)
    assert r.fingerprint != t.fingerprint
    assert t.resample(5).fingerprint == t.fingerprint


def test_splits_are_independent_draws():
    t = S.SyntheticTask("and-match", n_train=50, n_valid=50, n_test=50)
    assert not np.array_equal(t.batch("train").X["color"], t.batch("test").X["color"])


@pytest.mark.parametrize("change", [
    dict(seed=1), dict(candidates=7), dict(n_train=41), dict(n_valid=21), dict(n_test=31),
])
def test_fingerprint_changes_with_settings(change):
    assert small(**change).fingerprint != small().fingerprint


def test_fingerprint_differs_between_variants_with_the_same_seed():
    prints = {small(v).fingerprint for v in VARIANTS}
    assert len(prints) == len(VARIANTS)


# ----------------------------------------------------------------- batches


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("part", PARTS)
def test_batch_shapes_and_grouping(variant, part):
    t = small(variant, candidates=5)
    b = t.batch(part)
    G = t.sizes[part]
    assert b.n_rows == G * 5
    assert set(b.X) == set(t.features)
    for f in t.features:
        assert b.X[f].dtype == np.float64 and b.X[f].shape == (G * 5,)
        assert np.all(np.isfinite(b.X[f]))
    assert b.y.dtype == np.float64 and b.groups.dtype == np.int64
    # groups 0..G-1 ascending and contiguous
    assert np.array_equal(b.groups, np.repeat(np.arange(G), 5))
    assert np.all(np.diff(b.groups) >= 0)
    # exactly one target per group, y in {0, 1}
    assert set(np.unique(b.y)) <= {0.0, 1.0}
    assert np.array_equal(np.bincount(b.groups, weights=b.y), np.ones(G))
    target, classes = t.latent(part)
    assert np.array_equal(b.y.reshape(G, 5).argmax(1), target)
    assert np.array_equal((classes == 0).sum(1), np.ones(G))


def test_task_protocol_attributes():
    t = small()
    assert t.loss == "listwise" and t.metric_name == "answer_score"
    assert t.features == ("color", "shape")
    assert small("and-match-stale").features == ("color", "shape", "age")
    assert isinstance(t.fingerprint, str) and len(t.fingerprint) == 32


def test_target_slot_is_spread_over_candidates():
    target, _ = S.SyntheticTask("and-match", n_test=4000).latent("test")
    counts = np.bincount(target, minlength=8)
    assert counts.min() > 400  # uniform: 500 each


def test_bad_inputs_are_clear_errors():
    with pytest.raises(KeyError, match="unknown and-match variant"):
        S.SyntheticTask("and-match-nope")
    with pytest.raises(ValueError, match="n_train"):
        S.SyntheticTask("and-match", n_train=0)
    with pytest.raises(ValueError, match="seed"):
        S.SyntheticTask("and-match", seed=-1)
    with pytest.raises(ValueError, match="candidates"):
        S.SyntheticTask("and-match", candidates=1)
    with pytest.raises(ValueError, match="unknown part"):
        small().batch("dev")
    with pytest.raises(ValueError, match="scores"):
        small().score("test", lambda X: np.zeros(3))


# ----------------------------------------------------------------- scoring and the oracle


def test_score_reports_answer_score_like_top1_accuracy():
    t = small(n_test=200)
    b = t.batch("test")
    rng = np.random.default_rng(0)
    s = rng.normal(size=b.n_rows)
    m = t.score("test", lambda X: s)
    assert m["answer_score"] == top1_accuracy(s, b.y, b.groups)
    assert 0.0 <= m["answer_score"] <= m["mrr"] <= 1.0
    assert m["n_episodes"] == 200
    assert t.score("test", lambda X: b.y)["answer_score"] == 1.0
    assert t.score("test", lambda X: np.zeros(b.n_rows))["answer_score"] == 0.0  # all ties


@pytest.mark.parametrize("variant", VARIANTS)
def test_oracle_is_a_normalised_posterior_and_calibrated(variant):
    """E[max_i P(i)] equals P(argmax is the target) when the posterior is exact: this checks
    the oracle's densities against the sampler."""
    t = S.SyntheticTask(variant, n_train=10, n_valid=10, n_test=4000)
    lp = t.oracle_scores("test").reshape(-1, t.candidates)
    p = np.exp(lp)
    assert np.allclose(p.sum(1), 1.0)
    acc = t.oracle("test")
    assert abs(p.max(1).mean() - acc) < 0.025
    # the flat-row scorer ranks like the per-episode posterior
    assert t.score("test", t.oracle_scorer())["answer_score"] == acc


@pytest.mark.parametrize("variant", VARIANTS)
def test_oracle_well_below_one_and_above_fitted_linear(variant):
    t = S.SyntheticTask(variant, n_train=1500, n_valid=10, n_test=2000)
    oracle = t.oracle("test")
    assert 0.6 <= oracle <= 0.87
    lin = S.fit_and_score(t, S.linear_rule_text(t), "test")
    assert lin["valid"]
    assert oracle >= lin["answer_score"] + 0.04


def test_reference_rule_closes_most_of_the_gap():
    t = S.SyntheticTask("and-match-distractor", n_train=1500, n_valid=10, n_test=2000)
    oracle = t.oracle("test")
    lin = S.fit_and_score(t, S.linear_rule_text(t))["answer_score"]
    ref = S.fit_and_score(t, S.reference_rules(t)["softmin-decoy2"])["answer_score"]
    assert (ref - lin) / (oracle - lin) > 0.85


def test_linear_and_reference_rules_parse_over_the_task_features():
    import evo_rules

    for v in VARIANTS:
        t = small(v)
        assert S.linear_rule_text(t) == S.linear_rule_text(v)
        lin = evo_rules.parse(S.linear_rule_text(t))
        assert set(lin.features) == set(t.features)
        refs = S.reference_rules(t)
        assert refs and any(n.startswith("softmin") for n in refs)
        for text in refs.values():
            r = evo_rules.parse(text)
            assert set(r.features) <= set(t.features)
            assert r.size <= 28


def test_registry_lists_every_variant():
    from evo_rules.fitness.registry import TASKS, get_task, task_names

    for v in VARIANTS:
        assert v in task_names()
        assert TASKS[v][1]
        t = get_task(v, seed=3, **SMALL)
        assert t.name == v and t.fingerprint == small(v, seed=3).fingerprint
