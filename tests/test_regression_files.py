"""The regression task on separate train and test files ([task.settings] train, test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evo_rules.config import ConfigError, from_dict
from evo_rules.evaluate import evaluate_rule
from evo_rules.validate import checked_task
from evo_rules.fitness.base import SettingsError
from evo_rules.fitness.regression import CSVFormatError, RegressionTask
from evo_rules.fitness.registry import get_task


def _rows(n: int, seed: int, columns=("a", "b", "y")) -> str:
    """A CSV of y = 2a + 0.5 exp(b) + noise, columns in the given order."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    cols = {"a": a, "b": b, "y": 2 * a + 0.5 * np.exp(b) + 0.01 * rng.normal(size=n),
            "c": rng.normal(size=n)}  # an extra column, when asked for
    lines = [",".join(columns)] + [",".join(repr(float(cols[c][i])) for c in columns) for i in range(n)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def files(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text(_rows(40, 0))
    test.write_text(_rows(15, 1, columns=("y", "b", "a")))  # another column order
    return str(train), str(test)


def _xy(batch):
    return np.column_stack([batch.X["a"], batch.X["b"], batch.y])


def test_test_file_is_the_test_split_and_every_train_row_is_used(files):
    train, test = files
    task = RegressionTask(train=train, test=test, seed=3)
    assert task.features == ("a", "b")
    train_rows = np.loadtxt(train, delimiter=",", skiprows=1)
    test_rows = np.loadtxt(test, delimiter=",", skiprows=1)[:, [2, 1, 0]]  # to a, b, y
    assert np.array_equal(_xy(task.batch("test")), test_rows)
    used = np.vstack([_xy(task.batch("train")), _xy(task.batch("valid"))])
    assert sorted(map(tuple, used)) == sorted(map(tuple, train_rows))
    assert task.batch("valid").n_rows == 8  # valid_fraction 0.2 of the 40 train-file rows
    assert task.settings == {"train": "train.csv", "test": "test.csv", "target": "y", "seed": 3,
                             "valid_fraction": 0.2}
    # the formula fitted on the train rows scores on the test file's rows
    truth = evaluate_rule("(add (mul w x.a) (mul w (exp x.b)) w)", task, {"max_iter": 20}, part="test")
    assert truth["metrics"]["r2"] > 0.99


@given(seed=st.integers(0, 2**32), valid_fraction=st.floats(0.05, 0.9))
def test_resampling_redraws_train_and_valid_only(tmp_path_factory, seed, valid_fraction):
    folder = tmp_path_factory.mktemp("data")
    (folder / "tr.csv").write_text(_rows(30, 2))
    (folder / "te.csv").write_text(_rows(12, 3))
    task = RegressionTask(train=str(folder / "tr.csv"), test=str(folder / "te.csv"), seed=0,
                          valid_fraction=valid_fraction)
    other = task.resample(seed)
    assert np.array_equal(_xy(other.batch("test")), _xy(task.batch("test")))
    for t in (task, other):
        assert t.batch("train").n_rows + t.batch("valid").n_rows == 30
        assert t.batch("valid").n_rows == max(1, round(valid_fraction * 30))
    assert other.settings == {**task.settings, "seed": seed}
    assert (other.fingerprint == task.fingerprint) == (seed == 0)


def test_one_file_form_is_unchanged():
    # the README's regression row and every cached result hang on this split and fingerprint
    task = get_task("regression")
    assert task.settings == {"path": "example_regression.csv", "target": "y", "seed": 0,
                             "valid_fraction": 0.2, "test_fraction": 0.2}
    assert task.fingerprint == "d453e7d06993c887e2c3e975387695ec"
    assert [task.batch(p).n_rows for p in ("train", "valid", "test")] == [240, 80, 80]


@pytest.mark.parametrize("settings, key, fragment", [
    ({"path": "a.csv", "train": "b.csv", "test": "c.csv"}, "path", "not with train/test"),
    ({"train": "b.csv", "test": "c.csv", "test_fraction": 0.3}, "test_fraction", "not with train/test"),
    ({"train": "b.csv"}, "train", "needs test as well"),
    ({"test": "c.csv"}, "test", "needs train as well"),
    ({"train": "", "test": "c.csv"}, "train", "must name a CSV file"),
    ({"train": 3, "test": "c.csv"}, "train", "must be a string"),
])
def test_settings_mixing_the_forms_are_refused(settings, key, fragment):
    with pytest.raises(SettingsError) as err:
        get_task("regression", **settings)
    assert err.value.key == key and fragment in str(err.value)


def _damaged(tmp_path, train_text, test_text):
    (tmp_path / "train.csv").write_text(train_text)
    (tmp_path / "test.csv").write_text(test_text)
    return str(tmp_path / "train.csv"), str(tmp_path / "test.csv")


@pytest.mark.parametrize("test_text, fragment", [
    (_rows(12, 1, columns=("a", "y")), "test.csv:1: columns differ from the train file"),
    (_rows(12, 1, columns=("a", "b", "c", "y")), "(missing: none; extra: c)"),
    (_rows(12, 1).replace("\n", "\n1,2\n", 1), "test.csv:2: 2 fields, the header has 3"),
    (_rows(12, 1) + "1,nan,2\n", "test.csv:14: values must be finite"),
    ("a,b,y\n" + "1,2,5\n" * 12, "test.csv: target column 'y' is constant on the 12 test rows"),
])
def test_a_bad_test_file_is_one_line_naming_it(tmp_path, test_text, fragment):
    train, test = _damaged(tmp_path, _rows(30, 0), test_text)
    with pytest.raises(ValueError) as err:
        RegressionTask(train=train, test=test)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg and msg.startswith(test)


def test_missing_files_and_a_bad_train_file_are_named(tmp_path):
    train, test = _damaged(tmp_path, _rows(30, 0).replace("y\n", "z\n", 1), _rows(12, 1))
    with pytest.raises(FileNotFoundError, match="regression test file 'nope.csv': no such file"):
        RegressionTask(train=train, test="nope.csv")
    with pytest.raises(FileNotFoundError, match="regression train file 'nope.csv': no such file"):
        RegressionTask(train="nope.csv", test=test)
    with pytest.raises(ValueError, match=r"train\.csv: no target column 'y'"):
        RegressionTask(train=train, test=test)


def test_config_errors_are_one_line_naming_the_config(tmp_path, files):
    train, test = files

    def check(settings):
        cfg = from_dict({"task": {"name": "regression", "settings": settings}}, source="run.toml")
        return checked_task(cfg, lambda: get_task("regression", **settings))

    assert check({"train": train, "test": test}).features == ("a", "b")
    with pytest.raises(ConfigError, match=r"^run\.toml: \[task.settings\]\.path: not with train/test"):
        check({"train": train, "test": test, "path": train})
    missing = r"^run\.toml: \[task\] regression: regression test file '.*x\.csv': no such file"
    with pytest.raises(ConfigError, match=missing):
        check({"train": train, "test": str(tmp_path / "x.csv")})


def test_a_run_on_two_files_reports_on_the_test_file(tmp_path, files):
    from evo_rules import app

    train, test = files
    cfg = {"run": {"seed": 1, "generations": 1, "population": 8},
           "task": {"name": "regression", "settings": {"train": train, "test": test}},
           "fit": {"max_iter": 20}, "evaluation": {"backend": "serial"},
           "search": {"seed_reference": False}, "rerun": {"seeds": 1, "finalists": 2}}
    report = app.run_search(cfg, out=str(tmp_path / "run"), progress=False)
    task = RegressionTask(train=train, test=test)
    assert report["task"]["fingerprint"] == task.fingerprint
    linear = evaluate_rule(task.linear_rule_text(), task, {"max_iter": 20}, part="test")
    assert report["baselines"]["linear"]["test_metrics"]["r2"] == pytest.approx(linear["metrics"]["r2"])
