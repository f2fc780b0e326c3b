"""Run configuration: TOML in, validated frozen dataclasses out.

An unknown key or a bad value raises `ConfigError` naming the key and the file, before any
work starts. `RunConfig.to_dict()` is the resolved config stored with a run and its checkpoints.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Mapping
from .terms import MAX_DEPTH, MAX_SIZE, OPERATORS


class ConfigError(ValueError):
    pass


# upper bounds: far above any sensible run, low enough that a typo is refused, not run for days
MAX_SEED = 2**63 - 1  # seeds: 0 <= seed <= MAX_SEED
MAX_COUNT = 1_000_000  # population, generations, hall of fame, ...
MAX_WORKERS = 1_024
MAX_SCREENED = 1_000  # [search].screen_products: each is a seed rule fitted in generation 0
MAX_RULE_SIZE = MAX_SIZE  # the parser's limits: a searched rule's text must parse again
MAX_RULE_DEPTH = MAX_DEPTH
_FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class RunSection:
    seed: int = 1
    generations: int = 30
    population: int = 200
    checkpoint_every: int = 1  # generations between checkpoints
    # budgets of one `run`/`resume` call: it stops cleanly (resumable) after the generation in
    # which it spent them; absent (None): no limit
    max_seconds: float | None = None
    max_evaluations: int | None = None

    def check(self, where):
        _within(where, "seed", self.seed, 0, MAX_SEED)
        _within(where, "generations", self.generations, 0, MAX_COUNT)
        _within(where, "population", self.population, 4, MAX_COUNT)
        _within(where, "checkpoint_every", self.checkpoint_every, 1, MAX_COUNT)
        for key, kinds in (("max_seconds", (int, float)), ("max_evaluations", (int,))):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                      or not (isinstance(value, int) or math.isfinite(value))
                                      or value <= 0):
                raise ConfigError(f"{where}.{key}: must be a finite number > 0"
                                  f"{' (an integer)' if kinds == (int,) else ''} or absent, got {_short(value)}")


@dataclass(frozen=True)
class TaskSection:
    name: str = "and-match"
    settings: dict = field(default_factory=dict)

    def check(self, where):
        if not self.name:
            raise ConfigError(f"{where}.name: must name a task")
        # each task checks its own settings (evo_rules.validate); here only what any task reads
        for k, v in self.settings.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}.settings: setting names must be strings, got {_short(k)}")
            if not isinstance(v, (str, int, float)):  # bool is an int
                raise ConfigError(f"{where.replace('[task]', '[task.settings]')}.{_key(k)}: must be a string, "
                                  f"number or boolean, got {_short(v)}")


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
    # > 0: also seed with that many rules, each a start plus one product screened by a score test
    # (evo_rules.screening), and one with all of them; 0: off
    screen_products: int = 0
    hall_of_fame: int = 10
    # weights of the other registered variation operators (evo_rules.operators.register), by
    # name, each in [0, 1]; an operator not named here is not drawn
    operator_weights: dict = field(default_factory=dict)

    def variation_weights(self) -> dict[str, float]:
        """The weight of every registered variation operator, in the registry's (draw) order."""
        from evo_rules.operators import VARIATION  # the registry: not at config import

        return {name: float(getattr(self, name) if name in OWN_WEIGHT_KEYS
                            else self.operator_weights.get(name, 0.0)) for name in VARIATION}

    def check(self, where):
        if self.selection not in ("nsga2", "tournament"):
            raise ConfigError(f"{where}.selection: must be 'nsga2' or 'tournament', got {self.selection!r}")
        _within(where, "tournament_size", self.tournament_size, 1, MAX_COUNT)
        _within(where, "hall_of_fame", self.hall_of_fame, 1, MAX_COUNT)
        _within(where, "elite", self.elite, 0, MAX_COUNT)
        _within(where, "screen_products", self.screen_products, 0, MAX_SCREENED)
        self._check_operator_weights(where)
        _within(where, "parsimony", self.parsimony, 0.0, 1e6)
        _strings(where, "seed_rules", self.seed_rules)

    def _check_operator_weights(self, where):
        from evo_rules.operators import VARIATION

        for key in OWN_WEIGHT_KEYS:
            _within(where, key, getattr(self, key), 0.0, 1.0)
        others = [n for n in VARIATION if n not in OWN_WEIGHT_KEYS]
        for name, w in self.operator_weights.items():
            if name in OWN_WEIGHT_KEYS:
                raise ConfigError(f"{where}.operator_weights.{name}: {name} has its own key "
                                  f"([search] {name}); set it there")
            if name not in VARIATION:
                raise ConfigError(f"{where}.operator_weights: unknown variation operator {_short(name)} "
                                  f"(registered: {', '.join(others) or 'none besides the built-in ones'})"
                                  f"{_did_you_mean(name, others)}")
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ConfigError(f"{where}.operator_weights.{name}: must be a number, got {_short(w)}")
            _within(f"{where}.operator_weights", name, w, 0.0, 1.0)
        if not any(self.variation_weights().values()):
            keys = [*OWN_WEIGHT_KEYS, *(f"operator_weights.{n}" for n in others)]
            raise ConfigError(f"{where}: the operator probabilities ({', '.join(keys)}) are all 0")


# the built-in variation operators whose weight is a [search] key of its own (any other
# registered operator's is [search.operator_weights] NAME)
OWN_WEIGHT_KEYS = ("crossover", "subtree", "point", "hoist", "shrink", "insert")

FEATURE_WEIGHTS = ("uniform", "linear")


@dataclass(frozen=True)
class GrammarSection:
    operators: list = field(default_factory=lambda: ["add", "mul", "exp", "log", "eml"])
    features: list = field(default_factory=list)  # empty: all of the task's features
    max_size: int = 25
    max_depth: int = 8
    template_share: float = 0.5
    # how operators draw features: "uniform", or "linear" = in proportion to the linear
    # baseline's fitted weights on standardised train features (app.feature_weights)
    feature_weights: str = "uniform"
    # the numbers a rule may hold as leaves (next to features and fitted weights); a black-box
    # task fits no weights, so its search puts these in their place (app.variation)
    constants: list = field(default_factory=lambda: [1.0])

    def check(self, where):
        _strings(where, "operators", self.operators)
        bad = [o for o in self.operators if o not in OPERATORS]  # the default five + terms.WIDE
        if bad or not self.operators:
            raise ConfigError(f"{where}.operators: unknown operator(s) {bad} (known: {', '.join(OPERATORS)})"
                              f"{_did_you_mean(bad[0] if bad else '', OPERATORS)}")
        _strings(where, "features", self.features)
        for i, f in enumerate(self.features):
            if not _FEATURE_NAME.match(f):
                hint = f"; did you mean {f[2:]!r}?" if _FEATURE_NAME.match(f[2:]) and f[:2] == "x." else ""
                raise ConfigError(f"{where}.features[{i}]: {_short(f)} is not a feature name (letters, "
                                  f"digits and _, not starting with a digit, without the 'x.' prefix){hint}")
        _within(where, "max_size", self.max_size, 1, MAX_RULE_SIZE)
        _within(where, "max_depth", self.max_depth, 1, MAX_RULE_DEPTH)
        _within(where, "template_share", self.template_share, 0.0, 1.0)
        seen = set()
        for i, c in enumerate(self.constants):
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                raise ConfigError(f"{where}.constants[{i}]: must be a finite number, got {_short(c)}")
            if float(c) in seen:
                raise ConfigError(f"{where}.constants[{i}]: {c!r} is listed twice")
            seen.add(float(c))
        if self.feature_weights not in FEATURE_WEIGHTS:
            raise ConfigError(f"{where}.feature_weights: must be one of {', '.join(map(repr, FEATURE_WEIGHTS))}, "
                              f"got {_short(self.feature_weights)}{_did_you_mean(self.feature_weights, FEATURE_WEIGHTS)}")


@dataclass(frozen=True)
class FitSection:
    max_iter: int = 20

    def check(self, where):
        _within(where, "max_iter", self.max_iter, 1, 100_000)


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
        _within(where, "workers", self.workers, 0, MAX_WORKERS)
        _within(where, "chunk", self.chunk, 1, MAX_COUNT)
        _within(where, "retries", self.retries, 0, 1_000)

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
    # a finalist passes by beating the baseline by more than this in every rerun: where a rerun
    # is deterministic, a rule that changes nothing that matters differs from the baseline by
    # rounding alone, and 0 would let such a rule pass by chance
    margin: float = 0.0

    def check(self, where):
        _within(where, "seeds", self.seeds, 0, 1_000)
        _within(where, "finalists", self.finalists, 0, 1_000)
        _within(where, "margin", self.margin, 0.0, 1e6)


@dataclass(frozen=True)
class SweepSection:
    """`evo-rules sweep`: every (eml signal (add 1 (exp damping))) rule over a term vocabulary."""

    max_signal: int = 1  # terms in the signal sum
    max_damping: int = 1  # terms in the damping sum (plus a bias weight)
    pairs: bool = True  # vocabulary: (mul w x.f) and, with pairs, (mul w x.f x.g)
    expand_top: int = 10  # survivors grown by one more term per expansion round
    expand_rounds: int = 1

    def check(self, where):
        _within(where, "max_signal", self.max_signal, 1, 10)
        _within(where, "max_damping", self.max_damping, 0, 10)
        _within(where, "expand_top", self.expand_top, 1, MAX_COUNT)
        _within(where, "expand_rounds", self.expand_rounds, 0, 1_000)


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
        where = f"{self.source}: [{section}]"
        old = getattr(self, section)
        known = {f.name for f in fields(old)}
        for k in changes:
            if k not in known:
                raise ConfigError(f"{where}: unknown key {k!r}{_did_you_mean(k, known)}")
        defaults = type(old)()  # the type a key takes is its default's, not the current value's
        changes = {k: _coerce(where, k, v, getattr(defaults, k)) for k, v in changes.items()}
        new = dataclasses.replace(old, **changes)
        new.check(where)
        return _check_across(dataclasses.replace(self, **{section: new}))

    @property
    def fit_settings(self):
        """Everything that changes a fit (`evo_rules.fit_settings.FitSettings`, the fitness
        cache's key): the [fit] section and this process's fitter and kernel."""
        from .fit_settings import FitSettings  # the fitter and kernels: not at config import

        return FitSettings(max_iter=self.fit.max_iter)


def _positive(where, key, value, allow_zero=False):
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}.{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _within(where, key, value, lo, hi):
    """lo <= value <= hi (types are checked by _coerce; floats there are finite)."""
    if not lo <= value <= hi:
        span = f"[{lo:,}, {hi:,}]" if isinstance(lo, int) else f"[{lo:g}, {hi:g}]"
        raise ConfigError(f"{where}.{key}: must be in {span}, got {_short(value)}")


def _strings(where, key, values):
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ConfigError(f"{where}.{key}[{i}]: must be a string, got {_short(v)}")


def _key(name: str) -> str:
    """A key as written in a message: bare when it is a plain name, quoted otherwise (a key may
    hold a newline, and a message is one line)."""
    return name if re.fullmatch(r"[A-Za-z0-9_.-]+", name) else _short(name)


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _did_you_mean(word, known) -> str:
    word, known = str(word), [str(k) for k in known]
    close = [k for k in known if k.lower() == word.lower()] or difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(where: str, key: str, value: Any, default: Any):
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be true or false, got {_short(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}.{key}: must be an integer, got {_short(value)}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key}: must be a number, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:  # an int beyond float range
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{where}.{key}: must be a finite number, got {value}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: must be a string, got {_short(value)}")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}.{key}: must be a list, got {_short(value)}")
        return list(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{key}: must be a table, got {_short(value)}")
        return dict(value)
    return value


def from_dict(data: Mapping, source: str = "<dict>") -> RunConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a table of sections")
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})"
                          f"{_did_you_mean(unknown[0], SECTIONS)}")
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
                raise ConfigError(f"{where}: unknown key {_short(k)} (known: {', '.join(sorted(known))})"
                                  f"{_did_you_mean(k, known)}")
        values = {k: _coerce(where, k, v, getattr(defaults, k)) for k, v in raw.items()}
        section = cls(**values)
        section.check(where)
        built[name] = section
    return _check_across(RunConfig(**built, source=source))


def _check_across(cfg: RunConfig) -> RunConfig:
    """What one section's check cannot see."""
    s, pop = cfg.search, cfg.run.population
    if s.selection == "tournament" and s.elite > pop:  # the kept elite would outgrow the population
        raise ConfigError(f"{cfg.source}: [search].elite: must be at most [run].population ({pop}) "
                          f"with tournament selection, got {s.elite}")
    return cfg


def load(path: str | os.PathLike) -> RunConfig:
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file first
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, source=path)
