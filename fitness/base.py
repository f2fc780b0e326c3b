"""The task interface every task in `fitness/` implements.

A task owns its data splits and knows how to measure a scorer on them. The engine sees only
this interface (duck-typed): it fits a rule's weights on `batch("train")` with `loss`, then
calls `score("valid", scorer)` for fitness. Multi-hop tasks return teacher-forced rows from
`batch` and run real hop-by-hop inference inside `score`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import numpy as np

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


def top1_accuracy(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Share of groups whose highest-scored row is a target (ties and NaN count as misses)."""
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    if len(groups) == 0:
        return 0.0
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    row_group = np.cumsum(np.r_[True, groups[1:] != groups[:-1]]) - 1
    gmax = np.maximum.reduceat(scores, starts)
    at_max = scores == gmax[row_group]
    n_at_max = np.add.reduceat(at_max.astype(np.int64), starts)
    target_at_max = np.add.reduceat((at_max & (y > 0.5)).astype(np.int64), starts)
    hits = (n_at_max == 1) & (target_at_max == 1) & np.isfinite(gmax)
    return float(hits.sum()) / len(starts)
