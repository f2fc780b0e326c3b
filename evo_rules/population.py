"""The population manager, built on DEAP's selection, hall of fame, Pareto front and logbook.

It receives variation operators and an evaluation function through plain interfaces
(`Variation`, `evaluate(texts) -> results`) and owns one numpy Generator: all randomness of a
run comes from it, so its state in a checkpoint fixes the rest of the run.

One generation: variation -> canonical keys -> dedup within the generation -> (the caller's
cache and backend) evaluation -> NSGA-II over (metric, size), or tournament with parsimony.
NSGA-II sorts the candidates into non-dominated fronts once per generation; the new
population keeps those ranks (no member is dominated by a rule outside it).

The manager owns its state: `state()` is plain JSON data (RNG, id counter, population, hall of
fame, Pareto front) and `restore(state)` gives back a manager that makes the same next
generation.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from deap import base, tools

from .fronts import sort_nondominated
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
    """Operators bound to a grammar (see `evo_rules.operators.VARIATION`), each drawn with its
    weight (`probs`, normalised here; the draw order is the mapping's)."""

    random_rule: Callable[[np.random.Generator], Rule]
    # name -> (parents, fn): fn(rule, rng) -> Rule for one parent, fn(a, b, rng) -> (Rule, Rule) for two
    operators: Mapping[str, tuple[int, Callable]]
    probs: Mapping[str, float]  # operator name -> weight > 0


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
        self._ranked = None  # (chosen, front ranks) of the last NSGA-II selection
        names = [n for n, w in variation.probs.items() if w > 0]
        missing = [n for n in names if n not in variation.operators]
        if missing or not names:
            raise ValueError(f"Variation: weights for unknown operator(s) {missing}" if missing
                             else "Variation: every operator weight is 0")
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
            parents, fn = self.variation.operators[op]
            if parents == 2:
                a, b = self._parent(), self._parent()
                kids = fn(self.rule_of(a), self.rule_of(b), self.rng)
                # the second child is b's tree with a graft from a: its first parent is b
                made = [(kids[0], (a.id, b.id)), (kids[1], (b.id, a.id))]
            else:
                a = self._parent()
                made = [(fn(self.rule_of(a), self.rng), (a.id,))]
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
            chosen, ranks = _select_nsga2(candidates, self.size)
            self._ranked = (chosen, ranks)  # set_population(chosen) reuses this sort
            return list(chosen)
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
        if self.selection == "nsga2":  # parents are drawn by rank and crowding (tournament: score)
            _rank_and_crowd(self.population, self._ranks_of(self.population))
        self._ranked = None
        live = {ind.key for ind in self.population}
        self._rules = {k: r for k, r in self._rules.items() if k in live}
        self.hof.update([i for i in self.population if i.valid])
        self.front.update([i for i in self.population if i.valid])

    def _ranks_of(self, population: list[Individual]) -> list[int]:
        """Front ranks within `population`: those of the last `select` when it chose exactly this
        list (a chosen set keeps its ranks: nothing outside it dominates a member), else sorted."""
        if self._ranked is not None:
            chosen, ranks = self._ranked
            if len(chosen) == len(population) and all(a is b for a, b in zip(chosen, population)):
                return ranks
        return _front_ranks(population)

    # ------------------------------------------------------------------ state

    def statistics(self) -> dict:
        """Best and median metric of the population's valid rules, median size of all."""
        return generation_stats(self.population)

    def state(self) -> dict:
        """Everything that fixes the rest of the run, as plain JSON data (a checkpoint's part)."""
        return {"rng": self.rng.bit_generator.state, "next_id": self.next_id,
                "population": [i.to_dict() for i in self.population],
                "hall_of_fame": [i.to_dict() for i in self.hof],
                "front": [i.to_dict() for i in self.front]}

    def restore(self, state: Mapping) -> None:
        """Back to a `state()` of a manager with the same settings: the next generation is the
        one that manager would have made."""
        self.rng.bit_generator.state = state["rng"]
        self.next_id = int(state["next_id"])
        self.hof.clear()
        self.front.clear()
        # oldest first: DEAP puts a later insert before its fitness ties, so this restores the
        # saved order exactly (which tie the hall of fame drops next depends on it)
        self.hof.update([Individual.from_dict(d) for d in reversed(state["hall_of_fame"])])
        self.front.update([Individual.from_dict(d) for d in reversed(state["front"])])
        self._rules = {}
        self._ranked = None
        self.set_population([Individual.from_dict(d) for d in state["population"]])

    def savepoint(self) -> dict:
        """What a generation's variation changes before any individual is made: `rewind` to it
        abandons that generation."""
        return {"rng": self.rng.bit_generator.state, "next_id": self.next_id}

    def rewind(self, point: Mapping) -> None:
        self.rng.bit_generator.state = point["rng"]
        self.next_id = point["next_id"]


def _front_ranks(individuals: list[Individual]) -> list[int]:
    """The non-dominated front (0 = Pareto front) of each individual, in list order."""
    rank_of = {}
    for rank, front in enumerate(sort_nondominated(individuals, len(individuals))):
        for ind in front:
            rank_of[id(ind)] = rank
    return [rank_of[id(ind)] for ind in individuals]


def _select_nsga2(candidates: list[Individual], k: int) -> tuple[list[Individual], list[int]]:
    """DEAP's selNSGA2 (the same choice, in the same order) and the front rank of each chosen
    individual, from one non-dominated sort."""
    fronts = sort_nondominated(candidates, k)
    chosen = [ind for front in fronts[:-1] for ind in front]
    ranks = [r for r, front in enumerate(fronts[:-1]) for _ in front]
    room = k - len(chosen)
    if fronts and room > 0:
        last = fronts[-1]
        tools.emo.assignCrowdingDist(last)
        kept = sorted(last, key=lambda i: i.fitness.crowding_dist, reverse=True)[:room]
        chosen += kept
        ranks += [len(fronts) - 1] * len(kept)
    return chosen, ranks


def _rank_and_crowd(population: list[Individual], ranks: list[int]) -> None:
    """Set each individual's `rank` and its crowding distance within its front, the front taken
    in population order: a function of the population list alone, so a restored population
    draws parents as the one it was saved from."""
    fronts: dict[int, list[Individual]] = {}
    for ind, rank in zip(population, ranks):
        ind.rank = rank
        fronts.setdefault(rank, []).append(ind)
    for front in fronts.values():
        tools.emo.assignCrowdingDist(front)


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
