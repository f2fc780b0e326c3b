"""Symbolic regression on a CSV file: numeric columns, one of them the target.

Settings: `path` (absolute, relative to the working folder, or a file shipped in
`fitness/data/`), `target` (column name), `seed` (the shuffle that makes the splits),
`valid_fraction`, `test_fraction`. Loss: squared error. Metric: R^2 on the split (higher is
better). Every other column is a feature; its name must be usable as `x.NAME` (letters,
digits, `_`). A malformed file is an error naming the file and line (and column): not UTF-8,
not CSV, a non-numeric or non-finite cell, fewer than 10 rows, no feature column, a target that
is constant (on all rows or on one split). Settings are declared in `SETTINGS`.
"""

from __future__ import annotations

import math
import os
import re
from importlib import resources

import numpy as np

from evo_rules.csvrows import read_rows

from .base import (MAX_SEED, PARTS, Batch, Scorer, Setting, SettingsError, check_settings,
                   did_you_mean, fingerprint_of)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CSVFormatError(ValueError):
    pass


MIN_ROWS = 10

SETTINGS = {"path": Setting(str), "target": Setting(str), "seed": Setting(int, 0, MAX_SEED),
            "valid_fraction": Setting(float, 0.0, 1.0, open=True),
            "test_fraction": Setting(float, 0.0, 1.0, open=True)}


def check_task_settings(settings) -> None:
    """SettingsError for an unknown, mistyped or out-of-range setting."""
    check_settings(settings, SETTINGS)
    if not settings.get("path", "x"):
        raise SettingsError("path", "must name a CSV file")
    if settings.get("valid_fraction", 0.2) + settings.get("test_fraction", 0.2) >= 1:
        key = "test_fraction" if "test_fraction" in settings else "valid_fraction"
        raise SettingsError(key, "valid_fraction + test_fraction must be below 1 (rows are left to train on)")


def _resolve(path: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    shipped = resources.files("fitness.data").joinpath(path)
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(f"regression data {path!r}: no such file (nor shipped in fitness/data)")


def load_csv(path: str) -> tuple[list[str], np.ndarray]:
    """Header and float64 data of a numeric CSV; CSVFormatError naming file, line and column."""
    rows = read_rows(path, CSVFormatError)
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
        vals = []
        for name, c in zip(header, row):
            v = _float(c)
            if v is None:
                raise CSVFormatError(f"{path}:{n}: {c[:40]!r} is not a number (column {name})")
            if not math.isfinite(v):
                raise CSVFormatError(f"{path}:{n}: values must be finite, {c.strip()} is not (column {name})")
            vals.append(v)
        data.append(vals)
    if len(data) < MIN_ROWS:
        raise CSVFormatError(f"{path}: needs at least {MIN_ROWS} data rows, has {len(data)}")
    return header, np.asarray(data, dtype=np.float64)


def _float(c: str) -> float | None:
    try:
        return float(c)
    except ValueError:
        return None


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """R^2 (nan for non-finite predictions); a constant target scores 1 when matched exactly,
    else 0 (scikit-learn's convention; the CSV task refuses constant targets anyway)."""
    if not np.all(np.isfinite(pred)):
        return float("nan")
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot > 0:
        return 1.0 - ss_res / ss_tot
    return 1.0 if ss_res == 0 else 0.0


def _check_target(path: str, target: str, y: np.ndarray, batches: dict) -> None:
    """R^2 needs a target that varies on every split (and rows left to fit on)."""
    if np.ptp(y) == 0:
        raise CSVFormatError(f"{path}: target column {target!r} is constant ({y[0]:g} on every row): "
                             "nothing to predict (R^2 is undefined)")
    for part, b in batches.items():
        if b.n_rows < 2:
            raise CSVFormatError(f"{path}: {b.n_rows} {part} rows of {len(y)}: too few rows for these "
                                 "valid_fraction/test_fraction (need 2 per split)")
        if np.ptp(b.y) == 0:
            raise CSVFormatError(f"{path}: target column {target!r} is constant on the {b.n_rows} "
                                 f"{part} rows (R^2 is undefined there): more rows or another seed")


class RegressionTask:
    loss = "squared"
    metric_name = "r2"

    def __init__(self, path: str = "example_regression.csv", target: str = "y", seed: int = 0,
                 valid_fraction: float = 0.2, test_fraction: float = 0.2):
        check_task_settings(dict(path=path, target=target, seed=seed, valid_fraction=valid_fraction,
                                 test_fraction=test_fraction))
        resolved = _resolve(path)
        header, data = load_csv(resolved)
        if target not in header:
            raise ValueError(f"{resolved}: no target column {target!r} (columns: {', '.join(header)})"
                             f"{did_you_mean(target, header)}")
        if len(header) < 2:
            raise CSVFormatError(f"{resolved}:1: needs a feature column besides the target {target!r}")
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
        _check_target(resolved, target, data[:, t], self._batches)
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
