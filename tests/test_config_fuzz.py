"""Bad input: every config, task setting and data file is either accepted or refused with one
line naming the key and the file, before any run folder is made (never a traceback)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import input_fuzz as F
from evo_rules.config import SECTIONS, ConfigError, RunConfig, from_dict, load
from evo_rules.validate import check_task_settings, checked_task
from evo_rules.fitness.regression import CSVFormatError, load_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def csv_rows(n=20, target=lambda i: i * 0.7 % 5):
    return "a,b,y\n" + "".join(f"{i},{(i * 3) % 7},{target(i)}\n" for i in range(n))


# ---------------------------------------------------------------------------- the cases

CASES = [
    ('[grammar]\nfeatures = ["nosuch"]\n', r"\[grammar\].features\[0\]: nosuch is not a feature of task "
     r"and-match \(it has color, shape\)"),
    ('[grammar]\nfeatures = ["colr"]\n', "did you mean 'color'"),
    ('[grammar]\nfeatures = ["x.color"]\n', r"\[grammar\].features\[0\].*did you mean 'color'"),
    ('[search]\nseed_rules = ["(add (mul w x.colour) w)"]\n',
     r"\[search\].seed_rules\[0\]: x.colour is not a feature.*did you mean 'color'"),
    ('[search]\nseed_rules = ["(mul w x.color"]\n', r"\[search\].seed_rules\[0\]: cannot parse .*position"),
    ("[run]\npopulation = 9223372036854775807\n", r"\[run\].population: must be in \[4, 1,000,000\]"),
    ("[run]\nseed = -1\n", r"\[run\].seed: must be in \[0, "),
    ("[run]\ngenerations = true\n", r"\[run\].generations: must be an integer, got True"),
    ("[search]\ncrossover = nan\n", r"\[search\].crossover: must be a finite number, got nan"),
    ("[search]\nparsimony = inf\n", r"\[search\].parsimony: must be a finite number, got inf"),
    ("[search]\npoint = 1.5\n", r"\[search\].point: must be in \[0, 1\], got 1.5"),
    ("[evaluation]\nworkers = 100000\n", r"\[evaluation\].workers: must be in \[0, 1,024\]"),
    ('[search]\nselection = "tournament"\nelite = 300\n[run]\npopulation = 20\n',
     r"\[search\].elite: must be at most \[run\].population \(20\)"),
    ("[run]\npopulaton = 5\n", "did you mean 'population'"),
    ("[grammar]\nconstants = [0.5, nan]\n", r"\[grammar\].constants\[1\]: must be a finite number, got nan"),
    ('[grammar]\nconstants = [0.5, "half"]\n', r"\[grammar\].constants\[1\]: must be a finite number, got 'half'"),
    ("[grammar]\nconstants = [2, -1, 2.0]\n", r"\[grammar\].constants\[2\]: 2.0 is listed twice"),
    ('[task]\nname = "and-mach"\n', r"\[task\].name: unknown task 'and-mach'.*did you mean 'and-match'"),
    ('[task.settings]\nn_train = "many"\n', r"\[task.settings\].n_train: must be an integer, got 'many'"),
    ("[task.settings]\nseed = -1\n", r"\[task.settings\].seed: must be in \[0, "),
    ("[task.settings]\nn_valid = 10000000\n", r"\[task.settings\].n_valid: must be in \[1, 1000000\]"),
    ("[task.settings]\nn_trian = 5\n", r"\[task.settings\].n_trian: unknown setting.*did you mean 'n_train'"),
    ('[task]\nname = "regression"\n[task.settings]\ntest_fraction = 0\n',
     r"\[task.settings\].test_fraction: must be in \(0.0, 1.0\), got 0"),
    ('[task]\nname = "regression"\n[task.settings]\ntest_fraction = nan\n',
     r"\[task.settings\].test_fraction: must be a finite number"),
    ('[task]\nname = "babi-2"\n[task.settings]\nchain_order = "revers"\n',
     r"\[task.settings\].chain_order: must be one of .*did you mean 'reverse'"),
    ('[task]\nname = "tinystories-memory"\n[task.settings]\nfeatures = "txt"\n',
     r"\[task.settings\].features: must be one of 'all', 'text', 'model', got 'txt'; did you mean 'text'"),
    ('[task]\nname = "tinystories-memory"\n[task.settings]\nlabel_temperature = 0.0\n',
     r"\[task.settings\].label_temperature: must be > 0.0"),
]


def test_stage3_features_are_checked_before_the_language_model_runs(tmp_path):
    """Building tinystories-memory runs the LM for many minutes: a misspelt feature must be
    refused first, by the same function `evo-rules run` calls."""
    from evo_rules.config import ConfigError, load
    from evo_rules.validate import checked_task

    path = tmp_path / "s3.toml"
    path.write_text('[task]\nname = "tinystories-memory"\n[task.settings]\nfeatures = "text"\n'
                    '[grammar]\nfeatures = ["recency", "full_agree"]\n')

    def build():
        raise AssertionError("the task was built before its features were checked")

    with pytest.raises(ConfigError, match=r"\[grammar\].features\[1\]: full_agree is not a feature"):
        checked_task(load(str(path)), build)


@pytest.mark.parametrize("text, message", CASES)
def test_bad_value_is_one_line_naming_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    kind, msg = F.outcome(str(path))
    assert kind == "rejected"
    assert F.good_message(msg, str(path)), msg
    assert re.search(message, msg), msg


@pytest.mark.parametrize("content, fragment", [
    (csv_rows(target=lambda i: 3), "target column 'y' is constant (3 on every row)"),
    (csv_rows() + "1,2,nan\n", ":22: values must be finite, nan is not (column y)"),
    (csv_rows() + "1,x,2\n", ":22: 'x' is not a number (column b)"),
    ("a,b,y\n1,2,3\n", "needs at least 10 data rows, has 1"),
    ("y\n" + "".join(f"{i}\n" for i in range(20)), "needs a feature column besides the target 'y'"),
])
def test_bad_regression_data_names_the_csv_file(tmp_path, content, fragment):
    data = tmp_path / "d.csv"
    data.write_text(content)
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[task]\nname = "regression"\n[task.settings]\npath = "{data}"\n')
    kind, msg = F.outcome(str(cfg))
    assert kind == "rejected" and F.good_message(msg, str(cfg)), msg
    assert str(data) in msg and fragment in msg, msg


def test_constant_target_on_one_split_is_refused(tmp_path):
    data = tmp_path / "d.csv"  # only two rows differ: some split sees one value only
    data.write_text(csv_rows(40, target=lambda i: 1.0 if i < 38 else 2.0))
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[task]\nname = "regression"\n[task.settings]\npath = "{data}"\n')
    kind, msg = F.outcome(str(cfg))
    assert kind == "rejected" and "is constant on the" in msg and str(data) in msg


def test_non_utf8_files_are_named(tmp_path):
    toml = tmp_path / "latin1.toml"
    toml.write_bytes(b'[task]\nname = "and-match" # caf\xe9\n')
    with pytest.raises(ConfigError, match=f"{toml}: not valid TOML: not UTF-8"):
        load(toml)
    data = tmp_path / "latin1.csv"
    data.write_bytes(csv_rows().encode() + b"1,2,\xe93\n")
    with pytest.raises(CSVFormatError, match=f"{data}:22: not UTF-8"):
        load_csv(str(data))
    data.write_bytes(csv_rows().encode() + b"1,2,\x003\n")  # NUL: csv's own error, with the line
    with pytest.raises(CSVFormatError, match=f"{data}:22"):
        load_csv(str(data))


def test_grammar_constants_reach_the_rules_the_search_draws():
    """`[grammar] constants` are the numbers random rules hold: 0.37 appears only when listed
    (the default, 1, folds to whole numbers only)."""
    from evo_rules import app

    def numbers(config):
        draw = app.variation(from_dict(config), ("color", "shape")).random_rule
        rng = np.random.default_rng(0)
        found = set()
        for _ in range(200):
            stack = [draw(rng).term]
            while stack:
                t = stack.pop()
                stack.extend(t.args)
                if t.op == "num":
                    found.add(t.value)
        return found

    grammar = {"operators": ["add", "mul"], "template_share": 0.0}
    assert 0.37 in numbers({"grammar": {**grammar, "constants": [0.37, -0.5]}})
    assert all(v == int(v) for v in numbers({"grammar": grammar}))


def test_cli_overrides_and_replace_are_checked_like_the_file():
    cfg = from_dict({}, source="c.toml")
    with pytest.raises(ConfigError, match=r"c.toml: \[run\].population: must be in"):
        cfg.replace("run", population=2**63)
    with pytest.raises(ConfigError, match=r"\[run\].seed: must be an integer, got 'x'"):
        cfg.replace("run", seed="x")
    with pytest.raises(ConfigError, match=r"unknown key 'sed'.*did you mean 'seed'"):
        cfg.replace("run", sed=1)
    assert cfg.replace("run", seed=5).run.seed == 5


def test_shipped_configs_pass_the_task_checks():
    for name in sorted(os.listdir(os.path.join(ROOT, "runs"))):
        if not name.endswith(".toml"):
            continue
        cfg = load(os.path.join(ROOT, "runs", name))
        check_task_settings(cfg)  # every task, without building it
        if cfg.task.name != "tinystories-memory":  # its build runs the language model
            from evo_rules import app

            small = {"n_train": 50, "n_valid": 50, "n_test": 50} if cfg.task.name.startswith("and-match") else {}
            cfg = cfg.replace("task", settings={**cfg.task.settings, **small})
            checked_task(cfg, app.task_handle(cfg).build)


# ---------------------------------------------------------------------------- fuzzing

@FUZZ
@given(st.randoms(use_true_random=False))
def test_fuzzed_configs_and_data_are_accepted_or_refused_in_one_line(rng):
    with tempfile.TemporaryDirectory() as d:
        csv_path, _, header = F.write_csv(rng, d)
        doc, damages = F.config_document(rng, csv_path, header)
        path = F.write(d, "run.toml", doc)
        kind, msg = F.outcome(path)  # any other exception fails the test
        if kind == "rejected":
            assert F.good_message(msg, path), (damages, msg)
        else:
            cfg = load(path)
            assert isinstance(cfg, RunConfig)
            for f in cfg.grammar.features:
                assert f in F.task_features(cfg.task.name, header)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_fuzzed_csv_is_loaded_or_refused_naming_the_file(rng):
    with tempfile.TemporaryDirectory() as d:
        path, what, _ = F.write_csv(rng, d)
        try:
            header, rows = load_csv(path)
        except CSVFormatError as exc:
            msg = str(exc)
            assert msg.startswith(path) and "\n" not in msg, (what, msg)
        else:
            assert rows.shape == (rows.shape[0], len(header)) and rows.shape[0] >= 10
            assert all(math.isfinite(v) for v in rows.ravel())


# any Python value where the schema has a value (the notebook API takes dicts)
ANY = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                              max_size=3), max_leaves=6)
SCHEMA_KEYS = [(s, f) for s, cls in SECTIONS.items() for f in cls.__dataclass_fields__]


@FUZZ
@given(st.dictionaries(st.sampled_from(SCHEMA_KEYS), ANY, max_size=4),
       st.dictionaries(st.text(max_size=6) | st.integers(), ANY, max_size=2))
def test_from_dict_takes_any_values_and_answers_config_error(values, settings_):
    doc: dict = {}
    for (section, key), value in values.items():
        doc.setdefault(section, {})[key] = value
    if settings_ and isinstance(doc.get("task", {}), dict):
        doc.setdefault("task", {}).setdefault("settings", settings_)
    try:
        cfg = from_dict(doc, source="nb.toml")
        check_task_settings(cfg)
    except ConfigError as exc:
        assert str(exc).startswith("nb.toml: ") and "\n" not in str(exc)


# ---------------------------------------------------------------------------- the command line

def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "evo_rules.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("toml, extra", [
    ('[grammar]\nfeatures = ["nosuch"]\n', []),
    ("[search]\ncrossover = nan\n", []),
    (b"[run]\nseed = 1 # \xff\n", []),
    ('[task.settings]\nn_train = "many"\n', []),
    ("", ["--population", "9223372036854775807"]),
    ('[task]\nname = "regression"\n[task.settings]\npath = "const.csv"\n', []),
])
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, toml, extra):
    (tmp_path / "const.csv").write_text(csv_rows(target=lambda i: 2))
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    r = _cli(["run", "bad.toml", "--out", "out", "--quiet", "--backend", "serial", *extra], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evo-rules: error: bad.toml"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "out").exists()


def test_eval_takes_rule_text_that_starts_with_a_minus(capsys):
    from evo_rules.cli import main

    assert main(["eval", "-1e300"]) == 0
    assert "rule:       -1e+300" in capsys.readouterr().out
    assert main(["eval", "-2", "--show-gradients"]) == 0
    assert "rule:       -2" in capsys.readouterr().out


def test_replace_takes_a_float_budget_over_an_integer_one():
    """`resume --max-seconds 1260` on a run whose config said `max_seconds = 600`: the key's type
    is its default's (a number), not the stored value's (an int)."""
    from evo_rules.config import from_dict

    cfg = from_dict({"run": {"max_seconds": 600}}).replace("run", max_seconds=1260.0)
    assert cfg.run.max_seconds == 1260.0
    with pytest.raises(ConfigError, match=r"\[run\].generations: must be an integer, got 2.5"):
        cfg.replace("run", generations=2.5)
