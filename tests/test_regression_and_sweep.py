"""The regression task, the grammar sweep and the rerun gate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evo_rules import app
from evo_rules.config import ConfigError, from_dict
from evo_rules.evaluate import evaluate_rule
from evo_rules.gate import rerun_gate
from evo_rules.fitness.regression import CSVFormatError, RegressionTask, load_csv
from evo_rules.fitness.registry import get_task, task_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_regression_task_on_the_shipped_example():
    task = get_task("regression")
    assert task.features == ("a", "b", "c") and task.loss == "squared"
    lin = evaluate_rule(task.linear_rule_text(), task, {"max_iter": 20}, part="test")
    truth = evaluate_rule("(add (eml (mul w x.a) (add 1 (exp (mul w x.b)))) (mul w x.c) w)", task,
                          {"max_iter": 20}, part="test")
    assert 0.5 < lin["metrics"]["r2"] < truth["metrics"]["r2"]
    assert truth["metrics"]["r2"] > 0.98
    assert task.resample(5).fingerprint != task.fingerprint


@pytest.mark.parametrize("content, fragment", [
    ("a,b,y\n1,2\n", ":2: 2 fields, the header has 3"),
    ("a,b,y\n1,2,x\n", ":2: 'x' is not a number"),
    ("a,2b,y\n1,2,3\n", ":1: column name '2b'"),
    ("", ":1: empty file"),
    ("a,y\n" + "1,2\n" * 3, "needs at least 10 data rows"),
])
def test_malformed_csv_names_file_and_line(tmp_path, content, fragment):
    p = tmp_path / "d.csv"
    p.write_text(content)
    with pytest.raises(CSVFormatError) as err:
        load_csv(str(p))
    assert str(p) in str(err.value) and fragment in str(err.value)


def test_missing_target_is_clear(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(20)))
    with pytest.raises(ValueError, match="no target column 'y'"):
        RegressionTask(str(p), target="y")


def test_tasks_are_registered():
    names = task_names()
    for n in ("and-match", "babi-2", "babi-3", "regression"):
        assert n in names
    with pytest.raises(KeyError, match="unknown task"):
        get_task("nope")


def test_rerun_gate_passes_a_good_rule_and_fails_a_bad_one():
    task = get_task("and-match", n_train=300, n_valid=300, n_test=100)
    good = "(eml 0 (add (exp (mul w x.color)) (exp (mul w x.shape))))"
    bad = "(mul w x.shape)"
    res = rerun_gate([good, bad], task, {"max_iter": 20}, task.linear_rule_text(), seeds=2)
    assert [r["passed"] for r in res] == [True, False]
    assert len(res[0]["metrics"]) == 2 and all("resampled" in how for how in res[0]["reruns"])
    # with a margin a finalist must lead by more than it in every rerun
    lead = min(m - lin for m, lin in zip(res[0]["metrics"], res[0]["linear"]))
    for margin, passed in ((lead * 0.9, True), (lead * 1.1, False)):
        got = rerun_gate([good], task, {"max_iter": 20}, task.linear_rule_text(), seeds=2, margin=margin)[0]
        assert got["metrics"] == res[0]["metrics"] and got["margin"] == margin and got["passed"] is passed


def test_rerun_margin_is_checked():
    with pytest.raises(ConfigError, match=r"\[rerun\]\.margin: must be in"):
        from_dict({"rerun": {"margin": -0.1}})


def test_sweep_counts_and_best(tmp_path):
    cfg = from_dict({
        "task": {"name": "and-match", "settings": {"n_train": 200, "n_valid": 200, "n_test": 100}},
        "sweep": {"max_signal": 1, "max_damping": 1, "expand_top": 3, "expand_rounds": 1},
        "evaluation": {"backend": "serial"},
        "rerun": {"seeds": 1, "finalists": 1},
    })
    res = app.sweep(cfg, str(tmp_path / "s"), progress=False)
    r0, r1 = res["rounds"]
    assert r0["unique"] == r0["enumerated"] - r0["duplicates"] == 12  # 3 terms x (1 + 3) dampings
    assert r1["unique"] == r1["enumerated"] - r1["duplicates"]
    assert r1["evaluated"] + r1["cache_hits"] == r1["unique"]
    assert res["best"][0]["metric"] >= max(b["metric"] for b in res["best"])
    assert json.load(open(tmp_path / "s" / "sweep.json"))["rounds"] == res["rounds"]
    again = app.sweep(cfg, str(tmp_path / "s"), progress=False)  # same folder: all from the cache
    assert all(r["evaluated"] == 0 for r in again["rounds"])


def test_cli_tasks_lists_every_task():
    out = subprocess.run([sys.executable, "-m", "evo_rules.cli", "tasks"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0 and "babi-3" in out.stdout and "regression" in out.stdout


def test_report_winner_is_the_best_finalist_through_the_gate(tmp_path):
    cfg = {"run": {"seed": 2, "generations": 1, "population": 8},
           "task": {"name": "and-match", "settings": {"n_train": 150, "n_valid": 100, "n_test": 100}},
           "fit": {"max_iter": 5}, "evaluation": {"backend": "serial"},
           "rerun": {"seeds": 2, "finalists": 3}}
    r = app.run_search(cfg, out=str(tmp_path / "w"))
    passed = [g["text"] for g in r["rerun_gate"] if g["passed"]]
    if passed:
        assert r["winner"]["text"] == passed[0]
    else:
        assert r["winner"] is None
