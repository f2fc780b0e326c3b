"""Any rule text either parses or gets a one-line ParseError with a position (fast fuzzing; the
long run is benchmarks/fuzz_rules.py)."""

import math
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import ParseError, parse
from evo_rules.parse import parse_term
from evo_rules.rule import Rule
from evo_rules.simplify import canonical
from evo_rules.terms import MAX_DEPTH, MAX_SIZE, MAX_TEXT, Term, depth, feature, num, to_text
from strategies import terms

TOKENS = ["(", ")", "(", ")", "add", "mul", "exp", "log", "eml", "+", "*", "-", "w", "w1", "w_2",
          "x.a", "x.b", "x.", "x.1", "1", "-2.5", "0", ".5", "1e308", "-1e308", "1e309", "1e-320",
          "nan", "inf", "foo", "é", "\u2028", "\x00", "٣", "((", "))", "1_0", "x.a)"]
SPACES = [" ", "  ", "\n", "\t", "", "\r\n", "\u00a0"]


def outcome(text):
    """The parsed rule, or the ParseError; anything else propagates and fails the test."""
    try:
        return parse(text)
    except ParseError as e:
        msg = str(e)
        assert len(msg.splitlines()) == 1, msg
        assert f"at position {e.pos}" in msg and 0 <= e.pos <= len(text)
        return e


def check_rule(r):
    """A parsed rule round-trips through its canonical text, and its gradients compile."""
    assert isinstance(r, Rule)
    again = parse(r.text)
    assert again.key == r.key and again.text == r.text
    assert list(r.gradients) == list(r.params)
    X = {f: np.linspace(0.5, 2.0, 4) for f in {"a", *r.features}}
    with np.errstate(all="ignore"):
        s, J = r.jacobian(X, np.full(len(r.params), 0.5))
    assert s.shape == (4,) and J.shape == (4, len(r.params))


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_unicode_text(text):
    r = outcome(text)
    if isinstance(r, Rule):
        check_rule(r)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(SPACES)), max_size=60))
def test_token_soup(parts):
    r = outcome("".join(t + s for t, s in parts))
    if isinstance(r, Rule):
        check_rule(r)


@settings(max_examples=200)
@given(terms(), st.data())
def test_mutated_valid_text(t, data):
    text = to_text(t)
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    i = data.draw(st.integers(0, len(text)))
    if kind == "truncate":
        text = text[:i]
    elif kind == "flip":
        b = bytearray(text.encode())
        j = min(i, len(b) - 1)
        b[j] ^= 1 << data.draw(st.integers(0, 7))
        text = b.decode("utf-8", errors="replace")
    elif kind == "insert":
        text = text[:i] + data.draw(st.sampled_from(TOKENS)) + text[i:]
    else:
        text = text[:i] + text[i + 1:]
    r = outcome(text)
    if isinstance(r, Rule):
        check_rule(r)


NESTS = {
    "exp": ("(exp ", ")"), "log": ("(log ", ")"), "eml-left": ("(eml ", " w)"),
    "eml-right": ("(eml w ", ")"), "add": ("(add x.a ", ")"), "mul": ("(mul w ", ")"),
    "explog": ("(+ 1 (log (exp ", ")))"),
}


@settings(max_examples=60)
@given(st.sampled_from(sorted(NESTS)), st.integers(1, 3000), st.booleans())
def test_deep_nesting_parses_or_names_the_depth_limit(shape, n, closed):
    head, tail = NESTS[shape]
    text = head * n + "x.a" + (tail * n if closed else "")
    r = outcome(text)
    if isinstance(r, Rule):
        assert closed and depth(parse_term(text)) <= MAX_DEPTH
        check_rule(r)
    else:
        # a long enough nesting is refused for its length before its depth is read
        assert "MAX_DEPTH" in str(r) or ("MAX_TEXT" in str(r) and len(text) > MAX_TEXT) or not closed


@pytest.mark.parametrize("shape", sorted(NESTS))
def test_deepest_rules_allowed_are_safe_on_a_deep_stack(shape):
    # every pass at the depth limit, called with most of the recursion limit already used
    head, tail = NESTS[shape]
    n = 1
    while True:  # the deepest nesting of this shape that is accepted
        try:
            parse(head * (n + 1) + "x.a" + tail * (n + 1))
        except ParseError:
            break
        n += 1
    text = head * n + "x.a" + tail * n

    def deep(k):
        if k:
            return deep(k - 1)
        r = parse(text)
        check_rule(r)
        r.to_infix()
        return [g.text for g in r.gradients.values()]

    deep(sys.getrecursionlimit() - 450)


def test_limits_are_named_with_positions():
    with pytest.raises(ParseError, match="MAX_DEPTH") as err:
        parse("(exp " * 100 + "x.a" + ")" * 100)
    assert err.value.pos == 5 * (MAX_DEPTH - 1)  # the '(' that opens level MAX_DEPTH
    with pytest.raises(ParseError, match="MAX_SIZE"):
        parse("(add" + " x.a" * MAX_SIZE + ")")
    with pytest.raises(ParseError, match="MAX_TEXT") as err:
        parse("(add x.a " + " " * MAX_TEXT + ")")
    assert err.value.pos == MAX_TEXT
    parse("(add" + " x.a" * (MAX_SIZE - 1) + ")")  # the largest rule is accepted


@settings(max_examples=200)
@given(st.sampled_from(["add", "mul"]),
       st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5),
       st.booleans())
def test_huge_constants_overflow_as_parse_errors(op, values, with_feature):
    text = f"({op} {' '.join(repr(v) for v in values)}{' x.a' if with_feature else ''})"
    r = outcome(text)
    if op == "add":  # the exact sum, rounded once
        try:
            overflows = len(values) > 1 and not math.isfinite(float(sum(map(Fraction, values))))
        except OverflowError:
            overflows = True
    else:  # the product in ascending order, as the canonical form folds it
        overflows = len(values) > 1 and not math.isfinite(math.prod(sorted(values)))
    assert isinstance(r, ParseError) == overflows
    if overflows:
        assert "constant overflows" in str(r)
    else:
        check_rule(r)


def test_overflow_is_a_clear_error_for_typed_text():
    with pytest.raises(ParseError, match=r"constant overflows.*'\(add 1e308 1e308\)'") as err:
        parse("(mul w (add 1e308 1e308))")
    assert err.value.pos == 7
    with pytest.raises(ParseError, match="simplified rule"):
        parse("(add x.a (exp 709.7) (exp 709.7))")  # two finite folds whose sum overflows


def test_overflow_in_a_built_rule_never_raises():
    # rules made by mutation go through Rule(term), not text: an overflowing fold stays
    # unfolded and the rule evaluates non-finite (an invalid fitness), never an exception
    big = num(1e308)
    for t in (Term("add", (big, big, feature("a"))), Term("mul", (big, big, feature("a"))),
              Term("exp", (Term("exp", (Term("exp", (num(3.0),)),)),))):
        r = Rule(t)
        assert canonical(r.term) == r.term
        with np.errstate(all="ignore"):
            s = r.evaluate({"a": np.ones(3)}, np.ones(len(r.params)))
        assert not np.all(np.isfinite(s))
        # the engine re-reads its own canonical texts without the constant check
        assert parse(r.text, check_constants=False).key == r.key
