"""How much a stage-3 language model uses far memory: target loss given the full memory against
recent-only (the last K chunks), the last chunk only and no memory, on the test episodes.

    python3 benchmarks/context_dependence.py [MODEL_DIR ...] [--episodes N] [--k 2]

MODEL_DIR defaults to the shipped model (fitness/data/lm). The same test episodes as the stage-3
task (3 targets per test story, t >= 6), the first N of them (default: all). Differences are
paired by episode, standard errors clustered by story. Needs the lm extra; run it alone on the
machine (it uses every core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evo_rules.fitness import tinystories  # noqa: E402
from evo_rules.fitness.memory import shipped_model  # noqa: E402


def measure(model_dir: str, n_episodes: int, k: int) -> dict:
    from evo_rules.fitness.lm.memory import MemoryLM, encode_episodes, selection_losses
    from evo_rules.fitness.lm.scoring import clustered_se

    lm = MemoryLM(model_dir)
    eps = tinystories.episodes(tinystories.load_splits()["test"], targets_per_story=3)
    items = encode_episodes(lm, eps, 1)
    if n_episodes:
        items = items[:n_episodes]
    stories = np.array([ep.story for ep, _ in items])
    selections = {
        "full memory": lambda n: tuple(range(n)),
        f"recent-only (last {k})": lambda n: tuple(range(max(0, n - k), n)),
        "last chunk only": lambda n: (n - 1,),
        "no memory": lambda n: (),
    }
    started = time.perf_counter()
    loss = {}
    for name, pick in selections.items():
        ls = selection_losses(lm, [(et, pick(len(et.chunks))) for _, et in items])
        loss[name] = np.array([float(np.mean(x)) for x in ls])
    recent = loss[f"recent-only (last {k})"]
    rows = {name: (float(v.mean()), float((v - recent).mean()), clustered_se(v - recent, stories))
            for name, v in loss.items()}
    return {"episodes": len(items), "stories": len(set(stories.tolist())), "rows": rows,
            "seconds": time.perf_counter() - started}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="model folders (default: the shipped model)")
    ap.add_argument("--episodes", type=int, default=0, help="first N test episodes (default: all)")
    ap.add_argument("--k", type=int, default=2, help="budget of the recent-only row (default 2)")
    args = ap.parse_args(argv)
    for model_dir in args.models or [str(shipped_model())]:
        res = measure(model_dir, args.episodes, args.k)
        print(f"{model_dir}: {res['episodes']} test episodes from {res['stories']} stories, "
              f"{res['seconds']:.0f} s")
        for name, (mean, diff, se) in res["rows"].items():
            print(f"  {name:<22} {mean:.4f}   vs recent-only {diff:+.4f} +- {se:.4f}")
        print(f"  context dependence (recent-only - full): "
              f"{-res['rows']['full memory'][1]:.4f} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
