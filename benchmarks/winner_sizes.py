"""Winner sizes over several seeds: this tree against the commit before issue 9's changes.

    python3 benchmarks/winner_sizes.py                       # seeds 1,2,3; about 45 minutes alone
    python3 benchmarks/winner_sizes.py --seeds 4,5 --out-dir DIR
    python3 benchmarks/winner_sizes.py --out-dir DIR --reuse # print the table from finished runs

One seed's median winner size is a lottery: a search that meets slightly different fitness values
takes another path (the README's seed-1 rows moved from 15 to 16 with the fitter's last bits).
This script runs the seven rows the issue measures (the six synthetic configs and the regression
example, `runs/NAME.toml`) with `evo-rules run CONFIG --seed N` on two trees, each exported with
`git archive` (`--new`, default HEAD, "." = this checkout as it is; `--old`, default a5819b2, the
commit before issue 9's canonical-form, pruning and winner-choice changes), and prints per row the
winner sizes and test metrics per seed, then the median size per seed and over every run, and the
test metric's mean paired difference (new - old, same row and seed) with its standard error.
Run folders: DIR/{new,old}-sSEED-ROW. With `--reuse`, a folder that holds a report.json is read,
not rerun (whatever commit wrote it). Searches, not tests: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.throughput import export_tree  # noqa: E402  (git archive of a revision)

BEFORE_ISSUE_9 = "a5819b2"
ROWS = ("and-match", "and-match-distractor", "and-match-recent", "and-match-stale",
        "and-match-fading", "and-match-negated", "regression")


def run_row(tree: Path, row: str, seed: int, folder: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-m", "evo_rules.cli", "run", f"runs/{row}.toml",
                           "--out", str(folder), "--seed", str(seed), "--quiet"],
                          cwd=str(tree), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{row} seed {seed} in {tree} failed: {proc.stderr.strip()[-2000:]}")


def winner(folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text())
    w = report.get("winner") or {}
    metric = report["task"]["metric"]
    return {"size": w.get("size"), "test": (w.get("test_metrics") or {}).get(metric),
            "text": w.get("text")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated run seeds (default 1,2,3)")
    ap.add_argument("--new", default="HEAD", help='revision (default HEAD; "." = this checkout)')
    ap.add_argument("--old", default=BEFORE_ISSUE_9, help=f"baseline revision (default {BEFORE_ISSUE_9})")
    ap.add_argument("--out-dir", help="folder for the run folders (default: a new temp folder)")
    ap.add_argument("--reuse", action="store_true", help="read finished run folders in --out-dir")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds: comma-separated integers, not {args.seeds!r}")
    if not seeds:
        ap.error("--seeds: at least one seed")
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="evo-winner-sizes-"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="evo-winner-trees-"))
    results: dict[tuple[str, int, str], dict] = {}
    try:
        trees: dict[str, Path] = {}
        for name, rev in (("new", args.new), ("old", args.old)):
            for seed in seeds:
                for row in ROWS:
                    folder = out / f"{name}-s{seed}-{row}"
                    if not (args.reuse and (folder / "report.json").is_file()):
                        if name not in trees:
                            trees[name] = export_tree(rev, tmp / name)
                        if folder.exists():
                            shutil.rmtree(folder)
                        t0 = time.perf_counter()
                        run_row(trees[name], row, seed, folder)
                        print(f"winner_sizes.py: {name} seed {seed} {row} "
                              f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
                    results[name, seed, row] = winner(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"new = {args.new}, old = {args.old}; seeds {', '.join(map(str, seeds))}; run folders in {out}")
    print()
    print("| row | old sizes | new sizes | old test (mean) | new test (mean) |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        o = [results["old", s, row] for s in seeds]
        n = [results["new", s, row] for s in seeds]
        print(f"| {row} | {', '.join(str(r['size']) for r in o)} | {', '.join(str(r['size']) for r in n)} "
              f"| {_mean_test(o)} | {_mean_test(n)} |")
    print()
    for seed in seeds:
        o = statistics.median(results["old", seed, r]["size"] for r in ROWS)
        n = statistics.median(results["new", seed, r]["size"] for r in ROWS)
        print(f"seed {seed}: median winner size old {o:g}, new {n:g} ({1 - n / o:.0%} smaller)")
    o_all = [results["old", s, r]["size"] for s in seeds for r in ROWS]
    n_all = [results["new", s, r]["size"] for s in seeds for r in ROWS]
    print(f"all {len(n_all)} runs: median old {statistics.median(o_all):g}, new "
          f"{statistics.median(n_all):g} ({1 - statistics.median(n_all) / statistics.median(o_all):.0%} "
          f"smaller); mean old {statistics.mean(o_all):.1f}, new {statistics.mean(n_all):.1f} "
          f"({1 - statistics.mean(n_all) / statistics.mean(o_all):.0%} smaller)")
    diffs = [results["new", s, r]["test"] - results["old", s, r]["test"]
             for s in seeds for r in ROWS if r != "regression"]
    if len(diffs) > 1:
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        print(f"synthetic rows, test answer score new - old (same row and seed): mean {statistics.mean(diffs):+.4f} "
              f"(standard error {se:.4f}; one run's own test SE is about 0.0074 at 3,000 episodes), "
              f"range {min(diffs):+.4f} .. {max(diffs):+.4f}")
    reg = [results["new", s, "regression"]["test"] - results["old", s, "regression"]["test"] for s in seeds]
    print(f"regression, test R^2 new - old: {', '.join(f'{d:+.4f}' for d in reg)}")
    return 0


def _mean_test(runs: list[dict]) -> str:
    vals = [r["test"] for r in runs if r["test"] is not None]
    return f"{statistics.mean(vals):.4f}" if vals else "-"


if __name__ == "__main__":
    raise SystemExit(main())
