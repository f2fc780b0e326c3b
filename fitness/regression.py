"""Symbolic regression on a CSV file: numeric columns, one of them the target.

Settings: `path` (absolute, relative to the working folder, or a file shipped in
`fitness/data/`), `target` (column name), `seed` (the shuffle that makes the splits),
`valid_fraction`, `test_fraction`. Or, instead of `path` and `test_fraction`, separate files
`train` and `test` (found the same way, with the same columns in any order): the test file is
the whole test split and the train file's rows are shuffled by `seed` into valid
(`valid_fraction`) and train. Loss: squared error. Metric: R^2 on the split (higher is
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

from evo_rules.csvrows import number, read_rows

from .base import (MAX_SEED, PARTS, Batch, Scorer, Setting, SettingsError, check_settings,
                   did_you_mean, fingerprint_of)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CSVFormatError(ValueError):
    pass


MIN_ROWS = 10

SETTINGS = {"path": Setting(str), "train": Setting(str), "test": Setting(str),
            "target": Setting(str), "seed": Setting(int, 0, MAX_SEED),
            "valid_fraction": Setting(float, 0.0, 1.0, open=True),
            "test_fraction": Setting(float, 0.0, 1.0, open=True)}


def check_task_settings(settings) -> None:
    """SettingsError for an unknown, mistyped or out-of-range setting, or a mix of the one-file
    (`path`, `test_fraction`) and the two-file (`train`, `test`) forms."""
    check_settings(settings, SETTINGS)
    for key in ("path", "train", "test"):
        if not settings.get(key, "x"):
            raise SettingsError(key, "must name a CSV file")
    if "train" in settings or "test" in settings:
        for key in ("path", "test_fraction"):
            if key in settings:
                raise SettingsError(key, "not with train/test files (the test file is the test split)")
        for key, other in (("train", "test"), ("test", "train")):
            if key not in settings:
                raise SettingsError(other, f"needs {key} as well (or path alone for one file)")
        return
    if settings.get("valid_fraction", 0.2) + settings.get("test_fraction", 0.2) >= 1:
        key = "test_fraction" if "test_fraction" in settings else "valid_fraction"
        raise SettingsError(key, "valid_fraction + test_fraction must be below 1 (rows are left to train on)")


def _resolve(path: str, what: str = "regression data") -> str:
    if os.path.exists(path):
        return path
    if not os.path.isabs(path):
        shipped = resources.files("evo_rules.fitness.data").joinpath(path)
        if shipped.is_file():
            return str(shipped)
    raise FileNotFoundError(f"{what} {path!r}: no such file"
                            f"{'' if os.path.isabs(path) else ' (nor shipped in fitness/data)'}")


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
            v = number(c)
            if v is None:
                raise CSVFormatError(f"{path}:{n}: {c[:40]!r} is not a number (column {name})")
            if not math.isfinite(v):
                raise CSVFormatError(f"{path}:{n}: values must be finite, {c.strip()} is not (column {name})")
            vals.append(v)
        data.append(vals)
    if len(data) < MIN_ROWS:
        raise CSVFormatError(f"{path}: needs at least {MIN_ROWS} data rows, has {len(data)}")
    return header, np.asarray(data, dtype=np.float64)


def r2_units(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 split into rows: 1 - n * residual^2 / total sum of squares; their mean is `r2`."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if not np.all(np.isfinite(pred)):
        return np.full(y.shape, np.nan)
    res = (y - pred) ** 2
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot > 0:
        return 1.0 - len(y) * res / ss_tot
    return np.full(y.shape, 1.0 if res.sum() == 0 else 0.0)


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


def _check_target(files: dict, target: str, y: np.ndarray, batches: dict, fractions: str) -> None:
    """R^2 needs a target that varies on every split (and rows left to fit on). `files`: the
    file each part's rows come from (`y`: the target on every row of the train part's file)."""
    if np.ptp(y) == 0:
        raise CSVFormatError(f"{files['train']}: target column {target!r} is constant ({y[0]:g} on every "
                             "row): nothing to predict (R^2 is undefined)")
    for part, b in batches.items():
        if b.n_rows < 2:
            raise CSVFormatError(f"{files[part]}: {b.n_rows} {part} rows of {len(y)}: too few rows for "
                                 f"these {fractions} (need 2 per split)")
        if np.ptp(b.y) == 0:
            raise CSVFormatError(f"{files[part]}: target column {target!r} is constant on the {b.n_rows} "
                                 f"{part} rows (R^2 is undefined there): more rows or another seed")


def _target_column(path: str, header: list[str], target: str) -> int:
    if target not in header:
        raise ValueError(f"{path}: no target column {target!r} (columns: {', '.join(header)})"
                         f"{did_you_mean(target, header)}")
    if len(header) < 2:
        raise CSVFormatError(f"{path}:1: needs a feature column besides the target {target!r}")
    return header.index(target)


def _load_like(path: str, header: list[str], train_path: str) -> np.ndarray:
    """The test file's data with its columns in the train file's order; its columns must be the
    train file's (a rule reads features by name, so their order may differ)."""
    own, data = load_csv(path)
    if set(own) != set(header):
        missing = ", ".join(h for h in header if h not in own) or "none"
        extra = ", ".join(h for h in own if h not in header) or "none"
        raise CSVFormatError(f"{path}:1: columns differ from the train file {train_path} "
                             f"(missing: {missing}; extra: {extra})")
    return data[:, [own.index(h) for h in header]]


def _batch(data: np.ndarray, rows: np.ndarray, header: list[str], t: int) -> Batch:
    X = {h: np.ascontiguousarray(data[rows, j]) for j, h in enumerate(header) if j != t}
    return Batch(X=X, y=np.ascontiguousarray(data[rows, t]), groups=None)


class RegressionTask:
    loss = "squared"
    metric_name = "r2"

    def __init__(self, path: str | None = None, target: str = "y", seed: int = 0,
                 valid_fraction: float = 0.2, test_fraction: float | None = None,
                 train: str | None = None, test: str | None = None):
        given = {k: v for k, v in (("path", path), ("train", train), ("test", test), ("target", target),
                                   ("seed", seed), ("valid_fraction", valid_fraction),
                                   ("test_fraction", test_fraction)) if v is not None}
        check_task_settings(given)
        self._given = given  # what resample rebuilds from
        self.name = "regression"
        if train is None:
            self._one_file(path or "example_regression.csv", target, seed, valid_fraction,
                           0.2 if test_fraction is None else test_fraction)
        else:
            self._two_files(train, test, target, seed, valid_fraction)

    def _one_file(self, path, target, seed, valid_fraction, test_fraction) -> None:
        """One file shuffled by `seed` into test, valid and train (README results depend on
        this split and fingerprint: keep both as they are)."""
        resolved = _resolve(path)
        header, data = load_csv(resolved)
        t = _target_column(resolved, header, target)
        self.features = tuple(h for h in header if h != target)
        n = data.shape[0]
        order = np.random.default_rng(seed).permutation(n)
        n_test = max(1, int(round(test_fraction * n)))
        n_valid = max(1, int(round(valid_fraction * n)))
        idx = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid],
               "train": order[n_test + n_valid:]}
        self._batches = {part: _batch(data, np.sort(idx[part]), header, t) for part in PARTS}
        _check_target(dict.fromkeys(PARTS, resolved), target, data[:, t], self._batches,
                      "valid_fraction/test_fraction")
        self.settings = {"path": os.path.basename(resolved), "target": target, "seed": seed,
                         "valid_fraction": valid_fraction, "test_fraction": test_fraction}
        self.fingerprint = fingerprint_of(self.name, self.settings, data)

    def _two_files(self, train, test, target, seed, valid_fraction) -> None:
        """The test file is the test split; the train file's rows are shuffled into valid and train."""
        files = {"train": _resolve(train, "regression train file"),
                 "test": _resolve(test, "regression test file")}
        files["valid"] = files["train"]
        header, data = load_csv(files["train"])
        t = _target_column(files["train"], header, target)
        test_data = _load_like(files["test"], header, files["train"])
        self.features = tuple(h for h in header if h != target)
        n = data.shape[0]
        order = np.random.default_rng(seed).permutation(n)
        n_valid = max(1, int(round(valid_fraction * n)))
        self._batches = {"train": _batch(data, np.sort(order[n_valid:]), header, t),
                         "valid": _batch(data, np.sort(order[:n_valid]), header, t),
                         "test": _batch(test_data, np.arange(test_data.shape[0]), header, t)}
        _check_target(files, target, data[:, t], self._batches, "valid_fraction")
        self.settings = {"train": os.path.basename(files["train"]),
                         "test": os.path.basename(files["test"]), "target": target, "seed": seed,
                         "valid_fraction": valid_fraction}
        self.fingerprint = fingerprint_of(self.name, self.settings, data, test_data)

    def batch(self, part: str) -> Batch:
        if part not in self._batches:
            raise ValueError(f"unknown part {part!r} (expected one of {', '.join(PARTS)})")
        return self._batches[part]

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        b = self.batch(part)
        pred = np.asarray(scorer(b.X), dtype=np.float64)
        with np.errstate(all="ignore"):
            return {"r2": r2(b.y, pred), "rmse": float(np.sqrt(np.mean((b.y - pred) ** 2)))}

    def score_units(self, part: str, scorer: Scorer) -> np.ndarray:
        """Per row, its share of R^2 (see `r2_units`)."""
        b = self.batch(part)
        with np.errstate(all="ignore"):
            return r2_units(b.y, np.broadcast_to(np.asarray(scorer(b.X), dtype=np.float64), b.y.shape))

    def resample(self, seed: int) -> "RegressionTask":
        """Another shuffle of the rows into the splits (two files: the test file stays the test split)."""
        return RegressionTask(**{**self._given, "seed": seed})

    def linear_rule_text(self) -> str:
        return "(add " + " ".join(f"(mul w x.{f})" for f in self.features) + " w)"
