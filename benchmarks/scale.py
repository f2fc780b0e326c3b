"""Scale of a long run: checkpoint size and write time, lineage size and memory per generation.

    PYTHONPATH=. python benchmarks/scale.py                       # population 2,000, 50 generations
    PYTHONPATH=. python benchmarks/scale.py --generations 3 --population 200   # smoke run

The search: the and-match task with small settings (300 training episodes, 200 validation,
200 test; 8 candidates each), fit max_iter 5, NSGA-II, grammar max_size 25, the process
backend (2 workers by default). Per generation it prints the wall time split into evaluation
(cache lookups + backend), selection (NSGA-II over parents + children, ranks and crowding of
the new population) and the rest, the checkpoint's size and write time (serialise + checksum +
fsync + rename), the lineage file's size, the manager's resident memory now and its peak
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), then totals, including the workers' peak
(`RUSAGE_CHILDREN`, known once they have exited).

Nothing here is asserted; the figures are measurements on this machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402,F401  (first: pins thread pools before numpy/numba load)

from evo_rules import app, checkpoint, lineage, search as search_mod  # noqa: E402
from evo_rules.run_folder import RunFolder  # noqa: E402
from evo_rules.config import from_dict  # noqa: E402

MB = 1024 * 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def peak_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def config(population: int, generations: int, backend: str, workers: int, seed: int) -> dict:
    return {
        "run": {"seed": seed, "generations": generations, "population": population},
        "task": {"name": "and-match", "settings": {"n_train": 300, "n_valid": 200, "n_test": 200}},
        "search": {"selection": "nsga2", "seed_reference": False, "hall_of_fame": 10},
        "grammar": {"max_size": 25, "max_depth": 8},
        "fit": {"max_iter": 5},
        "evaluation": {"backend": backend, "workers": workers, "chunk": 16},
    }


class Meter:
    """Wraps the engine's evaluation, selection and checkpoint write with timers."""

    def __init__(self):
        self.t_eval = self.t_select = 0.0
        self.rows = []
        self.gen_start = time.perf_counter()

    def install(self, out: str):
        meter = self
        evaluate = search_mod.Evaluator.evaluate

        def timed_evaluate(self, rules):
            t = time.perf_counter()
            try:
                return evaluate(self, rules)
            finally:
                meter.t_eval += time.perf_counter() - t

        search_mod.Evaluator.evaluate = timed_evaluate
        write = checkpoint.write

        def timed_write(folder, state):
            t = time.perf_counter()
            path = write(folder, state)
            dt = time.perf_counter() - t
            if state["generation"] >= 0:
                meter.report(state, path, dt, out)
            return path

        search_mod.checkpoint.write = timed_write
        self._write = write

    def wrap_select(self, manager):
        meter = self
        select, set_population = manager.select, manager.set_population

        def timed(fn):
            def inner(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    meter.t_select += time.perf_counter() - t
            return inner

        manager.select, manager.set_population = timed(select), timed(set_population)

    def report(self, state, path, dt, out):
        now = time.perf_counter()
        wall = now - self.gen_start
        row = state["logbook"][-1]
        lin = os.path.getsize(os.path.join(out, lineage.NAME))
        r = {"gen": state["generation"], "wall": wall, "eval": self.t_eval, "select": self.t_select,
             "ckpt_bytes": os.path.getsize(path), "ckpt_s": dt, "lineage_bytes": lin,
             "births": state["next_id"], "rss": rss_mb(), "peak": peak_mb(),
             "evals": row["evals"], "hits": row["cache_hits"], "best": row["best"]}
        self.rows.append(r)
        print(f"{r['gen']:4d} {wall:7.1f} {self.t_eval:7.1f} {self.t_select:7.2f} {r['evals']:6d} "
              f"{r['hits']:6d} {r['best']:7.4f} {r['ckpt_bytes'] / MB:8.2f} {dt * 1000:8.1f} "
              f"{lin / MB:8.2f} {r['births']:8d} {r['rss']:7.0f} {r['peak']:7.0f}", flush=True)
        self.t_eval = self.t_select = 0.0
        self.gen_start = time.perf_counter()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--population", type=int, default=2000)
    ap.add_argument("--generations", type=int, default=50)
    ap.add_argument("--backend", default="process", choices=["serial", "process", "dask"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="run folder (default: a temporary folder, removed at the end)")
    args = ap.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="evo-scale-")
    if args.out and os.path.exists(os.path.join(out, checkpoint.NAME)):
        sys.exit(f"{out} already holds a run")
    cfg = from_dict(config(args.population, args.generations, args.backend, args.workers, args.seed))
    print(f"scale: and-match, population {args.population}, {args.generations} generations, "
          f"backend {args.backend} x{args.workers}, fit max_iter 5, 300 training episodes; "
          f"folder {out}", flush=True)
    meter = Meter()
    meter.install(out)
    t0 = time.perf_counter()
    s = app.make_search(cfg, out, progress=False)
    meter.wrap_select(s.manager)
    print(f"set-up (task, cache): {time.perf_counter() - t0:.1f} s; rss {rss_mb():.0f} MB", flush=True)
    print(f"{'gen':>4} {'wall s':>7} {'eval s':>7} {'select s':>7} {'evals':>6} {'hits':>6} "
          f"{'best':>7} {'ckpt MB':>8} {'ckpt ms':>8} {'lin MB':>8} {'births':>8} {'rss MB':>7} "
          f"{'peak MB':>7}", flush=True)
    meter.gen_start = time.perf_counter()
    s.run()
    total = time.perf_counter() - t0
    s.close()
    rows = meter.rows
    if not rows:
        print("no generation finished")
        return 1
    ck = [r["ckpt_s"] for r in rows]
    print()
    print(f"generations run:        {rows[-1]['gen'] + 1} in {total / 60:.1f} min "
          f"({total / len(rows):.1f} s per generation: evaluation "
          f"{sum(r['eval'] for r in rows) / len(rows):.1f} s, selection "
          f"{sum(r['select'] for r in rows) / len(rows):.2f} s)")
    print(f"births:                 {rows[-1]['births']}")
    print(f"checkpoint:             {rows[-1]['ckpt_bytes'] / MB:.2f} MB "
          f"(first {rows[0]['ckpt_bytes'] / MB:.2f} MB, "
          f"max {max(r['ckpt_bytes'] for r in rows) / MB:.2f} MB); write "
          f"median {sorted(ck)[len(ck) // 2] * 1000:.0f} ms, max {max(ck) * 1000:.0f} ms")
    lin = rows[-1]["lineage_bytes"]
    print(f"lineage.jsonl:          {lin / MB:.2f} MB ({lin / rows[-1]['births']:.0f} bytes per birth)")
    cache = RunFolder(out).cache
    if os.path.exists(cache):
        print(f"cache.sqlite:           {os.path.getsize(cache) / MB:.2f} MB")
    print(f"manager memory:         rss {rows[0]['rss']:.0f} MB after generation 0, "
          f"{rows[len(rows) // 2]['rss']:.0f} MB at generation {rows[len(rows) // 2]['gen']}, "
          f"{rows[-1]['rss']:.0f} MB at the end; peak (maxrss) {peak_mb():.0f} MB")
    print(f"worker peak (maxrss):   {peak_mb(resource.RUSAGE_CHILDREN):.0f} MB")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
