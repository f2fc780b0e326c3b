"""Infix export: the text is the same function as the rule (evaluated by plain NumPy)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import evo_rules
from evo_rules.rule import Rule

import test_export as export_checks
from strategies import FEATURES, terms


def _eval_infix(text: str, X: dict) -> np.ndarray:
    env = {"exp": np.exp, "log": np.log, "softplus": lambda z: np.logaddexp(0.0, z), **X}
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(eval(text, {"__builtins__": {}}, env), dtype=float), (len(X["a"]),))


@settings(max_examples=150, deadline=None)
@given(terms(max_leaves=10), st.integers(0, 2**32 - 1))
def test_infix_with_weights_evaluates_like_the_rule(term, seed):
    rule = Rule(term)
    rng = np.random.default_rng(seed)
    X = {f: rng.uniform(0.1, 2.0, 16) for f in FEATURES}
    w = rng.uniform(-1.5, 1.5, len(rule.params)).round(3)  # 4 significant digits print exactly
    want = np.asarray(rule.evaluate(X, w), dtype=float)
    got = _eval_infix(rule.to_infix(w), X)
    # where the rule is finite and well-conditioned: at log(exp(log a) - log(exp a)) the few ulp
    # by which NumPy's exp/log and the kernel's differ decide between -inf and a finite value
    ok = export_checks._conditioned(rule, X, w) & (np.abs(want) < 1e12) & export_checks._no_cancellation(rule, X, w)
    assert np.allclose(got[ok], want[ok], rtol=1e-6, atol=1e-9)


def test_infix_reads_as_math():
    r = evo_rules.parse("(eml (add (mul w x.color) w) (+ 1 (exp (* w x.stale))))")
    assert r.to_infix() == "exp(w0 * color + w1) - softplus(w2 * stale)"
    assert r.to_infix([1.5, -0.25, 2]) == "exp(1.5 * color - 0.25) - softplus(2 * stale)"
