"""How often the operators draw each feature (`[grammar] feature_weights`).

"linear": in proportion to the magnitude of the linear baseline's fitted weights on features
standardised within their groups (the listwise loss ignores a shift shared by a group, so a
column is centred per group and divided by its pooled within-group standard deviation).
A feature that never varies inside a group (bAbI's hop, the anchor's word indicators) cannot
enter a linear rule at all: it matters only in products. It is weighted by the largest
|weight| of its products with the varying features in a linear fit over those features and
the products (one fit per such feature, on the first `PROBE_ROWS` rows), and each partner of
a product gets at least that weight too. This finds which pairs carry signal, not a rule: the
search still has to assemble them. The strongest products (at least `PAIR_SHARE` of the best)
also become pair weights: a product term whose first feature has partners draws its second
feature towards them. Every weight is at
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


def feature_weights(mode: str, task, features: Sequence[str], max_iter: int = 20) -> tuple:
    """(weights, pairs): ((), ()) for "uniform" (the operators' uniform draw), else one weight
    > 0 per feature and the probe's useful products as (feature, partner, weight in (0, 1])
    (`operators.Grammar.pair_weights`: a product term draws its second feature towards them)."""
    if mode == "uniform":
        return (), ()
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


def linear_weights(task, features: Sequence[str], max_iter: int = 20) -> tuple:
    b = task.batch("train")
    X = {f: np.asarray(b.X[f], dtype=np.float64) for f in features}
    Z = {f: _standardised(X[f], b.groups) for f in features}
    varying = [f for f in features if Z[f] is not None]
    u = dict.fromkeys(features, 0.0)
    u.update(_fitted_magnitudes({f: Z[f] for f in varying}, b, task.loss, max_iter))
    # a feature constant inside every group acts only in products: probe it by a linear fit over
    # the varying features and its products with them, on the first PROBE_ROWS rows
    rows = _probe_rows(b)
    sub = _Rows(b.y[rows], None if b.groups is None else b.groups[rows])
    pairs: dict[tuple[str, str], float] = {}
    for c in (f for f in features if Z[f] is None):
        cols = {f: _standardised(X[f][rows], sub.groups) for f in varying}
        for f in varying:
            cols[f"p__{f}"] = _standardised(X[c][rows] * X[f][rows], sub.groups)
        mags = _fitted_magnitudes({k: v for k, v in cols.items() if v is not None}, sub,
                                  task.loss, max_iter)
        for f in varying:
            m = mags.get(f"p__{f}", 0.0)
            u[c] = max(u[c], m)
            u[f] = max(u[f], m)  # the partner of a useful product is useful too
            pairs[c, f] = m
    top = max(u.values())
    if top <= 0:
        return tuple(1.0 for _ in features), ()
    best = max(pairs.values(), default=0.0)
    strong = tuple((c, f, m / best) for (c, f), m in pairs.items() if best > 0 and m >= PAIR_SHARE * best)
    return tuple(FLOOR + (1.0 - FLOOR) * u[f] / top for f in features), strong


PROBE_ROWS = 8000
PAIR_SHARE = 0.25  # products kept as pair weights: at least this share of the strongest


class _Rows:
    """The labels and groups of a row subset (what `_fitted_magnitudes` reads)."""

    def __init__(self, y, groups):
        self.y, self.groups = y, groups


def _probe_rows(b) -> np.ndarray:
    """The first rows of the batch, whole groups only (at least one group)."""
    n = min(PROBE_ROWS, len(b.y))
    if b.groups is None or n == len(b.y):
        return np.arange(n)
    cut = b.groups[n - 1]
    return np.flatnonzero(b.groups < max(cut, 1))


def _fitted_magnitudes(Z: dict, b, loss: str, max_iter: int) -> dict[str, float]:
    """|fitted weight| of each column of a linear rule over the columns of Z (listwise or not,
    as the task's loss); {} when nothing varies or the fit fails."""
    names = list(Z)
    if not names:
        return {}
    terms = " ".join(f"(mul w x.{f})" for f in names)
    rule = parse(f"(add {terms})" if len(names) > 1 else terms)
    res = fit(rule, Z, b.y, loss=loss, groups=b.groups, max_iter=max_iter)
    w = np.asarray(res.weights, dtype=np.float64)
    if not res.valid or not np.all(np.isfinite(w)):
        return {}
    out = {}
    for f in names:  # the rule is linear without a constant: its value at the unit vector e_f is w_f
        e = {h: np.zeros(1) for h in names}
        e[f] = np.ones(1)
        out[f] = abs(float(rule.evaluate(e, w)[0]))
    return out
