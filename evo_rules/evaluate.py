"""One evaluation: fit a rule's weights on the task's train batch, score them on a part.

Every path that measures a rule goes through here: the search and the sweep (through
`evaluator.Evaluator` and the backends' `evaluate_batch`), the rerun gate and the report. So a
rule is judged the same way everywhere, and an invalid one looks the same everywhere: an
`Evaluation` with `valid = False`, `metric = INVALID_METRIC` and no metrics. A rule is invalid
when its outputs are not finite on the training rows, its metric is not finite, or fitting or
scoring it raised (the error text is kept in `error`); none of these stops a run. Only a text
that is no rule raises (bad input, named), and a stop signal that arrived inside a kernel.

`fit_and_score` is a pure function of (rule text, task, `FitSettings`); what crosses a process
boundary is the text and `Evaluation.to_dict()` (JSON, never pickle). `rescore` measures stored
weights on another part without fitting again, and `StoredFits` does that for the rules a fit
store (the fitness cache, a sweep's results) already holds under the same settings: the report
shows every rule's test metrics without re-fitting it.

Black-box tasks (`task.loss == BLACKBOX`, the optimizer track) fit nothing: every weight is
BLACKBOX_WEIGHT and the task scores the rule itself (`task.evaluate(text, weights, part)`).

Optional task parts are named in one place, `OPTIONAL_TASK_PARTS`, and asked for with
`task_has(task, name)`, which refuses a name not listed there (a typo never reads as "absent").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .fit_settings import FitSettings
from .fitting import FitResult, fit
from .rule import Rule, parse
from .stopping import interrupt_in

INVALID_METRIC = -1e9  # below any real metric; finite so NSGA-II crowding stays well defined
# `task.loss` of a black-box task: no rows to fit; the task runs the rule itself through
# `task.evaluate(rule_text, weights, part) -> metrics` (the optimizer track: a training run)
BLACKBOX = "blackbox"
BLACKBOX_WEIGHT = 1.0  # every weight of a black-box rule: its scales come from form and numbers
INIT_SCALE = 0.5  # standard deviation of the random start weights a seeded re-fit draws

# The parts of a task beyond `fitness.base.Task` (name, loss, features, metric_name,
# fingerprint, batch, score) that the engine uses when a task has them.
OPTIONAL_TASK_PARTS = {
    "linear_rule_text": "() -> str: the linear baseline rule (seeded, gated against, reported)",
    "baseline_name": "str: what reports call that baseline where it is not a linear rule (e.g. 'Muon')",
    "reference_rules": "() -> list or {name: text}: hand-written rules, reported beside the search's",
    "oracle": "(part) -> float: the best metric any scorer can reach (the report's gap closed)",
    "score_units": "(part, scorer) -> array: the metric split into units (one-standard-error winner)",
    "unit_clusters": "(part) -> array: a cluster id per unit where units share a story",
    "resample": "(seed) -> task: the same task on redrawn splits (the rerun gate)",
    "rerun_tasks": "(seed) -> [(task, label)]: the rerun gate's tasks for a seed, in place of "
                   "`resample` (several where a rule must pass each, e.g. two training horizons)",
    "final_evaluation": "(rules, progress) -> dict: expensive tasks' true metric on the test split",
    "evaluate": "(rule_text, weights, part) -> metrics: a black-box task scores rules itself",
    "meta": "dict: what an expensive task's precompute recorded (its `seconds`)",
    "prefetch": "([(task, rule_text, weights)]) -> None: a black-box task runs the evaluations "
                "ahead, in parallel and cached (the rerun gate's, serial otherwise)",
}


def task_has(task, part: str) -> bool:
    """Whether `task` provides the optional `part` (a name of OPTIONAL_TASK_PARTS)."""
    if part not in OPTIONAL_TASK_PARTS:
        raise ValueError(f"{part!r} is not an optional task part (known: {', '.join(OPTIONAL_TASK_PARTS)})")
    return getattr(task, part, None) is not None


def is_blackbox(task) -> bool:
    return getattr(task, "loss", None) == BLACKBOX  # a task without `loss` is no black box


# ------------------------------------------------------------------ the record


@dataclass(frozen=True)
class Evaluation:
    """One rule fitted on train and scored on a part. `weights` follow `Rule.params`; `metrics`
    is read-only; `fit_loss` is None where the training loss was not finite (or nothing was
    fitted); `error` holds what a failed fit or scoring raised."""

    key: str
    text: str
    size: int
    valid: bool
    weights: tuple[float, ...]
    fit_loss: float | None
    iterations: int
    metric: float
    metrics: Mapping[str, float]
    seconds: float = 0.0
    error: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "weights", tuple(float(v) for v in self.weights))
        object.__setattr__(self, "metrics", MappingProxyType({str(k): float(v) for k, v in self.metrics.items()}))

    def to_dict(self) -> dict:
        """Plain JSON data (the cache's value, a worker's answer); `error` only when set."""
        out = {"key": self.key, "text": self.text, "size": self.size, "valid": self.valid,
               "weights": list(self.weights), "fit_loss": self.fit_loss,
               "iterations": self.iterations, "metric": self.metric,
               "metrics": dict(self.metrics), "seconds": self.seconds}
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Evaluation":
        """Read `to_dict()`'s form back; ValueError naming what is missing or malformed."""
        if not isinstance(d, Mapping):
            raise ValueError(f"an evaluation must be a JSON object, got {type(d).__name__}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"not an evaluation record: no {', '.join(missing)} (have {', '.join(map(str, d))})")
        try:
            loss = d.get("fit_loss")
            return cls(str(d["key"]), str(d["text"]), int(d["size"]), bool(d["valid"]),
                       tuple(d["weights"]), None if loss is None else float(loss),
                       int(d.get("iterations") or 0), float(d["metric"]), dict(d["metrics"]),
                       float(d.get("seconds") or 0.0), d.get("error"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an evaluation record ({exc}): {str(dict(d))[:200]}") from None

    def timeless(self) -> dict:
        """to_dict() without `seconds`: what two evaluations of one rule must agree on."""
        out = self.to_dict()
        del out["seconds"]
        return out


_REQUIRED = ("key", "text", "size", "valid", "weights", "metric", "metrics")


def failed(rule: Rule, error: str | None, started: float, weights: Sequence[float] | None = None,
           fit_loss: float | None = None, iterations: int = 0) -> Evaluation:
    """The invalid rule's record: INVALID_METRIC, no metrics (weights zero unless fitted)."""
    w = tuple(weights) if weights is not None else (0.0,) * len(rule.params)
    return Evaluation(rule.key, rule.text, rule.size, False, w, fit_loss, iterations,
                      INVALID_METRIC, {}, time.perf_counter() - started, error)


# ------------------------------------------------------------------ fit, score


def scorer(rule: Rule, weights) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    w = np.asarray(weights, dtype=np.float64)
    return lambda X: rule.evaluate(X, w)


def fit_on_train(rule: Rule, task, settings: FitSettings | Mapping | None = None,
                 init=None) -> FitResult:
    """The rule's weights fitted on the task's train batch under `settings` (see FitSettings)."""
    s = runnable(FitSettings.coerce(settings))
    batch = task.batch("train")
    return fit(rule, batch.X, batch.y, loss=task.loss, groups=batch.groups, max_iter=s.max_iter,
               init=init, tol=s.tol, l2=s.l2)


def _score(rule: Rule, weights: tuple[float, ...], task, part: str) -> tuple[bool, float, dict]:
    """(valid, metric, metrics) of fixed weights on `part`; a non-finite metric is invalid."""
    if is_blackbox(task):
        metrics = task.evaluate(rule.text, list(weights), part)
    else:
        metrics = task.score(part, scorer(rule, weights))
    m = float(metrics.get(task.metric_name, math.nan))
    if not math.isfinite(m):
        return False, INVALID_METRIC, {}
    return True, m, {k: float(v) for k, v in metrics.items()}


def fit_and_score(text: str, task, settings: FitSettings | Mapping | None = None,
                  part: str = "valid", init_seed: int | None = None) -> Evaluation:
    """Fit on train, score `part`. `init_seed` starts the fit from random weights drawn from
    that seed instead of the data-informed start (the rerun gate). A black-box task fits
    nothing: its rule's weights are all BLACKBOX_WEIGHT and `init_seed` does not apply."""
    started = time.perf_counter()
    rule = parse(text, check_constants=False)  # a text that is no rule raises: bad input
    s = runnable(FitSettings.coerce(settings))  # settings this process cannot honour raise too
    weights, fit_loss, iterations = None, None, 0
    try:
        if is_blackbox(task):
            weights = (BLACKBOX_WEIGHT,) * len(rule.params)
        else:
            init = None
            if init_seed is not None:
                init = np.random.default_rng(init_seed).normal(0.0, INIT_SCALE, len(rule.params))
            res = fit_on_train(rule, task, s, init)
            weights = tuple(float(v) for v in res.weights)
            fit_loss = float(res.loss) if math.isfinite(res.loss) else None
            iterations = int(res.iterations)
            if not res.valid:
                return failed(rule, None, started, weights, fit_loss, iterations)
        valid, metric, metrics = _score(rule, weights, task, part)
    except Exception as exc:  # noqa: BLE001 - deliberately broad: a week-long run must go on
        return _failure(rule, exc, started)
    if not valid:
        return failed(rule, None, started, weights, fit_loss, iterations)
    return Evaluation(rule.key, rule.text, rule.size, True, weights, fit_loss, iterations, metric,
                      metrics, time.perf_counter() - started)


def rescore(rule: Rule | str, fitted: Evaluation, task, part: str) -> Evaluation:
    """`fitted`'s weights (a valid evaluation of this rule under the settings wanted) scored on
    `part`: what `fit_and_score(rule, task, settings, part)` gives, without the fit."""
    started = time.perf_counter()
    if isinstance(rule, str):
        rule = parse(rule, check_constants=False)
    if fitted.key != rule.key or len(fitted.weights) != len(rule.params):
        raise ValueError(f"stored fit of {fitted.text[:60]} does not belong to the rule {rule.text[:60]}")
    try:
        valid, metric, metrics = _score(rule, fitted.weights, task, part)
    except Exception as exc:  # noqa: BLE001 - as fit_and_score
        return _failure(rule, exc, started)
    if not valid:
        return failed(rule, None, started, fitted.weights, fitted.fit_loss, fitted.iterations)
    return Evaluation(rule.key, rule.text, rule.size, True, fitted.weights, fitted.fit_loss,
                      fitted.iterations, metric, metrics, time.perf_counter() - started)


def _failure(rule: Rule, exc: Exception, started: float) -> Evaluation:
    """A rule whose fit or scoring raised is invalid, not the run dead (the error text is kept so
    it can be found); a stop signal that arrived inside a kernel is not the rule's fault."""
    signal_exc = interrupt_in(exc)
    if signal_exc is not None:
        raise signal_exc from None
    return failed(rule, f"{type(exc).__name__}: {exc}", started)


@lru_cache(maxsize=64)
def runnable(settings: FitSettings) -> FitSettings:
    """`settings`, once checked to be a fit this process can make (FitSettings.check_runnable)."""
    settings.check_runnable()
    return settings


def evaluate_rule(text: str, task, fit_settings: FitSettings | Mapping | None = None,
                  part: str = "valid", init_seed: int | None = None) -> dict:
    """`fit_and_score` as plain data (its `to_dict()`)."""
    return fit_and_score(text, task, fit_settings, part, init_seed).to_dict()


def unit_scores(text: str, weights, task, part: str = "valid") -> np.ndarray | None:
    """The metric of fixed weights split into units (`task.score_units`), or None where the task
    cannot split it, the text is no rule, or a unit is not finite."""
    if not task_has(task, "score_units"):
        return None
    try:
        rule = parse(text, check_constants=False)
        u = np.asarray(task.score_units(part, scorer(rule, weights)), dtype=float)
    except (ValueError, KeyError, FloatingPointError):
        return None
    return u if u.ndim == 1 and np.all(np.isfinite(u)) else None


# ------------------------------------------------------------------ stored fits


Lookup = Callable[[list[str]], Mapping[str, Mapping]]


class StoredFits:
    """Evaluations of rules on any part of `task`, from fits a store already holds.

    `lookup(keys) -> {key: evaluation dict}` reads the store (`FitnessCache.get_many`, or a
    mapping's items: `StoredFits.of_mapping`); it must hold evaluations on `stored_part` made
    under `settings` (the fitness cache is keyed by them, so its hits always are). A rule whose
    stored evaluation is valid is re-scored with its stored weights (`rescore`); on
    `stored_part` the stored record itself is the answer. Any other rule is fitted again
    (`fit_and_score`). Results are remembered per (text, part); `reused` and `refitted` count
    the rules each way."""

    def __init__(self, task, settings: FitSettings | Mapping | None, lookup: Lookup | None = None,
                 stored_part: str = "valid"):
        self.task = task
        self.settings = FitSettings.coerce(settings)
        self.lookup = lookup
        self.stored_part = stored_part
        self.reused = 0
        self.refitted = 0
        self._done: dict[tuple[str, str], Evaluation] = {}

    @classmethod
    def of_mapping(cls, task, settings, stored: Mapping[str, Mapping], stored_part: str = "valid") -> "StoredFits":
        return cls(task, settings, lambda keys: {k: stored[k] for k in keys if k in stored}, stored_part)

    def stored(self, key: str) -> Evaluation | None:
        """The store's valid evaluation of `key`, else None (a malformed record is a miss)."""
        if self.lookup is None:
            return None
        found = self.lookup([key]).get(key)
        if found is None:
            return None
        try:
            ev = Evaluation.from_dict(found)
        except ValueError:
            return None
        return ev if ev.valid and ev.key == key else None

    def evaluation(self, text: str, part: str) -> Evaluation:
        done = self._done.get((text, part))
        if done is not None:
            return done
        rule = parse(text, check_constants=False)
        fitted = self.stored(rule.key)
        if fitted is None:
            self.refitted += 1
            ev = fit_and_score(text, self.task, self.settings, part)
        else:
            self.reused += 1
            ev = fitted if part == self.stored_part else rescore(rule, fitted, self.task, part)
        self._done[(text, part)] = ev
        return ev


# ------------------------------------------------------------------ worker side

_TASKS: dict[str, Any] = {}


def task_from(factory: Callable[[], Any], token: str):
    """The task built by `factory`, built once per process (workers keep it between batches)."""
    task = _TASKS.get(token)
    if task is None:
        task = factory()
        _TASKS[token] = task
    return task


def evaluate_batch(texts: list[str], factory: Callable[[], Any], token: str,
                   fit_settings: FitSettings | Mapping | None) -> list[dict]:
    task = task_from(factory, token)
    settings = FitSettings.coerce(fit_settings)
    return [_guarded(t, task, settings) for t in texts]


def _guarded(text: str, task, fit_settings) -> dict:
    """One rule's evaluation as a worker returns it. `fit_and_score` already marks a rule whose
    fit or scoring raised invalid (keeping the error) and lets a stop signal through."""
    return fit_and_score(text, task, fit_settings).to_dict()
