"""One evaluation: fit a rule's weights on the task's train batch, measure on a split.

A pure function of (rule text, task, fit settings): what crosses a process boundary is the text
and plain results. Invalid rules (non-finite on the training rows, or a non-finite metric) get
`valid = False` and the worst metric; they never raise. Black-box tasks (`task.loss ==
"blackbox"`, the optimizer track) fit nothing: the task scores the rule itself.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import numpy as np

from .fitting import fit
from .rule import parse
from .stopping import interrupt_in

INVALID_METRIC = -1e9  # below any real metric; finite so NSGA-II crowding stays well defined
# `task.loss` of a black-box task: no rows to fit; the task runs the rule itself through
# `task.evaluate(rule_text, weights, part) -> metrics` (the optimizer track: a training run)
BLACKBOX = "blackbox"
BLACKBOX_WEIGHT = 1.0  # every weight of a black-box rule: its scales come from form and numbers


def evaluate_rule(text: str, task, fit_settings: Mapping[str, Any], part: str = "valid",
                  init_seed: int | None = None) -> dict:
    """Fit on train, score `part`. `init_seed` starts the fit from random weights drawn from
    that seed instead of the data-informed start (used by the rerun gate). A black-box task
    fits nothing: its rule's weights are all BLACKBOX_WEIGHT and `init_seed` does not apply."""
    started = time.perf_counter()
    rule = parse(text, check_constants=False)  # the engine's own canonical text
    if getattr(task, "loss", None) == BLACKBOX:
        return _evaluate_blackbox(rule, task, part, started)
    batch = task.batch("train")
    init = None
    if init_seed is not None:
        init = np.random.default_rng(init_seed).normal(0.0, 0.5, len(rule.params))
    res = fit(rule, batch.X, batch.y, loss=task.loss, groups=batch.groups,
              max_iter=int(fit_settings.get("max_iter", 20)), init=init)
    out = {
        "key": rule.key,
        "text": rule.text,
        "size": rule.size,
        "valid": bool(res.valid),
        "weights": [float(v) for v in res.weights],
        "fit_loss": float(res.loss) if math.isfinite(res.loss) else None,
        "iterations": int(res.iterations),
        "metric": INVALID_METRIC,
        "metrics": {},
    }
    if res.valid:
        w = np.asarray(res.weights)
        metrics = task.score(part, lambda X: rule.evaluate(X, w))
        m = float(metrics.get(task.metric_name, math.nan))
        if math.isfinite(m):
            out["metric"] = m
            out["metrics"] = {k: float(v) for k, v in metrics.items()}
        else:
            out["valid"] = False
    out["seconds"] = time.perf_counter() - started
    return out


def _evaluate_blackbox(rule, task, part: str, started: float) -> dict:
    weights = [BLACKBOX_WEIGHT] * len(rule.params)
    metrics = task.evaluate(rule.text, weights, part)
    m = float(metrics.get(task.metric_name, math.nan))
    ok = math.isfinite(m)
    return {"key": rule.key, "text": rule.text, "size": rule.size, "valid": ok, "weights": weights,
            "fit_loss": None, "iterations": 0, "metric": m if ok else INVALID_METRIC,
            "metrics": {k: float(v) for k, v in metrics.items()} if ok else {},
            "seconds": time.perf_counter() - started}


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
                   fit_settings: Mapping[str, Any]) -> list[dict]:
    task = task_from(factory, token)
    return [_guarded(t, task, fit_settings) for t in texts]


def _guarded(text: str, task, fit_settings) -> dict:
    """One rule's failure (a bug, not bad numerics) marks that rule invalid, not the run dead;
    the error text is kept in the result so it can be found."""
    try:
        return evaluate_rule(text, task, fit_settings)
    except Exception as exc:  # noqa: BLE001 - deliberately broad: a week-long run must go on
        signal_exc = interrupt_in(exc)
        if signal_exc is not None:  # a stop signal that arrived inside a kernel: not this rule's fault
            raise signal_exc from None
        rule = parse(text, check_constants=False)
        return {"key": rule.key, "text": rule.text, "size": rule.size, "valid": False,
                "weights": [0.0] * len(rule.params), "fit_loss": None, "iterations": 0,
                "metric": INVALID_METRIC, "metrics": {}, "seconds": 0.0,
                "error": f"{type(exc).__name__}: {exc}"}
