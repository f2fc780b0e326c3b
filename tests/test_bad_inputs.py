"""Bad input found by an audit of every command: each is one line naming what and where, a
non-zero exit, no traceback, and nothing already written is changed (or left half-written).

Damaged run-folder files (lineage records, report.json, checkpoints with a valid checksum but a
wrong body), CSV cells that Python's float() reads but no CSV means (`1_0`, non-finite), output
paths that are folders, command-line options named as the option (not as the config file),
sweep's --rebuild-cache, bAbI splits without questions, a truncated stage-3 cache, and
`lm train` options and training states.
"""

import hashlib
import json
import os
import shutil
import signal
import sys

import pytest
from test_resume import config, write_toml

from evo_rules import app
from evo_rules.cli import main


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished run (serial, two generations), copied by each test that damages it."""
    out = tmp_path_factory.mktemp("audit") / "run"
    app.run_search(config(generations=2), out=str(out), progress=False)
    os.remove(out / "run.lock")
    return out


@pytest.fixture
def run(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def cli(capsys, *args):
    """(exit code, stderr lines, stdout) of the command line run in this process (the signal
    handlers a run or resume installs for the rest of its process are put back)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    try:
        code = main([str(a) for a in args])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        sys.unraisablehook = hook
    got = capsys.readouterr()
    assert "Traceback" not in got.err + got.out
    assert "internal error" not in got.err, got.err
    return code, got.err.strip().splitlines(), got.out


def snapshot(folder) -> dict:
    """Every file's bytes (the lock file aside: a resume takes it before reading, and leaves it)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "run.lock"}


# ------------------------------------------------------------------ lineage.jsonl


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "a JSON list, not an object"),
    ('{"id": 9999}', "no 'key' field"),
    ('{"id": "abc", "key": "k", "parents": [], "op": "x", "gen": 0, "size": 1, "metric": null}', "'id' is \"abc\""),
    ('{"id": 9999, "key": "k", "parents": "ab", "op": "x", "gen": 0, "size": 1, "metric": null}',
     "'parents' is \"ab\""),
    ('{"id": 9999, "key": "k", "parents": [1, "x"], "op": "x", "gen": 0, "size": 1, "metric": null}',
     "'parents' must be a list of ids"),
    ('{"id": 9999, "key": "k", "parents": [], "op": "x", "gen": 0, "size": 1, "metric": "high"}', "'metric' is"),
])
@pytest.mark.parametrize("command", ["lineage", "plot"])
def test_a_malformed_lineage_record_names_file_and_line(capsys, run, command, line, message):
    path = run / "lineage.jsonl"
    n = len(path.read_text().splitlines()) + 1
    with open(path, "a") as fh:
        fh.write(line + "\n")
    before = snapshot(run)
    code, err, _ = cli(capsys, command, run)
    assert code == 2 and len(err) == 1, err
    assert f"lineage.jsonl:{n}: malformed lineage record" in err[0] and message in err[0]
    assert snapshot(run) == before and not (run / "plots").exists()


def test_lineage_that_is_not_utf8_or_holds_a_bad_rule_text(capsys, run):
    path = run / "lineage.jsonl"
    good = path.read_bytes()
    path.write_bytes(b"\xff\xfe garbage\n")
    code, err, _ = cli(capsys, "lineage", run)
    assert code == 2 and len(err) == 1 and "lineage.jsonl:1: malformed lineage record (not UTF-8 text)" in err[0]
    path.write_bytes(good + b'{"id": 9999, "key": "k", "parents": [1], "op": "x", "gen": 2, "size": 1, '
                     b'"metric": null, "text": "(((("}\n')
    code, err, _ = cli(capsys, "lineage", run)
    assert code == 2 and len(err) == 1 and "lineage.jsonl: record id 9999: malformed rule text" in err[0]


def test_plot_of_a_missing_folder_creates_nothing(capsys, tmp_path):
    code, err, _ = cli(capsys, "plot", tmp_path / "nope")
    assert code == 2 and len(err) == 1 and "no lineage.jsonl" in err[0]
    assert not (tmp_path / "nope").exists()


def test_graphml_into_a_folder_is_refused_and_leaves_no_temporary_file(capsys, run, tmp_path):
    target = tmp_path / "graphs"
    target.mkdir()
    code, err, _ = cli(capsys, "lineage", run, "--graphml", target)
    assert code == 2 and len(err) == 1 and f"{target}: is a folder" in err[0]
    assert not os.path.exists(f"{target}.tmp")


# ------------------------------------------------------------------ report.json


@pytest.mark.parametrize("content, message", [
    (b"[]", "not a run report (a JSON list, not an object)"),
    (b"{}", "not a readable run report (KeyError: 'task')"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_report_of_a_damaged_report_names_it(capsys, run, content, message):
    (run / "report.json").write_bytes(content)
    before = snapshot(run)
    code, err, _ = cli(capsys, "report", run)
    assert code == 2 and len(err) == 1 and "report.json" in err[0] and message in err[0], err
    assert snapshot(run) == before


def test_plot_and_predict_name_a_report_with_a_wrong_type(capsys, run, tmp_path):
    path = run / "report.json"
    report = json.loads(path.read_text())
    report["winner"] = "x"
    path.write_text(json.dumps(report))
    data = tmp_path / "x.csv"
    data.write_text("color,shape\n1,0\n")
    for args in (["plot", run], ["predict", run, data]):
        code, err, _ = cli(capsys, *args)
        assert code == 2 and len(err) == 1 and f"{path}: not a readable run report" in err[0], err


# ------------------------------------------------------------------ checkpoints


def _write_body(path, body: str) -> None:
    """A checkpoint whose checksum is right but whose body is not a run's state."""
    doc = {"format": "evo-rules-checkpoint", "version": 1,
           "sha256": hashlib.sha256(body.encode()).hexdigest(), "body": body}
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("body, message", [
    ("[]", "its body is a JSON list, not an object"),
    ("{}", "no generation, config, task"),
    ("not json", "its body is not JSON"),
])
def test_a_checkpoint_body_that_is_not_a_state_is_named(capsys, run, body, message):
    os.remove(run / "report.json")
    for name in ("checkpoint.json", "checkpoint.prev.json"):
        _write_body(run / name, body)
    before = snapshot(run)
    for args in (["resume", run, "--generations", "3", "--quiet"], ["predict", run, run / "x.csv", "--rule", "1"]):
        code, err, _ = cli(capsys, *args)
        assert code == 2 and len(err) == 1, err
        assert "checkpoint.json: not a readable checkpoint" in err[0] and message in err[0]
    assert snapshot(run) == before


def test_both_damaged_checkpoints_are_named(capsys, run):
    os.remove(run / "report.json")
    (run / "checkpoint.json").write_text('{"format": "evo-rul')
    (run / "checkpoint.prev.json").write_text("{")
    code, err, _ = cli(capsys, "resume", run, "--generations", "3", "--quiet")
    assert code == 2 and len(err) == 1
    assert f"{run / 'checkpoint.json'}: not a readable" in err[0]
    assert f"{run / 'checkpoint.prev.json'}: not a readable" in err[0]


# ------------------------------------------------------------------ predict


@pytest.mark.parametrize("row, message", [
    ("1,nan", "x.csv:3: column shape: values must be finite, nan is not"),
    ("1,1e400", "x.csv:3: column shape: values must be finite, 1e400 is not"),
    ("1_0,0", "x.csv:3: column color: '1_0' is not a number"),  # float() reads it as 10
])
def test_predict_refuses_cells_that_are_not_finite_numbers(capsys, run, tmp_path, row, message):
    data = tmp_path / "x.csv"
    data.write_text(f"color,shape\n1,0\n{row}\n")
    code, err, out = cli(capsys, "predict", run, data, "--rule", "1")
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert out == ""


def test_predict_into_a_folder_is_refused_and_leaves_no_temporary_file(capsys, run, tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("color,shape\n1,0\n")
    target = tmp_path / "scores"
    target.mkdir()
    code, err, _ = cli(capsys, "predict", run, data, "--rule", "1", "--out", target)
    assert code == 2 and len(err) == 1 and f"--out {target}: is a folder" in err[0]
    assert not os.path.exists(f"{target}.tmp") and list(target.iterdir()) == []


def test_regression_data_refuses_underscored_numbers(tmp_path):
    from evo_rules.fitness.regression import CSVFormatError, load_csv

    path = tmp_path / "d.csv"
    path.write_text("a,y\n" + "".join(f"{i},{i % 3}\n" for i in range(11)) + "1_000,2\n")
    with pytest.raises(CSVFormatError, match=r"d.csv:13: '1_000' is not a number \(column a\)"):
        load_csv(str(path))


# ------------------------------------------------------------------ command-line options


@pytest.mark.parametrize("option, value, key", [
    ("--generations", "-1", "[run].generations"),
    ("--workers", "99999", "[evaluation].workers"),
    ("--max-seconds", "nan", "[run].max_seconds"),
    ("--seed", "-5", "[run].seed"),
])
def test_a_bad_run_option_is_named_as_the_option(capsys, tmp_path, option, value, key):
    cfg = write_toml(config(generations=1), tmp_path / "c.toml")
    out = tmp_path / "out"
    code, err, _ = cli(capsys, "run", cfg, "--out", out, "--quiet", option, value)
    assert code == 2 and len(err) == 1, err
    assert key in err[0] and f"(from the option {option} {value})" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "sweep", "lm"])
@pytest.mark.parametrize("under", [False, True])
def test_an_out_that_is_a_file_is_named_and_left_alone(capsys, tmp_path, command, under):
    """`--out` naming a file (or a folder below one): one line naming the file, not an errno."""
    if command == "lm":
        pytest.importorskip("torch")
    cfg = config(generations=1)
    cfg["sweep"] = {"expand_rounds": 0, "expand_top": 2}
    path = write_toml(cfg, tmp_path / "c.toml")
    blocker = tmp_path / "taken"
    blocker.write_text("mine")
    out = blocker / "sub" if under else blocker
    argv = {"run": ["run", path], "sweep": ["sweep", path],
            "lm": ["lm", "train", "--max-steps", "1", "--layers", "1", "--width", "16", "--heads", "2",
                   "--context", "16", "--threads", "1"]}[command]
    code, err, _ = cli(capsys, *argv, "--out", out, "--quiet")
    assert code == 2 and err[-1] == f"evo-rules: error: {blocker}: is a file, not a folder (--out names a folder)", err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("option, value", [("--generations", "-1"), ("--max-evaluations", "0"),
                                           ("--max-seconds", "inf")])
def test_a_bad_resume_option_is_refused_even_when_the_run_is_finished(capsys, run, option, value):
    before = snapshot(run)
    code, err, out = cli(capsys, "resume", run, option, value)
    assert code == 2 and len(err) == 1 and f"(from the option {option} {value})" in err[0], err
    assert "nothing to resume" not in out
    assert snapshot(run) == before


def test_nothing_to_resume_names_a_total_that_would_continue(capsys, run):
    code, _, out = cli(capsys, "resume", run, "--generations", "1")
    assert code == 0 and "finished generation 2 of 1" in out and "--generations N > 2 continues it" in out


# ------------------------------------------------------------------ sweep


def test_sweep_offers_the_rebuild_its_damaged_cache_message_names(capsys, tmp_path):
    cfg = config(generations=1)
    cfg["sweep"] = {"expand_rounds": 0, "expand_top": 2}
    path = write_toml(cfg, tmp_path / "s.toml")
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "cache.sqlite").write_text("not a database")
    code, err, _ = cli(capsys, "sweep", path, "--out", out, "--quiet")
    assert code == 2 and len(err) == 1 and "is damaged" in err[0] and "--rebuild-cache" in err[0]
    code, err, _ = cli(capsys, "sweep", path, "--out", out, "--quiet", "--rebuild-cache")
    assert code == 0 and "moved to" in err[0]
    assert (out / "sweep.json").exists() and [n for n in os.listdir(out) if ".damaged-" in n]


# ------------------------------------------------------------------ bAbI data


def _babi_dir(tmp_path):
    from importlib import resources

    from evo_rules.fitness.babi import FILES

    d = tmp_path / "babi"
    d.mkdir()
    for name in FILES[2]:
        (d / name).write_bytes(resources.files("evo_rules.fitness.data").joinpath(name).read_bytes())
    return d, FILES[2]


def test_a_babi_split_without_questions_is_refused_naming_the_file(tmp_path):
    from evo_rules.fitness.babi import BabiTask

    d, (train, test) = _babi_dir(tmp_path)
    (d / test).write_text("")
    with pytest.raises(ValueError, match=rf"{test}: no question in the test split \(of 0 stories\)"):
        BabiTask(2, data_dir=str(d))
    (d / test).write_text("1 Mary went to the kitchen.\n2 John went to the garden.\n")
    with pytest.raises(ValueError, match=rf"{test}: no question in the test split \(of 1 stories\)"):
        BabiTask(2, data_dir=str(d))
    (d / train).write_text("")
    with pytest.raises(ValueError, match=rf"{train}: 0 stories: valid_fraction leaves no training stories"):
        BabiTask(2, data_dir=str(d))


def test_a_binary_babi_file_is_one_short_line(tmp_path):
    from evo_rules.fitness.babi import BabiTask

    d, (_, test) = _babi_dir(tmp_path)
    (d / test).write_bytes(bytes(range(14, 256)) * 40)  # no line break: one 10 kB "line"
    with pytest.raises(ValueError, match="not UTF-8 text") as caught:
        BabiTask(2, data_dir=str(d))
    assert len(str(caught.value)) < 300


# ------------------------------------------------------------------ stage 3 cache


@pytest.mark.parametrize("content", [b"PK\x03\x04garbage", b"PK\x03\x04" + b"\x00" * 5000],
                         ids=["garbage", "truncated"])
def test_a_truncated_stage3_cache_is_a_value_error(tmp_path, content):
    from evo_rules.fitness.memory import _read_cache

    path = tmp_path / "tinystories-memory-x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="unreadable stage-3 cache"):  # computed again, with a warning
        _read_cache(path, "x")


# ------------------------------------------------------------------ lm train


@pytest.mark.parametrize("args, message", [
    (["--max-steps", "-1"], "max_steps (--max-steps): must be an integer >= 1, got -1"),
    (["--context", "0"], "context (--context): must be an integer >= 1, got 0"),
    (["--heads", "3"], "the width 16 must be a multiple of the heads (3, --heads)"),
    (["--heads", "0"], "n_head (--heads): must be an integer >= 1, got 0"),
    (["--patience", "-1"], "patience (--patience): must be an integer >= 1"),
    (["--minutes", "nan"], "minutes (--minutes): must be a finite number > 0, got nan"),
    (["--threads", "-1"], "threads (--threads): must be 0 (every core) or more"),
    (["--device", "bogus"], "device (--device) 'bogus'"),
])
def test_lm_train_refuses_bad_options_before_writing(capsys, tmp_path, args, message):
    pytest.importorskip("torch")
    out = tmp_path / "lm"
    tiny = ["--max-steps", "1", "--minutes", "0.5", "--layers", "1", "--width", "16", "--heads", "2",
            "--context", "16", "--threads", "1"]  # should the check go, a short training, not 15 minutes
    code, err, _ = cli(capsys, "lm", "train", "--out", out, "--quiet", *tiny, *args)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (b"\xff", "UnicodeDecodeError"),
    (b"[]", "TypeError"),
    (b'{"settings": {"bogus": 1}}', "unknown settings ['bogus']"),
])
def test_lm_train_names_a_damaged_training_state(capsys, tmp_path, content, message):
    pytest.importorskip("torch")
    out = tmp_path / "lm"
    out.mkdir()
    (out / "train_state.json").write_bytes(content)
    (out / "model.safetensors").write_bytes(b"the best model so far")
    before = snapshot(out)
    code, err, _ = cli(capsys, "lm", "train", "--out", out, "--quiet", "--max-steps", "5")
    assert code == 2 and len(err) == 1 and "train_state.json: unreadable training state" in err[0], err
    assert message in err[0] and "train into another folder (--out)" in err[0]
    assert snapshot(out) == before


def test_lm_train_without_validation_stories_is_refused_and_leaves_the_folder_empty(tmp_path):
    pytest.importorskip("torch")
    from evo_rules.fitness import tinystories
    from evo_rules.fitness.lm.train import TrainSettings, train_lm

    data = tmp_path / "data"
    data.mkdir()
    stories = [s.text for s in tinystories.load_files()["tinystories_sample.txt"][:20]]
    (data / "only_train.txt").write_text("".join(t + "\n<|endoftext|>\n" for t in stories))
    settings = TrainSettings(max_steps=2, vocab_size=300, data=str(data),
                             model=dict(vocab_size=300, context=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    out = tmp_path / "lm"
    with pytest.raises(ValueError, match="no validation stories"):  # was: best validation loss 0.0
        train_lm(out, minutes=1, settings=settings, progress=False, log=lambda m: None)
    assert list(out.iterdir()) == []  # the same command works once the data is fixed
