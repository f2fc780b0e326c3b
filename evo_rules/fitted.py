"""Fitted rules: a rule with its weights and metrics, applied to new data; `load` reads a run.

`load(DIR)` reads a finished run's report.json (or, for a run stopped before it wrote one, its
last checkpoint) and returns the winner and the hall of fame as `FittedRule`s. `predict(X)`
takes a dict of arrays, a NumPy structured array, a 2-D array with `columns=[...]`, or a pandas
DataFrame (pandas is never imported: a DataFrame is read through its columns).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .csvrows import number, read_rows
from .rule import Rule, parse


class DataError(ValueError):
    """Input data that a rule cannot be applied to (missing columns, unreadable CSV)."""


def columns_of(X, needed: Sequence[str], columns: Sequence[str] | None = None) -> tuple[dict, int]:
    """({name: float64 column} for the `needed` names, number of rows) from any accepted input."""
    if columns is not None:
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] != len(columns):
            raise DataError(f"columns= names {len(columns)} column(s), the array has shape {arr.shape}")
        have = list(columns)
        get = {c: arr[:, j] for j, c in enumerate(columns)}.__getitem__
        n = arr.shape[0]
    elif isinstance(X, Mapping):
        have = list(X)
        get = X.__getitem__
        n = len(np.asarray(X[have[0]]).reshape(-1)) if have else 0
    elif getattr(getattr(X, "dtype", None), "names", None):  # NumPy structured array
        have = list(X.dtype.names)
        get = X.__getitem__
        n = len(X)
    elif hasattr(X, "columns") and hasattr(X, "iloc"):  # a pandas DataFrame
        have = [str(c) for c in X.columns]
        get = {str(c): X[c] for c in X.columns}.__getitem__
        n = len(X)
    else:
        raise DataError("X must be a dict of arrays, a NumPy structured array, a pandas DataFrame, "
                        "or a 2-D array with columns=[names]")
    missing = [f for f in needed if f not in have]
    if missing:
        raise DataError(f"the data has no column(s) {', '.join(missing)} "
                        f"(have: {', '.join(have) or 'none'})")
    out = {}
    for f in needed:
        try:
            col = np.asarray(get(f), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"column {f!r} is not numeric") from None
        if col.shape[0] != n:
            raise DataError(f"column {f!r} has {col.shape[0]} values, expected {n}")
        out[f] = col
    return out, n


@dataclass(frozen=True)
class FittedRule:
    """A rule, its fitted weights (in `rule.params` order) and its metrics from the run."""

    rule: Rule
    weights: tuple[float, ...]
    metrics: dict = field(default_factory=dict)  # on the validation split
    test_metrics: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.weights) != len(self.rule.params):
            raise ValueError(f"rule {self.rule.text} has {len(self.rule.params)} weight(s), "
                             f"got {len(self.weights)}")

    @classmethod
    def from_text(cls, text: str, weights, metrics=None, test_metrics=None) -> "FittedRule":
        return cls(parse(text, check_constants=False), tuple(float(v) for v in weights), dict(metrics or {}),
                   dict(test_metrics or {}))

    def __reduce__(self):  # pickled as text and numbers (estimators are pickled by their users)
        return (FittedRule.from_text, (self.rule.text, self.weights, self.metrics, self.test_metrics))

    @property
    def text(self) -> str:
        return self.rule.text

    @property
    def features(self) -> tuple[str, ...]:
        return self.rule.features

    def predict(self, X, columns: Sequence[str] | None = None) -> np.ndarray:
        """One score per row of X (see `columns_of` for the accepted inputs)."""
        cols, n = columns_of(X, self.rule.features, columns)
        if not cols:  # a rule that reads no feature: only the row count matters
            cols = {"rows": np.zeros(n)}
        return self.rule.evaluate(cols, np.asarray(self.weights, dtype=np.float64))

    def to_infix(self) -> str:
        return self.rule.to_infix(self.weights)

    def to_latex(self, digits: int = 4) -> str:
        return self.rule.to_latex(self.weights, digits)

    def to_sympy(self):
        return self.rule.to_sympy(self.weights)

    def to_numpy(self, name: str = "rule") -> str:
        return self.rule.to_numpy(self.weights, name)

    def to_callable(self):
        return self.rule.to_callable(self.weights)

    def __repr__(self) -> str:
        return f"FittedRule({self.to_infix()!r})"


@dataclass(frozen=True)
class FittedRun:
    """What `load` returns: the run's winner (None when no finalist passed the rerun gate, or the
    run has no report yet), the winner pruned (`evo_rules.prune`; None when nothing could go or
    there is no winner) and the hall of fame, best first."""

    folder: str
    task: dict
    winner: FittedRule | None
    hall_of_fame: list[FittedRule]
    pruned: FittedRule | None = None

    @property
    def best(self) -> FittedRule | None:
        """The winner, else the best rule of the hall of fame."""
        return self.winner or (self.hall_of_fame[0] if self.hall_of_fame else None)

    def predict(self, X, columns: Sequence[str] | None = None) -> np.ndarray:
        if self.best is None:
            raise ValueError(f"{self.folder}: the run has no valid rule")
        return self.best.predict(X, columns)


def _fitted(entry: Mapping, where: str) -> FittedRule:
    try:
        return FittedRule.from_text(entry["text"], entry["weights"],
                                    entry.get("valid_metrics", entry.get("metrics")),
                                    entry.get("test_metrics"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: a hall-of-fame entry is not a fitted rule ({exc})") from None


def load(folder: str) -> FittedRun:
    """The winner and hall of fame of the run in `folder`, as fitted rules."""
    from . import checkpoint
    from .run_folder import REPORT, RunFolder

    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: no such run folder")
    rf = RunFolder(folder)
    path = os.fspath(rf.report)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                report = json.load(fh)
            hof = [_fitted(e, path) for e in report["hall_of_fame"]]
            win = report.get("winner")
            pruned = (win or {}).get("pruned")
            return FittedRun(folder, dict(report.get("task") or {}),
                             _fitted(win, path) if win else None, hof,
                             _fitted(pruned, path) if pruned else None)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable run report ({type(exc).__name__}: {exc})") from None
    if not rf.holds_run():
        raise ValueError(f"{folder}: not a run folder (no {REPORT} or {rf.checkpoint.name})")
    state = checkpoint.read_latest(folder)
    where = os.fspath(rf.checkpoint)
    # the report's order: best metric first, ties to the smaller rule, then the older one
    try:
        entries = sorted((d for d in state["hall_of_fame"] if d["valid"]),
                         key=lambda d: (-d["metric"], d["size"], d["id"]))
        task = dict(state.get("task") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: the hall of fame is not readable ({type(exc).__name__}: {exc})") from None
    return FittedRun(folder, task, None, [_fitted(d, where) for d in entries])


def read_csv(path: str, needed: Sequence[str]) -> tuple[dict, int]:
    """The `needed` numeric columns of a CSV file with a header line; other columns may hold
    anything. Errors name the file and line."""
    rows = read_rows(path, DataError)
    if not rows:
        raise DataError(f"{path}:1: empty file (expected a header line)")
    header = [h.strip() for h in rows[0]]
    missing = [f for f in needed if f not in header]
    if missing:
        raise DataError(f"{path}:1: no column(s) {', '.join(missing)} needed by the rule "
                        f"(have: {', '.join(header)})")
    index = [header.index(f) for f in needed]
    data = []
    for n, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        vals = []
        for f, j in zip(needed, index):
            v = number(row[j])
            if v is None:
                raise DataError(f"{path}:{n}: column {f}: {row[j][:40]!r} is not a number")
            if not math.isfinite(v):  # as in training data: a rule was never fitted on one
                raise DataError(f"{path}:{n}: column {f}: values must be finite, {row[j].strip()} is not")
            vals.append(v)
        data.append(vals)
    arr = np.asarray(data, dtype=np.float64).reshape(len(data), len(needed))
    return {f: np.ascontiguousarray(arr[:, k]) for k, f in enumerate(needed)}, len(data)


def predict_csv(folder: str, data: str, rule: int | None = None) -> np.ndarray:
    """`evo-rules predict`: scores of the run's winner (or hall-of-fame rule `rule`, 1 = best)
    for every data row of the CSV file."""
    run = load(folder)
    if rule is None:
        chosen = run.winner
        if chosen is None:
            raise ValueError(f"{folder}: the run has no winner (no finalist passed the rerun gate, "
                             f"or it stopped before its report); choose a rule with --rule N")
    else:
        if not 1 <= rule <= len(run.hall_of_fame):
            raise ValueError(f"--rule {rule}: the hall of fame of {folder} has "
                             f"{len(run.hall_of_fame)} rule(s) (1 = best)")
        chosen = run.hall_of_fame[rule - 1]
    cols, n = read_csv(data, chosen.features)
    if not cols:
        cols = {"rows": np.zeros(n)}
    return chosen.predict(cols)


def format_scores(scores: np.ndarray) -> str:
    """One score per line, exact (shortest round-trip text)."""
    return "".join(f"{float(v)!r}\n" for v in scores)
