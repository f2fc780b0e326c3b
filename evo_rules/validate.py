"""Checks of a config against its task, run before a run folder is made.

`config.py` checks each value on its own (types, ranges); this module checks what needs the task
or several values together: the task's name and `[task.settings]` (each task declares its
settings' types and ranges), the grammar's operators against its template share, the data it
reads, and every feature named in `[grammar]` and `[search] seed_rules`. Every failure is one
`ConfigError` line naming the config file and the key.
"""

from __future__ import annotations

from typing import Callable

from .config import ConfigError, RunConfig, _did_you_mean, _short

SHOWN_FEATURES = 8  # a message lists this many of the task's features


def check_task_settings(config: RunConfig) -> None:
    """The task's name and settings, without building the task (no data is read)."""
    from evo_rules.fitness.base import SettingsError
    from evo_rules.fitness.registry import check_task_settings as check

    try:
        check(config.task.name, config.task.settings)
    except KeyError as exc:
        raise ConfigError(f"{config.source}: [task].name: {_line(exc.args[0])}") from None
    except SettingsError as exc:
        raise ConfigError(f"{config.source}: [task.settings].{_line(exc.key)}: {_line(exc.reason)}") from None


def checked_task(config: RunConfig, build: Callable[[], object]):
    """Check the settings, build the task with `build()`, check the config's features and seed
    rules against it; return the task. Errors of the task's data become one ConfigError line."""
    check_task_settings(config)
    check_grammar_operators(config)
    check_features_before_build(config)
    try:
        task = build()
    except (ValueError, KeyError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"{config.source}: [task] {config.task.name}: {_line(msg)}") from None
    check_features(config, tuple(task.features), task.name)
    return task


def check_grammar_operators(config: RunConfig) -> None:
    """`[grammar] operators` against the template: rules of the seed's template need add, mul,
    exp and eml, so a wider set without them (say add, mul, sin, div) needs template_share = 0.
    (Each name is checked in config.py against terms.OPERATORS.)"""
    from evo_rules.operators.grammar import TEMPLATE_OPERATORS

    g = config.grammar
    missing = [o for o in TEMPLATE_OPERATORS if o not in g.operators]
    if g.template_share > 0 and missing:
        raise ConfigError(f"{config.source}: [grammar].template_share: {g.template_share} > 0 but the "
                          f"template (eml signal (add 1 (exp damping))) needs operator(s) "
                          f"{', '.join(missing)}; add them to [grammar].operators or set "
                          f"template_share = 0")


def check_features_before_build(config: RunConfig) -> None:
    """The features check, before an expensive build, for tasks that know their features from
    their settings alone."""
    from evo_rules.fitness.registry import features_before_build

    features = features_before_build(config.task.name, config.task.settings)
    if features is not None:
        check_features(config, features, config.task.name)


def check_features(config: RunConfig, features: tuple[str, ...], task_name: str) -> None:
    """Every feature of `[grammar] features` and of each seed rule is one of the task's."""
    known = set(features)
    for i, f in enumerate(config.grammar.features):
        if f not in known:
            raise ConfigError(f"{config.source}: [grammar].features[{i}]: "
                              f"{_unknown(f, features, task_name)}")
    for i, text in enumerate(config.search.seed_rules):
        where = f"{config.source}: [search].seed_rules[{i}]"
        rule = _parse(where, text)
        for f in rule.features:
            if f not in known:
                raise ConfigError(f"{where}: x.{_unknown(f, features, task_name)}")


def _parse(where: str, text: str):
    from .rule import parse

    try:
        return parse(text)
    except (ValueError, ArithmeticError, RecursionError) as exc:
        # ParseError (a ValueError) names the position; the others are a parser's limits
        raise ConfigError(f"{where}: cannot parse {_short(text)}: {_line(exc) or type(exc).__name__}") from None


def _unknown(name: str, features: tuple[str, ...], task_name: str) -> str:
    shown = ", ".join(features[:SHOWN_FEATURES])
    more = f", ... ({len(features)} in all)" if len(features) > SHOWN_FEATURES else ""
    return f"{name} is not a feature of task {task_name} (it has {shown}{more}){_did_you_mean(name, features)}"


def _line(msg) -> str:
    return " ".join(str(msg).split())
