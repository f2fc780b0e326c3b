"""Real-LM scoring of memory selections on the stage-3 test episodes, beside every baseline.

For each budget K (2 and 3) every selection keeps the recent chunk and K - 1 others; the model
reads `<eot>` + kept chunks (story order) + target, and the loss is the target's mean token loss.
At K = 2 a selection is one candidate, and the precompute already ran exactly that forward for
every candidate of every test episode (stored per token in the cache): the fixed policies' K = 2
rows read those real losses. The rules (searched, linear) at both budgets and every K = 3
selection are run now, each distinct (episode, kept set) once.

Selections: full memory; recent-only (the last K chunks); StreamingLLM-style (attention sink =
the first chunk, plus the most recent); H2O-style (the K - 1 chunks whose tokens received the
most accumulated attention when the model read the whole memory); lexical overlap with the
recent chunk; random; the linear rule and each searched rule (top K - 1 by score); and an oracle
that peeks at the target but is cross-fitted: it chooses by the utility measured on the target's
even tokens and is scored on the odd ones, and vice versa, so it cannot fit the noise it is
scored on.

Per selection: mean target loss, the paired difference against recent-only with its standard
error clustered by story, the share of the recent-only to full-memory gap closed, the loss on
"recall tokens" (target tokens found in the memory but not in the recent chunk) and target
overlap (share of the target's content words present in the kept memory).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from ..memory import FEATURE_SETS
from ..memory_text import target_overlap
from .memory import MemoryLM, encode_episodes, selection_losses


def clustered_se(d: np.ndarray, clusters: np.ndarray) -> float:
    """Standard error of mean(d), clustered by story (nan where there are too few clusters)."""
    from evo_rules.gate import paired_se  # the engine's one formula

    se = paired_se(np.asarray(d, dtype=float), clusters)
    return math.nan if math.isinf(se) else se


def _test_episodes(task, lm: MemoryLM):
    from ..memory import episodes_for

    eps = episodes_for(task.stories(), task.settings)["test"]
    return encode_episodes(lm, eps, task.settings["label_horizon"])


def final_evaluation(task, rules: Sequence[dict], progress: bool = True, budgets=(2, 3)) -> dict:
    started = time.perf_counter()
    d = task.parts["test"]
    if d.tokens is None:
        raise ValueError("stage-3 cache has no per-token test losses; delete it to recompute")
    lm = MemoryLM(task.model_dir, threads=task.threads, device=task.device)
    eps = _test_episodes(task, lm)
    if len(eps) != d.n_episodes:
        raise ValueError(f"test episodes changed since the cache was written ({len(eps)} vs {d.n_episodes})")
    E = len(eps)
    starts = np.r_[d.starts(), len(d.groups)]
    L = d.tokens["length"]
    toff = np.r_[0, np.cumsum(L)]
    # per-row offsets into tokens.with: rows of episode e each hold L[e] tokens
    row_len = L[d.groups]
    woff = np.r_[0, np.cumsum(row_len)]
    recall = [d.tokens["recall"][toff[e]: toff[e + 1]] for e in range(E)]

    def tok_base(e):
        return d.tokens["base"][toff[e]: toff[e + 1]]

    def tok_full(e):
        return d.tokens["full"][toff[e]: toff[e + 1]]

    def tok_with(e, c):
        r = starts[e] + c
        return d.tokens["with"][woff[r]: woff[r + 1]]

    X = task._X(d)
    all_cols = {f: d.X[:, i] for i, f in enumerate(FEATURE_SETS["all"])}
    rule_scores = {}
    from evo_rules.rule import parse  # the term layer only: no search machinery

    for r in rules:
        rule = parse(r["text"])
        rule_scores[r["name"]] = np.asarray(rule.evaluate(X, np.asarray(r["weights"], dtype=np.float64)))

    def top(scores: np.ndarray, e: int, k: int) -> tuple[int, ...]:
        s = scores[starts[e]: starts[e + 1]]
        s = np.where(np.isfinite(s), s, -np.inf)
        return tuple(sorted(np.argsort(-s, kind="stable")[: k - 1].tolist()))

    rng = np.random.default_rng(20261201)
    random_scores = rng.random(len(d.groups))
    policies = {
        "recent-only": lambda e, k, n: tuple(range(max(0, n - k), n - 1)),
        "StreamingLLM (first + recent)": lambda e, k, n: tuple(sorted({0} | set(range(max(0, n - k + 1), n - 1)))
                                                             if k - 1 >= 1 else ()),
        "H2O (heavy hitters)": lambda e, k, n: top(all_cols["attn_received"], e, k),
        "lexical overlap": lambda e, k, n: top(all_cols["overlap_recent"], e, k),
        "random": lambda e, k, n: top(random_scores, e, k),
    }
    for name, s in rule_scores.items():
        policies[name] = (lambda sc: (lambda e, k, n: top(sc, e, k)))(s)

    def fix(kept: tuple[int, ...], k: int, n: int) -> tuple[int, ...]:
        # StreamingLLM at K with few chunks: fill from the recent end so every selection has K - 1
        kept = tuple(sorted(set(kept)))[: k - 1]
        fill = [c for c in range(n - 2, -1, -1) if c not in kept]
        while len(kept) < min(k - 1, n - 1):
            kept = tuple(sorted(kept + (fill.pop(0),)))
        return kept

    def overlap(e, kept):
        ep = eps[e][0]
        return target_overlap([ep.chunks[c] for c in kept] + [ep.chunks[-1]], ep.target)

    rows = []
    pairs: list[dict] = []
    timing = {}
    for k in budgets:
        t0 = time.perf_counter()
        sel: dict[str, list[tuple[int, ...]]] = {}
        for name, pol in policies.items():
            sel[name] = [fix(pol(e, k, len(eps[e][1].chunks)), k, len(eps[e][1].chunks)) for e in range(E)]
        # oracle, cross-fitted over the target's even / odd tokens
        even = [np.arange(L[e]) % 2 == 0 for e in range(E)]
        u_half = {}
        for e in range(E):
            n = len(eps[e][1].chunks)
            base = tok_base(e)
            ua, ub = [], []
            for c in range(n - 1):
                w = tok_with(e, c)
                diff = base - w
                ua.append(diff[even[e]].mean() if even[e].any() else 0.0)
                ub.append(diff[~even[e]].mean() if (~even[e]).any() else 0.0)
            u_half[e] = (np.asarray(ua), np.asarray(ub))
        oracle_a = [tuple(sorted(np.argsort(-u_half[e][0], kind="stable")[: k - 1].tolist())) for e in range(E)]
        oracle_b = [tuple(sorted(np.argsort(-u_half[e][1], kind="stable")[: k - 1].tolist())) for e in range(E)]
        # losses of every needed (episode, kept) pair. Fixed policies at K = 2 read the cached
        # forwards; rules (searched, linear) and every K = 3 selection are run now
        need: dict[tuple, np.ndarray | None] = {}
        for name, lists in list(sel.items()) + [("oracle", oracle_a), ("oracle", oracle_b)]:
            fresh = name in rule_scores
            for e, kept in enumerate(lists):
                need.setdefault((e, kept, fresh), None)
        run = []
        for (e, kept, fresh) in need:
            n = len(eps[e][1].chunks)
            if fresh or 1 < len(kept) < n - 1:
                run.append((e, kept, fresh))
            elif len(kept) == 1:
                need[(e, kept, fresh)] = tok_with(e, kept[0])
            elif len(kept) == 0:
                need[(e, kept, fresh)] = tok_base(e)
            else:
                need[(e, kept, fresh)] = tok_full(e)
        n_runs = len(run)
        if run:
            losses = selection_losses(lm, [(eps[e][1], kept + (len(eps[e][1].chunks) - 1,)) for e, kept, _ in run])
            for key, l in zip(run, losses):
                need[key] = l
        per = {}
        for name, lists in sel.items():
            per[name] = [need[(e, kept, name in rule_scores)] for e, kept in enumerate(lists)]
        per["oracle (cross-fitted)"] = [np.where(even[e], need[(e, oracle_b[e], False)],
                                                 need[(e, oracle_a[e], False)]) for e in range(E)]
        sel["oracle (cross-fitted)"] = oracle_a  # its overlap: the mean over both halves' choices, below
        per["full memory"] = [tok_full(e) for e in range(E)]
        sel["full memory"] = [tuple(range(len(eps[e][1].chunks) - 1)) for e in range(E)]
        timing[f"K={k}"] = {"seconds": round(time.perf_counter() - t0, 1), "forwards": n_runs}
        means = {name: np.array([l.mean() for l in ls]) for name, ls in per.items()}
        for name in rule_scores:  # each rule against each fixed policy, paired by episode
            for other in ("recent-only", "StreamingLLM (first + recent)", "H2O (heavy hitters)", "linear rule"):
                if other in means and other != name:
                    d_ = means[name] - means[other]
                    pairs.append({"K": k, "rule": name, "vs": other, "diff": float(d_.mean()),
                                  "se": clustered_se(d_, d.story)})
        ref = np.array([l.mean() for l in per["recent-only"]])
        full = np.array([l.mean() for l in per["full memory"]])
        gap = ref.mean() - full.mean()
        for name, ls in per.items():
            mean = np.array([l.mean() for l in ls])
            diff = mean - ref
            rec = [l[m].mean() for l, m in zip(ls, recall) if m.any()]
            ov = [overlap(e, sel[name][e]) for e in range(E)]
            if name.startswith("oracle"):
                ov = [(a + overlap(e, oracle_b[e])) / 2 for e, a in enumerate(ov)]
            rows.append({"K": k, "selection": name, "loss": float(mean.mean()),
                         "diff_vs_recent": float(diff.mean()), "se": clustered_se(diff, d.story),
                         "gap_closed": float((ref.mean() - mean.mean()) / gap) if gap > 0 else math.nan,
                         "recall_loss": float(np.mean(rec)) if rec else math.nan,
                         "target_overlap": float(np.nanmean(ov))})
    base = np.array([tok_base(e).mean() for e in range(E)])
    out = {"episodes": E, "stories": int(len(np.unique(d.story))),
           "recall_episodes": int(sum(m.any() for m in recall)),
           "last_chunk_only": float(base.mean()),
           "rows": rows, "pairs": pairs, "timing": timing, "seconds": round(time.perf_counter() - started, 1)}
    out["text"] = format_table(out)
    return out


def format_table(res: dict) -> str:
    lines = [f"stage 3, real LM on {res['episodes']} test episodes ({res['stories']} stories); "
             f"loss = mean target-token loss (nats); diff vs recent-only with SE clustered by story",
             f"  last chunk only: {res['last_chunk_only']:.4f}"]
    for k in sorted({r["K"] for r in res["rows"]}):
        lines.append(f"  K = {k}:  {'selection':34s} {'loss':>7} {'diff':>8} {'+-SE':>7} {'z':>6} "
                     f"{'gap':>6} {'recall':>7} {'overlap':>7}")
        rows = sorted((r for r in res["rows"] if r["K"] == k), key=lambda r: r["loss"])
        for r in rows:
            z = r["diff_vs_recent"] / r["se"] if r["se"] and r["se"] > 0 else math.nan
            lines.append(f"         {r['selection'][:34]:34s} {r['loss']:7.4f} {r['diff_vs_recent']:+8.4f} "
                         f"{r['se']:7.4f} {z:6.1f} {100 * r['gap_closed']:5.1f}% {r['recall_loss']:7.4f} "
                         f"{r['target_overlap']:7.4f}")
    lines.append("  (gap = share of the recent-only to full-memory loss gap closed; recall = loss on target "
                 "tokens found in the memory but not in the recent chunk)")
    if res.get("pairs"):
        lines.append("  paired differences of each rule (loss, rule minus other; negative = the rule is better):")
        for p in res["pairs"]:
            z = p["diff"] / p["se"] if p["se"] and p["se"] > 0 else math.nan
            lines.append(f"    K = {p['K']}  {p['rule'][:28]:28s} vs {p['vs'][:30]:30s} {p['diff']:+.4f} +- {p['se']:.4f}"
                         f"  ({z:+.1f} SE)")
    return "\n".join(lines)
