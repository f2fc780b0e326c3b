"""Long runs: a run killed at any instant and resumed ends exactly where the uninterrupted run ends.

A tiny and-match search runs in a subprocess (`evo-rules run`), is SIGKILLed (its whole process
group: workers too) after a seeded random delay, and is resumed with `evo-rules resume`; its
report (times and folder name aside), lineage and final checkpoint must equal an uninterrupted
run's. A run killed before its first checkpoint has nothing to resume (`resume` says so) and
`run` starts it again in the same folder. A corrupt checkpoint falls back to the previous one
with a warning; a resume under another config or other task data is refused, saying what
differs; CLI errors are one line.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from evo_rules import app, checkpoint
from evo_rules.config import from_dict
from evo_rules.search import RunFolderError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATIONS = 20  # long enough that the kill lands mid-run on a fast, idle machine too


def config(backend="serial", workers=1, generations=GENERATIONS, **fit):
    return {
        "run": {"seed": 3, "generations": generations, "population": 16},
        "task": {"name": "and-match", "settings": {"n_train": 200, "n_valid": 100, "n_test": 100}},
        "search": {"hall_of_fame": 5},
        "grammar": {"max_size": 15},
        "fit": {"max_iter": 8, **fit},
        "evaluation": {"backend": backend, "workers": workers, "chunk": 3},
    }


def write_toml(cfg: dict, path) -> str:
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for k, v in values.items():
            if isinstance(v, dict):
                lines.append(f"[{section}.{k}]")
                lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def cli(*args, **popen):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "evo_rules.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, **popen)


def comparable(folder) -> dict:
    """What must not depend on an interruption: report, lineage and final state, minus times,
    the folder name and the evaluation backend."""
    with open(os.path.join(folder, "report.json")) as fh:
        report = json.load(fh)
    for k in ("seconds", "run"):
        report.pop(k, None)
    state = checkpoint.read_file(os.path.join(folder, checkpoint.NAME))
    for row in state["logbook"]:
        row.pop("seconds", None)
    for d in (report["config"], state["config"]):
        d.pop("evaluation")
        for budget in ("max_seconds", "max_evaluations"):  # budgets of one call, not the run's
            d["run"].pop(budget, None)
    with open(os.path.join(folder, "lineage.jsonl")) as fh:
        lines = fh.read()
    return {"report": report, "state": state, "lineage": lines}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    app.run_search(config(), out=str(out))
    return comparable(out)


def assert_same(folder, reference):
    got = comparable(folder)
    for part in ("lineage", "state", "report"):
        if part == "report":
            diff = [k for k in reference[part] if got[part].get(k) != reference[part][k]]
            assert not diff, f"report parts differ: {diff}"
        assert got[part] == reference[part], f"{part} differs"


def kill_run(cfg_path, out, wait_for: str | None, delay: float) -> int | None:
    """Start `evo-rules run` in its own process group, wait until `wait_for` (if any) is in `out`,
    sleep `delay`, SIGKILL the group. Returns the generation of the checkpoint left, if any."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "evo_rules.cli", "run", cfg_path, "--out", str(out),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while wait_for and not os.path.exists(os.path.join(out, wait_for)) and proc.poll() is None:
            assert time.monotonic() < deadline, f"{wait_for} never appeared"
            time.sleep(0.002)
        time.sleep(delay)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed: shorten the delay"
    try:
        return checkpoint.read_latest(str(out))["generation"]
    except checkpoint.CheckpointError:
        return None


@pytest.mark.parametrize("backend, wait_for, max_delay, seed", [
    ("serial", checkpoint.PREVIOUS, 0.6, 11),  # a random instant after generation 0
    ("serial", checkpoint.NAME, 0.0, 12),  # during generation 0, right after the first checkpoint
    ("process", checkpoint.PREVIOUS, 0.8, 13),
])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, reference, backend, wait_for,
                                                        max_delay, seed):
    cfg = write_toml(config(backend, workers=2 if backend == "process" else 1), tmp_path / "c.toml")
    out = tmp_path / "run"
    delay = random.Random(seed).uniform(0.0, max_delay)
    gen = kill_run(cfg, out, wait_for, delay)
    # a kill after the last generation (while the report is built) must resume to it as well
    assert gen is not None and gen <= GENERATIONS
    if gen < GENERATIONS:
        assert not (out / "report.json").exists()
    res = cli("resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert_same(out, reference)


def test_run_killed_before_its_first_checkpoint(tmp_path, reference):
    cfg = config()
    cfg_path = write_toml(cfg, tmp_path / "c.toml")
    # killed at once: maybe no folder at all
    gone = tmp_path / "gone"
    assert kill_run(cfg_path, gone, None, 0.0) is None
    res = cli("resume", str(gone))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "no such run folder" in res.stderr or "nothing to resume" in res.stderr
    # what a kill leaves between creating the folder and the first checkpoint (written before
    # any evaluation): the folder, an empty cache, config.json
    out = tmp_path / "run"
    app.make_search(from_dict(cfg), str(out), progress=False).close()
    (out / "config.json").write_text(json.dumps(cfg))
    res = cli("resume", str(out))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "nothing to resume" in res.stderr and "evo-rules run CONFIG --out" in res.stderr
    res = cli("run", cfg_path, "--out", str(out), "--quiet")  # `run` starts it again there
    assert res.returncode == 0, res.stderr
    assert_same(out, reference)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    out = tmp_path / "run"
    app.run_search(config(generations=5), out=str(out))
    os.remove(out / "report.json")
    current = out / checkpoint.NAME
    current.write_bytes(current.read_bytes()[: current.stat().st_size // 2])  # truncated
    res = cli("resume", str(out), "--generations", str(GENERATIONS), "--quiet")
    assert res.returncode == 0, res.stderr
    warn = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warn) == 1 and "truncated or corrupt" in warn[0] and checkpoint.PREVIOUS in warn[0]
    assert_same(out, reference)
    # one flipped byte inside the body: the checksum catches it
    out2 = tmp_path / "run2"
    app.run_search(config(generations=5), out=str(out2))
    raw = bytearray((out2 / checkpoint.NAME).read_bytes())
    i = raw.index(b'\\"next_id\\":') + 12
    raw[i] = ord("7") if raw[i] != ord("7") else ord("8")
    (out2 / checkpoint.NAME).write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch.*using the previous checkpoint"):
        app.resume(str(out2), generations=GENERATIONS, progress=False)
    assert_same(out2, reference)
    # both checkpoints unreadable: a one-line error, nothing written
    (out2 / checkpoint.PREVIOUS).write_text("{")
    (out2 / checkpoint.NAME).write_text("")
    res = cli("resume", str(out2))
    assert res.returncode == 2 and res.stderr.count("\n") <= 2 and "Traceback" not in res.stderr
    assert "evo-rules: error:" in res.stderr and "checkpoint" in res.stderr


def test_state_round_trips_exactly(tmp_path, reference):
    """A checkpoint loaded into a fresh search gives back the same state (hall-of-fame ties in
    their order, Pareto front, population, RNG, logbook)."""
    out = tmp_path / "run"
    app.run_search(config(generations=4), out=str(out))
    state = checkpoint.read_latest(str(out))
    search = app.make_search(from_dict(state["config"]), str(out), progress=False, resume=True)
    search.load_state(state)
    again = search.state()
    search.close()
    for key in ("rng", "next_id", "population", "hall_of_fame", "front", "logbook", "generation",
                "lineage_bytes", "lineage_blake2b", "cache_rowid"):
        assert again[key] == state[key], key


def test_resume_refuses_another_config_or_other_task_data(tmp_path):
    out = tmp_path / "run"
    app.run_search(config(generations=0), out=str(out))
    state = checkpoint.read_latest(str(out))

    def attempt(cfg, st=state):
        search = app.make_search(from_dict(cfg), str(out), progress=False, resume=True)
        try:
            search.load_state(st)
        finally:
            search.close()

    with pytest.raises(RunFolderError, match=r"\[fit\] differs .*max_iter = 8 in the checkpoint, 5 now"):
        attempt(config(generations=0, max_iter=5))
    cfg = config(generations=0)
    cfg["grammar"]["max_size"] = 20
    with pytest.raises(RunFolderError,
                       match=r"\[grammar\] differs .*max_size = 15 in the checkpoint, 20 now"):
        attempt(cfg)
    cfg = config(generations=0)
    cfg["task"]["settings"]["n_train"] = 150
    with pytest.raises(RunFolderError, match=r"\[task\] differs .*n_train"):
        attempt(cfg)
    other = dict(state, task=dict(state["task"], fingerprint="0" * 32))
    with pytest.raises(RunFolderError, match="task data differ from the checkpoint's"):
        attempt(config(generations=0), other)
    # more generations is a resume, not another config
    attempt(config(generations=3))


def test_results_cached_after_the_last_checkpoint_do_not_change_the_logbook(tmp_path, reference):
    """Killed after a generation's results reached the cache but before its checkpoint: the
    redone generation evaluates them again (counted as evaluations, not cache hits)."""
    import shutil

    out = tmp_path / "run"
    app.run_search(config(generations=4), out=str(out))
    snap = tmp_path / "snap"
    snap.mkdir()
    for name in (checkpoint.NAME, checkpoint.PREVIOUS, "lineage.jsonl"):
        shutil.copy(out / name, snap / name)
    app.resume(str(out), generations=5, progress=False)  # generation 5 reaches the cache ...
    for name in (checkpoint.NAME, checkpoint.PREVIOUS, "lineage.jsonl"):
        shutil.copy(snap / name, out / name)  # ... but its checkpoint never happened
    app.resume(str(out), generations=GENERATIONS, progress=False)
    assert_same(out, reference)
