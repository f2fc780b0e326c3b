"""A task over in-memory arrays (the scikit-learn estimators' data): no file, no run folder.

Rows are shuffled once by `seed` and split into train (weights are fitted there) and valid
(rules are ranked there); the test split is the valid split, since an estimator's caller keeps
their own test data. Losses: "squared" (metric R^2), "logistic" (labels 0/1; metric: minus
the mean log loss, so higher is better; accuracy is reported too) or "listwise" (ranking: `groups`
gives each row's query id, y its relevance >= 0; whole queries are shuffled into the splits;
metric: mean reciprocal rank, top-1 accuracy reported too).
"""

from __future__ import annotations

import numpy as np

from .base import PARTS, Batch, Scorer, fingerprint_of
from .regression import RegressionTask, r2, r2_units

METRICS = {"squared": "r2", "logistic": "neg_log_loss", "listwise": "mrr"}
MIN_ROWS = 4


def reciprocal_ranks(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1 / the rank of each group's best-scored most relevant row, for every group with a
    relevant row (y > 0). `groups`: contiguous runs of equal ids. A tie with a less relevant row
    counts against the rule (a constant rule ranks nothing); NaN scores rank last."""
    if len(y) == 0:
        return np.zeros(0)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    change = np.r_[True, groups[1:] != groups[:-1]]
    starts, row_group = np.flatnonzero(change), np.cumsum(change) - 1
    top_y = np.maximum.reduceat(y, starts)
    top = y == top_y[row_group]
    best_top = np.maximum.reduceat(np.where(top, scores, -np.inf), starts)
    ahead = ~top & (scores >= best_top[row_group])
    ranks = 1 + np.add.reduceat(ahead.astype(np.int64), starts)
    return 1.0 / ranks[top_y > 0]


def _query_split(groups: np.ndarray, seed: int, valid_fraction: float) -> tuple[np.ndarray, dict]:
    """Query ids 0..G-1 (in the order of the caller's sorted ids) and each part's rows, whole
    queries shuffled into train and valid by `seed`, each query's rows together in input order."""
    _, ids = np.unique(groups, return_inverse=True)
    G = int(ids.max()) + 1 if len(ids) else 0
    if G < 2:
        raise ValueError(f"needs at least 2 queries (distinct group ids), got {G}")
    order = np.random.default_rng(seed).permutation(G)
    n_valid = min(max(1, int(round(valid_fraction * G))), G - 1)
    in_valid = np.zeros(G, dtype=bool)
    in_valid[order[:n_valid]] = True
    by_query = np.argsort(ids, kind="stable")
    return ids, {"train": by_query[~in_valid[ids[by_query]]], "valid": by_query[in_valid[ids[by_query]]]}


def _renumbered(ids: np.ndarray) -> np.ndarray:
    """Contiguous runs of query ids -> 0..g-1, as Batch.groups wants them."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    return (np.cumsum(np.r_[True, ids[1:] != ids[:-1]]) - 1).astype(np.int64)


class ArrayTask:
    def __init__(self, X: np.ndarray, y: np.ndarray, features: tuple[str, ...], loss: str = "squared",
                 seed: int = 0, valid_fraction: float = 0.25, groups: np.ndarray | None = None):
        if loss not in METRICS:
            raise ValueError(f"loss must be one of {', '.join(METRICS)}, got {loss!r}")
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != len(features):
            raise ValueError(f"X {X.shape} and y {y.shape} do not match {len(features)} feature(s)")
        n = X.shape[0]
        if n < MIN_ROWS:
            raise ValueError(f"needs at least {MIN_ROWS} samples, got {n} sample{'s' * (n != 1)}")
        self.name = "arrays"
        self.loss = loss
        self.metric_name = METRICS[loss]
        self.features = tuple(features)
        if (groups is not None) != (loss == "listwise"):
            raise ValueError("groups go with the listwise loss, and only with it")
        ids = None
        if groups is None:
            order = np.random.default_rng(seed).permutation(n)
            n_valid = min(max(1, int(round(valid_fraction * n))), n - 1)
            rows = {"train": np.sort(order[n_valid:]), "valid": np.sort(order[:n_valid])}
        else:
            groups = np.asarray(groups).reshape(-1)
            if groups.shape[0] != n:
                raise ValueError(f"groups has {groups.shape[0]} entries, X has {n} rows "
                                 "(one query id per row)")
            if not (np.all(np.isfinite(y)) and np.all(y >= 0)):
                raise ValueError("relevance labels y must be finite and >= 0")
            ids, rows = _query_split(groups, seed, valid_fraction)
        rows["test"] = rows["valid"]
        self._batches = {part: Batch(X={f: np.ascontiguousarray(X[rows[part], j])
                                        for j, f in enumerate(self.features)},
                                     y=np.ascontiguousarray(y[rows[part]]),
                                     groups=None if ids is None else _renumbered(ids[rows[part]]))
                         for part in PARTS}
        for part in ("train", "valid"):
            if ids is not None and not np.any(self._batches[part].y > 0):
                raise ValueError(f"no query of the {part} share has a relevant row (y > 0): "
                                 "nothing to rank there")
        self.settings = {"features": list(self.features), "loss": loss, "seed": seed,
                         "valid_fraction": valid_fraction}
        extra = () if ids is None else (ids,)  # ungrouped tasks keep their fingerprint
        self.fingerprint = fingerprint_of(self.name, self.settings, X, y, *extra)

    # the same split lookup as the CSV task
    batch = RegressionTask.batch

    def linear_rule_text(self) -> str:
        if self.loss != "listwise":
            return RegressionTask.linear_rule_text(self)
        # a constant shifts every score of a query alike: the listwise loss cannot fit it
        terms = [f"(mul w x.{f})" for f in self.features]
        return terms[0] if len(terms) == 1 else "(add " + " ".join(terms) + ")"

    def score_units(self, part: str, scorer: Scorer) -> np.ndarray:
        """The primary metric split into units whose mean it is: rows of R^2 or of the negative
        log loss, queries' reciprocal ranks."""
        b = self.batch(part)
        with np.errstate(all="ignore"):
            s = np.broadcast_to(np.asarray(scorer(b.X), dtype=np.float64), b.y.shape)
            if self.loss == "squared":
                return r2_units(b.y, s)
            if not np.all(np.isfinite(s)):
                return np.full(b.y.shape, np.nan)
            if self.loss == "listwise":
                return reciprocal_ranks(s, b.y, b.groups)
            return -(np.logaddexp(0.0, s) - b.y * s)

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        b = self.batch(part)
        with np.errstate(all="ignore"):
            s = np.asarray(scorer(b.X), dtype=np.float64)
            if not np.all(np.isfinite(s)):
                return {self.metric_name: float("nan")}
            if self.loss == "squared":
                return {"r2": r2(b.y, s), "rmse": float(np.sqrt(np.mean((b.y - s) ** 2)))}
            if self.loss == "listwise":
                rr = reciprocal_ranks(s, b.y, b.groups)
                return {"mrr": float(rr.mean()), "top1": float(np.mean(rr == 1.0))}
            # log loss of sigmoid(s): softplus(s) - y s, in the stable form
            log_loss = float(np.mean(np.logaddexp(0.0, s) - b.y * s))
            return {"neg_log_loss": -log_loss, "accuracy": float(np.mean((s > 0) == (b.y > 0.5)))}

