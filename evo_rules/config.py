"""Run configuration: TOML in, validated frozen dataclasses out.

An unknown key or a bad value raises `ConfigError` naming the key and the file, before any
work starts. `RunConfig.to_dict()` is the resolved config stored with a run and its checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Mapping


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RunSection:
    seed: int = 1
    generations: int = 30
    population: int = 200
    checkpoint_every: int = 1  # generations between checkpoints

    def check(self, where):
        _positive(where, "generations", self.generations, allow_zero=True)
        _positive(where, "population", self.population)
        _positive(where, "checkpoint_every", self.checkpoint_every)
        if self.population < 4:
            raise ConfigError(f"{where}.population: must be at least 4, got {self.population}")


@dataclass(frozen=True)
class TaskSection:
    name: str = "and-match"
    settings: dict = field(default_factory=dict)

    def check(self, where):
        if not self.name:
            raise ConfigError(f"{where}.name: must name a task")


@dataclass(frozen=True)
class SearchSection:
    selection: str = "nsga2"  # or "tournament"
    tournament_size: int = 5
    parsimony: float = 0.002  # tournament only: metric penalty per node
    crossover: float = 0.4
    subtree: float = 0.25
    point: float = 0.15
    hoist: float = 0.05
    shrink: float = 0.15
    insert: float = 0.1  # one more feature term in a sum
    elite: int = 10  # tournament only: best individuals kept unchanged
    seed_rules: list = field(default_factory=list)  # rule texts put into the first population
    seed_reference: bool = True  # also seed with the task's hand-written reference rules
    seed_linear: bool = False  # also seed with the task's linear baseline rule
    hall_of_fame: int = 10

    def check(self, where):
        if self.selection not in ("nsga2", "tournament"):
            raise ConfigError(f"{where}.selection: must be 'nsga2' or 'tournament', got {self.selection!r}")
        _positive(where, "tournament_size", self.tournament_size)
        _positive(where, "hall_of_fame", self.hall_of_fame)
        if self.elite < 0:
            raise ConfigError(f"{where}.elite: must be >= 0, got {self.elite}")
        probs = [self.crossover, self.subtree, self.point, self.hoist, self.shrink, self.insert]
        if any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ConfigError(f"{where}: operator probabilities must be >= 0 and not all 0")
        if self.parsimony < 0:
            raise ConfigError(f"{where}.parsimony: must be >= 0, got {self.parsimony}")
        for i, r in enumerate(self.seed_rules):
            if not isinstance(r, str):
                raise ConfigError(f"{where}.seed_rules[{i}]: must be rule text (a string)")


@dataclass(frozen=True)
class GrammarSection:
    operators: list = field(default_factory=lambda: ["add", "mul", "exp", "log", "eml"])
    features: list = field(default_factory=list)  # empty: all of the task's features
    max_size: int = 25
    max_depth: int = 8
    template_share: float = 0.5

    def check(self, where):
        bad = [o for o in self.operators if o not in ("add", "mul", "exp", "log", "eml")]
        if bad or not self.operators:
            raise ConfigError(f"{where}.operators: unknown operator(s) {bad} (known: add, mul, exp, log, eml)")
        _positive(where, "max_size", self.max_size)
        _positive(where, "max_depth", self.max_depth)
        if not 0.0 <= self.template_share <= 1.0:
            raise ConfigError(f"{where}.template_share: must be in [0, 1], got {self.template_share}")


@dataclass(frozen=True)
class FitSection:
    max_iter: int = 20

    def check(self, where):
        _positive(where, "max_iter", self.max_iter)


@dataclass(frozen=True)
class EvaluationSection:
    backend: str = "process"  # serial | process | dask
    workers: int = 0  # 0: every core of this machine
    scheduler: str = ""  # dask: scheduler address; empty: a local cluster
    chunk: int = 8  # rules per task sent to a worker
    retries: int = 2  # a worker that dies costs a retry, not the run

    def check(self, where):
        if self.backend not in ("serial", "process", "dask"):
            raise ConfigError(f"{where}.backend: must be serial, process or dask, got {self.backend!r}")
        if self.workers < 0:
            raise ConfigError(f"{where}.workers: must be >= 0, got {self.workers}")
        _positive(where, "chunk", self.chunk)
        if self.retries < 0:
            raise ConfigError(f"{where}.retries: must be >= 0, got {self.retries}")

    @property
    def n_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class CacheSection:
    path: str = ""  # empty: cache.sqlite in the run folder; set it to share a cache between runs

    def check(self, where):
        pass


@dataclass(frozen=True)
class RerunSection:
    seeds: int = 3  # fresh seeds (resampled splits where the task supports it) per finalist
    finalists: int = 3

    def check(self, where):
        if self.seeds < 0 or self.finalists < 0:
            raise ConfigError(f"{where}: seeds and finalists must be >= 0")


@dataclass(frozen=True)
class SweepSection:
    """`evo-rules sweep`: every (eml signal (add 1 (exp damping))) rule over a term vocabulary."""

    max_signal: int = 1  # terms in the signal sum
    max_damping: int = 1  # terms in the damping sum (plus a bias weight)
    pairs: bool = True  # vocabulary: (mul w x.f) and, with pairs, (mul w x.f x.g)
    expand_top: int = 10  # survivors grown by one more term per expansion round
    expand_rounds: int = 1

    def check(self, where):
        _positive(where, "max_signal", self.max_signal)
        if self.max_damping < 0:
            raise ConfigError(f"{where}.max_damping: must be >= 0, got {self.max_damping}")
        _positive(where, "expand_top", self.expand_top)
        if self.expand_rounds < 0:
            raise ConfigError(f"{where}.expand_rounds: must be >= 0, got {self.expand_rounds}")


SECTIONS = {
    "run": RunSection,
    "task": TaskSection,
    "search": SearchSection,
    "grammar": GrammarSection,
    "fit": FitSection,
    "evaluation": EvaluationSection,
    "cache": CacheSection,
    "rerun": RerunSection,
    "sweep": SweepSection,
}


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    task: TaskSection = field(default_factory=TaskSection)
    search: SearchSection = field(default_factory=SearchSection)
    grammar: GrammarSection = field(default_factory=GrammarSection)
    fit: FitSection = field(default_factory=FitSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    cache: CacheSection = field(default_factory=CacheSection)
    rerun: RerunSection = field(default_factory=RerunSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    source: str = "<defaults>"

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def replace(self, section: str, **changes) -> "RunConfig":
        new = dataclasses.replace(getattr(self, section), **changes)
        new.check(f"{self.source}: [{section}]")
        return dataclasses.replace(self, **{section: new})

    @property
    def fit_settings(self) -> dict:
        return {"max_iter": self.fit.max_iter}


def _positive(where, key, value, allow_zero=False):
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}.{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _coerce(where: str, key: str, value: Any, default: Any):
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}.{key}: must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key}: must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: must be a string, got {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}.{key}: must be a list, got {value!r}")
        return list(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{key}: must be a table, got {value!r}")
        return dict(value)
    return value


def from_dict(data: Mapping, source: str = "<dict>") -> RunConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a table of sections")
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    built = {}
    for name, cls in SECTIONS.items():
        where = f"{source}: [{name}]"
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: must be a table")
        defaults = cls()
        known = {f.name for f in fields(cls)}
        for k in raw:
            if k not in known:
                raise ConfigError(f"{where}: unknown key {k!r} (known: {', '.join(sorted(known))})")
        values = {k: _coerce(where, k, v, getattr(defaults, k)) for k, v in raw.items()}
        section = cls(**values)
        section.check(where)
        built[name] = section
    return RunConfig(**built, source=source)


def load(path: str | os.PathLike) -> RunConfig:
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, source=path)
