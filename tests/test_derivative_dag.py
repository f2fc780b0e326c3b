"""Gradients share subterms: their size grows linearly with the rule, and they stay correct."""

import numpy as np
import pytest

from evo_rules.rule import Rule
from evo_rules.terms import Term, dag_size, feature, weight, weights_in


def eml_chain(n: int, left: bool = True) -> Term:
    """(eml (eml ... (eml x.a w) ...) w) n deep (left) or (eml w (eml w ... x.a)) (right)."""
    t = feature("a")
    for _ in range(n):
        t = Term("eml", (t, weight())) if left else Term("eml", (weight(), t))
    return t


def softplus_chain(n: int) -> Term:
    """(eml (mul w t) (add 1 (exp (mul w x.b)))) and (eml (mul w x.b) (add 1 (exp (mul w t))))
    alternately: the chain runs through products and through the softplus."""
    t = feature("a")
    for i in range(n):
        inner, side = (t, feature("b")) if i % 2 == 0 else (feature("b"), t)
        t = Term("eml", (Term("mul", (weight(), inner)),
                         Term("add", (Term("num", (), 1.0),
                                      Term("exp", (Term("mul", (weight(), side)),))))))
    return t


def gradient_dag_size(r: Rule) -> int:
    """Distinct nodes of all gradients together (a node shared by several counts once)."""
    return dag_size(Term("add", tuple(r.gradients.values())))


@pytest.mark.parametrize("build", [lambda n: eml_chain(n, True), lambda n: eml_chain(n, False),
                                   softplus_chain], ids=["eml-left", "eml-right", "softplus"])
def test_gradient_size_grows_linearly(build):
    rules = {n: Rule(build(n)) for n in (10, 20, 40)}
    for n, r in rules.items():
        assert len(r.params) >= n  # a weight per level: n gradients, not one
    dag = {n: gradient_dag_size(r) for n, r in rules.items()}
    prog = {n: len(r.program) for n, r in rules.items()}
    assert dag[40] / dag[20] < 2.5 and dag[20] / dag[10] < 2.5
    assert prog[40] / prog[20] < 2.5 and prog[20] / prog[10] < 2.5


def test_long_product_gradients_are_linear():
    # d/dw_i of a product of k factors: shared prefix and suffix products, O(k) in all
    def product(k):
        return Term("mul", tuple(Term("exp", (Term("mul", (weight(str(i)), feature("a"))),))
                                 for i in range(k)))
    sizes = {k: len(Rule(product(k)).program) for k in (50, 100, 200)}
    assert sizes[200] / sizes[100] < 2.5 and sizes[100] / sizes[50] < 2.5


def central_differences(r: Rule, X, w, h=1e-6):
    cols = []
    for k in range(len(w)):
        wp, wm = w.copy(), w.copy()
        wp[k] += h
        wm[k] -= h
        cols.append((r.evaluate(X, wp) - r.evaluate(X, wm)) / (2 * h))
    return np.array(cols).T


PRODUCT_6 = Term("mul", tuple(Term("exp", (Term("mul", (weight(str(i)), feature("a"))),))
                             for i in range(6)))


# data and weights near a fixed point of each chain, so 12 nested exps stay finite
@pytest.mark.parametrize("term, a, w", [
    (eml_chain(12, True), (-0.1, 0.1), (np.e - 0.02, np.e + 0.02)),  # t = exp(t) - log(e): 0
    (eml_chain(12, False), (0.9, 1.1), (-0.05, 0.05)),  # t = exp(0) - log(t): 1
    (softplus_chain(6), (0.2, 0.6), (-0.5, 0.5)),
    (PRODUCT_6, (0.2, 0.6), (-1.0, 1.0)),
], ids=["eml-left", "eml-right", "softplus", "product-6"])
def test_shared_gradients_match_finite_differences(term, a, w):
    r = Rule(term)
    rng = np.random.default_rng(0)
    X = {"a": rng.uniform(*a, 16), "b": rng.uniform(0.2, 0.6, 16)}
    w = rng.uniform(*w, len(r.params))
    s, J = r.jacobian(X, w)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(J))
    fd = central_differences(r, X, w)
    assert np.allclose(J, fd, rtol=1e-4, atol=1e-6 * (1 + np.abs(s).max()))


def test_gradient_terms_are_named_by_params_and_hold_only_rule_weights():
    r = Rule(softplus_chain(3))
    assert tuple(r.gradients) == r.params
    for g in r.gradients.values():
        assert set(weights_in(g)) <= set(r.params)
        assert isinstance(g.text, str)


def test_terms_deeper_than_the_recursion_limit_compile_to_the_same_program(monkeypatch):
    """The compiler walks recursively and falls back to its iterative walk on a term deeper than
    Python's recursion limit (gradient DAGs can be deeper than any rule): same program."""
    import sys

    from evo_rules import program
    from evo_rules.program import compile_terms

    fallbacks = []
    iterative = program._Builder._term_iterative

    def counted(self, t):
        fallbacks.append(t)
        return iterative(self, t)

    monkeypatch.setattr(program._Builder, "_term_iterative", counted)
    r = Rule(softplus_chain(30))
    grads = [r.gradients[p] for p in r.params]
    normal = compile_terms(r.term, grads, r.params, r.features)
    assert not fallbacks
    depth = len(__import__("inspect").stack())
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 40)  # far less than the gradient terms' depth
    try:
        fallback = compile_terms(r.term, grads, r.params, r.features)
    finally:
        sys.setrecursionlimit(old)
    assert fallbacks  # the limit was hit
    for field in ("code", "arg_a", "arg_b", "consts", "outputs"):
        assert np.array_equal(getattr(normal, field), getattr(fallback, field)), field
