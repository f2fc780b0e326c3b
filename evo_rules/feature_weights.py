"""How often the operators draw each feature (`[grammar] feature_weights`).

"linear": in proportion to the magnitude of the linear baseline's fitted weights on features
standardised within their groups (the listwise loss ignores a shift shared by a group, so a
column is centred per group and divided by its pooled within-group standard deviation).
A feature that never varies inside a group (bAbI's hop, the anchor's word indicators) cannot
enter a linear rule at all: the fit says nothing about it, so it gets the mean weight of the
others; it matters only in products, which is what the search is for. Every weight is at
least `FLOOR` of the largest, so every feature stays reachable. Fitted on the train batch
only, deterministically: one config gives one grammar.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .fitting import fit
from .rule import parse

MODES = ("uniform", "linear")
FLOOR = 0.1


def feature_weights(mode: str, task, features: Sequence[str], max_iter: int = 20) -> tuple[float, ...]:
    """() for "uniform" (the operators' uniform draw), else one weight > 0 per feature."""
    if mode == "uniform":
        return ()
    if mode != "linear":
        raise ValueError(f"feature_weights: must be one of {', '.join(MODES)}, got {mode!r}")
    return linear_weights(task, features, max_iter)


def _standardised(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray | None:
    """x centred per group (or overall) and scaled to unit variance; None if it is constant."""
    if groups is None:
        c = x - x.mean()
    else:
        sums = np.bincount(groups, weights=x)
        c = x - (sums / np.maximum(np.bincount(groups), 1))[groups]
    sd = float(np.sqrt(np.mean(c * c))) if len(c) else 0.0
    return c / sd if sd > 1e-12 else None


def linear_weights(task, features: Sequence[str], max_iter: int = 20) -> tuple[float, ...]:
    b = task.batch("train")
    Z = {f: _standardised(np.asarray(b.X[f], dtype=np.float64), b.groups) for f in features}
    varying = [f for f in features if Z[f] is not None]
    u = dict.fromkeys(features, 0.0)
    if varying:
        text = "(add " + " ".join(f"(mul w x.{f})" for f in varying) + ")" if len(varying) > 1 \
            else f"(mul w x.{varying[0]})"
        rule = parse(text)
        res = fit(rule, {f: Z[f] for f in varying}, b.y, loss=task.loss, groups=b.groups,
                  max_iter=max_iter)
        w = np.asarray(res.weights, dtype=np.float64)
        if res.valid and np.all(np.isfinite(w)):
            # the rule is linear without a constant: its value at the unit vector e_f is w_f
            for f in varying:
                X = {h: np.zeros(1) for h in varying}
                X[f] = np.ones(1)
                u[f] = abs(float(rule.evaluate(X, w)[0]))
    top = max(u.values())
    if top <= 0:
        return tuple(1.0 for _ in features)
    mean = float(np.mean([u[f] for f in varying]))
    for f in features:
        if Z[f] is None:
            u[f] = mean
    return tuple(FLOOR + (1.0 - FLOOR) * min(u[f] / top, 1.0) for f in features)
