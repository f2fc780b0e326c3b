"""Non-dominated sorting: DEAP's `tools.sortNondominated`, the same fronts in the same order,
with the pairwise dominance test done by NumPy.

DEAP compares every pair of distinct fitnesses in a Python loop (O(M N^2) method calls): with a
population of 120 and as many offspring that was 5-8% of a default search. Here the dominance
matrix comes from two array comparisons, and the fronts are peeled off in DEAP's order: distinct
fitnesses in order of first appearance; the first front is those no other dominates; each next
front is built by walking the current front in order and, for each member, the fitnesses it
dominates in ascending order, a fitness joining when its last dominator is removed (DEAP's
`dominated_fits` lists are in ascending order, see the test against DEAP).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def dominance(wvalues: np.ndarray) -> np.ndarray:
    """D[i, j] = fitness i dominates fitness j, as DEAP's `Fitness.dominates` decides it on
    weighted values: nowhere worse, somewhere better (a NaN compares as neither)."""
    a = wvalues[:, None, :]
    b = wvalues[None, :, :]
    return ~np.any(a < b, axis=2) & np.any(a > b, axis=2)


def sort_nondominated(individuals: list, k: int) -> list[list]:
    """The first fronts of `individuals` holding at least min(k, len) of them, each a list of
    individuals in DEAP's order (`deap.tools.sortNondominated(individuals, k)`)."""
    if k == 0 or not individuals:
        return [] if k == 0 else [[]]
    by_fitness: dict = defaultdict(list)  # keyed as DEAP keys them: by the fitness (its wvalues)
    for ind in individuals:
        by_fitness[ind.fitness].append(ind)
    fits = list(by_fitness)
    D = dominance(np.array([f.wvalues for f in fits], dtype=np.float64))
    dominators = D.sum(axis=0)
    current = [int(i) for i in np.flatnonzero(dominators == 0)]
    fronts = [[ind for i in current for ind in by_fitness[fits[i]]]]
    done = len(fronts[-1])
    wanted = min(len(individuals), k)
    while done < wanted:
        nxt, front = [], []
        for p in current:
            dominated = np.flatnonzero(D[p])
            dominators[dominated] -= 1
            for d in dominated[dominators[dominated] == 0]:
                nxt.append(int(d))
                front.extend(by_fitness[fits[d]])
        done += len(front)
        fronts.append(front)
        current = nxt
    return fronts
