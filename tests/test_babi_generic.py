"""bAbI generic features (no bAbI lexicon), task 1, and the feature-weighted grammar."""

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import parse
from evo_rules.fitness import babi
from evo_rules.fitness.babi import BabiTask
from evo_rules.fitness.babi_generic import BASE_FEATURES, STOPWORDS, GenericStats
from evo_rules.fitness.base import SettingsError
from evo_rules.operators import Grammar, insert, point_mutation, random_population
from evo_rules.operators.generate import pick_feature, random_feature
from evo_rules.operators.positions import choose

DATA = Path(babi.__file__).parent / "data"
# a one-to-one renaming of every content word of task 2 (names and capitals kept)
RENAME = {"went": "strolled", "journeyed": "hiked", "travelled": "drove", "moved": "rode",
          "took": "seized", "got": "obtained", "grabbed": "snatched", "picked": "lifted",
          "dropped": "released", "discarded": "abandoned", "left": "shed", "put": "placed",
          "football": "lantern", "milk": "tea", "apple": "pear", "kitchen": "cellar",
          "garden": "yard", "office": "study", "bedroom": "attic", "bathroom": "porch",
          "hallway": "lobby", "back": "anew"}


@pytest.fixture(scope="module")
def generic2():
    return BabiTask(2, features="generic")


def _renamed_copy(dst: Path) -> None:
    pattern = re.compile(r"\b(" + "|".join(RENAME) + r")\b")
    for name in babi.FILES[2]:
        text = (DATA / name).read_text()
        (dst / name).write_text(pattern.sub(lambda m: RENAME[m.group(1)], text))


# ------------------------------------------------------------------------------ generic features


def test_generic_vocabulary_comes_from_the_train_stories(tmp_path, generic2):
    _renamed_copy(tmp_path)
    other = BabiTask(2, features="generic", data_dir=tmp_path)
    words = {f[2:] for f in generic2.features if f.startswith("w_")}
    assert {"took", "dropped", "went"} <= words
    assert words.isdisjoint(STOPWORDS)
    # a story set with other words: other indicators, and the same numbers under the renaming
    renamed = {f[2:] for f in other.features if f.startswith("w_")}
    assert renamed == {RENAME.get(w, w) for w in words}
    assert not renamed & {"took", "dropped", "went"}
    a, b = generic2.batch("train"), other.batch("train")
    for f in generic2.features:
        g = f if f in BASE_FEATURES else f[:2] + RENAME.get(f[2:], f[2:])
        assert np.array_equal(a.X[f], b.X[g]), f
    assert np.array_equal(a.y, b.y)


def test_generic_vocabulary_size_and_names():
    stories = babi.load_babi(3, "train")
    assert GenericStats.estimate(stories, 5).vocab == GenericStats.estimate(stories).vocab[:5]
    t = BabiTask(3, features="generic", vocab_size=5)
    assert len(t.features) == len(BASE_FEATURES) + 10
    assert t.fingerprint != BabiTask(3, features="generic").fingerprint != BabiTask(3).fingerprint
    for f in t.features:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", f)


def test_generic_features_are_finite_and_label_free(generic2):
    for part in ("train", "valid", "test"):
        b = generic2.batch(part)
        assert list(b.X) == list(generic2.features)
        for f, v in b.X.items():
            assert v.dtype == np.float64 and np.all(np.isfinite(v)), f
            assert v.min() >= 0.0 and (f == "hop" or v.max() <= 1.0 + 1e-12), f
        # anchor word indicators are shared by a group, and 0 at hop 0
        h0 = b.X["hop"] == 0
        for f in generic2.features:
            if f.startswith("a_"):
                assert not b.X[f][h0].any()
                starts = np.flatnonzero(np.r_[True, np.diff(b.groups) > 0])
                assert np.array_equal(b.X[f], np.repeat(b.X[f][starts], np.diff(np.r_[starts, b.n_rows])))
    # greedy inference sees no labels: a scorer reading only features picks the same chains
    # on a copy whose answers and supporting ids are all changed
    w = {f: np.sin(i) for i, f in enumerate(generic2.features)}
    chains = generic2.infer("valid", lambda X: sum(w[f] * X[f] for f in X))
    assert all(len(set(c)) == 2 for c in chains)


def test_settings_are_checked():
    with pytest.raises(SettingsError, match="features"):
        BabiTask(2, features="lexical")
    with pytest.raises(SettingsError, match="vocab_size"):
        BabiTask(2, vocab_size=10)  # only with the generic set
    with pytest.raises(SettingsError, match="vocab_size"):
        BabiTask(2, features="generic", vocab_size=0)
    from evo_rules.fitness.registry import check_task_settings

    check_task_settings("babi-1", {"features": "generic", "vocab_size": 30})
    with pytest.raises(SettingsError):
        check_task_settings("babi-2", {"features": 3})


def test_engineered_stays_the_default():
    t = BabiTask(2)
    assert t.features == babi.FEATURES and t.feature_set == "engineered"
    assert "vocab_size" not in t.settings and t.settings["features"] == babi.FEATURE_VERSION
    assert BabiTask(2, features="generic").reference_rules() == {}


# ------------------------------------------------------------------------------ task 1


def test_task1_loads_and_linear_beats_chance():
    from evo_rules.fitness.registry import get_task

    for features in ("engineered", "generic"):
        t = get_task("babi-1", features=features)
        assert t.k == 1 and t.name == "babi-1"
        qs = t.questions("test")
        assert len(qs) == 1000 and all(len(q.supports) == 1 for _, _, q in qs)
        chance = float(np.mean([1.0 / q.n_before for _, _, q in qs]))
        r = babi.fit_and_score(t, t.linear_rule_text(), "valid")
        assert r["valid"] and r["support_recall"] > max(0.9, chance + 0.5)


# ------------------------------------------------------------------------------ weighted grammar

NAMES = tuple(f"f{i}" for i in range(7))
weights_st = st.lists(st.floats(0.1, 1.0),  # as feature_weights.FLOOR allows
                     min_size=len(NAMES), max_size=len(NAMES))


def test_uniform_draws_are_unchanged():
    g = Grammar(features=NAMES)
    for seed in range(20):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert random_feature(g, a).value == choose(b, NAMES)
        assert pick_feature(g, a, exclude="f3") == choose(b, [f for f in NAMES if f != "f3"])


def test_feature_weights_are_validated_and_round_trip():
    g = Grammar(features=NAMES, feature_weights=[1.0] * len(NAMES))
    assert Grammar.from_dict(g.to_dict()) == g
    assert "feature_weights" not in Grammar(features=NAMES).to_dict()
    for bad in ([1.0], [0.0] * len(NAMES), [float("nan")] * len(NAMES), "1"):
        with pytest.raises(ValueError, match="feature_weights"):
            Grammar(features=NAMES, feature_weights=bad)


@settings(max_examples=25, deadline=None)
@given(weights=weights_st, seed=st.integers(0, 2**32))
def test_weighted_grammar_is_deterministic_per_seed(weights, seed):
    g = Grammar(features=NAMES, feature_weights=weights, max_size=20,
                pair_weights=[("f2", "f3", 0.5)])
    a = random_population(g, np.random.default_rng(seed), 12)
    b = random_population(g, np.random.default_rng(seed), 12)
    assert [r.key for r in a] == [r.key for r in b]
    assert all(g.admits(r) for r in a)


@settings(max_examples=15, deadline=None)
@given(weights=weights_st, pair=st.floats(0.1, 1.0))
def test_weighted_insert_and_point_reach_every_feature(weights, pair):
    g = Grammar(features=NAMES, feature_weights=weights, max_size=30,
                pair_weights=[("f0", "f5", pair)])
    rule = parse("(add (mul w x.f0) (mul w x.f1 x.f2))")
    reached_insert, reached_point = set(), set()
    for seed in range(3000):
        reached_insert |= set(insert(rule, g, np.random.default_rng(seed)).features)
        reached_point |= set(point_mutation(rule, g, np.random.default_rng(seed)).features)
        if len(reached_insert) == len(reached_point) == len(NAMES):
            break
    assert reached_insert == reached_point == set(NAMES)


def test_pair_weights_pull_the_partner():
    g = Grammar(features=NAMES, feature_weights=[1.0] * len(NAMES), pair_weights=[("f1", "f4", 1.0)])
    assert g.partners("f4") == {"f1": 1.0} and g.partners("f0") == {}
    rng = np.random.default_rng(1)
    drawn = [pick_feature(g, rng, exclude="f1", partner="f1") for _ in range(3000)]
    assert 0.5 < drawn.count("f4") / 3000 < 0.65  # (1 + 7) / (6 + 7) = 0.615
    assert "f1" not in drawn and set(drawn) == set(NAMES) - {"f1"}
    assert Grammar.from_dict(g.to_dict()) == g
    for bad in ([("f1", "f1", 1.0)], [("f1", "zz", 1.0)], [("f1", "f2", 0.0)], [("f1", "f2")]):
        with pytest.raises(ValueError, match="pair_weights"):
            Grammar(features=NAMES, pair_weights=bad)


def test_draws_follow_the_weights():
    w = [8.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    g = Grammar(features=NAMES, feature_weights=w)
    rng = np.random.default_rng(0)
    counts = {f: 0 for f in NAMES}
    for _ in range(7000):
        counts[pick_feature(g, rng)] += 1
    assert 0.5 < counts["f0"] / 7000 < 0.64  # 8/14 = 0.571
    assert all(counts[f] > 0 for f in NAMES)
    assert all(pick_feature(g, rng, exclude="f0") != "f0" for _ in range(200))


def test_linear_feature_weights(generic2):
    from evo_rules.feature_weights import FLOOR, feature_weights

    assert feature_weights("uniform", generic2, generic2.features) == ((), ())
    weights, pairs = feature_weights("linear", generic2, generic2.features)
    w = dict(zip(generic2.features, weights))
    assert all(FLOOR <= v <= 1.0 for v in w.values()) and max(w.values()) == 1.0
    # the anchor's words are constant within a group: only their products with the candidate's
    # features can say they matter, and some do (what the previous hop did changes the next)
    anchor = {f: v for f, v in w.items() if f.startswith("a_")}
    assert max(anchor.values()) > FLOOR + 0.2 and min(anchor.values()) < max(anchor.values())
    # the strongest products become pair weights; a grammar takes them as they are
    assert pairs and max(p[2] for p in pairs) == 1.0
    assert all(a in w and b in w and 0 < x <= 1 for a, b, x in pairs)
    Grammar(features=generic2.features, feature_weights=weights, pair_weights=pairs)
    with pytest.raises(ValueError, match="feature_weights"):
        feature_weights("bogus", generic2, generic2.features)


def test_config_feature_weights_key():
    from evo_rules.config import ConfigError, from_dict

    cfg = from_dict({"task": {"name": "babi-2"}, "grammar": {"feature_weights": "linear"}})
    assert cfg.grammar.feature_weights == "linear"
    assert from_dict({"task": {"name": "babi-2"}}).grammar.feature_weights == "uniform"
    with pytest.raises(ConfigError, match="feature_weights"):
        from_dict({"task": {"name": "babi-2"}, "grammar": {"feature_weights": "Linear "}})
