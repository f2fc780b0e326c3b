"""The rerun gate: a finalist passes only if it beats the linear baseline in every rerun.

Each rerun re-fits the rule and the linear baseline under a fresh seed: on resampled splits
where the task can redraw them (`task.resample(seed)`), otherwise from random initial weights
drawn from the seed. Both are measured on the validation split of that rerun.
"""

from __future__ import annotations

from typing import Mapping

from .evaluate import evaluate_rule


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
