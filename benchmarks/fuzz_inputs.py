"""Fuzz the inputs of `evo-rules run`: N fuzzed configs (each with a fuzzed CSV for the
regression task) through what `run` does before its search starts (load the config, check and
build the task, check features and seed rules, make the grammar and the seeds: the generator
and the check are `tests/input_fuzz.py`), each answered within a per-input timeout.

Usage: python benchmarks/fuzz_inputs.py [--n 1000] [--seed 0] [--timeout 1.0] [--cli 10]

Each input runs in a worker process; an input not answered within the timeout counts as a
hang (the worker is killed and replaced). Prints counts: accepted, rejected with a one-line
message naming the config file, rejected with another message, tracebacks, hangs (the last
three must be 0), and the slowest answers. `--cli K` also runs K of the inputs through the real
command line (`evo-rules run --generations 0`): exit code, one stderr line, no traceback, no run
folder left by a refused input. The task a worker built is kept between inputs with the same
settings, as in one `run` (a fresh `run` builds it once: about 0.02 s for and-match, 0.2 s
for bAbI).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import input_fuzz as F  # noqa: E402


def _worker(conn) -> None:
    F.outcome(os.devnull)  # an empty config: imports and builds the default task before the clock runs
    conn.send("ready")
    while True:
        path = conn.recv()
        if path is None:
            return
        try:
            kind, msg = F.outcome(path)
        except Exception:  # noqa: BLE001 - what this script counts
            kind, msg = "traceback", traceback.format_exc()
        conn.send((kind, msg))


class Worker:
    def __init__(self):
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context("spawn").Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def ask(self, path: str, timeout: float):
        self.conn.send(path)
        if self.conn.poll(timeout):
            return self.conn.recv()
        return None

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()  # this worker only, by its own handle
        self.proc.join(5)


def make_inputs(folder: str, n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        csv_path, csv_damage, header = F.write_csv(rng, folder, f"data{i}.csv")
        doc, damages = F.config_document(rng, csv_path, header)
        yield F.write(folder, f"run{i}.toml", doc), damages, csv_damage


def fuzz(n: int, seed: int, timeout: float):
    counts = collections.Counter()
    times, examples, slowest = [], {}, []
    with tempfile.TemporaryDirectory() as folder:
        worker = Worker()
        try:
            for path, damages, csv_damage in make_inputs(folder, n, seed):
                t0 = time.perf_counter()
                answer = worker.ask(path, timeout)
                dt = time.perf_counter() - t0
                if answer is None:
                    kind, msg = "hang", f"no answer within {timeout} s"
                    worker.stop()
                    worker = Worker()
                else:
                    kind, msg = answer
                    times.append(dt)
                    if kind == "rejected" and not F.good_message(msg, path):
                        kind = "rejected_bad_message"
                counts[kind] += 1
                slowest = sorted(slowest + [(dt, damages, csv_damage)], reverse=True)[:3]
                if kind not in ("accepted", "rejected"):
                    examples.setdefault(kind, (path, damages, csv_damage, msg))
        finally:
            worker.conn.send(None)
            worker.stop()
    return counts, times, examples, slowest


def cli_sample(k: int, seed: int) -> collections.Counter:
    """K inputs through `evo-rules run`: refusals one stderr line, no traceback, no folder."""
    counts = collections.Counter()
    with tempfile.TemporaryDirectory() as folder:
        for i, (path, _, _) in enumerate(make_inputs(folder, k, seed + 1)):
            out = os.path.join(folder, f"out{i}")
            r = subprocess.run([sys.executable, "-m", "evo_rules.cli", "run", path, "--out", out,
                                "--quiet", "--generations", "0", "--backend", "serial"],
                               capture_output=True, text=True, timeout=300, cwd=folder)
            lines = r.stderr.strip().splitlines()
            if "Traceback" in r.stderr + r.stdout:
                counts["traceback"] += 1
            elif r.returncode == 0:
                counts["ran"] += 1
            elif r.returncode == 2 and len(lines) == 1 and not os.path.exists(out):
                counts["refused_one_line_no_folder"] += 1
            else:
                counts[f"other (exit {r.returncode}, {len(lines)} lines)"] += 1
                print(f"  cli: {path}: {r.stderr[-300:]}")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--cli", type=int, default=0, help="also run this many inputs through the CLI")
    args = ap.parse_args()
    t0 = time.perf_counter()
    counts, times, examples, slowest = fuzz(args.n, args.seed, args.timeout)
    print(f"fuzzed configs/data files: {args.n} (seed {args.seed}, timeout {args.timeout} s per input)")
    for kind in ("accepted", "rejected", "rejected_bad_message", "traceback", "hang"):
        print(f"  {kind:22s} {counts[kind]}")
    if times:
        print(f"  answer time: median {statistics.median(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms")
    for dt, damages, csv_damage in slowest:
        print(f"  slow: {dt * 1000:.0f} ms: {damages or ['valid']} (csv: {csv_damage})")
    for kind, (path, damages, csv_damage, msg) in examples.items():
        print(f"  first {kind}: {damages} (csv: {csv_damage}):\n{msg}")
    if args.cli:
        print(f"through the command line ({args.cli} inputs): {dict(cli_sample(args.cli, args.seed))}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    bad = counts["rejected_bad_message"] + counts["traceback"] + counts["hang"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
