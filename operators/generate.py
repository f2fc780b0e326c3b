"""Random rules from a grammar: ramped half-and-half trees and the seed's template.

All randomness comes from the `numpy.random.Generator` passed in; the same generator state
gives the same rule. Weights are anonymous (`w`), so each weight leaf is a parameter of its own
until the canonical form names them w0..wk.
"""

from __future__ import annotations

import math

from evo_rules.rule import Rule
from evo_rules.terms import ARITY, NARY, Term, feature, num, weight

from .grammar import TEMPLATE_OPERATORS, Grammar
from .positions import choose
from .template import sum_of, template

ATTEMPTS = 20
# leaf kinds: feature, weight, constant
P_FEATURE_LEAF = 0.5
P_WEIGHT_LEAF = 0.3
# a grow node is a leaf with this probability (where an operator would fit)
P_GROW_LEAF = 0.35
# an n-ary node gets 3 children (else 2) with this probability
P_THREE_ARGS = 0.25
# feature terms: (mul w x.f) or, with this probability, (mul w x.f x.g)
P_PAIR_TERM = 0.35
# a feature damped by another, (mul w x.f (exp (mul w x.g))): evidence that fades with age etc.
P_DAMPED_TERM = 0.15
# share of template rules that are the soft-minimum form rather than the seed's eml template
P_SOFTMIN = 0.4
MAX_SIGNAL_TERMS = 3
MAX_DAMPING_TERMS = 2
P_DAMPING_BIAS = 0.5
# a new subtree (subtree mutation) is a weighted feature term with this probability
P_FEATURE_TERM_SUBTREE = 0.3


# ------------------------------------------------------------------ leaves and feature terms


def random_feature(g: Grammar, rng) -> Term:
    return feature(pick_feature(g, rng))


def pick_feature(g: Grammar, rng, exclude: str | None = None, partner: str | None = None) -> str:
    """A feature name other than `exclude`: uniform, or in proportion to `g.feature_weights`,
    raised for the pair-weight partners of `partner`. The uniform draw is the one this module
    always made (results of existing runs reproduce)."""
    boost = g.partners(partner) if partner is not None else {}
    if not g.feature_weights and not boost:
        if exclude is None:
            return choose(rng, g.features)
        return choose(rng, [x for x in g.features if x != exclude])
    base = g.feature_weights or (1.0,) * len(g.features)
    total = math.fsum(base)
    # one uniform number against the cumulative weights (the excluded feature's share removed)
    weights = [0.0 if f == exclude else w + total * boost.get(f, 0.0)
               for f, w in zip(g.features, base)]
    u = rng.random() * math.fsum(weights)
    acc = 0.0
    for f, w in zip(g.features, weights):
        acc += w
        if u < acc:
            return f
    return next(f for f, w in zip(reversed(g.features), reversed(weights)) if w > 0)  # rounding


def random_leaf(g: Grammar, rng) -> Term:
    u = rng.random()
    if u < P_FEATURE_LEAF or (not g.constants and u >= P_FEATURE_LEAF + P_WEIGHT_LEAF):
        return random_feature(g, rng)
    if u < P_FEATURE_LEAF + P_WEIGHT_LEAF:
        return weight()
    return num(choose(rng, g.constants))


def feature_term(g: Grammar, rng) -> Term:
    """`(mul w x.f)`, `(mul w x.f x.g)` for two different features, or (with `exp` in the
    grammar) the damped `(mul w x.f (exp (mul w x.g)))`. Needs `mul`."""
    f = pick_feature(g, rng)
    if len(g.features) > 1 and "exp" in g.operators and rng.random() < P_DAMPED_TERM:
        h = pick_feature(g, rng, exclude=f, partner=f)
        return Term("mul", (weight(), feature(f), Term("exp", (Term("mul", (weight(), feature(h))),))))
    if len(g.features) > 1 and rng.random() < P_PAIR_TERM:
        if g.feature_weights or g.partners(f):
            h = pick_feature(g, rng, exclude=f, partner=f)
        else:  # the uniform draw of earlier versions, kept so existing runs reproduce
            i = int(rng.integers(len(g.features) - 1))
            h = g.features[i if g.features[i] != f else len(g.features) - 1]
        return Term("mul", (weight(), feature(f), feature(h)))
    return Term("mul", (weight(), feature(f)))


# ------------------------------------------------------------------ trees


def _op_choices(g: Grammar, depth_left: int, budget: int) -> tuple[str, ...]:
    if depth_left < 2 or budget < 2:
        return ()
    if budget < 3:
        return tuple(o for o in g.operators if ARITY.get(o) == 1)
    return g.operators


def _tree(g: Grammar, rng, depth_left: int, budget: int, full: bool, root: bool) -> tuple[Term, int]:
    """(term, its size) with size <= budget and depth <= depth_left."""
    ops = _op_choices(g, depth_left, budget)
    if not ops or (not full and not root and rng.random() < P_GROW_LEAF):
        return random_leaf(g, rng), 1
    op = choose(rng, ops)
    if op in NARY:
        k = 3 if budget >= 4 and rng.random() < P_THREE_ARGS else 2
    else:
        k = ARITY[op]
    remaining = budget - 1
    args = []
    used = 1
    for i in range(k):
        share = remaining // (k - i)  # balanced: leftovers flow to later children
        a, s = _tree(g, rng, depth_left - 1, share, full, False)
        args.append(a)
        remaining -= s
        used += s
    return Term(op, tuple(args)), used


def ramp_depths(g: Grammar) -> tuple[int, int]:
    """Depth range of ramped half-and-half: 2 .. min(max_depth, 2 + log2(max_size))."""
    hi = min(g.max_depth, 2 + int(math.log2(max(g.max_size, 1))))
    return min(2, hi), hi


def ramped_tree(g: Grammar, rng) -> Term:
    """One ramped half-and-half tree (raw), within max_size and max_depth."""
    lo, hi = ramp_depths(g)
    d = int(rng.integers(lo, hi + 1))
    full = rng.random() < 0.5
    return _tree(g, rng, d, g.max_size, full, True)[0]


def random_subtree(g: Grammar, rng, max_depth: int, max_size: int) -> Term:
    """A raw subtree for subtree mutation, within the given room (both >= 1)."""
    if ("mul" in g.operators and max_depth >= 2 and max_size >= 4
            and rng.random() < P_FEATURE_TERM_SUBTREE):
        return feature_term(g, rng)  # size 3 or 4, depth 2
    d = int(rng.integers(1, min(max_depth, 4) + 1))
    return _tree(g, rng, d, max_size, rng.random() < 0.5, False)[0]


def template_term(g: Grammar, rng) -> Term:
    """The seed's (eml signal (add 1 (exp damping))): 1-3 signal terms, 1-2 damping terms
    (+ a bias); or, with probability P_SOFTMIN, the soft minimum (eml 0 (add (exp s1) (exp s2)))
    = 1 - log(e^s1 + e^s2) of two weighted sums: an AND of pieces of evidence."""
    if rng.random() < P_SOFTMIN:
        parts = [sum_of(_distinct_terms(g, rng, 1 + int(rng.integers(2)))) for _ in range(2)]
        return Term("eml", (num(0.0), Term("add", tuple(Term("exp", (p,)) for p in parts))))
    signal = _distinct_terms(g, rng, 1 + int(rng.integers(MAX_SIGNAL_TERMS)))
    damping = _distinct_terms(g, rng, 1 + int(rng.integers(MAX_DAMPING_TERMS)))
    if rng.random() < P_DAMPING_BIAS:
        damping.append(weight())
    return template(signal, damping)


def _distinct_terms(g: Grammar, rng, k: int) -> list[Term]:
    out: list[Term] = []
    for _ in range(2 * k):
        t = feature_term(g, rng)
        if t not in out:
            out.append(t)
            if len(out) == k:
                break
    return out


def _raw_size(t: Term) -> int:
    return 1 + sum(_raw_size(a) for a in t.args)


# ------------------------------------------------------------------ rules


def random_rule(g: Grammar, rng, attempts: int = ATTEMPTS) -> Rule:
    """A canonical rule the grammar admits (see `Grammar.admits`).

    With probability `template_share` the seed's template, else a ramped half-and-half tree;
    `attempts` tries, then a minimal rule `(mul w x.f)` (or `x.f` when even that is too large).
    """
    use_template = g.template_share > 0 and rng.random() < g.template_share
    for i in range(attempts):
        if use_template and i < attempts // 2:
            t = template_term(g, rng)
            if _raw_size(t) > g.max_size:
                continue
        else:
            t = ramped_tree(g, rng)
        r = Rule(t)
        if g.admits(r):
            return r
    return minimal_rule(g, rng)


def minimal_rule(g: Grammar, rng) -> Rule:
    f = random_feature(g, rng)
    if "mul" in g.operators and g.max_size >= 3 and g.max_depth >= 2:
        return Rule(Term("mul", (weight(), f)))
    return Rule(f)


def random_population(g: Grammar, rng, n: int, unique: bool = True,
                      attempts_per_rule: int = 10) -> list[Rule]:
    """`n` random rules; with `unique`, distinct keys as far as `attempts_per_rule * n` draws
    allow (a small grammar may hold fewer than `n` distinct rules)."""
    if not unique:
        return [random_rule(g, rng) for _ in range(n)]
    out: list[Rule] = []
    seen: set[str] = set()
    for _ in range(attempts_per_rule * n):
        r = random_rule(g, rng)
        if r.key not in seen:
            seen.add(r.key)
            out.append(r)
            if len(out) == n:
                break
    return out


def weights_to_constants(rule: Rule, g: Grammar, rng) -> Rule:
    """The rule with each weight replaced by a grammar constant, one draw per weight in
    first-occurrence order. For black-box tasks, which fit no weights: there the numbers of a
    rule are chosen by the search (and changed by point mutation), not fixed at 1.0."""
    names = rule.params
    if not names or not g.constants:
        return rule
    values = {name: num(choose(rng, g.constants)) for name in names}

    def bind(t: Term) -> Term:
        if t.op == "w":
            return values["w" + str(t.value)]
        return Term(t.op, tuple(bind(a) for a in t.args), t.value) if t.args else t

    return Rule(bind(rule.term))


__all__ = [
    "ATTEMPTS", "TEMPLATE_OPERATORS", "feature_term", "minimal_rule", "pick_feature",
    "ramped_tree", "random_feature", "random_leaf", "random_population", "random_rule", "random_subtree",
    "template_term", "weights_to_constants",
]
