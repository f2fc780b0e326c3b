"""The task interface every task in `fitness/` implements.

A task owns its data splits and knows how to measure a scorer on them. The engine sees only
this interface (duck-typed): it fits a rule's weights on `batch("train")` with `loss`, then
calls `score("valid", scorer)` for fitness. Multi-hop tasks return teacher-forced rows from
`batch` and run real hop-by-hop inference inside `score`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import numpy as np
from numba import njit

Scorer = Callable[[Mapping[str, np.ndarray]], np.ndarray]
PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class Batch:
    """Rows the inner loop fits. X: feature -> float64 (n,); y: float64 (n,) (1.0 marks the
    target candidate of its group, or a numeric target); groups: int64 (n,) ids 0..G-1 in
    ascending order with each group's rows contiguous, or None for ungrouped losses."""

    X: dict[str, np.ndarray]
    y: np.ndarray
    groups: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])


class Task(Protocol):
    name: str
    loss: str  # "listwise" | "logistic" | "squared": what evo_rules.fit minimises
    features: tuple[str, ...]
    metric_name: str  # primary metric in score()'s dict; higher is better
    fingerprint: str  # stable hex digest of name, settings and data

    def batch(self, part: str) -> Batch: ...

    def score(self, part: str, scorer: Scorer) -> dict[str, float]: ...

    # Optional: `score_units(part, scorer) -> np.ndarray`, the metric split into units (episodes,
    # questions, rows) whose mean is score()[metric_name], and `unit_clusters(part)`, a cluster id
    # per unit where units are not independent (several episodes of one story). The winner's
    # one-standard-error choice (evo_rules.gate) needs them; without, the best rule wins.


def fingerprint_of(name: str, settings: Mapping, *arrays_or_bytes) -> str:
    """blake2b-128 over the task name, its settings (as sorted JSON) and its data."""
    h = hashlib.blake2b(digest_size=16)
    h.update(name.encode())
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    for a in arrays_or_bytes:
        if isinstance(a, (bytes, bytearray)):
            h.update(a)
        elif isinstance(a, str):
            h.update(a.encode())
        else:
            arr = np.ascontiguousarray(a)
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def top1_hits(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per group, 1.0 if its highest-scored row is a target, else 0.0 (ties and NaN count as misses)."""
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    if len(groups) == 0:
        return np.zeros(0)
    groups = np.asarray(groups)
    bounds = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1, len(groups)].astype(np.int64)
    hits = np.empty(len(bounds) - 1)
    _top1_hits(scores, np.ascontiguousarray(y, dtype=np.float64), bounds, hits)
    return hits


@njit(cache=True, nogil=True)
def _top1_hits(scores, y, bounds, hits):
    """One pass per group (a search scores every rule this way: NumPy's ten passes over the
    rows took twice the time of the rule's own kernel run). A score that is not finite counts
    as -inf; a hit needs one row alone at a finite maximum, and that row a target."""
    for g in range(bounds.shape[0] - 1):
        a, b = bounds[g], bounds[g + 1]
        m = -np.inf
        for r in range(a, b):
            v = scores[r]
            if v - v == 0.0 and v > m:  # finite and larger
                m = v
        at_max = 0
        target = 0
        for r in range(a, b):
            v = scores[r]
            v = v if v - v == 0.0 else -np.inf
            if v == m:
                at_max += 1
                if y[r] > 0.5:
                    target += 1
        hits[g] = 1.0 if at_max == 1 and target == 1 and m > -np.inf else 0.0


def top1_accuracy(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Share of groups whose highest-scored row is a target (ties and NaN count as misses)."""
    hits = top1_hits(scores, y, groups)
    return float(hits.mean()) if len(hits) else 0.0


# --------------------------------------------------------------------------- settings

class SettingsError(ValueError):
    """A bad task setting. `key` is the setting's name; the message starts with it."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.reason = message
        super().__init__(f"{key}: {message}")


MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Setting:
    """One task setting's type and range (bounds inclusive unless `open`), or its choices."""

    kind: type  # int, float, str or bool
    lo: float | None = None
    hi: float | None = None
    open: bool = False  # lo < value < hi instead of lo <= value <= hi
    choices: tuple = ()

    def check(self, key: str, value) -> None:
        kinds = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        # numbers.* so that NumPy scalars pass; a bool is never taken for a number
        ok = {int: numbers.Integral, float: numbers.Real}.get(self.kind, self.kind)
        if not isinstance(value, ok) or (self.kind is not bool and isinstance(value, bool)):
            raise SettingsError(key, f"must be {kinds[self.kind]}, got {_short(value)}")
        if self.kind is float and not math.isfinite(value):
            raise SettingsError(key, f"must be a finite number, got {value}")
        if self.choices and value not in self.choices:
            raise SettingsError(key, f"must be one of {', '.join(map(repr, self.choices))}, got "
                                f"{_short(value)}{did_you_mean(value, self.choices)}")
        if self.kind in (int, float) and not self._in_range(value):
            raise SettingsError(key, f"must be {self.range_text()}, got {value}")

    def _in_range(self, v) -> bool:
        lo, hi = self.lo, self.hi
        if self.open:
            return (lo is None or v > lo) and (hi is None or v < hi)
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    def range_text(self) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f"in ({lo}, {hi})" if self.open else f"in [{lo}, {hi}]"
        if lo is not None:
            return f"{'>' if self.open else '>='} {lo}"
        return f"{'<' if self.open else '<='} {hi}" if hi is not None else "a number"


def check_settings(settings: Mapping, schema: Mapping[str, Setting]) -> None:
    """Every key known to `schema` and every value of its type and range, else SettingsError."""
    for key, value in settings.items():
        if key not in schema:
            raise SettingsError(str(key), f"unknown setting (known: {', '.join(schema) or 'none'})"
                                f"{did_you_mean(key, schema)}")
        schema[key].check(key, value)


def did_you_mean(word, known) -> str:
    """'; did you mean 'x'?' for the closest of `known`, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
