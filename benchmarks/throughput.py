"""Throughput of the default and-match search: this tree against the commit before issue 11.

    python3 benchmarks/throughput.py                  # 20 generations x 120 (runs/and-match.toml)
    python3 benchmarks/throughput.py --generations 8  # shorter
    python3 benchmarks/throughput.py --quick          # smoke: 2 generations x 24, 20 rules

Both versions are exported with `git archive` into a temporary folder (removed at the end):
`--new` (default HEAD; "." = this checkout as it is, uncommitted edits included) and `--old`
(default f9b7f9b, the commit before issue 11). Each version runs in its own subprocess with
PYTHONPATH and the working directory set to its tree, on one thread (NUMBA_NUM_THREADS, OMP, MKL,
OpenBLAS = 1). Numba's on-disk cache of a fresh tree is cold: every child compiles and warms the
kernels and losses first, outside any timing.

Per version, printed side by side, with the new / old ratio:
  search       `evo-rules run runs/and-match.toml --backend serial` with the same seed,
               generations and population, --repeats times per version in alternation (new,
               old, new, old, ...); the ratio is the median of the adjacent pairs' ratios
               (load that comes and goes hits a pair alike). Evaluations = the logbook's `evals` (cache misses:
               rules actually fitted and scored), seconds = the logbook's `seconds` (the search's
               generations: variation, evaluation, selection; not the report and rerun gate that
               follow). evals/s and the winner's test answer score (quality: within noise).
  fits         every rule of the new version's hall of fame and Pareto front fitted on the
               task's train rows as the search fits them (listwise, max_iter 20): kernel runs
               per fit, counted, split into forward-only and forward + Jacobian runs, and fits/s
               (the fastest of 5 passes over the rules; quick: 2).
  set-up       new-rule set-up, median ms over benchmarks/common.py's rules (the kernel
               benchmark's: DEAP half-and-half, canonical size 15..25): `parse(text)` (canonical
               form) then `.program` (gradients and the instruction program); per rule the
               fastest of 5 (quick: 2), the new tree's rule cache emptied before each, so every
               rule is new to the process each time.
Load: the machine may be shared; run it alone for figures (ratios of two runs taken minutes apart
are only as good as the load was steady). The versions run one after the other, new first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE_ISSUE_11 = "f9b7f9b"
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
WARM_RULE = "(eml (add (mul w x.a) w) (add 1 (exp (mul w x.b))))"


# ---------------------------------------------------------------- child side (either version)
# Runs inside a version's tree: imports only what both versions have (evo_rules.parse, fit,
# Rule.program, Rule.run via evo_rules.rule.run_program, cli.main, the synthetic task).

def _warm() -> None:
    """Compile / load every numba function a search uses, outside the timings."""
    import numpy as np

    from evo_rules import fit, parse

    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=64), "b": rng.normal(size=64)}
    r = parse(WARM_RULE)
    y = r.evaluate(X, [0.5, 0.1, -0.3])
    fit(r, X, y, loss="squared")
    groups = np.repeat(np.arange(8), 8)
    lab = np.zeros(64)
    lab[::8] = 1.0
    fit(r, X, lab, loss="listwise", groups=groups)
    fit(r, X, lab, loss="logistic")
    # the task's metrics (numba in newer trees) are compiled here too, not inside the search
    task = _and_match_task({"n_train": 20, "n_valid": 20, "n_test": 20})
    b = task.batch("valid")
    task.score("valid", lambda X: np.arange(b.n_rows, dtype=np.float64))


def _and_match_task(settings: dict):
    try:
        from evo_rules.fitness.synthetic import SyntheticTask
    except ImportError:  # before 09a4d8f the tasks were a top-level package
        from fitness.synthetic import SyntheticTask
    return SyntheticTask("and-match", **settings)


class _KernelCount:
    """Counts kernel runs by wrapping evo_rules.rule.run_program (Rule.run calls it)."""

    def __init__(self):
        import evo_rules.rule as rule_mod

        self.mod = rule_mod
        self.inner = rule_mod.run_program
        self.forward = 0
        self.jacobian = 0
        rule_mod.run_program = self

    def __call__(self, code, arg_a, arg_b, consts, X, weights, outs, result, *stop_early):
        if outs.shape[0] > 1:
            self.jacobian += 1
        else:
            self.forward += 1
        return self.inner(code, arg_a, arg_b, consts, X, weights, outs, result, *stop_early)

    def close(self) -> None:
        self.mod.run_program = self.inner


def child_search(args) -> dict:
    _warm()
    from evo_rules.cli import main

    out = args.out
    rc = main(["run", "runs/and-match.toml", "--out", out, "--backend", "serial", "--seed",
               str(args.seed), "--generations", str(args.generations), "--population",
               str(args.population), "--quiet"])
    if rc != 0:
        raise SystemExit(f"search failed with exit code {rc}")
    with open(os.path.join(out, "report.json")) as fh:
        report = json.load(fh)
    rows = report["logbook"]
    seconds = report.get("seconds") or [r.get("seconds") for r in rows]
    evals = sum(int(r["evals"]) for r in rows)
    secs = sum(float(s) for s in seconds)
    win = report.get("winner") or report.get("best") or {}
    texts = [e["text"] for part in ("hall_of_fame", "pareto_front") for e in report.get(part, [])]
    return {"evals": evals, "seconds": secs, "generations": len(rows),
            "cache_hits": sum(int(r.get("cache_hits") or 0) for r in rows),
            "winner": win.get("text"), "winner_test": win.get("test_metrics", {}).get("answer_score"),
            "winner_valid": win.get("metric"), "texts": list(dict.fromkeys(texts))}


def child_micro(args) -> dict:
    """Kernel runs per fit and fits/s on the and-match train rows; new-rule set-up times."""
    import gc

    _warm()
    import evo_rules
    from evo_rules import fit, parse

    spec = json.loads(Path(args.spec).read_text())
    out: dict = {}
    task = _and_match_task(spec["task"])
    b = task.batch("train")
    rules = [parse(t) for t in spec["fit_texts"]]
    for r in rules:  # set-up outside the timing
        r.program  # noqa: B018
        r.forward_program  # noqa: B018
    counter = _KernelCount()
    iters = []
    for r in rules:  # kernel runs counted on one pass
        res = fit(r, b.X, b.y, loss=task.loss, groups=b.groups, max_iter=spec["max_iter"])
        iters.append(res.iterations)
    counter.close()
    n = max(len(rules), 1)
    passes = []
    for _ in range(spec["repeats"]):  # the fastest pass: load that comes and goes hits less
        t0 = time.perf_counter()
        for r in rules:
            fit(r, b.X, b.y, loss=task.loss, groups=b.groups, max_iter=spec["max_iter"])
        passes.append(time.perf_counter() - t0)
    out["fits"] = {"rules": len(rules), "seconds": min(passes), "forward_runs": counter.forward / n,
                   "jacobian_runs": counter.jacobian / n, "iterations": sum(iters) / n}

    import evo_rules.rule as rule_mod

    kept = getattr(rule_mod, "_RULES", None)  # this tree's rule cache, if it has one
    best = [float("inf")] * len(spec["setup_texts"])
    for _ in range(spec["repeats"]):
        gc.collect()
        for i, text in enumerate(spec["setup_texts"]):
            if kept is not None:
                kept.clear()  # every rule new to the process, every time
            t0 = time.perf_counter()
            r = parse(text)
            r.program  # noqa: B018
            best[i] = min(best[i], time.perf_counter() - t0)
    out["setup_ms"] = statistics.median(best) * 1e3 if best else None
    out["version"] = getattr(evo_rules, "__version__", "?")
    return out


# ---------------------------------------------------------------- parent side

def export_tree(rev: str, dest: Path) -> Path:
    """The tree of `rev` ("." = the checkout itself, used in place) as a folder."""
    if rev == ".":
        return REPO
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def child_env(tree: Path) -> dict:
    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = "1"
    env["PYTHONPATH"] = str(tree)
    env.pop("EVO_RULES_VECTOR_MATH", None)  # each version picks its own default vector math
    return env


def run_child(tree: Path, mode: str, extra: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, *extra]
    proc = subprocess.run(cmd, cwd=str(tree), env=child_env(tree), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} child in {tree} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{mode} child in {tree} printed no result:\n{proc.stdout[-2000:]}")


def kernel_bench_rules(n: int) -> list[str]:
    """Canonical texts of benchmarks/common.py's rules (this checkout's generator)."""
    code = ("import json, sys; from benchmarks.common import make_data, make_rules; "
            f"rules, _ = make_rules({n}, make_data(20_000, seed=0), seed=0); "
            "print('RESULT ' + json.dumps([b.rule.text for b in rules]))")
    env = child_env(REPO)
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1][len("RESULT "):])


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=None, help="default 20 (quick 2)")
    ap.add_argument("--population", type=int, default=None, help="default 120 (quick 24)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rules", type=int, default=None, help="set-up rules (default 200; quick 20)")
    ap.add_argument("--new", default="HEAD", help='revision to measure (default HEAD; "." = the '
                                                  "checkout with its uncommitted edits)")
    ap.add_argument("--old", default=BEFORE_ISSUE_11, help="baseline revision (default f9b7f9b)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="searches per version, run new, old, new, old, ... (default 3; quick 1)")
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    ap.add_argument("--child", choices=["search", "micro"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generations is None:
        args.generations = 2 if args.quick else 20
    if args.population is None:
        args.population = 24 if args.quick else 120
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.child:
        sys.path[0] = os.getcwd()  # the version's tree, not this script's folder
        res = child_search(args) if args.child == "search" else child_micro(args)
        print("RESULT " + json.dumps(res))
        return 0

    n_rules = args.rules or (20 if args.quick else 200)
    tmp = Path(tempfile.mkdtemp(prefix="evo-throughput-"))
    try:
        trees = {"new": export_tree(args.new, tmp / "new"), "old": export_tree(args.old, tmp / "old")}
        print(f"new = {args.new}, old = {args.old} ({tmp}); and-match, serial, one thread, seed "
              f"{args.seed}, {args.generations} generations x {args.population}")
        search: dict[str, dict] = {}
        runs: dict[str, list[dict]] = {"new": [], "old": []}
        for rep in range(args.repeats):  # new, old, new, old, ...: adjacent pairs share the load
            for name in ("new", "old"):
                t0 = time.perf_counter()
                res = run_child(trees[name], "search", [
                    "--out", str(tmp / f"run-{name}-{rep}"), "--seed", str(args.seed),
                    "--generations", str(args.generations), "--population", str(args.population)])
                runs[name].append(res)
                search.setdefault(name, res)
                print(f"  {name}: search child {rep + 1} done in {time.perf_counter() - t0:.0f}s "
                      f"({res['evals'] / res['seconds']:.1f} evaluations/s)")
        texts = search["new"]["texts"][: (10 if args.quick else 60)]
        spec = {"task": {"n_train": 1500, "n_valid": 1000, "n_test": 3000}, "max_iter": 20,
                "fit_texts": texts, "setup_texts": kernel_bench_rules(n_rules),
                "repeats": 2 if args.quick else 5}
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(spec))
        micro = {name: run_child(trees[name], "micro", ["--spec", str(spec_path)])
                 for name in ("new", "old")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n, o = search["new"], search["old"]
    rate = {k: [r["evals"] / r["seconds"] if r["seconds"] else 0.0 for r in v] for k, v in runs.items()}
    eps = {k: statistics.median(v) for k, v in rate.items()}
    pair = [a / b for a, b in zip(rate["new"], rate["old"]) if b]
    print()
    print(f"{'':<34}{'new':>12}{'old':>12}{'new/old':>10}")
    print(f"{'search evaluations (cache misses)':<34}{n['evals']:>12}{o['evals']:>12}")
    print(f"{'search seconds (logbook, median)':<34}"
          f"{statistics.median(r['seconds'] for r in runs['new']):>12.1f}"
          f"{statistics.median(r['seconds'] for r in runs['old']):>12.1f}")
    print(f"{'evaluations / s (median)':<34}{eps['new']:>12.1f}{eps['old']:>12.1f}"
          f"{statistics.median(pair) if pair else float('nan'):>9.2f}x"
          f"   (median of {len(pair)} adjacent pairs: {', '.join(f'{p:.2f}' for p in pair)})")
    print(f"{'winner test answer score':<34}{n['winner_test'] or float('nan'):>12.4f}"
          f"{o['winner_test'] or float('nan'):>12.4f}")
    fn, fo = micro["new"]["fits"], micro["old"]["fits"]
    print(f"fits: {fn['rules']} rules of the new run's hall of fame / front, and-match train rows")
    for label, key in (("  kernel runs / fit: forward", "forward_runs"),
                       ("  kernel runs / fit: fwd+Jacobian", "jacobian_runs"),
                       ("  LM iterations / fit", "iterations")):
        print(f"{label:<34}{fn[key]:>12.2f}{fo[key]:>12.2f}")
    fps = {k: micro[k]["fits"]["rules"] / micro[k]["fits"]["seconds"] for k in micro}
    print(f"{'  fits / s':<34}{fps['new']:>12.1f}{fps['old']:>12.1f}{_ratio(fps['new'], fps['old']):>10}")
    sn, so = micro["new"]["setup_ms"], micro["old"]["setup_ms"]
    print(f"{'new-rule set-up, median ms':<34}{sn:>12.3f}{so:>12.3f}{_ratio(so, sn):>10}"
          f"   ({n_rules} kernel-benchmark rules; target <= 0.3 ms; ratio old/new)")
    print(f"winners: new {n['winner']}\n         old {o['winner']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
