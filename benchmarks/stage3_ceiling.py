"""What the stage-3 features know: the share of the recent-only to full-memory gap (K = 2) that
rankers of every kind reach on the test episodes, from the task's cached LM numbers alone.

    python3 benchmarks/stage3_ceiling.py [--features all|text|model]
    python3 benchmarks/stage3_ceiling.py --sampling 8x16,32x16,16x24 --episodes 600

At K = 2 the rule keeps the recent chunk and one more, so the real-LM loss of a choice is
loss(target | recent chunk) - utility(chosen chunk), with the leave-one-in utility the task
caches from real forwards. The share of the gap a ranker closes is therefore exact without new
LM forwards: (mean utility chosen - mean utility of the second most recent chunk) / (loss given
the recent chunk - loss given the full memory - that same utility). Rows: each feature alone
(with the sign that is better on valid episodes; the five best on valid shown), a ridge regression over all features, gradient-boosted trees over all
features (nonlinear, with interactions: a generous stand-in for any rule over the same
features), each fitted on train + valid episodes against the training labels, and the oracle
that peeks at the target's own utility. Standard errors are clustered by story.

`--sampling SxL,...` instead recomputes `sampled_gain` with S samples of L tokens on the first
`--episodes` test episodes (those whose memory leaves room for the longest L) and prints the
share of the gap each variant closes alone, beside `full_agree` on the same episodes: whether
more or longer samples would help (new LM forwards: minutes).

Needs the task's cache (the first stage-3 run computes it, about 11 minutes) and scikit-learn
(the `sklearn` extra). Seconds of CPU: run it when nothing else does.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evo_rules.fitness.lm.scoring import clustered_se  # noqa: E402
from evo_rules.fitness.memory import MemoryTask, PartData  # noqa: E402


def _bounds(d: PartData) -> np.ndarray:
    return np.r_[d.starts(), len(d.groups)]


def chosen_utility(d: PartData, scores: np.ndarray) -> np.ndarray:
    """Per episode, the target utility of the top-scored chunk."""
    b = _bounds(d)
    return np.array([d.u_target[i:j][np.argmax(scores[i:j])] for i, j in zip(b[:-1], b[1:])])


def centred(d: PartData, y: np.ndarray) -> np.ndarray:
    """Labels minus their episode mean: only the order within an episode matters."""
    b = _bounds(d)
    means = np.add.reduceat(y, b[:-1]) / np.diff(b)
    return y - np.repeat(means, np.diff(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default="all", choices=("all", "text", "model"))
    ap.add_argument("--sampling", default="", help="SxL,... : sampled_gain with S samples of L tokens")
    ap.add_argument("--episodes", type=int, default=600, help="test episodes for --sampling")
    args = ap.parse_args(argv)
    if args.sampling:
        return sampling(args.sampling, args.episodes)
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import Ridge
    except ImportError:
        print("stage3_ceiling.py: needs scikit-learn (pip install '.[sklearn]')", file=sys.stderr)
        return 2
    task = MemoryTask(features=args.features, threads=1)
    tr, va, te = (task.parts[p] for p in ("train", "valid", "test"))
    X = {p: task._X(task.parts[p]) for p in ("train", "valid", "test")}
    M = {p: np.column_stack([X[p][f] for f in task.features]) for p in X}
    tok = te.tokens
    toff = np.r_[0, np.cumsum(tok["length"])]
    E = te.n_episodes
    base = np.array([tok["base"][toff[e]:toff[e + 1]].mean() for e in range(E)])
    full = np.array([tok["full"][toff[e]:toff[e + 1]].mean() for e in range(E)])
    recent = chosen_utility(te, M["test"][:, task.features.index("recency")]) if "recency" in task.features \
        else chosen_utility(te, -np.arange(len(te.groups), 0, -1.0))  # the latest candidate
    gap = float(np.mean(base - full - recent))

    def row(name: str, u: np.ndarray) -> str:
        d = u - recent
        return (f"| {name} | {np.mean(base - u):.4f} | {d.mean() * -1:+.4f} +- {clustered_se(d, te.story):.4f} "
                f"| {100 * d.mean() / gap:.1f}% |")

    print(f"test episodes: {E}; recent-only (K = 2) {np.mean(base - recent):.4f}, full memory "
          f"{full.mean():.4f}, gap {gap:.4f} nats; features: {args.features} ({len(task.features)})\n")
    print("| ranker (K = 2) | loss | vs recent-only | gap closed |")
    print("|---|---|---|---|")
    singles = []
    for j, f in enumerate(task.features):  # the sign chosen on valid episodes
        sign = max((1.0, -1.0), key=lambda s: chosen_utility(va, s * M["valid"][:, j]).mean())
        singles.append((chosen_utility(va, sign * M["valid"][:, j]).mean(), f,
                        chosen_utility(te, sign * M["test"][:, j])))
    for _, f, u in sorted(singles, reverse=True)[:5]:
        print(row(f"feature `{f}` alone", u))
    Xfit = np.vstack([M["train"], M["valid"]])
    yfit = np.r_[centred(tr, tr.u_label), centred(va, va.u_label)]
    models = {"ridge over all features (train + valid)": Ridge(alpha=1.0),
              "gradient-boosted trees over all features (train + valid)":
                  HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                random_state=0)}
    for name, m in models.items():
        m.fit(Xfit, yfit)
        print(row(name, chosen_utility(te, m.predict(M["test"]))))
    print(row("oracle: the chunk of best target utility (peeks at the target)", chosen_utility(te, te.u_target)))
    return 0


def sampling(spec: str, n_episodes: int) -> int:
    """sampled_gain recomputed with other sample counts and lengths on the first test episodes."""
    from evo_rules.fitness.lm.memory import MemoryLM
    from evo_rules.fitness.lm.scoring import _test_episodes

    try:
        variants = [tuple(int(x) for x in v.lower().split("x")) for v in spec.split(",")]
        if any(len(v) != 2 or min(v) < 1 for v in variants):
            raise ValueError
    except ValueError:
        print(f"stage3_ceiling.py: --sampling {spec!r}: expected SxL[,SxL...], e.g. 8x16", file=sys.stderr)
        return 2
    task = MemoryTask(features="all")
    te = task.parts["test"]
    lm = MemoryLM(task.model_dir, threads=task.threads)
    eps = _test_episodes(task, lm)  # aligned with the cached test part
    longest = max(L for _, L in variants)
    room = [e for e, (_, et) in enumerate(eps) if 1 + sum(map(len, et.chunks)) + longest <= lm.context]
    idx = np.asarray(room[:n_episodes])
    b = _bounds(te)
    X = task._X(te)
    tok = te.tokens
    toff = np.r_[0, np.cumsum(tok["length"])]
    base = np.array([tok["base"][toff[e]:toff[e + 1]].mean() for e in idx])
    full = np.array([tok["full"][toff[e]:toff[e + 1]].mean() for e in idx])

    def chosen(scores: list[np.ndarray]) -> np.ndarray:
        return np.array([te.u_target[b[e]:b[e + 1]][np.argmax(s)] for e, s in zip(idx, scores)])

    recent = chosen([X["recency"][b[e]:b[e + 1]] for e in idx])
    gap = float(np.mean(base - full - recent))

    def row(name: str, u: np.ndarray) -> None:
        d = u - recent
        print(f"| {name} | {-d.mean():+.4f} +- {clustered_se(d, te.story[idx]):.4f} | {100 * d.mean() / gap:.1f}% |")

    print(f"first {len(idx)} test episodes with room for {longest} sampled tokens; gap {gap:.4f} nats\n")
    print("| ranker (K = 2) | vs recent-only | gap closed |")
    print("|---|---|---|")
    row("`full_agree` (greedy, 8 tokens)", chosen([X["full_agree"][b[e]:b[e + 1]] for e in idx]))
    row("`sampled_gain` as cached (8 x 16)", chosen([X["sampled_gain"][b[e]:b[e + 1]] for e in idx]))
    for S, L in variants:
        v = MemoryLM(task.model_dir, threads=task.threads, samples=S, sample_tokens=L)
        row(f"`sampled_gain`, {S} samples x {L} tokens", chosen([v.sampled_gain(eps[e][1]) for e in idx]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
