"""Non-dominated sorting (evo_rules.fronts): DEAP's fronts, in DEAP's order."""

from __future__ import annotations

import math

from deap import tools
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules.fronts import sort_nondominated
from evo_rules.population import Individual

# few distinct values, so ties, equal fitnesses and dominance chains are common; NaN included
METRICS = st.sampled_from([0.0, 0.25, 0.5, 0.5000001, 0.75, 1.0, math.nan, -math.inf])


def _individual(i: int, metric: float, size: int) -> Individual:
    return Individual(i, f"k{i}", f"t{i}", (), "random", 0, size, True, metric, [], {})


@settings(max_examples=300)
@given(st.lists(st.tuples(METRICS, st.integers(1, 8)), min_size=1, max_size=60),
       st.integers(0, 70))
def test_the_fronts_are_deaps_in_deaps_order(values, k):
    pop = [_individual(i, m, s) for i, (m, s) in enumerate(values)]
    want = tools.sortNondominated(pop, k)
    got = sort_nondominated(pop, k)
    assert [[ind.id for ind in f] for f in got] == [[ind.id for ind in f] for f in want]


def test_a_dominated_rule_is_in_a_later_front():
    a, b, c = _individual(0, 0.9, 3), _individual(1, 0.8, 5), _individual(2, 0.95, 9)
    fronts = sort_nondominated([b, c, a], 3)
    assert [[i.id for i in f] for f in fronts] == [[2, 0], [1]]  # b: worse and larger than a
