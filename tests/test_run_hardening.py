"""Run lifecycle under a hostile but fair user: signals, two runs on one folder, damaged files,
budgets, library use from a script.

SIGINT and SIGTERM (one, or two in a row) on a process-backend run end it with 130/143, one line,
no worker left alive (pids collected from /proc before the signal) and a folder that resumes to
the uninterrupted result; so does a run started with SIGINT ignored (`nohup ... &`). A second
run on a locked folder is refused naming the holder; a truncated, deleted or changed lineage
file is refused on resume, never padded; a damaged cache is one line and `--rebuild-cache`
recovers; two processes write one cache at once; budgets stop a run that resumes to the
uninterrupted result. Helpers and the reference run come from test_resume.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from test_resume import GENERATIONS, ROOT, assert_same, cli, comparable, config, reference, write_toml  # noqa: F401

from evo_rules import app, checkpoint
from evo_rules.cache import FitnessCache
from evo_rules.runlock import RunLock

# ------------------------------------------------------------------ processes


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2:].split()
            table[int(d)] = (int(rest[1]), rest[0])
    return table


def descendants(pid: int) -> set[int]:
    table, found, todo = _proc_table(), set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids, wait: float = 5.0) -> list[int]:
    """Those of `pids` still running (zombies are dead) after up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        table = _proc_table()
        left = [p for p in pids if p in table and table[p][1] != "Z"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def start_run(cfg_path, out, ignore_sigint=False, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT)

    def nohup():  # what a background shell does to its jobs
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "evo_rules.cli", "run", cfg_path, "--out", str(out),
                             "--quiet", *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=nohup if ignore_sigint else None)


def wait_for(path, proc, limit=90.0) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def resume_serial(out, generations=GENERATIONS):
    """Resume (on the serial backend: an allowed config.json edit) to the reference's end."""
    path = out / "config.json"
    cfg = json.loads(path.read_text())
    cfg["evaluation"]["backend"] = "serial"
    path.write_text(json.dumps(cfg))
    return cli("resume", str(out), "--generations", str(generations), "--quiet")


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize("signals, ignore_sigint, seed", [
    (["SIGTERM"], False, 1),
    (["SIGINT"], True, 2),  # started with SIGINT ignored, as from `nohup ... &`
    (["SIGINT", "SIGINT"], False, 3),
    (["SIGTERM", "SIGTERM"], False, 4),
])
def test_signals_stop_cleanly_kill_workers_and_resume(tmp_path, reference, signals, ignore_sigint, seed):
    cfg = write_toml(config("process", workers=2), tmp_path / "c.toml")
    out = tmp_path / "run"
    proc = start_run(cfg, out, ignore_sigint)
    try:
        wait_for(out / checkpoint.PREVIOUS, proc)  # generation 0 done: the workers exist
        time.sleep(random.Random(seed).uniform(0.0, 0.4))
        workers = descendants(proc.pid)
        assert workers, "no worker processes found"
        for name in signals:
            proc.send_signal(getattr(signal, name))
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + getattr(signal, signals[0]), stderr
    lines = stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("evo-rules: run "), stderr  # one line of its own
    assert "interrupted after generation" in lines[1] or "aborted by a second signal" in lines[1]
    assert "resume" in lines[1] and "Traceback" not in stderr
    assert alive(workers) == []
    res = resume_serial(out)
    assert res.returncode == 0, res.stderr
    assert_same(out, reference)


def test_workers_die_with_a_killed_manager(tmp_path):
    cfg = write_toml(config("process", workers=2), tmp_path / "c.toml")
    out = tmp_path / "run"
    proc = start_run(cfg, out)
    try:
        wait_for(out / checkpoint.PREVIOUS, proc)
        workers = descendants(proc.pid)
        assert workers
        os.kill(proc.pid, signal.SIGKILL)  # the manager only, not its process group
        proc.wait()
        assert alive(workers) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------ the folder


def test_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    app.run_search(config(generations=1), out=str(out), progress=False)
    lock = RunLock(str(out))
    try:
        for args in (["resume", str(out), "--generations", "2"],
                     ["run", write_toml(config(generations=1), tmp_path / "c.toml"), "--out", str(out)]):
            res = cli(*args)
            assert res.returncode == 2 and "Traceback" not in res.stderr
            err = [line for line in res.stderr.splitlines() if "error" in line]
            assert len(err) == 1 and f"in use by another evo-rules run (pid {os.getpid()})" in err[0]
    finally:
        lock.release()
    # a holder killed with SIGKILL leaves no stale lock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from evo_rules.runlock import RunLock; "
                               f"RunLock({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    RunLock(str(out)).release()


def test_two_runs_into_one_folder_at_once(tmp_path):
    cfg = write_toml(config(generations=3), tmp_path / "c.toml")
    out = tmp_path / "run"
    procs = [start_run(cfg, out) for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    loser = errs[[p.returncode for p in procs].index(2)]
    assert "in use by another evo-rules run" in loser or "already holds a run" in loser
    ids = [json.loads(line)["id"] for line in (out / "lineage.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))  # every record once


def _finished_run(tmp_path, generations=3):
    out = tmp_path / "run"
    app.run_search(config(generations=generations), out=str(out), progress=False)
    os.remove(out / "report.json")
    return out


@pytest.mark.parametrize("damage, message", [
    ("truncate", "shorter than"),
    ("delete", "missing"),
    ("flip", "checksum mismatch"),
])
def test_resume_refuses_a_damaged_lineage(tmp_path, damage, message):
    out = _finished_run(tmp_path)
    path = out / "lineage.jsonl"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(data.replace(b'"op":"random"', b'"op":"rAndom"', 1))
    before = path.read_bytes() if path.exists() else None
    res = cli("resume", str(out), "--generations", "5")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and message in res.stderr and "lineage.jsonl" in res.stderr
    assert (path.read_bytes() if path.exists() else None) == before  # never padded, never restarted


def test_a_checkpoint_from_before_lineage_checksums_still_resumes(tmp_path, reference):
    out = _finished_run(tmp_path)
    state = checkpoint.read_latest(str(out))
    del state["lineage_blake2b"]
    checkpoint.write(str(out), state)
    res = cli("resume", str(out), "--generations", str(GENERATIONS), "--quiet")
    assert res.returncode == 0, res.stderr
    assert_same(out, reference)


def test_resume_refuses_an_edited_config_json_but_takes_more_generations(tmp_path):
    out = _finished_run(tmp_path, generations=1)
    path = out / "config.json"
    cfg = json.loads(path.read_text())
    cfg["fit"]["max_iter"] = 3
    path.write_text(json.dumps(cfg))
    res = cli("resume", str(out))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "[fit].max_iter = 8 in the checkpoint, 3 in config.json" in res.stderr
    cfg["fit"]["max_iter"] = 8
    cfg["run"]["generations"] = 2
    path.write_text(json.dumps(cfg))
    res = cli("resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert checkpoint.read_latest(str(out))["generation"] == 2


# ------------------------------------------------------------------ the cache


def test_a_damaged_cache_is_one_line_and_rebuilt_on_request(tmp_path, reference):
    out = _finished_run(tmp_path)
    db = out / "cache.sqlite"
    with open(db, "r+b") as fh:  # one page of garbage
        fh.seek(4096 * 3)
        fh.write(b"\xa5" * 4096)
    res = cli("resume", str(out), "--generations", str(GENERATIONS), "--quiet")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "is damaged" in res.stderr and "--rebuild-cache" in res.stderr
    res = cli("resume", str(out), "--generations", str(GENERATIONS), "--quiet", "--rebuild-cache")
    assert res.returncode == 0, res.stderr
    assert "moved to" in res.stderr
    assert [n for n in os.listdir(out) if n.startswith("cache.sqlite.damaged-")]
    got = comparable(out)  # the same rules and results; only the cache-hit counts differ
    assert got["lineage"] == reference["lineage"]
    assert got["state"]["hall_of_fame"] == reference["state"]["hall_of_fame"]


WRITER = """
import sys, time
from evo_rules.cache import FitnessCache
while time.time() < float(sys.argv[3]):  # all open the fresh file at the same moment
    pass
cache = FitnessCache(sys.argv[1], "task", {"max_iter": 1})
for b in range(100):
    cache.put_many([{"key": f"{sys.argv[2]}-{b}-{i}", "v": i} for i in range(20)])
    cache.get_many([f"{sys.argv[2]}-{b}-0"])
cache.close()
"""


def test_two_processes_write_one_cache_at_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    env = dict(os.environ, PYTHONPATH=ROOT)
    # four writers that open one fresh file at once: switching it to WAL used to fail with
    # "database is locked" in about one process of eight (SQLite calls no busy handler there)
    start = str(time.time() + 4)
    names = ("a", "b", "c", "d")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, name, start], env=env,
                              stderr=subprocess.PIPE, text=True) for name in names]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    cache = FitnessCache(path, "task", {"max_iter": 1})
    assert len(cache) == len(names) * 100 * 20
    assert cache.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()


def test_two_runs_share_one_cache_at_once(tmp_path, reference):
    cfg = config(generations=5)
    cfg["cache"] = {"path": str(tmp_path / "shared.sqlite")}
    path = write_toml(cfg, tmp_path / "c.toml")
    procs = [start_run(path, tmp_path / name) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for name in ("a", "b"):  # the first five generations of the reference run, each record once
        lineage = comparable(tmp_path / name)["lineage"]
        assert lineage and reference["lineage"].startswith(lineage)
        assert max(json.loads(line)["gen"] for line in lineage.splitlines()) == 5


# ------------------------------------------------------------------ budgets


def test_budgets_stop_cleanly_and_resume_to_the_uninterrupted_result(tmp_path, reference):
    cfg = write_toml(config(), tmp_path / "c.toml")
    out = tmp_path / "run"
    res = cli("run", cfg, "--out", str(out), "--quiet", "--max-evaluations", "60")
    assert res.returncode == 0, res.stderr
    assert "stopped by max_evaluations after generation" in res.stderr
    first = checkpoint.read_latest(str(out))["generation"]
    assert 0 <= first < GENERATIONS
    assert sum(r["evals"] for r in checkpoint.read_latest(str(out))["logbook"]) >= 60
    res = cli("resume", str(out), "--quiet", "--max-seconds", "0.001")  # one generation more
    assert res.returncode == 0 and "stopped by max_seconds" in res.stderr, res.stderr
    assert checkpoint.read_latest(str(out))["generation"] == first + 1
    res = cli("resume", str(out), "--quiet", "--max-evaluations", "1000000", "--max-seconds", "1e6")
    assert res.returncode == 0 and "stopped" not in res.stderr, res.stderr
    assert_same(out, reference)


# ------------------------------------------------------------------ library use


SCRIPT = """from evo_rules.app import run_search


def main():
    run_search({config!r}, out={out!r}, progress=False)
    print("done")


{call}
"""


def test_run_search_from_an_unguarded_script_fails_before_any_folder(tmp_path):
    cfg = config("process", workers=2, generations=1)
    script = tmp_path / "s.py"
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT)
    script.write_text(SCRIPT.format(config=cfg, out=str(out), call="main()"))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1 and res.stderr.count("Traceback") == 1  # the script's own error only
    assert 'if __name__ == "__main__":' in res.stderr and f"{script}:9" in res.stderr
    assert not out.exists()
    script.write_text(SCRIPT.format(config=cfg, out=str(out), call='if __name__ == "__main__":\n    main()'))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "done", res.stderr


def test_run_search_overwrite_and_resume(tmp_path, reference):
    out = str(tmp_path / "run")
    app.run_search(config(generations=2), out=out, progress=False)
    with pytest.raises(ValueError, match="already holds a run.*resume=True.*overwrite=True"):
        app.run_search(config(generations=2), out=out, progress=False)
    report = app.run_search(config(), out=out, progress=False, resume=True)
    assert report["generation"] == GENERATIONS
    assert_same(out, reference)
    with pytest.raises(ValueError, match=r"\[fit\] differs"):  # resume checks the config
        app.run_search(config(max_iter=3), out=out, progress=False, resume=True)
    report = app.run_search(config(generations=1), out=out, progress=False, overwrite=True)
    assert report["generation"] == 1
    assert max(json.loads(line)["gen"] for line in open(os.path.join(out, "lineage.jsonl"))) == 1


def test_a_signal_inside_a_kernel_is_a_stop_not_an_invalid_rule():
    """A signal handler's exception raised while numba code runs comes back as a SystemError
    ("returned a result with an exception set"): evaluation must pass the stop on, never record
    the rule as invalid (the resumed run would differ) nor print an internal error."""
    import signal as sig

    import numba
    import numpy as np

    from evo_rules.evaluate import _guarded
    from evo_rules.stopping import Abandoned, interrupt_in

    @numba.njit
    def busy(n):
        out = np.zeros(2)
        for i in range(n):
            out[i % 2] += np.sin(i)
        return out, n

    busy(10)

    def raise_abandoned(signum, frame):
        raise Abandoned()

    old = sig.signal(sig.SIGALRM, raise_abandoned)
    try:
        sig.setitimer(sig.ITIMER_REAL, 0.05)
        with pytest.raises(BaseException) as caught:
            while True:  # until the alarm lands inside the kernel
                busy(50_000_000)
    finally:
        sig.setitimer(sig.ITIMER_REAL, 0)
        sig.signal(sig.SIGALRM, old)
    assert isinstance(interrupt_in(caught.value), Abandoned)

    class Task:  # evaluation raising what the kernel raised
        def batch(self, part):
            raise caught.value

    with pytest.raises(Abandoned):
        _guarded("(mul w x.a)", Task(), {"max_iter": 5})

    class Broken:  # a real error of a rule still marks it invalid
        def batch(self, part):
            raise SystemError("a bug")

    assert _guarded("(mul w x.a)", Broken(), {"max_iter": 5})["valid"] is False



SWALLOWING_CALLBACK = r"""
import ctypes, os, signal, sys
from evo_rules import stopping

stop = stopping.install() if sys.argv[1] == "cli" else stopping.Stop()
if sys.argv[1] == "library":
    routed = stopping.handlers(stop)
    routed.__enter__()

@ctypes.CFUNCTYPE(None)
def callback():  # as llvmlite calls back into Python while numba compiles
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)

callback()
print("aborted:", stop.aborted is not None, flush=True)
try:
    stop.raise_if_aborted()
except KeyboardInterrupt as exc:
    print("raised:", exc.signum, flush=True)
"""


@pytest.mark.parametrize("mode", ["cli", "library"])
def test_a_second_signal_inside_a_c_callback_is_not_lost(tmp_path, mode):
    """ctypes swallows an exception raised in a callback and prints "Exception ignored": CI saw
    a second SIGTERM lost that way inside llvmlite's object-cache callback, and a traceback in
    place of the one line. The abort is remembered and raised at the search's next check."""
    script = tmp_path / "swallow.py"
    script.write_text(SWALLOWING_CALLBACK)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, not an installed copy
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == ["aborted: True", f"raised: {int(signal.SIGTERM)}"]


def test_killed_workers_are_not_respawned(tmp_path):
    """After a second signal killed the workers, the evaluation in flight fails at once (so the
    search reaches its abort) instead of starting a new pool."""
    from functools import partial

    from evo_rules.backends import ProcessBackend

    factory = partial(_slow_factory, 2.0)
    proc = ProcessBackend(factory, "slow", {"max_iter": 5}, workers=2, chunk=1, retries=2)
    try:
        proc.map(["(mul w x.color)"] * 2)  # the workers exist
        killer = threading.Timer(0.5, proc.kill)
        killer.start()
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError, match="killed"):
            proc.map(["(mul w x.color)", "(mul w x.shape)"] * 4)
        assert time.perf_counter() - t0 < 30
        assert proc.pool is None
    finally:
        proc.close()


class _SlowTask:
    """Wraps a task; each score takes `seconds` (time for a kill to land mid-evaluation)."""

    def __init__(self, seconds):
        from evo_rules.fitness.registry import get_task

        self.inner = get_task("and-match", n_train=100, n_valid=50, n_test=50)
        self.seconds = seconds
        for attr in ("name", "loss", "features", "metric_name", "fingerprint"):
            setattr(self, attr, getattr(self.inner, attr))

    def batch(self, part):
        return self.inner.batch(part)

    def score(self, part, scorer):
        time.sleep(self.seconds)
        return self.inner.score(part, scorer)


def _slow_factory(seconds):
    return _SlowTask(seconds)
