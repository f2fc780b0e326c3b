"""Evaluation through the cache: look keys up, send only the misses to the backend, store them.

Every result passes through `evaluate.Evaluation`: a cached value that is not an evaluation
record (a damaged or foreign row) is a miss and the rule is evaluated again, and what a worker
returns is checked before it is stored.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .cache import FitnessCache
from .evaluate import Evaluation
from .fit_settings import FitSettings
from .rule import Rule


class Evaluator:
    def __init__(self, cache: FitnessCache, backend, settings: FitSettings | Mapping | None = None):
        """`settings`: the fit settings the backend evaluates under; given, the cache must be keyed
        by them (`FitSettings.key()`), so that no result is stored or found under other settings."""
        if settings is not None:
            key = FitSettings.coerce(settings).key()
            if key != cache.settings:
                raise ValueError(f"fitness cache {cache.path} is keyed by fit settings {cache.settings}, "
                                 f"the evaluations run under {key} ({dict(FitSettings.coerce(settings))}): "
                                 "open the cache with the same FitSettings")
        self.cache = cache
        self.backend = backend

    def evaluations(self, rules: Sequence[Rule]) -> tuple[list[Evaluation], int]:
        """Results in the order of `rules` (keys must be unique) and the number of cache hits."""
        keys = [r.key for r in rules]
        cached = {}
        for key, found in self.cache.get_many(keys).items():
            try:
                cached[key] = Evaluation.from_dict(found)
            except ValueError:
                continue  # not an evaluation: evaluated again (and overwritten)
        misses = [r.text for r in rules if r.key not in cached]
        fresh = [Evaluation.from_dict(d) for d in self.backend.map(misses)] if misses else []
        self.cache.put_many([e.to_dict() for e in fresh])
        by_key = dict(cached)
        by_key.update({e.key: e for e in fresh})
        return [by_key[k] for k in keys], len(rules) - len(misses)

    def evaluate(self, rules: Sequence[Rule]) -> tuple[list[dict], int]:
        """`evaluations` as plain dicts (`Evaluation.to_dict()`)."""
        found, hits = self.evaluations(rules)
        return [e.to_dict() for e in found], hits
