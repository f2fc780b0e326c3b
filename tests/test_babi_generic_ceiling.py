"""benchmarks/babi_generic_ceiling.py: its rules are the linear rule plus the products it names."""

import importlib.util
import os

from evo_rules import parse
from evo_rules.fitness.registry import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("ceiling", os.path.join(ROOT, "benchmarks", "babi_generic_ceiling.py"))
ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceiling)


def test_rows_are_rules_over_the_generic_features():
    task = get_task("babi-3", valid_fraction=0.4, features="generic")
    linear = parse(task.linear_rule_text())
    features = set(task.batch("train").X)
    assert len(ceiling.rows(task)) == 6
    rows = ceiling.rows(task, [("q_latest", "w_football", 4.2), ("after_anchor", "a_put", 5.8)])
    assert len(rows) == 8
    for name, extra in rows.items():
        rule = parse(task.linear_rule_text()[:-1] + " " + extra + ")" if extra else task.linear_rule_text())
        assert set(rule.features) <= features, name
        assert set(linear.features) <= set(rule.features)
        # each product adds a weight of its own (none merges into the linear rule's terms)
        assert len(rule.params) == len(linear.params) + extra.count("(mul w "), name
