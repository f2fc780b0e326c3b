"""The optimizer track's baselines (issue 13): AdamW, Muon, the seed's three hand designs
(gating, replacement, correction; `fitness.lm.optim.REFERENCE_RULES`) and NorMuon's step, each trained from scratch
on the same fresh seeds, at `--steps` and, with `--long-steps`, a longer horizon. Prints the
table (mean loss on the test stories over the seeds, per seed, seeds won against Muon) and the
seconds per run and per step.

    python3 benchmarks/optimizer_baselines.py                       # 4 seeds, 300 and 1,000 steps
    python3 benchmarks/optimizer_baselines.py --steps 5 --seeds 1 --long-steps 0   # smoke check
    python3 benchmarks/optimizer_baselines.py --sweep-lr --seeds 2 --long-steps 0  # tune the lrs first
    python3 benchmarks/optimizer_baselines.py --sweep-lr --sweep-only --seeds 1 --cache-dir ~/.cache/evo-rules
    python3 benchmarks/optimizer_baselines.py --rule "(mul -0.5 x.u x.t)"   # your rules beside them
    python3 benchmarks/optimizer_baselines.py --muon-only --first-seed 3000 --split valid --rule "(mul -0.01 x.w)"
    python3 benchmarks/optimizer_baselines.py --plot leads.png     # the table, and each seed's lead drawn

The last form probes rules on tuning seeds (3000..) and the valid stories, against Muon alone:
seeds and stories that neither the rerun gate (1000..) nor the report's table (2000.., test
stories) uses, so choosing among rules there does not tune on the table.

`--rule TEXT` (repeatable) trains a rule of your own beside the baselines, on the same seeds and
horizons, in `--mode` (default correct: the parameter moves by -lr (u + rule)); its features are
the track's (x.g, x.m, x.v, x.u, x.w, x.t, x.n) and a weight left in it is 1.0, as for the search.

`--sweep-lr` first tunes, one after the other, Muon's learning rate (0.5, 1 and 2 times the
default), Muon's AdamW part for embeddings and norms (`adam_lr`, 0.5 to 4 times) and the AdamW
baseline's (1/3, 1 and 3 times), each by the mean loss on the rule-valid stories at `--steps`
and `--long-steps` on seeds 3000.., and uses the best of each for the table.

The same code path as the task's final table (`OptimizerTask.final_evaluation`, no searched
rules). Runs go to a fresh temporary cache unless `--cache-dir` names one (then a rerun reuses
them and the times printed are those first measured). Needs the lm extra; a full-size run wants
the machine to itself: 24 runs at 300 steps (about 1-2 minutes each on one thread) and 24 at
1,000 steps, on `--workers` processes (default one per core), so half an hour to an hour on 2
cores; the numbers do not depend on `--workers`, while `--threads 2` may change them slightly.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evo_rules.fitness.optimizer import FINAL_FIRST_SEED, MODES, PARTS, OptimizerTask  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--long-steps", type=int, default=1000, help="0: the short horizon only")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--workers", type=int, default=0, help="processes for the runs (0: one per core)")
    ap.add_argument("--lr", type=float, default=None, help="Muon's learning rate")
    ap.add_argument("--adam-lr", type=float, default=None, help="AdamW's, for Muon's non-matrix parameters")
    ap.add_argument("--adamw-lr", type=float, default=None, help="the AdamW baseline's")
    ap.add_argument("--cache-dir", default="", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--sweep-lr", action="store_true", help="tune Muon's two and AdamW's learning rates first")
    ap.add_argument("--sweep-only", action="store_true", help="with --sweep-lr: print the tuned rates, no table")
    ap.add_argument("--rule", action="append", default=[], metavar="TEXT",
                    help="an update rule to train beside the baselines (repeatable)")
    ap.add_argument("--mode", default="correct", choices=MODES,
                    help="how --rule acts on Muon's step (default correct: u + rule)")
    ap.add_argument("--first-seed", type=int, default=FINAL_FIRST_SEED,
                    help=f"the seeds are this one and the next --seeds - 1 (default {FINAL_FIRST_SEED}: "
                         f"the report's table; {SWEEP_FIRST_SEED}..: tuning seeds)")
    ap.add_argument("--split", default="test", choices=PARTS, help="the stories the losses are on")
    ap.add_argument("--muon-only", action="store_true",
                    help="train Muon and the --rule rules only (no AdamW, no hand designs)")
    ap.add_argument("--plot", metavar="FILE.png", default="",
                    help="also draw each rule's lead over Muon per seed, with its standard error (PNG)")
    args = ap.parse_args(argv)
    if args.first_seed < 0:
        print(f"optimizer_baselines: --first-seed: must be >= 0, got {args.first_seed}", file=sys.stderr)
        return 2
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        # said before an hour of training, not after
        print(f"optimizer_baselines: --plot: no folder {os.path.dirname(os.path.abspath(args.plot))}",
              file=sys.stderr)
        return 2
    try:
        rules = user_rules(args.rule)
    except ValueError as exc:
        print(f"optimizer_baselines: {exc}", file=sys.stderr)
        return 2
    settings = {"steps": args.steps, "long_steps": args.long_steps or args.steps, "final_seeds": args.seeds,
                "threads": args.threads, "final_workers": args.workers, "mode": args.mode}
    settings.update({k: v for k, v in (("lr", args.lr), ("adam_lr", args.adam_lr), ("adamw_lr", args.adamw_lr))
                     if v is not None})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        try:
            task = OptimizerTask(cache_dir=args.cache_dir or tmp, **settings)
        except ValueError as exc:
            print(f"optimizer_baselines: {exc}", file=sys.stderr)
            return 2
        built = time.perf_counter() - started
        if args.sweep_lr:
            task = sweep(task, settings, args.cache_dir or tmp)
            if args.sweep_only:
                s = task.settings
                print(f"tuned: lr {s['lr']:.4g}, adam_lr {s['adam_lr']:.4g}, adamw_lr {s['adamw_lr']:.4g}")
                return 0
        res = task.final_evaluation(rules, progress=True, first_seed=args.first_seed, split=args.split,
                                    baselines=not args.muon_only)
    print(res["text"])
    s = task.settings
    print(f"lr: Muon {s['lr']:.4g}, AdamW part {s['adam_lr']:.4g}, AdamW baseline {s['adamw_lr']:.4g}; "
          f"{s['threads']} torch thread(s) per run; data and tokenizer {built:.1f} s")
    for h in res["horizons"]:
        secs = [x for r in h["rows"] for x in r["run_seconds"]]
        mean = sum(secs) / len(secs)
        print(f"  {h['steps']} steps: {mean:.1f} s/run ({mean / h['steps']:.3f} s/step incl. the held-out "
              f"losses), {len(secs)} runs")
    print(f"total {res['seconds']:.1f} s")
    if args.plot:
        from evo_rules.plots import lead_points, plot_leads

        if lead_points(res):
            print(f"plot: {plot_leads(res, 'optimizer track', args.plot, GATE_MARGIN)}")
        else:
            print("plot: none (no run here kept its per-story losses)")
    return 0


def user_rules(texts) -> list[dict]:
    """The --rule texts as the final table's rule entries (weights 1.0); ValueError naming the
    rule when one is not a rule or reads a feature the track does not have."""
    from evo_rules.fitness.registry import features_before_build
    from evo_rules.rule import parse

    allowed = set(features_before_build("tinystories-optimizer", {}))
    out = []
    for text in texts:
        try:
            rule = parse(text, check_constants=False)
        except ValueError as exc:
            raise ValueError(f"--rule {text!r}: {exc}") from None
        unknown = sorted(set(rule.features) - allowed)
        if unknown:
            raise ValueError(f"--rule {text!r}: no feature {', '.join('x.' + f for f in unknown)} in the "
                             f"optimizer track (it has {', '.join('x.' + f for f in sorted(allowed))})")
        out.append({"name": f"rule {rule.text}", "text": rule.text, "weights": [1.0] * len(rule.params)})
    return out


GATE_MARGIN = 0.001  # the shipped config's [rerun] margin, drawn in --plot's figure
SWEEP_FIRST_SEED = 3000  # tuning seeds: not the search's (1), the gate's (1000+) nor the table's (2000+)


def sweep(task: OptimizerTask, settings: dict, cache_dir: str) -> OptimizerTask:
    """The task with Muon's `lr`, then Muon's `adam_lr` (its AdamW part: embeddings and norms),
    then the AdamW baseline's `adamw_lr` each set to the best of a few multiples of the current
    value (mean loss on the rule-valid stories over seeds of their own and over both horizons,
    `steps` and `long_steps`: tuning never sees the test stories nor the final table's seeds,
    and a rate tuned at 300 steps alone can be too small at 1,000)."""
    s = dict(task.settings)
    seeds = [SWEEP_FIRST_SEED + i for i in range(s["final_seeds"])]
    horizons = sorted({s["steps"], s["long_steps"]})
    for key, base, factors in (("lr", "muon", (0.5, 1.0, 2.0)), ("adam_lr", "muon", (0.5, 1.0, 2.0, 4.0)),
                               ("adamw_lr", "adamw", (1 / 3, 1.0, 3.0))):
        scores = {}
        for f in factors:
            t = OptimizerTask(cache_dir=cache_dir, **{**settings, **{k: s[k] for k in ("lr", "adam_lr", "adamw_lr")},
                                                      key: s[key] * f})
            runs = t._run_all([dict(base=base, seed=k, steps=h) for k in seeds for h in horizons])
            per = {h: sum(r["valid"] for r, (k, hh) in zip(runs, [(k, h) for k in seeds for h in horizons])
                          if hh == h) / len(seeds) for h in horizons}
            scores[t.settings[key]] = sum(per.values()) / len(per)
            print(f"  {base} {key} = {t.settings[key]:.4g}: mean valid-story loss "
                  + ", ".join(f"{per[h]:.4f} at {h}" for h in horizons) + f" (mean {scores[t.settings[key]]:.4f})",
                  flush=True)
        s[key] = min(scores, key=scores.get)
    return OptimizerTask(cache_dir=cache_dir, **{**settings, **{k: s[k] for k in ("lr", "adam_lr", "adamw_lr")}})


if __name__ == "__main__":
    sys.exit(main())
