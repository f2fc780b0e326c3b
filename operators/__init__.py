"""Variation over canonical rules: random generation from a grammar, mutation, crossover,
grammar sweeps over the seed's template.

Every operator is a pure function of (rules, grammar, rng) with `rng` a
`numpy.random.Generator`; it returns canonical `Rule`s the grammar admits, or the parent
unchanged when no bounded try produced one. `OPERATORS` maps a name to the operator;
`N_PARENTS` says how many rules it takes (mutations: one rule in, one out; crossover: two in,
a pair out).
"""

from .crossover import subtree_crossover
from .generate import random_population, random_rule
from .grammar import Grammar
from .mutate import hoist, insert, point_mutation, shrink, subtree_mutation
from .sweep import Sweep, enumerate_rules, expand, term_vocabulary

OPERATORS = {
    "subtree": subtree_mutation,
    "point": point_mutation,
    "hoist": hoist,
    "shrink": shrink,
    "insert": insert,
    "crossover": subtree_crossover,
}
N_PARENTS = {"subtree": 1, "point": 1, "hoist": 1, "shrink": 1, "insert": 1, "crossover": 2}

__all__ = [
    "Grammar", "N_PARENTS", "OPERATORS", "Sweep", "enumerate_rules", "expand", "hoist", "insert",
    "point_mutation", "random_population", "random_rule", "shrink", "subtree_crossover",
    "subtree_mutation", "term_vocabulary",
]
