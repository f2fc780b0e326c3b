"""The rerun gate: a finalist passes only if it beats the linear baseline in every rerun.

Each rerun re-fits the rule and the linear baseline under a fresh seed: on resampled splits
where the task can redraw them (`task.resample(seed)`), otherwise from random initial weights
drawn from the seed. Both are measured on the validation split of that rerun.

The finalists are distinct functions (`distinct_finalists`): a hall-of-fame rule whose fitted
outputs on the validation rows equal those of a better-ranked one (the same function written
with an extra term whose weight fitted to ~0, say) is not a second finalist; of such a group
the smallest rule stands for it (ties on the metric go to the smaller rule).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .evaluate import evaluate_rule
from .rule import parse

SAME_OUTPUTS_RTOL = 1e-9


def _outputs(text: str, weights, X) -> np.ndarray | None:
    try:
        out = np.asarray(parse(text, check_constants=False).evaluate(X, np.asarray(weights, dtype=float)), dtype=float)
    except (ValueError, KeyError, FloatingPointError):
        return None
    return out if np.all(np.isfinite(out)) else None  # non-finite: never "the same function"


def distinct_finalists(rules: list[tuple[str, list[float], int]], task, n: int) -> list[int]:
    """Indices into `rules` ((text, fitted weights, size), best first) of up to `n` finalists
    that compute different functions on the task's validation rows (np.allclose, rtol 1e-9).
    Each group of equal functions is placed where its best-ranked member stands and is
    represented by its smallest member (the best-ranked one among equal sizes)."""
    if n <= 0:
        return []
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


def rerun_gate(texts: list[str], task, fit_settings: Mapping, linear_text: str | None,
               seeds: int, first_seed: int = 1000) -> list[dict]:
    if seeds <= 0 or not texts:
        return []
    runs = []
    for i in range(seeds):
        seed = first_seed + i
        if hasattr(task, "resample"):
            runs.append((task.resample(seed), None, f"resampled splits, seed {seed}"))
        else:
            runs.append((task, seed, f"random initial weights, seed {seed}"))
    linear = []
    for t, init_seed, _ in runs:
        if linear_text is None:
            linear.append(float("-inf"))
        else:
            linear.append(evaluate_rule(linear_text, t, fit_settings, "valid", init_seed)["metric"])
    out = []
    for text in texts:
        metrics = [evaluate_rule(text, t, fit_settings, "valid", init_seed)["metric"]
                   for t, init_seed, _ in runs]
        out.append({
            "text": text,
            "metrics": metrics,
            "linear": linear,
            "reruns": [how for _, _, how in runs],
            "passed": all(m > lin for m, lin in zip(metrics, linear)),
        })
    return out
