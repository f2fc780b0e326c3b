"""Rerun every row of README.md's "## Results" section and print the tables in README form.

    python3 benchmarks/results.py                      # every row (about 20 minutes on 2 idle cores)
    python3 benchmarks/results.py --only and-match,babi-2 --check
    python3 benchmarks/results.py --stage3             # also the Stage 3 table (`lm` extra)

Each row is one `evo-rules run runs/NAME.toml --out DIR/NAME` (a subprocess, one after the
other), and every cell is read from that run's DIR/NAME/report.json: nothing is copied from the
README except the bAbI "seed system" column, which is the prior system's published figure and
is not something this code can rerun. The last line names the commit the figures came from
(`git rev-parse --short HEAD`, "+dirty" when tracked files differ from it).

`--check` compares the fresh cells with the README's current ones (time cells and the seed
system column excepted) and prints every difference; the exit code is 1 when any differs.
`--reuse` builds the tables from finished run folders already in --out-dir (a report.json)
instead of rerunning them, e.g. after a rerun was interrupted part way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

README = os.path.join(ROOT, "README.md")
RUNS = os.path.join(ROOT, "runs")
WALL = "results-wall.json"  # the run's wall time and commit, written beside its report

SUITE_HEADER = ("task (config)", "searched", "linear", "oracle", "best reference", "gap closed",
                "size", "pruned: size / test", "time")
BABI_HEADER = ("task", "searched recall / exact", "linear recall / exact", "reference (chain-sum)",
               "seed system", "size", "time")
FEATURES_HEADER = ("task", "feature set", "linear recall / exact", "searched recall / exact", "rerun gate",
                   "size")  # the bAbI "Two feature sets" table (rows keyed by task and feature set)
STAGE3_HEADER = ("selection", "K = 2 loss", "vs recent-only", "gap", "K = 3 loss", "vs recent-only",
                 "recall tokens (K = 2)", "target overlap (K = 2)")
STAGE3_KEYS = ("selection", "K = 2 loss", "vs recent-only (K = 2)", "gap", "K = 3 loss",
               "vs recent-only (K = 3)", "recall tokens (K = 2)", "target overlap (K = 2)")  # unique
NOT_RERUN = {"time", "seed system"}
NO_WINNER = "none passed the gate"  # never compared by --check
STAGE3_CONFIG = "tinystories-memory"
# stage 3 selections in README wording (the code's names are short); {n}: the linear rule's features
STAGE3_LABELS = {
    "full memory": "full memory",
    "linear rule": "linear rule (all {n} features, fitted by the inner loop)",
    "searched rule (winner)": "searched rule (winner, passed the gate)",
    "searched rule, pruned": "searched rule, pruned (terms its fit does not need dropped)",
    "oracle (cross-fitted)": "oracle, cross-fitted (peeks at half the target)",
    "recent-only": "recent-only (last K chunks)",
    "random": "random",
    "StreamingLLM (first + recent)": "StreamingLLM (first chunk + recent)",
    "H2O (heavy hitters)": "H2O (most accumulated attention)",
    "lexical overlap": "lexical overlap with the recent chunk",
}


# ------------------------------------------------------------------ which rows


def suite_names(runs: str = RUNS) -> list[str]:
    """The and-match configs in the task registry's order (base task first)."""
    from evo_rules.fitness.synthetic import variant_names

    return [v for v in variant_names() if os.path.exists(os.path.join(runs, f"{v}.toml"))]


def babi_names(runs: str = RUNS) -> list[str]:
    names = [f"babi-{t}{s}" for s in ("", "-generic") for t in (2, 3)]
    return [n for n in names if os.path.exists(os.path.join(runs, f"{n}.toml"))]


def all_names(runs: str = RUNS) -> list[str]:
    extra = ["regression"] if os.path.exists(os.path.join(runs, "regression.toml")) else []
    return suite_names(runs) + babi_names(runs) + extra


# ------------------------------------------------------------------ running


def run_config(config: str, folder: str, extra: tuple = ()) -> tuple[dict, float]:
    """`evo-rules run CONFIG --out FOLDER` in a subprocess; (its report, wall seconds)."""
    cmd = [sys.executable, "-m", "evo_rules.cli", "run", config, "--out", folder, "--quiet", *extra]
    commit = commit_line()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{config}: evo-rules run exited {proc.returncode}: {tail}")
    with open(os.path.join(folder, WALL), "w", encoding="utf-8") as fh:
        json.dump({"seconds": seconds, "commit": commit}, fh)
    return read_run(folder)[0], seconds


def read_run(folder: str) -> tuple[dict, float]:
    """A finished run folder: (report, wall seconds; the search's own seconds if not recorded)."""
    from evo_rules.report import read_report

    report = read_report(folder)
    try:
        with open(os.path.join(folder, WALL), encoding="utf-8") as fh:
            seconds = float(json.load(fh)["seconds"])
    except (OSError, ValueError, KeyError):
        seconds = sum(s or 0.0 for s in report.get("seconds", []))
    return report, seconds


def run_commit(folder: str) -> str:
    """The commit a run folder's figures came from (as recorded by run_config)."""
    try:
        with open(os.path.join(folder, WALL), encoding="utf-8") as fh:
            return str(json.load(fh)["commit"])
    except (OSError, ValueError, KeyError):
        return "commit unknown (not run by this script)"


# ------------------------------------------------------------------ cells


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _metric(entry: dict | None, name: str) -> float:
    return float((entry or {}).get("test_metrics", {}).get(name, float("nan")))


def _label(name: str, report: dict, default_note: str = "") -> str:
    run = report["config"]["run"]
    budget = f"{run['population']} x {run['generations']}"
    return f"{name} (`runs/{name}.toml`{default_note}: {budget})" if default_note else f"{name} ({budget})"


def suite_row(name: str, report: dict, seconds: float) -> dict:
    """One row of the synthetic-suite table (column -> cell) from an and-match run's report."""
    from evo_rules.app import DEFAULT_CONFIG

    m = report["task"]["metric"]
    b = report["baselines"]
    win = report["winner"]
    searched, linear = _metric(win, m), _metric(b.get("linear"), m)
    oracle = _metric(b.get("oracle"), m)
    best_ref = max((_metric(r, m) for r in b.get("reference", [])), default=float("nan"))
    gap = (searched - linear) / (oracle - linear) if oracle > linear else float("nan")
    default = ", the default" if f"{name}.toml" == DEFAULT_CONFIG else ""
    cells = (_label(name, report, default), f"{searched:.4f}" if win else NO_WINNER, f"{linear:.4f}",
             f"{oracle:.4f}", f"{best_ref:.4f}", f"{100 * gap:.1f}%" if win else "-",
             str(win["size"]) if win else "-", _pruned_cell(win, m), clock(seconds))
    return dict(zip(SUITE_HEADER, cells))


def _pruned_cell(win: dict | None, metric: str) -> str:
    """The winner pruned (evo_rules.prune): its size and test metric, "same" when nothing went."""
    if not win:
        return "-"
    p = win.get("pruned")
    return "same" if not p else f"{p['size']} / {_metric(p, metric):.4f}"


def _pair(entry: dict | None) -> str:
    return f"{_metric(entry, 'support_recall'):.3f} / {_metric(entry, 'exact'):.3f}"


def _chain_sum_text() -> str:
    from evo_rules import parse
    from evo_rules.fitness.babi import reference_rules

    return parse(reference_rules()["chain-sum"]).text


def babi_row(name: str, report: dict, seconds: float, seed_system: str = "") -> dict:
    """One row of the bAbI table. `seed_system`: the prior system's figure (not rerun here)."""
    b = report["baselines"]
    chain = [r for r in b.get("reference", []) if r["text"] == _chain_sum_text()]
    win = report["winner"]
    cells = (f"{name} (`runs/{name}.toml`)", f"**{_pair(win)}**" if win else NO_WINNER, _pair(b.get("linear")),
             _pair(chain[0]) if chain else "-", seed_system, str(win["size"]) if win else "-", clock(seconds))
    return dict(zip(BABI_HEADER, cells))


def features_row(name: str, report: dict) -> dict:
    """One row of the bAbI feature-set table: engineered rows as in the main table, generic rows
    with the gate's mean validation metrics (or the best hall-of-fame rule when none passed)."""
    generic = name.endswith("-generic")
    win = report["winner"]
    best = win or (report["hall_of_fame"] or [None])[0]
    if win:
        searched = _pair(win) if generic else f"**{_pair(win)}**"
    else:
        searched = f"{_pair(best)} (best of the hall of fame)" if best else "-"
    gate = [g for g in report.get("rerun_gate", []) if win and g["text"] == win["text"]]
    if not win:
        verdict = "failed"
    elif generic and gate and gate[0].get("linear"):
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        verdict = f"passed ({mean(gate[0]['metrics']):.3f} vs {mean(gate[0]['linear']):.3f} on validation)"
    else:
        verdict = "passed"
    task = f"{report['task']['name']} (`runs/{name}.toml`)" if generic else report["task"]["name"]
    cells = (task, "generic" if generic else "engineered", _pair(report["baselines"].get("linear")),
             searched, verdict, str(best["size"]) if best else "")
    return dict(zip(FEATURES_HEADER, cells))


def _winner_text(report: dict) -> str:
    return report["winner"]["text"] if report.get("winner") else f"({NO_WINNER})"


def regression_line(report: dict, seconds: float) -> str:
    m = report["task"]["metric"]
    w = report["winner"]
    p = w.get("pruned")
    pruned = "" if not p else f"; pruned: size {p['size']}, R^2 {_metric(p, m):.4f}, `{p['text']}`"
    return (f"searched R^2 {_metric(w, m):.4f} on test (size {w['size']}, `{w['text']}`) against the "
            f"linear rule's {_metric(report['baselines'].get('linear'), m):.4f}; {round(seconds)} s{pruned}")


REGRESSION_RE = re.compile(r"searched R\^2 ([-\d.]+) on test \(size (\d+),\s*`([^`]+)`\)\s+against\s+the\s+"
                           r"linear rule's ([-\d.]+)")


def stage3_rows(report: dict) -> list[dict]:
    """The Stage 3 table (column -> cell, README order: by K = 2 loss) from a
    tinystories-memory run's report["final"]; finalists other than the winner are left out."""
    from evo_rules import parse

    final = report["final"]
    lin = report["baselines"].get("linear")
    n = len(parse(lin["text"]).features) if lin else 0
    rules = {r["name"] for r in final.get("rules", [])}
    by = {(r["K"], r["selection"]): r for r in final["rows"]}

    def diff(r):
        if r["selection"] == "recent-only":
            return "0"
        text = f"{r['diff_vs_recent']:+.4f} +- {r['se']:.4f}"
        # a rule's gain of more than 2 standard errors is set in bold
        bold = r["selection"] in rules and r["se"] > 0 and r["diff_vs_recent"] / r["se"] < -2
        return f"**{text}**" if bold else text

    def gap(r):
        g = r["gap_closed"]
        if r["diff_vs_recent"] > 0:
            return ""  # worse than recent-only: no share of the gap
        return "100%" if g == 1.0 else "0%" if g == 0.0 else f"{100 * g:.1f}%"

    out = []
    for r2 in sorted((r for r in final["rows"] if r["K"] == 2), key=lambda r: r["loss"]):
        sel = r2["selection"]
        if sel not in STAGE3_LABELS:
            continue
        r3 = by[(3, sel)]
        cells = (STAGE3_LABELS[sel].format(n=n), f"{r2['loss']:.4f}", diff(r2), gap(r2),
                 f"{r3['loss']:.4f}", diff(r3), f"{r2['recall_loss']:.3f}", f"{r2['target_overlap']:.3f}")
        out.append(dict(zip(STAGE3_KEYS, cells)))
    return out


def markdown(header: tuple, rows: list[dict]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("|" + "|".join(f" {c} " if c else " " for c in r.values()) + "|")
    return "\n".join(lines)


def commit_line(root: str = ROOT) -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"commit {head}{'+dirty' if dirty else ''}"


# ------------------------------------------------------------------ README side (--check)


def results_section(readme: str) -> str:
    m = re.search(r"^## Results\n(.*?)(?=^## )", readme, re.S | re.M)
    if not m:
        raise ValueError("README.md: no '## Results' section")
    return m.group(1)


def stage3_section(readme: str) -> str:
    m = re.search(r"^## Stage 3[^\n]*\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    if not m:
        raise ValueError("README.md: no '## Stage 3' section")
    return m.group(1)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_tables(text: str) -> list[tuple[tuple, list[list[str]]]]:
    """Every markdown table in `text`: (header cells, rows of cells)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            tables.append((tuple(_cells(block[0])), [_cells(b) for b in block[2:]]))
        block = []
    return tables


def readme_rows(text: str, header: tuple) -> dict[str, dict]:
    """The rows of the table with this header, keyed by their first cell's first word (the
    task name; for stage 3 the whole first cell): key -> column -> cell."""
    stage3, features = header == STAGE3_HEADER, header == FEATURES_HEADER
    for head, rows in markdown_tables(text):
        if head == header:
            return {(r[0] if stage3 else f"{r[0].split()[0]} {r[1]}" if features else r[0].split()[0]):
                    dict(zip(STAGE3_KEYS if stage3 else head, r)) for r in rows}
    return {}


def readme_rules(text: str) -> tuple[list[str], dict[str, str]]:
    """The searched rules printed under the tables: the suite's (in table order) and the bAbI
    ones ("    babi-2: RULE")."""
    suite, named = [], {}
    for line in text.splitlines():
        m = re.match(r"    (babi-[\w-]+): (\(.*\))$", line)
        if m:
            named[m.group(1)] = m.group(2)
        elif line.startswith("    (") and not named:
            suite.append(line.strip())
    return suite, named


def compare(fresh: dict, old: dict | None, where: str, skip=NOT_RERUN) -> list[str]:
    """Differences of the metric cells of one row (bold ignored)."""
    if old is None:
        return [f"{where}: not in README"]
    out = []
    for col, cell in fresh.items():
        if col in skip:
            continue
        a, b = cell.replace("**", ""), old.get(col, "").replace("**", "")
        if a != b:
            out.append(f"{where}, {col}: README {b or '(empty)'}, rerun {a}{_number_diffs(a, b)}")
    return out


def _number_diffs(a: str, b: str) -> str:
    """'by +0.0023' style summary of the numbers that differ between two cells."""
    na, nb = re.findall(r"-?\d+\.?\d*", a), re.findall(r"-?\d+\.?\d*", b)
    if len(na) != len(nb):
        return ""
    d = [float(x) - float(y) for x, y in zip(na, nb) if x != y]
    return " (by " + ", ".join(f"{v:+.4g}" for v in d) + ")" if d else ""


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated row names (config names), e.g. and-match,babi-2")
    ap.add_argument("--out-dir", help="folder for the run folders (default: a new temp folder)")
    ap.add_argument("--stage3", action="store_true", help="also rerun the Stage 3 table (needs the lm extra)")
    ap.add_argument("--check", action="store_true", help="compare with README.md; exit 1 on any metric difference")
    ap.add_argument("--reuse", action="store_true", help="read finished run folders in --out-dir instead of rerunning")
    args = ap.parse_args(argv)

    names = all_names() + ([STAGE3_CONFIG] if args.stage3 else [])
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names and n != STAGE3_CONFIG]
        if unknown:
            print(f"results.py: error: --only {','.join(unknown)}: not a README results row "
                  f"(rows: {', '.join(names)}, {STAGE3_CONFIG})", file=sys.stderr)
            return 2
        names = [n for n in dict.fromkeys(names + [STAGE3_CONFIG]) if n in wanted]
    if args.reuse and not args.out_dir:
        print("results.py: error: --reuse needs --out-dir", file=sys.stderr)
        return 2
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="evo-rules-results-")
    os.makedirs(out_dir, exist_ok=True)
    with open(README, encoding="utf-8") as fh:
        readme = fh.read()
    results = results_section(readme)
    old_suite, old_babi = readme_rows(results, SUITE_HEADER), readme_rows(results, BABI_HEADER)

    reports = {}
    for name in names:
        folder = os.path.join(out_dir, name)
        print(f"results.py: {'reading' if args.reuse else 'running'} {name} ({folder})", file=sys.stderr, flush=True)
        try:
            reports[name] = (read_run(folder) if args.reuse else
                             run_config(os.path.join(RUNS, f"{name}.toml"), folder))
        except (RuntimeError, ValueError) as exc:
            print(f"results.py: error: {exc}", file=sys.stderr)
            return 2

    diffs: list[str] = []
    suite = [suite_row(n, *reports[n]) for n in suite_names() if n in reports]
    if suite:
        print(markdown(SUITE_HEADER, suite) + "\n")
        rules = [_winner_text(reports[n][0]) for n in suite_names() if n in reports]
        print("\n".join(f"    {r}" for r in rules) + "\n")
        old_rules = dict(zip(suite_names(), readme_rules(results)[0]))
        for n, row in zip([n for n in suite_names() if n in reports], suite):
            diffs += compare(row, old_suite.get(n), n)
            if old_rules.get(n) not in (None, _winner_text(reports[n][0])):
                diffs.append(f"{n}, rule: README {old_rules[n]}, rerun {_winner_text(reports[n][0])}")
    babi = [n for n in babi_names() if n in reports]
    engineered = [n for n in babi if not n.endswith("-generic")]  # generic: the feature-set table only
    if engineered:
        rows = []
        for n in engineered:
            seed = old_babi.get(reports[n][0]["task"]["name"], {}).get("seed system", "")
            rows.append(babi_row(n, *reports[n], seed_system=seed))
        print(markdown(BABI_HEADER, rows) + "\n")
        print("\n".join(f"    {n}: {_winner_text(reports[n][0])}" for n in engineered) + "\n")
        old_rules = readme_rules(results)[1]
        for n, row in zip(engineered, rows):
            diffs += compare(row, old_babi.get(n), n)
            if old_rules.get(n) not in (None, _winner_text(reports[n][0])):
                diffs.append(f"{n}, rule: README {old_rules[n]}, rerun {reports[n][0]['winner']['text']}")
    if babi and results.count("| feature set |"):
        old_f = readme_rows(results, FEATURES_HEADER)
        rows = [features_row(n, reports[n][0]) for n in babi]
        print(markdown(FEATURES_HEADER, rows) + "\n")
        for row in rows:
            key = f"{row['task'].split()[0]} {row['feature set']}"
            old = old_f.get(key)
            if old is not None:  # the gate cell: only its verdict counts (the rest is detail)
                old = dict(old, **{"rerun gate": old["rerun gate"].split()[0]})
            diffs += compare(dict(row, **{"rerun gate": row["rerun gate"].split()[0]}), old,
                             f"{key} (feature sets)", skip={"task"})
    if "regression" in reports:
        line = regression_line(*reports["regression"])
        print(f"regression (`runs/regression.toml`): {line}\n")
        old, new = REGRESSION_RE.search(" ".join(results.split())), REGRESSION_RE.search(line)
        if old is None:
            diffs.append("regression: not in README")
        elif old.groups() != new.groups():
            diffs.append(f"regression: README {old.groups()}, rerun {new.groups()}")
    if STAGE3_CONFIG in reports:
        report = reports[STAGE3_CONFIG][0]
        rows = stage3_rows(report)
        print(markdown(STAGE3_HEADER, rows))
        print(f"\nLast chunk only: {report['final']['last_chunk_only']:.4f}.\n")
        s3 = stage3_section(readme)
        old = readme_rows(s3, STAGE3_HEADER)
        for row in rows:
            diffs += compare(row, old.get(row["selection"]), f"stage 3 {row['selection']}", skip=())
        m = re.search(r"Last chunk only: (\d+\.\d+)", s3)
        if not m or m.group(1) != f"{report['final']['last_chunk_only']:.4f}":
            diffs.append(f"stage 3 last chunk only: README {m.group(1) if m else '(none)'}, "
                         f"rerun {report['final']['last_chunk_only']:.4f}")
    commits = sorted({run_commit(os.path.join(out_dir, n)) for n in reports}) or [commit_line()]
    print(f"Figures from {', '.join(commits)} ({time.strftime('%Y-%m-%d')}); run folders in {out_dir}")
    if args.check:
        if diffs:
            print(f"\n--check: {len(diffs)} difference(s) from README.md:")
            for d in diffs:
                print(f"  {d}")
            return 1
        print("\n--check: every metric cell matches README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
