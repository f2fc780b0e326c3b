"""Variation over canonical rules: random generation from a grammar, mutation, crossover,
grammar sweeps over the seed's template.

Every operator is a pure function of (rules, grammar, rng) with `rng` a
`numpy.random.Generator`; it returns canonical `Rule`s the grammar admits, or the parent
unchanged when no bounded try produced one.

`VARIATION` is the one registry of variation operators: name -> `VariationOperator` (the
function and how many parents it takes: a mutation takes one rule and returns one, a crossover
takes two and returns a pair). A search draws each operator with its config weight: `[search]
NAME` for the built-in ones (crossover, subtree, point, hoist, shrink, insert),
`[search.operator_weights] NAME` for any other registered one (absent: 0, not drawn). Adding an
operator is one `register(name, fn, parents)` call: config validation
(`SearchSection.variation_weights`), `app.variation` and the population manager all read this
registry. `OPERATORS` (name -> function) and `N_PARENTS` (name -> parents)
are live views of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from .crossover import blend, subtree_crossover
from .generate import random_population, random_rule
from .grammar import Grammar
from .mutate import fade, hoist, insert, point_mutation, scale, shrink, subtree_mutation
from .sweep import Sweep, enumerate_rules, expand, term_vocabulary

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class VariationOperator:
    """`fn(rule, grammar, rng) -> Rule` (parents 1) or `fn(a, b, grammar, rng) -> (Rule, Rule)`
    (parents 2)."""

    fn: Callable
    parents: int = 1


VARIATION: dict[str, VariationOperator] = {}


def register(name: str, fn: Callable, parents: int = 1) -> VariationOperator:
    """Add variation operator `name` (see the module docstring); refuses a name already taken."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"variation operator name {name!r}: lower-case letters, digits and _, "
                         "starting with a letter (it is a config key)")
    if name in VARIATION:
        raise ValueError(f"variation operator {name!r} is already registered")
    if parents not in (1, 2):
        raise ValueError(f"variation operator {name!r}: parents must be 1 (a mutation) or 2 "
                         f"(a crossover), got {parents!r}")
    if not callable(fn):
        raise ValueError(f"variation operator {name!r}: {fn!r} is not a function")
    VARIATION[name] = op = VariationOperator(fn, parents)
    return op


# the order is the draw order of a search's operators: runs reproduce only if it stays
for _name, _fn, _parents in (("crossover", subtree_crossover, 2), ("subtree", subtree_mutation, 1),
                             ("point", point_mutation, 1), ("hoist", hoist, 1),
                             ("shrink", shrink, 1), ("insert", insert, 1)):
    register(_name, _fn, _parents)
# not drawn unless [search.operator_weights] scale is set (the optimizer track sets it)
register("scale", scale, 1)
# not drawn unless [search.operator_weights] blend is set (the optimizer track sets it)
register("blend", blend, 2)
# not drawn unless [search.operator_weights] fade is set (the optimizer track sets it)
register("fade", fade, 1)


class _View(Mapping):
    """A read-only view of one field of the registry's entries."""

    def __init__(self, attr: str):
        self._attr = attr

    def __getitem__(self, name: str):
        return getattr(VARIATION[name], self._attr)

    def __iter__(self) -> Iterator[str]:
        return iter(VARIATION)

    def __len__(self) -> int:
        return len(VARIATION)


OPERATORS: Mapping[str, Callable] = _View("fn")
N_PARENTS: Mapping[str, int] = _View("parents")

__all__ = [
    "Grammar", "blend", "N_PARENTS", "OPERATORS", "Sweep", "VARIATION", "VariationOperator", "enumerate_rules",
    "expand", "fade", "hoist", "insert", "point_mutation", "scale", "random_population", "random_rule", "register",
    "shrink", "subtree_crossover", "subtree_mutation", "term_vocabulary",
]
