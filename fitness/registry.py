"""The task registry: name -> (factory, description). `evo-rules tasks` lists it.

Factories import their module lazily, so listing tasks or building one does not load the rest.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping


def _synthetic(variant: str) -> Callable[..., Any]:
    def factory(**settings):
        from .synthetic import SyntheticTask

        return SyntheticTask(variant, **settings)

    return factory


TASKS: dict[str, tuple[Callable[..., Any], str]] = {}
# name -> settings check: raises fitness.base.SettingsError, builds nothing, reads no data
_CHECKS: dict[str, Callable[[Mapping], None]] = {}


def register(name: str, factory: Callable[..., Any], description: str,
             check: Callable[[Mapping], None] | None = None) -> None:
    TASKS[name] = (factory, description)
    if check is not None:
        _CHECKS[name] = check


def _synthetic_check(settings: Mapping) -> None:
    from .synthetic import check_task_settings

    check_task_settings(settings)


def _register_synthetic() -> None:
    from .synthetic import VARIANTS

    for name, spec in VARIANTS.items():
        doc = getattr(spec, "description", "") or "synthetic and-match variant"
        register(name, _synthetic(name), doc, _synthetic_check)


_register_synthetic()


def _babi(task: int) -> Callable[..., Any]:
    def factory(**settings):
        from .babi import BabiTask

        return BabiTask(task, **settings)

    return factory


def _babi_check(settings: Mapping) -> None:
    from .babi import SETTINGS
    from .base import check_settings

    check_settings(settings, SETTINGS)


register("babi-1", _babi(1), "bAbI task 1 (single supporting fact): 1-hop supporting-fact "
         "retrieval from stories; metric support_recall", _babi_check)
register("babi-2", _babi(2), "bAbI task 2 (two supporting facts): 2-hop supporting-fact "
         "retrieval from stories; metric support_recall", _babi_check)
register("babi-3", _babi(3), "bAbI task 3 (three supporting facts): 3-hop supporting-fact "
         "retrieval from stories; metric support_recall", _babi_check)


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def check_task_settings(name: str, settings: Mapping) -> None:
    """KeyError for an unknown task; SettingsError (naming the setting) for an unknown,
    mistyped or out-of-range setting. Cheap: builds nothing and reads no data."""
    if name not in TASKS:
        from .base import did_you_mean

        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)}){did_you_mean(name, TASKS)}")
    if name in _CHECKS:
        _CHECKS[name](settings)


def get_task(name: str, **settings):
    """Build the task `name` with its settings; unknown names and settings are clear errors."""
    check_task_settings(name, settings)
    factory, _ = TASKS[name]
    try:
        return factory(**settings)
    except TypeError as exc:
        raise ValueError(f"task {name!r}: bad settings {sorted(settings)}: {exc}") from None


def _regression(**settings):
    from .regression import RegressionTask

    return RegressionTask(**settings)


def _regression_check(settings: Mapping) -> None:
    from .regression import check_task_settings

    check_task_settings(settings)


register("regression", _regression,
         "symbolic regression on a CSV file (settings: path, target; or train, test files); squared loss, R^2 metric",
         _regression_check)


def _memory(**settings):
    from .memory import MemoryTask

    return MemoryTask(**settings)


def _memory_check(settings: Mapping) -> None:
    from .base import check_settings
    from .memory import SETTINGS

    check_settings(settings, SETTINGS)


def _memory_features(settings: Mapping) -> tuple[str, ...]:
    from .memory import FEATURE_SETS

    return FEATURE_SETS[settings.get("features", "all")]


# name -> the task's features from its settings alone, for tasks whose build is expensive (stage 3
# runs the language model): a misspelt feature is then refused before that work, not after it
_FEATURES: dict[str, Callable[[Mapping], tuple[str, ...]]] = {"tinystories-memory": _memory_features}


def features_before_build(name: str, settings: Mapping) -> tuple[str, ...] | None:
    """The task's features when known without building it (settings already checked), else None."""
    f = _FEATURES.get(name)
    return tuple(f(settings)) if f is not None else None


register("tinystories-memory", _memory,
         "stage 3: memory selection for a small GPT on TinyStories (needs the lm extra); rules score "
         "sentence chunks, fitness = LM utility of the top chunk; finalists scored with real LM losses",
         _memory_check)


def _optimizer(**settings):
    from .optimizer import OptimizerTask

    return OptimizerTask(**settings)


def _optimizer_check(settings: Mapping) -> None:
    from .optimizer import check_task_settings as check

    check(settings)


def _optimizer_features(settings: Mapping) -> tuple[str, ...]:
    return ("g", "m", "v", "u", "w", "t", "n")  # fitness.lm.optim.FEATURES, without importing torch


_FEATURES["tinystories-optimizer"] = _optimizer_features
register("tinystories-optimizer", _optimizer,
         "optimizer-rule track: element-wise update rules (replace, gate or correct Muon's step) for "
         "training a fresh small GPT on TinyStories (needs the lm extra); black-box fitness = minus the "
         "validation loss after `steps` steps", _optimizer_check)
