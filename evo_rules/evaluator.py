"""Evaluation through the cache: look keys up, send only the misses to the backend, store them."""

from __future__ import annotations

from typing import Sequence

from .cache import FitnessCache
from .rule import Rule


class Evaluator:
    def __init__(self, cache: FitnessCache, backend):
        self.cache = cache
        self.backend = backend

    def evaluate(self, rules: Sequence[Rule]) -> tuple[list[dict], int]:
        """Results in the order of `rules` (keys must be unique) and the number of cache hits."""
        keys = [r.key for r in rules]
        cached = self.cache.get_many(keys)
        misses = [r.text for r in rules if r.key not in cached]
        fresh = self.backend.map(misses) if misses else []
        self.cache.put_many(fresh)
        by_key = dict(cached)
        by_key.update({r["key"]: r for r in fresh})
        return [by_key[k] for k in keys], len(rules) - len(misses)
