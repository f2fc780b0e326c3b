"""Interrupt at random instants, resume, compare with the uninterrupted run.

Small and-match runs (`evo-rules run`, population 16) on the serial and process backends, in
turn, are hit at a random instant of their run time by one of:
  kill      SIGKILL to the manager alone (its workers must die with it),
  SIGINT / SIGTERM, once or twice in a row (50 ms apart).
Each is then resumed (`evo-rules resume`; `run` again when it was hit before its first checkpoint)
and compared with an uninterrupted run: report, final checkpoint and lineage (times, folder name
and backend aside) must be byte-identical. Counted: identical resumes, orphaned worker pids
(every descendant seen while the run was going, checked 5 s after it ended), damaged lineage
files (the checkpoint's recorded length and checksum do not verify), hangs (no exit within 60 s).

    python benchmarks/interrupts.py --kills 20 --signals 10
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from test_resume import comparable, config, write_toml  # noqa: E402
from test_run_hardening import alive, descendants, start_run  # noqa: E402

from evo_rules import checkpoint, lineage  # noqa: E402

SIGNAL_KINDS = (["SIGINT"], ["SIGTERM"], ["SIGINT", "SIGINT"], ["SIGTERM", "SIGTERM"])


def cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "evo_rules.cli", *args, "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)


def lineage_ok(out: str) -> bool:
    try:
        state = checkpoint.read_latest(out)
    except checkpoint.CheckpointError:
        return True  # hit before the first checkpoint: nothing recorded yet
    try:
        lineage.verify(out, state["lineage_bytes"], state.get("lineage_blake2b"))
    except lineage.LineageError:
        return False
    return True


def started(proc, out: str) -> float:
    """Wait for the run's first checkpoint (imports and task built: the work begins); its time."""
    t0 = time.monotonic()
    while not os.path.exists(os.path.join(out, checkpoint.NAME)) and proc.poll() is None:
        time.sleep(0.005)
    return time.monotonic() - t0


def trial(cfg_path: str, out: str, how: list[str], at: float) -> dict:
    """One interrupted run, hit `at` seconds after its first checkpoint: what was left behind,
    and whether its resume matched."""
    proc = start_run(cfg_path, out)
    seen: set[int] = set()
    started(proc, out)
    t0 = time.monotonic()
    while time.monotonic() - t0 < at and proc.poll() is None:
        seen |= descendants(proc.pid)  # workers as they come (a pool may be replaced)
        time.sleep(0.01)
    hit = proc.poll() is None
    if hit:
        seen |= descendants(proc.pid)
        for name in how:
            if name == "kill":
                os.kill(proc.pid, signal.SIGKILL)  # the manager alone
            else:
                proc.send_signal(getattr(signal, name))
            time.sleep(0.05)
    hung = False
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        hung = True
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    orphans = alive(seen)
    damaged = not lineage_ok(out)
    has_checkpoint = any(os.path.exists(os.path.join(out, n)) for n in (checkpoint.NAME, checkpoint.PREVIOUS))
    res = cli("resume", out) if has_checkpoint else cli("run", cfg_path, "--out", out)
    return {"hit": hit, "code": proc.returncode, "hung": hung, "orphans": orphans, "damaged": damaged,
            "resumed": res.returncode == 0, "stderr": stderr.strip().splitlines()[-1:],
            "resume_error": res.stderr.strip().splitlines()[-1:] if res.returncode else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--signals", type=int, default=10)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="evo-interrupts-")
    try:
        cfgs, spans = {}, {}
        for backend in ("serial", "process"):
            cfg = config(backend, workers=2 if backend == "process" else 1, generations=args.generations)
            cfgs[backend] = write_toml(cfg, pathlib.Path(work, f"{backend}.toml"))
            ref = os.path.join(work, f"ref-{backend}")
            proc = start_run(cfgs[backend], ref)
            startup = started(proc, ref)
            t = time.monotonic()
            _, err = proc.communicate()
            spans[backend] = time.monotonic() - t  # from the first checkpoint to the end
            assert proc.returncode == 0, err
            print(f"{backend}: {startup:.1f} s to the first checkpoint, then {spans[backend]:.1f} s")
            if backend == "serial":
                reference = comparable(ref)
            else:
                assert comparable(ref) == reference, "the backends disagree before any interruption"
        print(f"uninterrupted runs byte-identical across backends; {args.generations} generations, "
              "population 16")
        # each signal kind on both backends in turn (the backend alternates with the trial)
        plan = [["kill"]] * args.kills + [SIGNAL_KINDS[(i // 2) % len(SIGNAL_KINDS)] for i in range(args.signals)]
        counts = collections.Counter()
        by_kind = collections.Counter()
        for i, how in enumerate(plan):
            backend = ("serial", "process")[i % 2]
            out = os.path.join(work, f"t{i}")
            at = rng.uniform(0.0, spans[backend])
            r = trial(cfgs[backend], out, how, at)
            same = r["resumed"] and comparable(out) == reference
            kind = "+".join(how)
            counts.update(trials=1, hit=r["hit"], identical=same, orphans=len(r["orphans"]),
                          damaged=r["damaged"], hung=r["hung"])
            by_kind.update({f"{kind} {backend}": 1, f"{kind} {backend} identical": int(same)})
            note = "" if same else f"  resume: {r['resume_error']}"
            print(f"{i:3d} {backend:7s} {kind:15s} at {at:5.2f}s exit {r['code']!s:>4} "
                  f"{'identical' if same else 'DIFFERENT'} orphans {len(r['orphans'])} "
                  f"damaged {int(r['damaged'])} {r['stderr']}{note}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        print()
        print(f"{counts['trials']} interruptions ({counts['hit']} landed while running): "
              f"{counts['identical']}/{counts['trials']} resumed byte-identical, "
              f"{counts['orphans']} orphaned worker pids, {counts['damaged']} damaged lineage files, "
              f"{counts['hung']} hangs")
        for key in sorted(k for k in by_kind if not k.endswith("identical")):
            print(f"  {key:28s} {by_kind[key + ' identical']}/{by_kind[key]} identical")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
