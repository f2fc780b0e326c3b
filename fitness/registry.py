"""The task registry: name -> (factory, description). `evo-rules tasks` lists it.

Factories import their module lazily, so listing tasks or building one does not load the rest.
"""

from __future__ import annotations

from typing import Any, Callable


def _synthetic(variant: str) -> Callable[..., Any]:
    def factory(**settings):
        from .synthetic import SyntheticTask

        return SyntheticTask(variant, **settings)

    return factory


TASKS: dict[str, tuple[Callable[..., Any], str]] = {}


def register(name: str, factory: Callable[..., Any], description: str) -> None:
    TASKS[name] = (factory, description)


def _register_synthetic() -> None:
    from .synthetic import VARIANTS

    for name, spec in VARIANTS.items():
        doc = getattr(spec, "description", "") or "synthetic and-match variant"
        register(name, _synthetic(name), doc)


_register_synthetic()


def _babi(task: int) -> Callable[..., Any]:
    def factory(**settings):
        from .babi import BabiTask

        return BabiTask(task, **settings)

    return factory


register("babi-2", _babi(2), "bAbI task 2 (two supporting facts): 2-hop supporting-fact "
         "retrieval from stories; metric support_recall")
register("babi-3", _babi(3), "bAbI task 3 (three supporting facts): 3-hop supporting-fact "
         "retrieval from stories; metric support_recall")


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str, **settings):
    """Build the task `name` with its settings; unknown names and settings are clear errors."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    factory, _ = TASKS[name]
    try:
        return factory(**settings)
    except TypeError as exc:
        raise ValueError(f"task {name!r}: bad settings {sorted(settings)}: {exc}") from None


def _regression(**settings):
    from .regression import RegressionTask

    return RegressionTask(**settings)


register("regression", _regression,
         "symbolic regression on a CSV file (settings: path, target); squared loss, R^2 metric")


def _memory(**settings):
    from .memory import MemoryTask

    return MemoryTask(**settings)


register("tinystories-memory", _memory,
         "stage 3: memory selection for a small GPT on TinyStories (needs the lm extra); rules score "
         "sentence chunks, fitness = LM utility of the top chunk; finalists scored with real LM losses")
