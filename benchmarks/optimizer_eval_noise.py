"""How precisely one training run measures a rule's lead over Muon (optimizer track, issue 13).

A rule's lead on a seed is Muon's mean held-out loss minus the rule's, both models trained from
the same initial weights on the same batches. Beside the training itself, the lead depends on
which stories it is measured on: this script trains Muon and each `--rule` once (seed `--seed`,
`--steps` steps, the task's defaults otherwise), takes every held-out story's loss under each
model, and prints the lead with its paired standard error (story by story, token-weighted: a
ratio estimate) on the first `--stories` stories of each part (128: the track's measure until
2026-12-04) and on all of them (the measure now).

    python3 benchmarks/optimizer_eval_noise.py --seed 1 --rule "(mul (add (mul -1 x.u) x.n) 0.5)"

Needs the lm extra and the machine to itself (one run per worker, one thread each: 1,000 steps
take 1.5-3 minutes).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evo_rules.fitness.optimizer import PARTS  # noqa: E402
from evo_rules.fitness.optimizer import paired_lead as _paired_lead  # noqa: E402


def story_losses(call: tuple) -> tuple[str, dict]:
    """Train one model; (rule, {part: [(summed loss, tokens) per story]})."""
    rule, seed, steps = call
    import torch

    from evo_rules.fitness.optimizer import OptimizerTask, story_loss_sums, train_model

    torch.set_num_threads(1)
    task = OptimizerTask(mode="correct")
    model, info = train_model(task.data, task.settings, "muon", rule, [], "correct", seed, steps)
    if model is None:
        raise SystemExit(f"optimizer_eval_noise: rule {rule}: {info['failed']}")
    return rule, {part: list(zip(story_loss_sums(model, seqs), [s.shape[1] - 1 for s in seqs]))
                  for part, seqs in task.data["held"].items()}


def paired_lead(base: list, other: list) -> tuple[float, float]:
    """(lead, standard error) from (summed loss, tokens) per story: `fitness.optimizer.paired_lead`."""
    return _paired_lead([a for a, _ in base], [b for b, _ in other], [t for _, t in base])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rule", action="append", default=[], metavar="TEXT", help="a rule (mode correct); repeatable")
    ap.add_argument("--stories", type=int, default=128, help="the smaller measure's stories per part")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if not args.rule:
        ap.error("give at least one --rule")
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    calls = [(r, args.seed, args.steps) for r in ["0", *args.rule]]
    with ProcessPoolExecutor(max(1, args.workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        got = dict(pool.map(story_losses, calls))
    print(f"lead over Muon (its loss minus the rule's, nats per token) +- paired standard error; "
          f"seed {args.seed}, {args.steps} steps")
    for rule in args.rule:
        print(f"  {rule}")
        for part in PARTS:
            base, other = got["0"][part], got[rule][part]
            cells = []
            for n in sorted({min(args.stories, len(base)), len(base)}):
                lead, se = paired_lead(base[:n], other[:n])
                cells.append(f"{n} stories {lead:+.4f} +- {se:.4f}")
            print(f"    {part:5s}  " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
