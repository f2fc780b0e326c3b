"""A task over in-memory arrays (the scikit-learn estimators' data): no file, no run folder.

Rows are shuffled once by `seed` and split into train (weights are fitted there) and valid
(rules are ranked there); the test split is the valid split, since an estimator's caller keeps
their own test data. Losses: "squared" (metric R^2) or "logistic" (labels 0/1; metric: minus
the mean log loss, so higher is better; accuracy is reported too).
"""

from __future__ import annotations

import numpy as np

from .base import PARTS, Batch, Scorer, fingerprint_of
from .regression import RegressionTask, r2

METRICS = {"squared": "r2", "logistic": "neg_log_loss"}
MIN_ROWS = 4


class ArrayTask:
    def __init__(self, X: np.ndarray, y: np.ndarray, features: tuple[str, ...], loss: str = "squared",
                 seed: int = 0, valid_fraction: float = 0.25):
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
        order = np.random.default_rng(seed).permutation(n)
        n_valid = min(max(1, int(round(valid_fraction * n))), n - 1)
        rows = {"train": np.sort(order[n_valid:]), "valid": np.sort(order[:n_valid])}
        rows["test"] = rows["valid"]
        self._batches = {part: Batch(X={f: np.ascontiguousarray(X[rows[part], j])
                                        for j, f in enumerate(self.features)},
                                     y=np.ascontiguousarray(y[rows[part]]))
                         for part in PARTS}
        self.settings = {"features": list(self.features), "loss": loss, "seed": seed,
                         "valid_fraction": valid_fraction}
        self.fingerprint = fingerprint_of(self.name, self.settings, X, y)

    # the same split lookup and linear baseline as the CSV task
    batch = RegressionTask.batch
    linear_rule_text = RegressionTask.linear_rule_text

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        b = self.batch(part)
        with np.errstate(all="ignore"):
            s = np.asarray(scorer(b.X), dtype=np.float64)
            if not np.all(np.isfinite(s)):
                return {self.metric_name: float("nan")}
            if self.loss == "squared":
                return {"r2": r2(b.y, s), "rmse": float(np.sqrt(np.mean((b.y - s) ** 2)))}
            # log loss of sigmoid(s): softplus(s) - y s, in the stable form
            log_loss = float(np.mean(np.logaddexp(0.0, s) - b.y * s))
            return {"neg_log_loss": -log_loss, "accuracy": float(np.mean((s > 0) == (b.y > 0.5)))}

