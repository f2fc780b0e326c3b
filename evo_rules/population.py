"""The population manager, built on DEAP's selection, hall of fame, Pareto front and logbook.

It receives variation operators and an evaluation function through plain interfaces
(`Variation`, `evaluate(texts) -> results`) and owns one numpy Generator: all randomness of a
run comes from it, so its state in a checkpoint fixes the rest of the run.

One generation: variation -> canonical keys -> dedup within the generation -> (the caller's
cache and backend) evaluation -> NSGA-II over (metric, size), or tournament with parsimony.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from deap import base, tools

from .rule import Rule, parse


class RuleFitness(base.Fitness):
    """(validation metric: maximise, size: minimise). Module level: workers unpickle it as is."""

    weights = (1.0, -1.0)


@dataclass(eq=False)
class Individual:
    id: int
    key: str
    text: str
    parents: tuple[int, ...]
    op: str
    birth: int
    size: int
    valid: bool
    metric: float
    weights: list[float]
    metrics: dict
    fitness: RuleFitness = field(default_factory=RuleFitness)

    def __post_init__(self):
        self.fitness.values = (self.metric, float(self.size))

    def to_dict(self) -> dict:
        return {
            "id": self.id, "key": self.key, "text": self.text, "parents": list(self.parents),
            "op": self.op, "birth": self.birth, "size": self.size, "valid": self.valid,
            "metric": self.metric, "weights": self.weights, "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Individual":
        return cls(int(d["id"]), d["key"], d["text"], tuple(d["parents"]), d["op"], int(d["birth"]),
                   int(d["size"]), bool(d["valid"]), float(d["metric"]), list(d["weights"]),
                   dict(d["metrics"]))


@dataclass(frozen=True)
class Variation:
    """Operators bound to a grammar: each takes rules and a numpy Generator, returns Rules."""

    random_rule: Callable[[np.random.Generator], Rule]
    mutations: Mapping[str, Callable[[Rule, np.random.Generator], Rule]]
    crossover: Callable[[Rule, Rule, np.random.Generator], tuple[Rule, Rule]]
    probs: Mapping[str, float]  # operator name ("crossover" or a mutation) -> probability


@dataclass
class Birth:
    rule: Rule
    parents: tuple[int, ...]
    op: str


def same_rule(a: Individual, b: Individual) -> bool:
    return a.key == b.key


class PopulationManager:
    def __init__(self, variation: Variation, size: int, rng: np.random.Generator,
                 selection: str = "nsga2", tournament_size: int = 5, parsimony: float = 0.0,
                 elite: int = 0, hall_of_fame: int = 10):
        self.variation = variation
        self.size = size
        self.rng = rng
        self.selection = selection
        self.tournament_size = tournament_size
        self.parsimony = parsimony
        self.elite = elite
        self.population: list[Individual] = []
        self.hof = tools.HallOfFame(hall_of_fame, similar=same_rule)
        self.front = tools.ParetoFront(similar=same_rule)
        self.next_id = 0
        self._rules: dict[str, Rule] = {}
        names = list(variation.probs)
        p = np.array([variation.probs[n] for n in names], dtype=float)
        self._op_names, self._op_p = names, p / p.sum()

    # ------------------------------------------------------------------ helpers

    def rule_of(self, ind: Individual) -> Rule:
        r = self._rules.get(ind.key)
        if r is None:
            r = parse(ind.text, check_constants=False)  # canonical text the engine wrote
            self._rules[ind.key] = r
        return r

    def make_individual(self, birth: Birth, result: Mapping, generation: int) -> Individual:
        ind = Individual(self.next_id, birth.rule.key, birth.rule.text, birth.parents, birth.op,
                         generation, birth.rule.size, bool(result["valid"]), float(result["metric"]),
                         list(result["weights"]), dict(result["metrics"]))
        self.next_id += 1
        self._rules[ind.key] = birth.rule
        return ind

    def _score(self, ind: Individual) -> float:
        return ind.metric - self.parsimony * ind.size

    # ------------------------------------------------------------------ variation

    def initial_births(self, seeds: list[Rule]) -> tuple[list[Birth], int]:
        """Seeds first, then random rules, unique by key. Returns births and duplicates dropped."""
        births, seen, dup = [], set(), 0
        for r in seeds:
            if r.key in seen:
                dup += 1
                continue
            seen.add(r.key)
            births.append(Birth(r, (), "seed"))
        attempts = 0
        while len(births) < self.size and attempts < 50 * self.size:
            attempts += 1
            r = self.variation.random_rule(self.rng)
            if r.key in seen:
                dup += 1
                continue
            seen.add(r.key)
            births.append(Birth(r, (), "random"))
        return births[: max(self.size, len(seeds))], dup

    def _parent(self) -> Individual:
        pop = self.population
        idx = self.rng.integers(0, len(pop), size=self.tournament_size if self.selection == "tournament" else 2)
        cands = [pop[int(i)] for i in idx]
        if self.selection == "tournament":
            return max(cands, key=self._score)
        # NSGA-II binary tournament: lower front rank, then larger crowding distance
        return min(cands, key=lambda c: (getattr(c, "rank", 0), -getattr(c.fitness, "crowding_dist", 0.0)))

    def offspring_births(self, n: int) -> tuple[list[Birth], int]:
        """n children unique by key among themselves and the population; returns dedup count."""
        seen = {ind.key for ind in self.population}
        births: list[Birth] = []
        dedup = 0
        attempts = 0
        while len(births) < n and attempts < 10 * n:
            attempts += 1
            op = self._op_names[int(self.rng.choice(len(self._op_names), p=self._op_p))]
            if op == "crossover":
                a, b = self._parent(), self._parent()
                kids = self.variation.crossover(self.rule_of(a), self.rule_of(b), self.rng)
                # the second child is b's tree with a graft from a: its first parent is b
                made = [(kids[0], (a.id, b.id)), (kids[1], (b.id, a.id))]
            else:
                a = self._parent()
                made = [(self.variation.mutations[op](self.rule_of(a), self.rng), (a.id,))]
            for rule, parents in made:
                if rule.key in seen:
                    dedup += 1
                    continue
                seen.add(rule.key)
                births.append(Birth(rule, parents, op))
        return births[:n], dedup

    # ------------------------------------------------------------------ selection

    def select(self, candidates: list[Individual]) -> list[Individual]:
        if self.selection == "nsga2":
            chosen = tools.selNSGA2(candidates, self.size)
            for rank, front in enumerate(tools.sortNondominated(chosen, len(chosen))):
                for ind in front:
                    ind.rank = rank
            return chosen
        ranked = sorted(candidates, key=lambda c: (-self._score(c), c.size, c.id))
        keep = ranked[: self.elite]
        rest = ranked[self.elite:]
        while len(keep) < self.size and rest:
            idx = self.rng.integers(0, len(rest), size=min(self.tournament_size, len(rest)))
            best = min({int(i) for i in idx}, key=lambda i: (-self._score(rest[i]), rest[i].size, rest[i].id))
            keep.append(rest.pop(best))
        return keep

    def set_population(self, individuals: list[Individual]) -> None:
        self.population = list(individuals)
        # rank and crowding over the population itself, so a resumed run selects parents alike
        for rank, front in enumerate(tools.sortNondominated(self.population, len(self.population))):
            tools.emo.assignCrowdingDist(front)
            for ind in front:
                ind.rank = rank
        live = {ind.key for ind in self.population}
        self._rules = {k: r for k, r in self._rules.items() if k in live}
        self.hof.update([i for i in self.population if i.valid])
        self.front.update([i for i in self.population if i.valid])


def _stats() -> tools.MultiStatistics:
    metric = tools.Statistics(key=lambda ind: ind.metric)
    metric.register("best", max)
    metric.register("median", statistics.median)
    size = tools.Statistics(key=lambda ind: ind.size)
    size.register("median", statistics.median)
    return tools.MultiStatistics(metric=metric, size=size)


GENERATION_STATS = _stats()


def generation_stats(pop: list[Individual]) -> dict:
    """Best and median validation metric over valid rules, median size over all (DEAP Statistics)."""
    valid = [i for i in pop if i.valid]
    metric = GENERATION_STATS["metric"].compile(valid) if valid else {"best": None, "median": None}
    size = GENERATION_STATS["size"].compile(pop) if pop else {"median": None}
    return {"best": metric["best"], "median": metric["median"], "median_size": size["median"]}
