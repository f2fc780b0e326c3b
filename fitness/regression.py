"""Symbolic regression on a CSV file: numeric columns, one of them the target.

Settings: `path` (absolute, relative to the working folder, or a file shipped in
`fitness/data/`), `target` (column name), `seed` (the shuffle that makes the splits),
`valid_fraction`, `test_fraction`. Loss: squared error. Metric: R^2 on the split (higher is
better). Every other column is a feature; its name must be usable as `x.NAME` (letters,
digits, `_`). A malformed file is an error naming the file and line.
"""

from __future__ import annotations

import csv
import math
import os
import re
from importlib import resources

import numpy as np

from .base import PARTS, Batch, Scorer, fingerprint_of

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CSVFormatError(ValueError):
    pass


def _resolve(path: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    shipped = resources.files("fitness.data").joinpath(path)
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(f"regression data {path!r}: no such file (nor shipped in fitness/data)")


def load_csv(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise CSVFormatError(f"{path}:1: empty file (expected a header line)")
    header = [h.strip() for h in rows[0]]
    for h in header:
        if not _NAME.match(h):
            raise CSVFormatError(f"{path}:1: column name {h!r} cannot be a feature name "
                                 "(letters, digits and _, not starting with a digit)")
    if len(set(header)) != len(header):
        raise CSVFormatError(f"{path}:1: repeated column names")
    data = []
    for n, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise CSVFormatError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        try:
            vals = [float(c) for c in row]
        except ValueError:
            bad = next(c for c in row if not _is_float(c))
            raise CSVFormatError(f"{path}:{n}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in vals):
            raise CSVFormatError(f"{path}:{n}: values must be finite")
        data.append(vals)
    if len(data) < 10:
        raise CSVFormatError(f"{path}: needs at least 10 data rows, has {len(data)}")
    return header, np.asarray(data, dtype=np.float64)


def _is_float(c: str) -> bool:
    try:
        float(c)
        return True
    except ValueError:
        return False


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    if not np.all(np.isfinite(pred)):
        return float("nan")
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


class RegressionTask:
    loss = "squared"
    metric_name = "r2"

    def __init__(self, path: str = "example_regression.csv", target: str = "y", seed: int = 0,
                 valid_fraction: float = 0.2, test_fraction: float = 0.2):
        if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
            raise ValueError("valid_fraction and test_fraction must be in (0, 1) and sum below 1")
        resolved = _resolve(path)
        header, data = load_csv(resolved)
        if target not in header:
            raise ValueError(f"{resolved}: no target column {target!r} (columns: {', '.join(header)})")
        self.name = "regression"
        self.features = tuple(h for h in header if h != target)
        n = data.shape[0]
        order = np.random.default_rng(seed).permutation(n)
        n_test = max(1, int(round(test_fraction * n)))
        n_valid = max(1, int(round(valid_fraction * n)))
        idx = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid],
               "train": order[n_test + n_valid:]}
        t = header.index(target)
        self._batches = {}
        for part in PARTS:
            rows = np.sort(idx[part])
            X = {h: np.ascontiguousarray(data[rows, j]) for j, h in enumerate(header) if j != t}
            self._batches[part] = Batch(X=X, y=np.ascontiguousarray(data[rows, t]), groups=None)
        self.settings = {"path": os.path.basename(resolved), "target": target, "seed": seed,
                         "valid_fraction": valid_fraction, "test_fraction": test_fraction}
        self.fingerprint = fingerprint_of(self.name, self.settings, data)
        self._path, self._target = path, target

    def batch(self, part: str) -> Batch:
        if part not in self._batches:
            raise ValueError(f"unknown part {part!r} (expected one of {', '.join(PARTS)})")
        return self._batches[part]

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        b = self.batch(part)
        pred = np.asarray(scorer(b.X), dtype=np.float64)
        with np.errstate(all="ignore"):
            return {"r2": r2(b.y, pred), "rmse": float(np.sqrt(np.mean((b.y - pred) ** 2)))}

    def resample(self, seed: int) -> "RegressionTask":
        s = self.settings
        return RegressionTask(self._path, self._target, seed, s["valid_fraction"], s["test_fraction"])

    def linear_rule_text(self) -> str:
        return "(add " + " ".join(f"(mul w x.{f})" for f in self.features) + " w)"
