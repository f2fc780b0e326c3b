"""The rerun gate: a finalist passes only if it beats the linear baseline in every rerun (by more
than `[rerun] margin`).

Each rerun re-fits the rule and the linear baseline under a fresh seed: on resampled splits
where the task can redraw them (`task.resample(seed)`), otherwise from random initial weights
drawn from the seed. Both are measured on the validation split of that rerun.

The finalists are distinct functions (`distinct_finalists`): a hall-of-fame rule whose fitted
outputs on the validation rows equal those of a better-ranked one (the same function written
with an extra term whose weight fitted to ~0, say) is not a second finalist; of such a group
the smallest rule stands for it (ties on the metric go to the smaller rule).

They are taken in parsimony order (`parsimony_order`, Breiman's one-standard-error rule): first
the rules whose validation metric is within one standard error of the best rule's, smallest
first, then the others by metric. The standard error is Breiman's: that of the best rule's own
validation metric, a mean over units (episodes, questions or rows; clustered by story where the
task says units share one), so a larger rule wins only where its lead is more than the noise of
the validation estimate itself. (The paired difference's standard error, used before, is smaller
than that noise: it kept rules whose lead no other validation split would repeat; measured on
and-match-distractor, a size-16 rule 0.004 behind on validation and ahead on test lost to size 20.)
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from .evaluate import BLACKBOX_WEIGHT, fit_and_score, is_blackbox, task_has, unit_scores
from .fit_settings import FitSettings
from .rule import parse

SAME_OUTPUTS_RTOL = 1e-9


def _outputs(text: str, weights, X) -> np.ndarray | None:
    try:
        out = np.asarray(parse(text, check_constants=False).evaluate(X, np.asarray(weights, dtype=float)), dtype=float)
    except (ValueError, KeyError, FloatingPointError):
        return None
    return out if np.all(np.isfinite(out)) else None  # non-finite: never "the same function"


def paired_se(d: np.ndarray, clusters: np.ndarray | None = None) -> float:
    """Standard error of the mean of paired differences `d`; with `clusters`, the cluster-robust
    one (sums within a cluster are the independent draws)."""
    n = len(d)
    if n < 2:
        return math.inf
    if clusters is None:
        return float(np.std(d, ddof=1) / math.sqrt(n))
    _, ids = np.unique(clusters, return_inverse=True)
    sums = np.bincount(ids, weights=d - d.mean())
    g = len(sums)
    if g < 2:
        return math.inf
    return float(math.sqrt(g / (g - 1) * np.sum(sums ** 2)) / n)


def within_one_se(rules: list[tuple[str, list[float], int, float]], task) -> list[bool]:
    """For rules ((text, fitted weights, size, validation metric), best first): is each within one
    standard error of the best's validation metric (the first rule's, from its units) below it?
    All False but the first where the task cannot split its metric into units (`score_units`)."""
    if not rules:
        return []
    flags = [True] + [False] * (len(rules) - 1)
    best = unit_scores(rules[0][0], rules[0][1], task, "valid")
    if best is None:  # includes a task that cannot split its metric into units
        return flags
    clusters = None
    if task_has(task, "unit_clusters"):
        clusters = np.asarray(task.unit_clusters("valid"))
        if clusters.shape != best.shape:
            clusters = None
    se = paired_se(best, clusters)  # the standard error of the best's mean over units
    for k, (text, weights, _, _) in enumerate(rules[1:], start=1):
        u = unit_scores(text, weights, task, "valid")
        if u is not None and u.shape == best.shape:
            flags[k] = bool(best.mean() - u.mean() <= se)
    return flags


def parsimony_order(rules: list[tuple[str, list[float], int, float]], task) -> tuple[list[int], int]:
    """(indices into `rules` ((text, weights, size, validation metric), best first), n): the n
    rules within one standard error of the best come first, smallest first (then by metric),
    then the rest by metric."""
    near = within_one_se(rules, task)
    first = sorted((k for k in range(len(rules)) if near[k]), key=lambda k: (rules[k][2], -rules[k][3], k))
    return first + [k for k in range(len(rules)) if not near[k]], len(first)


def distinct_finalists(rules: list[tuple[str, list[float], int]], task, n: int) -> list[int]:
    """Indices into `rules` ((text, fitted weights, size), best first) of up to `n` finalists
    that compute different functions on the task's validation rows (np.allclose, rtol 1e-9).
    Each group of equal functions is placed where its best-ranked member stands and is
    represented by its smallest member (the best-ranked one among equal sizes)."""
    if n <= 0:
        return []
    if is_blackbox(task):  # no rows: equal when equal with every weight the constant it is
        return _distinct_by_text([_bound_text(text) for text, _, _ in rules], [r[2] for r in rules], n)
    try:
        X = task.batch("valid").X
    except (AttributeError, KeyError, ValueError, NotImplementedError):
        return list(range(min(n, len(rules))))  # no validation rows to compare on
    groups: list[tuple[int, np.ndarray | None]] = []  # (representative index, outputs)
    for k, (text, weights, size) in enumerate(rules):
        out = _outputs(text, weights, X)
        same = None if out is None else next(
            (g for g, (_, o) in enumerate(groups)
             if o is not None and o.shape == out.shape and np.allclose(out, o, rtol=SAME_OUTPUTS_RTOL)),
            None)
        if same is None:
            groups.append((k, out))
        elif size < rules[groups[same][0]][2]:
            groups[same] = (k, groups[same][1])
    return [k for k, _ in groups[:n]]


_WEIGHT = re.compile(r"(?<![\w.])w\d*(?![\w.])")


def _bound_text(text: str) -> str:
    """A black-box rule's canonical text with its weights written as BLACKBOX_WEIGHT, the
    constants they are (so `(mul w0 x.u)` and `x.u` are one function)."""
    try:
        return parse(_WEIGHT.sub(repr(BLACKBOX_WEIGHT), text), check_constants=False).text
    except ValueError:
        return text


def _distinct_by_text(texts: list[str], sizes: list[int], n: int) -> list[int]:
    first: dict[str, int] = {}  # text -> index of the smallest member (best-ranked among equal sizes)
    order: list[str] = []
    for k, t in enumerate(texts):
        if t not in first:
            first[t] = k
            order.append(t)
        elif sizes[k] < sizes[first[t]]:
            first[t] = k
    return [first[t] for t in order[:n]]


def rerun_gate(texts: list[str], task, fit_settings: FitSettings | Mapping, linear_text: str | None,
               seeds: int, first_seed: int = 1000, margin: float = 0.0) -> list[dict]:
    """Each of `texts` re-fitted (`evaluate.fit_and_score`, validation split) in `seeds` reruns
    (a task's `rerun_tasks` may give several per seed) beside the linear rule; it passes when it
    beats the linear rule by more than `margin` in every rerun (an invalid rule scores
    INVALID_METRIC there, so it never passes)."""
    if seeds <= 0 or not texts:
        return []
    runs = []
    for i in range(seeds):
        seed = first_seed + i
        if task_has(task, "rerun_tasks"):
            runs += [(t, None, how) for t, how in task.rerun_tasks(seed)]
        elif task_has(task, "resample"):
            runs.append((task.resample(seed), None, f"resampled splits, seed {seed}"))
        else:
            runs.append((task, seed, f"random initial weights, seed {seed}"))

    if is_blackbox(task) and task_has(task, "prefetch"):  # its runs in parallel, then look-ups
        rules = [parse(x, check_constants=False) for x in ([linear_text] if linear_text else []) + texts]
        task.prefetch([(t, r.text, (BLACKBOX_WEIGHT,) * len(r.params)) for t, _, _ in runs for r in rules])

    def metric(text, t, init_seed) -> float:
        return fit_and_score(text, t, fit_settings, "valid", init_seed).metric

    linear = [float("-inf") if linear_text is None else metric(linear_text, t, init_seed)
              for t, init_seed, _ in runs]
    out = []
    for text in texts:
        metrics = [metric(text, t, init_seed) for t, init_seed, _ in runs]
        out.append({
            "text": text,
            "metric": runs[0][0].metric_name,  # the reruns' (a task's rerun tasks may measure another)
            "metrics": metrics,
            "linear": linear,
            "reruns": [how for _, _, how in runs],
            "margin": margin,
            "passed": all(m > lin + margin for m, lin in zip(metrics, linear)),
        })
    return out
