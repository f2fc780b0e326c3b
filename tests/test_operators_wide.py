"""The wider operator set for symbolic regression (terms.WIDE: sin, cos, sqrt, abs, sign, div,
pow): term language, gradients, kernel, canonical form, export, grammar, config and a search.

The property tests of the default operators (test_kernels, test_terms, test_export,
test_operators) run here again, unchanged, on terms that hold the wider operators.
"""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import test_export as export_checks
import test_kernels as kernel_checks
import test_operators as operator_checks
import test_terms as term_checks
from evo_rules import app, parse
from evo_rules.config import ConfigError, from_dict
from evo_rules.fitting import fit
from evo_rules.reference import tree_eval
from evo_rules.terms import (BINARY, DEFAULT_OPERATORS, NARY, OPERATORS, UNARY, WIDE, Term,
                             to_text, walk)
from evo_rules.validate import checked_task
from evo_rules.operators import N_PARENTS, Grammar, random_rule
from evo_rules.operators import OPERATORS as VARIATION
from strategies import FEATURES, leaves

SEEDS = st.integers(0, 2**32 - 1)


def _unary(ops, arg):
    return st.builds(lambda op, a: Term(op, (a,)), st.sampled_from(ops), arg)


def _binary(ops, left, right):
    return st.builds(lambda op, a, b: Term(op, (a, b)), st.sampled_from(ops), left, right)


def wide_terms(max_leaves: int = 8):
    """Random raw terms over every operator, with one of the wider set at the root or one level
    below it (and any operator anywhere else)."""
    def extend(children):
        return st.one_of(
            st.builds(lambda op, a: Term(op, tuple(a)), st.sampled_from(NARY),
                      st.lists(children, min_size=2, max_size=3)),
            _unary(UNARY, children), _binary(BINARY, children, children))
    any_term = st.recursive(leaves(), extend, max_leaves=max_leaves)
    wide = st.one_of(_unary([o for o in UNARY if o in WIDE], any_term),
                     _binary([o for o in BINARY if o in WIDE], any_term, any_term))
    return st.one_of(wide, _unary(UNARY, wide), _binary(NARY + BINARY, wide, any_term),
                     _binary(NARY + BINARY, any_term, wide))


# ------------------------------------------------------------------ the default stays as it was


def test_the_default_operators_are_the_five_of_eml_rules():
    assert DEFAULT_OPERATORS == ("add", "mul", "exp", "log", "eml")
    assert OPERATORS[:5] == DEFAULT_OPERATORS and set(WIDE) == set(OPERATORS[5:])
    assert Grammar(features=("a",)).operators == DEFAULT_OPERATORS
    assert from_dict({}).grammar.operators == list(DEFAULT_OPERATORS)
    # a grammar lists its operators in the term layer's order, whatever order it was given
    g = Grammar(features=("a",), operators=("pow", "sin", "mul", "add"), template_share=0.0)
    assert g.operators == ("add", "mul", "sin", "pow")


# ------------------------------------------------------------------ text, canonical form


@given(wide_terms())
def test_raw_print_parse_round_trip(t):
    term_checks.test_raw_print_parse_round_trip.hypothesis.inner_test(t)


@given(wide_terms())
def test_canonical_text_is_a_fixpoint(t):
    term_checks.test_canonical_text_is_a_fixpoint.hypothesis.inner_test(t)


@settings(max_examples=150)
@given(wide_terms(), st.integers(0, 1000))
def test_simplification_is_sound(t, seed):
    term_checks.test_simplification_is_sound.hypothesis.inner_test(t, seed)


@pytest.mark.parametrize("text, folded", [
    ("(add x.a (sin 0))", "x.a"),
    ("(mul x.a (cos 0))", "x.a"),
    ("(mul x.a (pow 2 3))", "(mul 8 x.a)"),
    ("(add x.a (div 3 4) (sqrt 4) (abs -1) (sign -5))", "(add 2.75 x.a)"),
    # outside the domain nothing folds: the rule stays, and evaluates to NaN / inf (invalid)
    ("(add x.a (sqrt -1))", "(add (sqrt -1) x.a)"),
    ("(add x.a (div 1 0))", "(add (div 1 0) x.a)"),
    ("(add x.a (pow -8 0.5))", "(add (pow -8 0.5) x.a)"),
    ("(add x.a (pow 0 -1))", "(add (pow 0 -1) x.a)"),
])
def test_numbers_fold_inside_the_domain_only(text, folded):
    assert parse(text).text == parse(folded).text == folded


def test_parse_knows_the_wider_operators():
    assert parse("(pow x.a 2)").text == "(pow x.a 2)"  # pow is u^v: no rewriting to a product
    with pytest.raises(ValueError, match="div takes 2 argument"):
        parse("(div x.a)")
    with pytest.raises(ValueError, match="unknown operator 'tan'.*sin, cos, sqrt, abs, sign, div, pow"):
        parse("(tan x.a)")


# ------------------------------------------------------------------ kernel and gradients


@settings(max_examples=150)
@given(wide_terms(), st.integers(0, 10_000))
def test_kernel_matches_tree_walk(t, seed):
    kernel_checks.test_kernel_matches_tree_walk.hypothesis.inner_test(t, seed)


@settings(max_examples=150)
@given(wide_terms(), st.integers(0, 10_000))
def test_jacobian_matches_central_differences(t, seed):
    kernel_checks.test_jacobian_matches_central_differences.hypothesis.inner_test(t, seed)


# one rule per operator with weights inside it (canonical texts: params in the order written),
# with weights where every row is in the domain and (abs, sign) away from the kink
GRADIENT_CASES = {
    "sin": ("(sin (add (mul w0 x.a) w1))", [1.7, 0.3]),
    "cos": ("(cos (add (mul w0 x.a) w1))", [1.7, 0.3]),
    "sqrt": ("(sqrt (add (mul w0 x.a) w1))", [0.7, 0.5]),
    "abs": ("(abs (add (mul w0 x.a) w1))", [1.0, -1.0]),
    "sign": ("(mul (sign (add (mul w0 x.a) w1)) w2)", [1.0, -1.0, 2.5]),
    "div": ("(div (add w0 x.a) (add w1 x.b))", [-0.4, 0.5]),
    "pow": ("(pow (mul w0 x.a) w1)", [0.8, 1.7]),
    "pow-integer": ("(pow (add w0 x.a) 3)", [-1.0]),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_gradient_of_each_operator_matches_finite_differences(name):
    text, w = GRADIENT_CASES[name]
    r = parse(text)
    assert r.text == text
    w = np.array(w)
    X = kernel_checks.data(7)
    op = r.term.args[0] if name == "sign" else r.term
    arg = tree_eval(op.args[0], X, dict(zip(r.params, w)), len(X["a"]))
    away = np.abs(arg) > 1e-3  # abs and sign have a kink at 0
    assert away.sum() > 200
    s, J = r.jacobian(X, w)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(J))
    for k in range(len(w)):
        h = 1e-6
        up, down = w.copy(), w.copy()
        up[k] += h
        down[k] -= h
        fd = (r.evaluate(X, up) - r.evaluate(X, down)) / (2 * h)
        assert np.allclose(J[away, k], fd[away], rtol=1e-6, atol=1e-7), (name, k)
    if name == "sign":  # nothing flows through sign: a weight inside it has gradient 0
        assert np.all(J[:, :2] == 0.0) and np.array_equal(J[:, 2], np.sign(arg))


@pytest.mark.parametrize("text, column", [
    ("(mul w (sqrt x.a))", [4.0, 1.0, -1.0]),  # sqrt of a negative
    ("(mul w (div 1 x.a))", [4.0, 1.0, 0.0]),  # division by 0
    ("(mul w (pow x.a 0.5))", [4.0, 1.0, -1.0]),  # a negative base, a real exponent
    ("(mul w (log x.a))", [4.0, 1.0, 0.0]),  # the convention these follow: log of 0
])
def test_a_rule_undefined_on_a_training_row_is_invalid(text, column):
    r = parse(text)
    X = {"a": np.array(column * 4)}
    y = np.arange(12.0)
    assert not fit(r, X, y).valid
    assert fit(r, {"a": np.abs(X["a"]) + 1.0}, y).valid  # in the domain: a valid fit


# ------------------------------------------------------------------ export


@settings(max_examples=150, deadline=None)
@given(wide_terms(), SEEDS)
def test_callable_agrees_with_the_engine_where_finite(term, seed):
    export_checks.test_callable_agrees_with_the_engine_where_finite.hypothesis.inner_test(term, seed)


@settings(max_examples=30, deadline=None)
@given(wide_terms(max_leaves=6), SEEDS)
def test_sympy_and_latex_describe_the_same_function(term, seed):
    export_checks.test_sympy_and_latex_describe_the_same_function.hypothesis.inner_test(term, seed)


_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?(?:e[-+]?\d+)?)")


def _eval_infix(text: str, X: dict) -> np.ndarray:
    """The infix text as Python: u^v is u ** v (nothing else prints ^), and numbers are NumPy
    floats, so 0^(-1), 1 / 0 and (-8)^0.5 give inf/NaN as in the engine, not Python's errors."""
    env = {"exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "sqrt": np.sqrt,
           "abs": np.abs, "sign": np.sign, "softplus": lambda z: np.logaddexp(0.0, z),
           "F": np.float64, **X}
    code = _NUMBER.sub(r"F(\1)", text).replace("^", "**")
    with np.errstate(all="ignore"):
        value = eval(code, {"__builtins__": {}}, env)
    return np.broadcast_to(np.asarray(value, dtype=float), (len(X["a"]),))


@settings(max_examples=150, deadline=None)
@given(wide_terms(), SEEDS)
def test_infix_with_weights_evaluates_like_the_rule(term, seed):
    rule = parse(to_text(term))
    rng = np.random.default_rng(seed)
    X = {f: rng.uniform(0.1, 2.0, 16) for f in FEATURES}
    w = rng.uniform(-1.5, 1.5, len(rule.params)).round(3)  # 4 significant digits print exactly
    want = rule.evaluate(X, w)
    got = _eval_infix(rule.to_infix(w), X)
    ok = export_checks._conditioned(rule, X, w) & (np.abs(want) < 1e12) & export_checks._no_cancellation(rule, X, w)
    assert np.allclose(got[ok], want[ok], rtol=1e-6, atol=1e-9)


def test_wide_rules_read_as_math():
    r = parse("(add (mul w (sin x.a)) (div x.b (pow x.c 2)) (sqrt (abs x.a)))")
    assert r.to_infix() == "b / c^2 + sin(a) * w0 + sqrt(abs(a))"
    assert r.to_infix([-2]) == "b / c^2 + sin(a) * (-2) + sqrt(abs(a))"
    assert r.to_latex([-2]) == ("\\frac{\\mathit{b}}{{\\mathit{c}}^{2}} + "
                                "\\sin\\left(\\mathit{a}\\right) \\cdot \\left(-2\\right) + "
                                "\\sqrt{\\left|\\mathit{a}\\right|}")
    # a power's base and exponent are parenthesized unless atoms
    assert parse("(pow (add x.a 1) (mul -1 x.b))").to_infix() == "(1 + a)^((-1) * b)"


# ------------------------------------------------------------------ grammar and variation


@st.composite
def wide_grammars(draw):
    """Grammars over any operators, at least one of them from the wider set (no template)."""
    features = draw(st.lists(st.sampled_from(operator_checks.NAMES), min_size=1, max_size=4, unique=True))
    ops = draw(st.lists(st.sampled_from(OPERATORS), min_size=0, max_size=7, unique=True))
    extra = draw(st.sampled_from(WIDE))
    return Grammar(features=tuple(features), operators=tuple(dict.fromkeys([*ops, extra])),
                   max_size=draw(st.integers(1, 25)), max_depth=draw(st.integers(1, 8)),
                   template_share=0.0, constants=(1.0, 2.0))


def _ops_of(rule) -> set[str]:
    return {n.op for n in walk(rule.term) if not n.is_leaf}


@settings(max_examples=80)
@given(wide_grammars(), SEEDS, st.sampled_from(sorted(VARIATION)))
def test_variation_is_admitted_canonical_deterministic(g, seed, name):
    operator_checks.test_operators_admitted_canonical_deterministic.hypothesis.inner_test(g, seed, name)


@settings(max_examples=60)
@given(wide_grammars(), SEEDS, st.sampled_from(sorted(VARIATION)))
def test_variation_uses_only_the_grammars_operators(g, seed, name):
    rng = np.random.default_rng(seed)
    ops = set(g.operators)
    # and what the canonical form rewrites to: eml(u, 1) = exp u, x + x = 2 x, e^u e^v = e^(u+v)
    rewrites = {"eml": "exp", "add": "mul", "exp": "add"}
    allowed = ops | {rewrites[o] for o in ops if o in rewrites}
    parents = [random_rule(g, rng) for _ in range(N_PARENTS[name])]
    for k in operator_checks.apply(name, parents, g, rng):
        assert _ops_of(k) <= allowed, (g.operators, k.text)


def test_every_wide_operator_is_generated_and_swapped_in():
    g = Grammar(features=("a", "b"), operators=OPERATORS[:2] + WIDE, template_share=0.0)
    rng = np.random.default_rng(3)
    pop = [random_rule(g, rng) for _ in range(300)]
    seen = set().union(*map(_ops_of, pop))
    assert set(WIDE) <= seen, set(WIDE) - seen
    swapped = set()
    for r in pop[:100]:
        swapped |= _ops_of(VARIATION["point"](r, g, rng)) - _ops_of(r)
    assert len(swapped & set(WIDE)) >= 4  # point mutation trades one operator for another


# ------------------------------------------------------------------ config and a search


def test_config_accepts_the_wider_operators_and_names_an_unknown_one():
    cfg = from_dict({"grammar": {"operators": ["add", "mul", "sin", "div"], "template_share": 0.0}})
    assert cfg.grammar.operators == ["add", "mul", "sin", "div"]
    with pytest.raises(ConfigError, match=r"\[grammar\]\.operators: unknown operator\(s\) \['tan'\].*sin"):
        from_dict({"grammar": {"operators": ["add", "tan"]}})


def test_config_without_the_template_operators_needs_template_share_zero():
    cfg = from_dict({"task": {"name": "and-match"}, "grammar": {"operators": ["add", "mul", "sin"]}},
                    source="wide.toml")
    with pytest.raises(ConfigError) as err:
        checked_task(cfg, lambda: pytest.fail("the task must not be built"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("wide.toml: [grammar].template_share: 0.5")
    assert "exp, eml" in msg and "template_share = 0" in msg


def _sine_csv(path, seed=0, n=240):
    rng = np.random.default_rng(seed)
    x, z = rng.uniform(-3.0, 3.0, n), rng.uniform(-1.0, 1.0, n)
    y = 2.0 * np.sin(1.5 * x) + rng.normal(0.0, 0.02, n)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["x", "z", "y"])
        out.writerows(zip(x, z, y))


def _winner_test_r2(csv_path, out, operators, template_share) -> tuple[float, str]:
    report = app.run_search({
        "run": {"seed": 3, "generations": 10, "population": 80},  # ~5 s per run
        "task": {"name": "regression", "settings": {"path": str(csv_path), "target": "y"}},
        "search": {"seed_reference": False},
        "grammar": {"operators": operators, "template_share": template_share, "max_size": 12},
        "fit": {"max_iter": 20}, "evaluation": {"backend": "serial"}, "rerun": {"seeds": 0},
    }, out=str(out), progress=False)
    win = report["winner"] or report["best"]
    return win["test_metrics"]["r2"], win["text"]


def test_a_search_with_sin_recovers_a_sine_the_default_set_cannot(tmp_path):
    data = tmp_path / "sine.csv"
    _sine_csv(data)
    wide, wide_rule = _winner_test_r2(data, tmp_path / "wide", ["add", "mul", "sin", "cos", "div"], 0.0)
    base, base_rule = _winner_test_r2(data, tmp_path / "base", list(DEFAULT_OPERATORS), 0.5)
    assert wide > 0.99, wide_rule  # y = 2 sin(1.5 x) + noise of sd 0.02: R^2 ~ 0.9998
    assert wide > base + 0.05, (wide_rule, base_rule, base)
    assert "sin" in wide_rule or "cos" in wide_rule
    assert math.isfinite(base)
