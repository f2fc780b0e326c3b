"""The search engine: config validation, cache, determinism across backends, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evo_rules import app
from evo_rules.cache import FitnessCache
from evo_rules.config import ConfigError, from_dict, load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(backend="serial", workers=1, generations=3, seed=3, **search):
    return {
        "run": {"seed": seed, "generations": generations, "population": 16},
        "task": {"name": "and-match",
                 "settings": {"n_train": 200, "n_valid": 100, "n_test": 100}},
        "search": {"hall_of_fame": 5, **search},
        "grammar": {"max_size": 15},
        "fit": {"max_iter": 8},
        "evaluation": {"backend": backend, "workers": workers, "chunk": 3},
    }


def strip_times(report):
    report = dict(report)
    report.pop("seconds", None)
    report.pop("run", None)
    report["config"] = {k: v for k, v in report["config"].items() if k != "evaluation"}
    return report


@pytest.mark.parametrize("text, message", [
    ("[run]\nsede = 3\n", r"bad.toml: \[run\]: unknown key 'sede'"),
    ("[run]\npopulation = 'many'\n", r"\[run\].population: must be an integer"),
    ("[evaluation]\nbackend = 'gpu'\n", "backend"),
    ("[runn]\n", r"unknown section \[runn\]"),
    ("[run\n", "not valid TOML"),
])
def test_bad_config_names_key_and_file(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(p)


def test_shipped_configs_are_valid():
    for name in os.listdir(os.path.join(ROOT, "runs")):
        if name.endswith(".toml"):
            load(os.path.join(ROOT, "runs", name))


def test_cache_is_keyed_by_task_and_fit_settings(tmp_path):
    path = tmp_path / "c.sqlite"
    a = FitnessCache(path, "task-a", {"max_iter": 20})
    a.put_many([{"key": "k1", "metric": 0.5}])
    assert a.get_many(["k1", "k2"]) == {"k1": {"key": "k1", "metric": 0.5}}
    assert FitnessCache(path, "task-a", {"max_iter": 5}).get_many(["k1"]) == {}
    assert FitnessCache(path, "task-b", {"max_iter": 20}).get_many(["k1"]) == {}
    a.close()
    assert FitnessCache(path, "task-a", {"max_iter": 20}).get_many(["k1"])["k1"]["metric"] == 0.5


def test_cache_never_returns_a_fitness_measured_under_other_fitter_constants(tmp_path, monkeypatch):
    """The fitter's own constants (starts and their rows, L2, tolerance) change a fit as much as
    max_iter."""
    import evo_rules.cache as cache_mod
    import evo_rules.fitting as fitting

    path = tmp_path / "cache.sqlite"
    a = FitnessCache(path, "task-a", {"max_iter": 20})
    a.put_many([{"key": "k1", "metric": 0.5}])
    a.close()
    assert fitting.FITTER["l2"] == fitting.L2 and fitting.FITTER["starts"] == list(fitting.STARTS)
    for change in ({"l2": 1e-4}, {"tol": 1e-9}, {"starts": [0.0]}, {"start_rows": 64}):
        monkeypatch.setattr(cache_mod, "FITTER", dict(fitting.FITTER, **change))
        assert FitnessCache(path, "task-a", {"max_iter": 20}).get_many(["k1"]) == {}, change
    monkeypatch.setattr(cache_mod, "FITTER", dict(fitting.FITTER))
    assert FitnessCache(path, "task-a", {"max_iter": 20}).get_many(["k1"])["k1"]["metric"] == 0.5


def test_same_seed_same_run_and_cache_hits(tmp_path):
    r1 = app.run_search(tiny(), out=str(tmp_path / "a"))
    r2 = app.run_search(tiny(), out=str(tmp_path / "b"))
    assert strip_times(r1) == strip_times(r2)
    r3 = app.run_search(tiny(seed=4), out=str(tmp_path / "c"))
    assert strip_times(r3) != strip_times(r1)
    log = r1["logbook"]
    assert len(log) == 4 and log[0]["gen"] == 0
    assert all({"evals", "cache_hits", "dedup", "invalid", "best", "median_size"} <= set(row) for row in log)
    assert r1["best"]["test_metrics"]["answer_score"] > 0
    assert "linear" in r1["baselines"] and "oracle" in r1["baselines"]


def test_shared_cache_turns_a_rerun_into_hits(tmp_path):
    cfg = tiny()
    cfg["cache"] = {"path": str(tmp_path / "shared.sqlite")}
    first = app.run_search(cfg, out=str(tmp_path / "a"))
    second = app.run_search(cfg, out=str(tmp_path / "b"))
    assert sum(r["evals"] for r in second["logbook"]) == 0
    assert sum(r["cache_hits"] for r in second["logbook"]) > 0
    for part in ("hall_of_fame", "pareto_front", "best", "baselines"):
        assert first[part] == second[part]
    assert [r["best"] for r in first["logbook"]] == [r["best"] for r in second["logbook"]]


def test_results_do_not_depend_on_backend_or_workers(tmp_path):
    serial = app.run_search(tiny("serial", 1), out=str(tmp_path / "s"))
    process = app.run_search(tiny("process", 2), out=str(tmp_path / "p"))
    dask = app.run_search(tiny("dask", 2), out=str(tmp_path / "d"))
    assert strip_times(serial) == strip_times(process) == strip_times(dask)


def test_tournament_selection_runs(tmp_path):
    r = app.run_search(tiny(selection="tournament", elite=2), out=str(tmp_path / "t"))
    assert r["generation"] == 3 and r["best"] is not None


def test_run_refuses_a_folder_that_holds_a_run(tmp_path):
    app.run_search(tiny(generations=0), out=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="already holds a run"):
        app.run_search(tiny(generations=0), out=str(tmp_path / "a"))


def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "evo_rules.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_cli_bad_config_is_one_line_and_nonzero(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[search]\nselection = 'roulette'\n")
    out = _cli("run", str(p), "--out", str(tmp_path / "x"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "selection" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


def test_cli_run_and_report(tmp_path):
    p = tmp_path / "tiny.toml"
    cfg = tiny(generations=1)
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            if isinstance(v, dict):
                continue
            lines.append(f"{k} = {json.dumps(v)}")
        if section == "task":
            lines.append("[task.settings]")
            lines += [f"{k} = {v}" for k, v in values["settings"].items()]
    p.write_text("\n".join(lines) + "\n")
    out = _cli("run", str(p), "--out", str(tmp_path / "r"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "hall of fame" in out.stdout
    rep = _cli("report", str(tmp_path / "r"), "--json")
    assert rep.returncode == 0
    data = json.loads(rep.stdout)
    assert data["generation"] == 1 and data["hall_of_fame"]
    bad = _cli("report", str(tmp_path / "nothing"))
    assert bad.returncode == 2 and "no report.json" in bad.stderr


class _DyingTask:
    """Wraps a task; the first evaluation that finds the flag file removes it and kills its worker."""

    def __init__(self, flag):
        from evo_rules.fitness.registry import get_task

        self.inner = get_task("and-match", n_train=100, n_valid=50, n_test=50)
        self.flag = flag
        for attr in ("name", "loss", "features", "metric_name", "fingerprint"):
            setattr(self, attr, getattr(self.inner, attr))

    def batch(self, part):
        return self.inner.batch(part)

    def score(self, part, scorer):
        try:
            os.remove(self.flag)
        except FileNotFoundError:
            return self.inner.score(part, scorer)
        os._exit(1)  # the worker dies mid-generation


def _dying_factory(flag):
    return _DyingTask(flag)


def test_a_dead_worker_costs_a_retry_not_the_run(tmp_path):
    from functools import partial

    from evo_rules.backends import ProcessBackend, SerialBackend

    flag = tmp_path / "die"
    flag.write_text("once")
    texts = ["(mul w x.color)", "(mul w x.shape)", "(add (mul w x.color) (mul w x.shape))",
             "(mul x.color x.shape)"]
    factory = partial(_dying_factory, str(flag))
    proc = ProcessBackend(factory, "dying", {"max_iter": 5}, workers=2, chunk=1, retries=2)
    try:
        got = proc.map(texts)
    finally:
        proc.close()
    assert not flag.exists()  # a worker did die
    want = SerialBackend(factory, "dying-serial", {"max_iter": 5}).map(texts)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(got) == strip(want)


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path):
    import signal
    import time

    p = tmp_path / "long.toml"
    p.write_text(
        # generations: more than any machine runs in the test's few seconds (200 finished in ~2.7 s
        # here, and a SIGINT that came after the run's end met the interpreter's teardown: -2)
        "[run]\nseed = 5\ngenerations = 1000000\npopulation = 16\n"
        "[task]\nname = \"and-match\"\n[task.settings]\nn_train = 200\nn_valid = 100\nn_test = 100\n"
        "[fit]\nmax_iter = 5\n[evaluation]\nbackend = \"serial\"\n")
    out = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "evo_rules.cli", "run", str(p), "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "lineage.jsonl"
        if log.exists() and log.stat().st_size > 0 and (out / "checkpoint.json").exists():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted after generation" in stderr and "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    stopped = report["generation"]
    assert 0 <= stopped < 1_000_000
    res = _cli("resume", str(out), "--generations", str(stopped + 1), "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "report.json").read_text())["generation"] == stopped + 1
