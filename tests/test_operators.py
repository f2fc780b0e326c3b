"""Grammar, random generation, mutation and crossover (operators/)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import parse
from evo_rules.terms import depth
from evo_rules.operators import N_PARENTS, OPERATORS, Grammar, random_population, random_rule
from evo_rules.operators.generate import feature_term, ramped_tree, template_term
from evo_rules.operators.grammar import TEMPLATE_OPERATORS
from evo_rules.operators.mutate import hoist, point_mutation, shrink, subtree_mutation
from evo_rules.operators.positions import node_table
from evo_rules.operators.template import split_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("color", "stale", "dist", "freq", "pos", "len_")
ALL_OPS = ("add", "mul", "exp", "log", "eml")


@st.composite
def grammars(draw):
    features = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    ops = draw(st.lists(st.sampled_from(ALL_OPS), min_size=1, max_size=5, unique=True))
    has_template_ops = all(o in ops for o in TEMPLATE_OPERATORS)
    share = draw(st.sampled_from([0.0, 0.3, 1.0])) if has_template_ops else 0.0
    return Grammar(
        features=tuple(features),
        operators=tuple(ops),
        max_size=draw(st.integers(1, 30)),
        max_depth=draw(st.integers(1, 9)),
        template_share=share,
        constants=tuple(draw(st.lists(st.sampled_from([1.0, 2.0, 0.5, -1.0]), max_size=3,
                                      unique=True))),
    )


SEEDS = st.integers(0, 2**32 - 1)
DEFAULT = Grammar(features=NAMES)


def check_rule(r, g: Grammar):
    """Canonical, round-trips through text, within the limits, only grammar features."""
    back = parse(r.text)
    assert back.text == r.text and back.key == r.key
    assert r.size <= g.max_size, r.text
    assert depth(r.term) <= g.max_depth, r.text
    assert r.features and set(r.features) <= set(g.features), r.text
    assert g.admits(r)


def apply(name, parents, g, rng):
    op = OPERATORS[name]
    if N_PARENTS[name] == 2:
        return list(op(parents[0], parents[1], g, rng))
    return [op(parents[0], g, rng)]


# ------------------------------------------------------------------ grammar


@pytest.mark.parametrize("kwargs, field", [
    (dict(features=()), "features"),
    (dict(features="abc"), "features"),
    (dict(features=("a", "a")), "features"),
    (dict(features=("x.a",)), "features"),
    (dict(features=("1a",)), "features"),
    (dict(features=("a",), operators=("add", "tan")), "operators"),
    (dict(features=("a",), operators=()), "operators"),
    (dict(features=("a",), max_size=0), "max_size"),
    (dict(features=("a",), max_size=2.5), "max_size"),
    (dict(features=("a",), max_depth=True), "max_depth"),
    (dict(features=("a",), template_share=1.5), "template_share"),
    (dict(features=("a",), template_share="0.3"), "template_share"),
    (dict(features=("a",), operators=("add", "mul")), "template_share"),
    (dict(features=("a",), constants=(1.0, float("nan"))), "constants"),
    (dict(features=("a",), constants=(1.0, 1)), "constants"),
    (dict(features=("a",), constants="1"), "constants"),
])
def test_grammar_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"Grammar.{field}"):
        Grammar(**kwargs)


def test_grammar_from_dict_and_back():
    g = Grammar.from_dict({"features": ["a", "b"], "operators": ["mul", "add", "eml", "exp"],
                           "max_size": 20, "constants": [1, 2]})
    assert g.features == ("a", "b")
    assert g.operators == ("add", "mul", "exp", "eml")  # term-layer order
    assert g.constants == (1.0, 2.0)
    assert Grammar.from_dict(g.to_dict()) == g
    assert hash(g) == hash(Grammar.from_dict(g.to_dict()))
    with pytest.raises(ValueError, match="unknown key.*'max_sise'"):
        Grammar.from_dict({"features": ["a"], "max_sise": 3})
    with pytest.raises(ValueError, match="features"):
        Grammar.from_dict({"operators": ["add"]})
    with pytest.raises(ValueError, match="mapping"):
        Grammar.from_dict(["a"])


def test_admits():
    g = Grammar(features=("a", "b"), max_size=5, max_depth=3)
    assert g.admits(parse("(mul w x.a)"))
    assert not g.admits(parse("(mul w x.c)"))  # foreign feature
    assert not g.admits(parse("(exp w)"))  # no feature: a constant score
    assert not g.admits(parse("(add (mul w x.a) (mul w x.b))"))  # size 7
    assert not g.admits(parse("(exp (exp (exp x.a)))"))  # depth 4


# ------------------------------------------------------------------ generation


@settings(max_examples=60)
@given(grammars(), SEEDS)
def test_random_rules_are_admitted_and_deterministic(g, seed):
    rng = np.random.default_rng(seed)
    rules = [random_rule(g, rng) for _ in range(8)]
    for r in rules:
        check_rule(r, g)
    rng = np.random.default_rng(seed)
    assert [random_rule(g, rng).text for _ in range(8)] == [r.text for r in rules]


def test_raw_trees_respect_limits():
    for seed in range(200):
        rng = np.random.default_rng(seed)
        g = Grammar(features=("a", "b"), max_size=int(rng.integers(1, 30)),
                    max_depth=int(rng.integers(1, 9)))
        t = ramped_tree(g, rng)
        assert sum(1 for _ in node_table(t)) <= g.max_size
        assert depth(t) <= g.max_depth


def test_template_share_gives_template_rules():
    g = Grammar(features=NAMES, template_share=1.0)
    rng = np.random.default_rng(3)
    rules = [random_rule(g, rng) for _ in range(50)]
    # the seed's template, or the soft minimum (eml 0 (add (exp s1) (exp s2)))
    softmin = [r for r in rules if r.text.startswith("(eml 0 (add (exp")]
    assert all(split_template(r.term) is not None for r in rules if r not in softmin)
    assert 5 < len(softmin) < 35
    assert sum(r.text.startswith("(eml (add") for r in rules) > 5  # multi-term signals occur
    g0 = Grammar(features=NAMES, template_share=0.0)
    rng = np.random.default_rng(3)
    plain = [random_rule(g0, rng) for _ in range(200)]
    assert sum(split_template(r.term) is not None for r in plain) < 50


def test_template_and_feature_terms():
    g = Grammar(features=("a", "b", "c"))
    rng = np.random.default_rng(0)
    for _ in range(100):
        t = feature_term(g, rng)
        assert t.op == "mul" and t.args[0].op == "w"
        names = [a.value if a.op == "x" else a.args[0].args[1].value for a in t.args[1:]]
        assert len(set(names)) == len(names)  # x.f x.g, or x.f (exp (mul w x.g)), f != g
        tt = template_term(g, rng)
        assert tt.op == "eml"
        assert tt.args[1].text.startswith("(add 1 (exp ") or tt.args[0].text == "0"


def test_tiny_grammars_fall_back_to_minimal_rules():
    rng = np.random.default_rng(0)
    assert random_rule(Grammar(features=("a",), max_size=1, template_share=0), rng).text == "x.a"
    r = random_rule(Grammar(features=("a",), max_size=3, max_depth=2, operators=("mul",),
                            template_share=0, constants=()), rng)
    assert r.text in ("(mul w0 x.a)", "x.a", "(mul x.a x.a)")


def test_random_population_unique():
    rng = np.random.default_rng(11)
    pop = random_population(DEFAULT, rng, 300)
    assert len(pop) == 300 and len({r.key for r in pop}) == 300
    # a grammar with few rules gives what there is, without looping forever
    small = random_population(Grammar(features=("a",), max_size=1, template_share=0),
                              np.random.default_rng(0), 10)
    assert [r.text for r in small] == ["x.a"]


# ------------------------------------------------------------------ variation


@settings(max_examples=60)
@given(grammars(), SEEDS, st.sampled_from(sorted(OPERATORS)))
def test_operators_admitted_canonical_deterministic(g, seed, name):
    rng = np.random.default_rng(seed)
    parents = [random_rule(g, rng) for _ in range(N_PARENTS[name])]
    state = rng.bit_generator.state
    kids = apply(name, parents, g, rng)
    for k in kids:
        check_rule(k, g)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = state
    assert [k.text for k in apply(name, parents, g, rng2)] == [k.text for k in kids]
    assert rng.bit_generator.state == rng2.bit_generator.state


@settings(max_examples=15)
@given(grammars(), SEEDS)
def test_many_generations_stay_admitted(g, seed):
    """Chains of every operator: canonical forms stay fixpoints, limits hold throughout."""
    rng = np.random.default_rng(seed)
    pop = [random_rule(g, rng) for _ in range(6)]
    names = sorted(OPERATORS)
    for _ in range(8):
        nxt = []
        for i in range(len(pop)):
            name = names[int(rng.integers(len(names)))]
            nxt += apply(name, [pop[i], pop[(i + 1) % len(pop)]], g, rng)
        pop = nxt[: len(pop)]
        for r in pop:
            check_rule(r, g)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operators_mostly_make_new_rules(name):
    """On the default grammar a child is usually a new rule (not its parent again)."""
    rng = np.random.default_rng(5)
    g = DEFAULT
    if name == "fade":  # a schedule in the progress feature t, which the grammar must have
        g = Grammar(features=NAMES + ("t",))
    pop = random_population(g, rng, 200)
    if name in ("blend", "fade"):  # a sum of two rules, a rule times 1 - t: smaller parents fit
        pop = [r for r in pop if r.size < g.max_size // 2]
    changed = total = 0
    for i in range(len(pop)):
        parents = [pop[i], pop[(i + 37) % len(pop)]]
        for k, p in zip(apply(name, parents, g, rng), parents):
            total += 1
            changed += k.key != p.key
    assert changed / total > 0.8, (name, changed, total)


def test_hoist_and_shrink_make_smaller_rules():
    rng = np.random.default_rng(2)
    for r in random_population(DEFAULT, rng, 100):
        h, s = hoist(r, DEFAULT, rng), shrink(r, DEFAULT, rng)
        assert h.size <= r.size and s.size <= r.size
        if h is not r:
            assert h.size < r.size and h.features


def test_point_mutation_keeps_shape():
    """A point mutation changes one node: the child's size differs only through folding."""
    g = Grammar(features=("a", "b"), template_share=0.0)
    r = parse("(eml (add (mul w x.a) (mul w x.b)) (add 1 (exp (mul w x.a))))")
    rng = np.random.default_rng(0)
    kids = {point_mutation(r, g, rng).text for _ in range(100)}
    assert len(kids) > 10
    for k in kids:
        assert parse(k).size <= r.size


def test_subtree_mutation_prefers_inner_points():
    """Most subtree mutations replace an inner node, not just a leaf."""
    r = parse("(eml (add (mul w x.a) (mul w x.b)) (add 1 (exp (mul w x.a))))")
    g = Grammar(features=("a", "b"))
    rng = np.random.default_rng(1)
    kids = [subtree_mutation(r, g, rng) for _ in range(200)]
    # a leaf swap keeps the operator skeleton; an inner replacement usually changes it
    skeleton = lambda t: "".join(c for c in t if c in "()") + str(t.count(" "))  # noqa: E731
    assert sum(skeleton(k.text) != skeleton(r.text) for k in kids) > 100


def test_crossover_renames_grafted_weights_apart():
    g = Grammar(features=("a", "b"))
    a = parse("(add (mul w0 x.a) (exp (mul w1 x.b)))")
    b = parse("(add (mul w0 x.b) (log (mul w1 x.a)))")
    rng = np.random.default_rng(0)
    for _ in range(50):
        for k in OPERATORS["crossover"](a, b, g, rng):
            # every weight leaf is its own parameter: no weight is tied by the graft
            n_leaves = sum(1 for n in node_table(k.term) if n.term.op == "w")
            assert n_leaves == len(k.params)


def test_operators_keep_parents_unchanged_when_nothing_fits():
    g = Grammar(features=("a",), max_size=3, max_depth=2, template_share=0)
    r = parse("(mul w x.a)")
    rng = np.random.default_rng(0)
    assert hoist(r, g, rng).text == "x.a"
    r2 = parse("x.a")
    for name in ("subtree", "point", "hoist", "shrink"):
        out = OPERATORS[name](r2, g, rng)
        check_rule(out, g)
    a, b = OPERATORS["crossover"](r2, r2, g, rng)
    assert a is r2 and b is r2


def test_same_children_in_another_process():
    """No dependence on Python's per-process hash salt (set/dict order of strings)."""
    code = (
        "import numpy as np\n"
        "from operators import OPERATORS, N_PARENTS, Grammar, random_population\n"
        "g = Grammar(features=('a','b','c','d'))\n"
        "rng = np.random.default_rng(42)\n"
        "pop = random_population(g, rng, 40)\n"
        "out = [r.text for r in pop]\n"
        "for name in sorted(OPERATORS):\n"
        "    for i in range(20):\n"
        "        if N_PARENTS[name] == 2:\n"
        "            out += [k.text for k in OPERATORS[name](pop[i], pop[-i-1], g, rng)]\n"
        "        else:\n"
        "            out.append(OPERATORS[name](pop[i], g, rng).text)\n"
        "import hashlib; print(hashlib.sha256('\\n'.join(out).encode()).hexdigest())\n"
    )
    digests = set()
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=ROOT)
        res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True)
        digests.add(res.stdout.strip())
    assert len(digests) == 1


def test_insert_adds_one_feature_term_to_a_sum():
    from evo_rules.operators.mutate import insert

    g = Grammar(features=("a", "b", "c"), max_size=20)
    r = parse("(add (mul w x.a) (mul w x.b))")
    rng = np.random.default_rng(3)
    for _ in range(20):
        k = insert(r, g, rng)
        check_rule(k, g)
        assert k.key != r.key
        # (mul w x.f), (mul w x.f x.g) or (mul w x.f (exp (mul w x.g)))
        assert k.size in (r.size + 3, r.size + 4, r.size + 7)
        assert len(k.params) in (len(r.params) + 1, len(r.params) + 2)
    no_sum = parse("(exp (mul w x.a))")
    assert insert(no_sum, g, rng).term.op == "add"


def test_scale_halves_or_doubles_the_whole_rule():
    from evo_rules.operators.mutate import scale

    g = Grammar(features=("n", "u"), max_size=20)
    r = parse("(add x.n (mul -1 x.u))")
    scaled = {c: parse(f"(mul {c} {r.text})").key for c in (0.5, 2.0)}
    seen = set()
    for seed in range(20):
        k = scale(r, g, np.random.default_rng(seed))
        assert k.key in scaled.values() and k.features == r.features and g.admits(k)
        seen.add(k.key)
    assert seen == set(scaled.values())
    # constants fold: repeated halving reaches sizes no constant list holds
    assert scale(parse("(mul -0.1 x.u)", check_constants=False), g, np.random.default_rng(1)).text in (
        "(mul -0.05 x.u)", "(mul -0.2 x.u)")


def test_fade_multiplies_the_whole_rule_by_a_schedule_in_t():
    """NorMuon's step fades out, (1 - t)(n - u), or in, t (n - u): the two children have the
    rule's values times 1 - t and t; without the feature t the rule comes back unchanged."""
    from evo_rules.operators import VARIATION, fade

    g = Grammar(features=("n", "u", "t"), max_size=20)
    r = parse("(add x.n (mul -1 x.u))")
    x = {"n": np.array([0.3, -1.0, 2.0]), "u": np.array([0.1, 0.2, -0.4]), "t": np.array([0.0, 0.25, 1.0])}
    base = r.evaluate(x, [])
    seen = set()
    for seed in range(20):
        k = fade(r, g, np.random.default_rng(seed))
        assert g.admits(k) and k.features == ("n", "t", "u")
        got = k.evaluate(x, [])
        assert np.allclose(got, base * (1 - x["t"])) or np.allclose(got, base * x["t"])
        seen.add(k.key)
    assert len(seen) == 2 and VARIATION["fade"].parents == 1
    no_t = Grammar(features=("n", "u"), max_size=20)
    assert fade(r, no_t, np.random.default_rng(0)) is r
    assert fade(r, Grammar(features=("n", "u", "t"), max_size=5), np.random.default_rng(0)) is r


def test_blend_gives_the_sum_and_the_mean_of_two_rules():
    """NorMuon's step (n - u) and a correction blend into their sum and their mean; weights stay
    apart; a child too large for the grammar is its parent."""
    from evo_rules.operators import VARIATION, blend

    g = Grammar(features=("n", "u", "m", "v"), max_size=20)
    a, b = parse("(add x.n (mul -1 x.u))"), parse("(mul w x.m x.v)")
    s, m = blend(a, b, g, np.random.default_rng(0))
    x = {"n": np.array([0.3, -1.0]), "u": np.array([0.1, 0.2]), "m": np.array([2.0, 1.5]),
         "v": np.array([0.5, 4.0])}
    fa, fb = a.evaluate(x, [1.0] * len(a.params)), b.evaluate(x, [1.5])
    assert np.allclose(s.evaluate(x, [1.5]), fa + fb) and np.allclose(m.evaluate(x, [1.5]), (fa + fb) / 2)
    assert g.admits(s) and g.admits(m) and VARIATION["blend"].parents == 2
    small = Grammar(features=("n", "u", "m", "v"), max_size=8)
    assert blend(a, b, small, np.random.default_rng(0)) == (a, b)
    assert blend(a, a, g, np.random.default_rng(0)) == (a, a)  # not 2a (scale's move) and a again


# ------------------------------------------------------------------ black-box rules' numbers


def _numbers(t):
    out = [t.value] if t.op == "num" else []
    for a in t.args:
        out += _numbers(a)
    return out


def test_weights_to_constants_draws_each_weight_from_the_grammar():
    from evo_rules.operators.generate import weights_to_constants

    g = Grammar(features=("a", "b"), operators=("add", "mul"), constants=(-0.5, 3.0), template_share=0.0)
    rule = parse("(add (mul w x.a) (mul w x.b x.a))")
    seen = set()
    for seed in range(20):
        child = weights_to_constants(rule, g, np.random.default_rng(seed))
        assert child.params == ()
        assert set(_numbers(child.term)) <= {-0.5, 3.0}
        assert child.key == weights_to_constants(rule, g, np.random.default_rng(seed)).key
        seen.add(child.text)
    assert len(seen) == 4  # two weights, two constants each
    no_weights = parse("(mul 2 x.a)")
    assert weights_to_constants(no_weights, g, np.random.default_rng(0)) is no_weights


def test_a_blackbox_search_draws_and_varies_rules_without_weights():
    from evo_rules import app
    from evo_rules.config import from_dict

    config = from_dict({"grammar": {"constants": [-1.0, 0.5, 2.0]}})
    var = app.variation(config, ("g", "u", "t"), blackbox=True)
    rng = np.random.default_rng(3)
    rules = [var.random_rule(rng) for _ in range(30)]
    for name, (parents, fn) in var.operators.items():
        for _ in range(10):
            out = fn(*rng.choice(rules, parents, replace=False), rng)
            rules += list(out) if parents == 2 else [out]
    assert all(r.params == () for r in rules)
    plain = app.variation(config, ("g", "u", "t"))
    assert any(plain.random_rule(rng).params for _ in range(30))  # fitted tasks keep their weights
