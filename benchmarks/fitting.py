"""Inner loop: evo_rules.fit (Levenberg-Marquardt, cap 20) against pyoperon's LM and plain Adam.

    PYTHONPATH=. python benchmarks/fitting.py            # 100 random rules + the eml template
    PYTHONPATH=. python benchmarks/fitting.py --quick    # 20 rules, smaller Adam budget
    PYTHONPATH=. python benchmarks/fitting.py --no-adam  # LM against pyoperon's LM only (fast)

Rules: 100 random rules from benchmarks/common.py (DEAP genHalfAndHalf, canonical size 15..25,
finite on the data) plus the eml template `(eml (add (mul w x.a) w) (add 1 (exp (mul w x.b))))`.
Data: 1,000 rows of benchmarks/common.make_data; targets y = rule(X, w_true) + noise, w_true the
generator's weights (uniform -1..1; template: 0.8, -0.4, 1.5), noise normal with standard
deviation 5% of std(y). Loss for both: evo_rules' squared loss mean((s - y)^2)/2 + 1e-8/2 |w|^2.

LM: `evo_rules.fit(rule, X, y, loss="squared")` as the engine calls it (start: best of a few
constant starts, then least squares for the weights that enter linearly; at most 20 iterations).
Adam: numpy, gradient J^T dL/ds from `Rule.run(F, w, jacobian=True)` (the same kernel), betas
0.9/0.999, eps 1e-8, started from the best of the same constant starts (no least-squares start:
that is part of what LM brings), at most --adam-iters iterations. One safeguard so Adam is not
judged on blow-ups: a step giving non-finite scores is not taken and the rate is halved.
Learning rate tuned two ways over a grid: the one rate best over the whole rule set ("Adam,
tuned lr"), and the best rate for each rule separately ("Adam, per-rule lr": an oracle).

Peer: pyoperon's Levenberg-Marquardt (`LMOptimizer` + `CoefficientOptimizer`, Eigen's LM; the
pip build computes in float32), optional: skipped with a note when `import pyoperon` fails
(pip install pyoperon). The same rules, data and iteration cap (20): each rule is parsed by
Operon's InfixParser from the canonical term (benchmarks/kernels.py's translation), and exactly
the rule's weights are the coefficients it optimizes (features and the rule's constants fixed);
every row is in its batch. It starts from the best of evo_rules' constant starts (chosen outside
its timing, and without the least-squares start evo_rules adds). Fits/s of both are timed in
alternation, --repeats times over all rules, and the ratio is the median of adjacent ratios (the
machine is shared: load that comes and goes hits both alike). A third row, "its iters", runs
evo_rules.fit capped rule by rule at the iterations pyoperon took: the two at equal iterations
(us/iter = fit time / iterations; evo_rules' includes its starts). Final losses are computed the same
way for both: float64, through evo_rules' kernel, at each method's final weights. Set-up
(parsing, program building, Operon's data set and optimizer objects) is excluded for both.

Targets: "LM loss" = reach LM's final loss within a relative 1e-3; "truth" = reach the loss at
the true weights within a relative 1e-2 (a fixed tolerance, independent of either method).
Iterations: LM's accepted steps (`FitResult.iterations`); Adam's steps. Kernel calls: every
Jacobian evaluation (LM also evaluates its starts and rejected trial steps). Fits/s: wall time
of one fit to the end (LM) or until the LM-loss target or the budget (Adam), one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import FEATURES, clock, make_data, make_rules, median  # noqa: E402 (first)

import numpy as np  # noqa: E402

from evo_rules import fit, parse  # noqa: E402
from evo_rules.fitting import STARTS  # noqa: E402
from evo_rules.losses import Squared  # noqa: E402

try:  # optional peer: Operon's Levenberg-Marquardt (pip install pyoperon; the pip build is float32)
    import pyoperon  # noqa: E402
except Exception:  # pragma: no cover - optional
    pyoperon = None

TEMPLATE = "(eml (add (mul w x.a) w) (add 1 (exp (mul w x.b))))"
TEMPLATE_W = np.array([0.8, -0.4, 1.5])
L2 = 1e-8
RTOL_LM = 1e-3
RTOL_TRUTH = 1e-2


class Counting:
    """Wraps a rule's `run` to count kernel calls (fit() calls rule.run)."""

    def __init__(self, rule):
        self.rule = rule
        self.calls = 0
        self._run = rule.run
        rule.run = self  # instance attribute shadows the method for this object

    def __call__(self, F, w, jacobian):
        self.calls += 1
        return self._run(F, w, jacobian)

    def restore(self):
        del self.rule.run


def loss_of(L, s, w):
    return L.value(s) + 0.5 * L2 * float(w @ w)


def best_start(rule, F, L):
    best = None
    for c in STARTS:
        w = np.full(len(rule.params), c)
        out, ok = rule.run(F, w, True)
        if ok:
            f = loss_of(L, out[0], w)
            if np.isfinite(f) and (best is None or f < best[0]):
                best = (f, w, out)
    return best


def adam(rule, F, y, lr, targets, max_iter, b1=0.9, b2=0.999, eps=1e-8):
    """Adam from the best constant start. Returns dict: first iteration reaching each target
    (None if never), seconds to reach targets[0] (or to the end), final loss, kernel calls."""
    with np.errstate(all="ignore"):
        return _adam(rule, F, y, lr, targets, max_iter, b1, b2, eps)


def _adam(rule, F, y, lr, targets, max_iter, b1, b2, eps):
    t0 = clock()
    L = Squared(y)
    calls = len(STARTS)
    st = best_start(rule, F, L)
    res = {"reach": [None] * len(targets), "time": None, "loss": np.inf, "calls": calls}
    if st is None:
        res["time"] = clock() - t0
        return res
    f, w, out = st
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    reach = res["reach"]
    it = 0
    for it in range(max_iter + 1):
        for j, tg in enumerate(targets):
            if reach[j] is None and f <= tg:
                reach[j] = it
                if j == 0:
                    res["time"] = clock() - t0
        if all(r is not None for r in reach) or it == max_iter:
            break
        g = out[1:] @ L.grad(out[0]) + L2 * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        t = it + 1
        step = lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        w_new = w - step
        out_new, ok = rule.run(F, w_new, True)
        calls += 1
        f_new = loss_of(L, out_new[0], w_new) if ok else np.inf
        if not np.isfinite(f_new):
            lr *= 0.5  # safeguard: do not step into non-finite scores
            continue
        w, out, f = w_new, out_new, f_new
    if res["time"] is None:
        res["time"] = clock() - t0
    res.update(loss=f, calls=calls, iters=it)
    return res


def problems(n_rules, n_rows, seed):
    X = make_data(n_rows, seed=seed + 7)
    rules, _ = make_rules(n_rules, make_data(20_000, seed=0), seed=seed)
    items = [(br.rule, br.w) for br in rules]
    items.append((parse(TEMPLATE), TEMPLATE_W))
    rng = np.random.default_rng(seed + 11)
    out = []
    dropped = 0
    for rule, w in items:
        F = rule.feature_matrix(X)
        s, ok = rule.run(F, w, False)
        if not ok:
            dropped += 1
            continue
        s = s[0]
        with np.errstate(all="ignore"):
            sd = float(np.std(s))
        if not np.isfinite(sd) or sd == 0.0 or sd > 1e6:
            dropped += 1
            continue
        y = s + rng.normal(scale=0.05 * sd, size=s.shape)
        L = Squared(y)
        out.append({"rule": rule, "w_true": w, "X": X, "F": F, "y": y,
                    "truth": loss_of(L, s, w), "template": rule.text == parse(TEMPLATE).text})
    return out, dropped


# ---------------------------------------------------------------- peer: pyoperon's LM

MARK = 7001.0  # weight k is written as MARK + k in Operon's infix text, to find its coefficient


def operon_tree(rule, variables, w0):
    """(Operon tree of the rule whose optimized coefficients are exactly the rule's weights,
    started at w0; coefficient j -> weight order[j]), or (None, None) when the parse does not
    give one coefficient per weight (not comparable)."""
    from benchmarks.kernels import operon_text_with

    marks = {p: MARK + k for k, p in enumerate(rule.params)}
    nodes = pyoperon.InfixParser.Parse(operon_text_with(rule.term, marks), variables).Nodes
    order = []
    for node in nodes:
        k = int(round(node.Value - MARK)) if node.IsConstant else -1
        if 0 <= k < len(rule.params) and node.Value == MARK + k:
            node.Value = float(w0[k])
            node.Optimize = True
            order.append(k)
        else:
            node.Optimize = False  # features (Operon weights them) and the rule's own constants
    if sorted(order) != list(range(len(rule.params))):
        return None, None
    return pyoperon.Tree(nodes).UpdateNodes(), np.array(order)


class OperonFit:
    """One problem set up for pyoperon's LM: data set (features X1.., target last), problem,
    optimizer, and the rule's tree. `run()` is the timed part: one coefficient optimization."""

    def __init__(self, p, w0, max_iter, seed):
        n = len(p["y"])
        M = np.column_stack([p["X"][f] for f in FEATURES] + [p["y"]])
        self.ds = pyoperon.Dataset(np.asfortranarray(M))
        variables = sorted(self.ds.Variables, key=lambda v: v.Index)
        # the C++ objects hold pointers to one another: all are kept alive on self
        self.problem = pyoperon.Problem(self.ds)
        self.problem.TrainingRange = pyoperon.Range(0, n)
        self.problem.TestRange = pyoperon.Range(0, n)
        self.problem.Target = variables[-1]
        self.problem.InputHashes = [v.Hash for v in variables[:-1]]
        self.dtable = pyoperon.DispatchTable()
        self.lm = pyoperon.LMOptimizer(self.dtable, self.problem, max_iter, n)  # batch: every row
        self.opt = pyoperon.CoefficientOptimizer(self.lm)
        self.rng = pyoperon.RandomGenerator(np.uint64(seed))
        self.tree, self.order = operon_tree(p["rule"], {v.Name: v.Hash for v in variables[:-1]}, w0)

    def run(self):
        tree, summary = self.opt(self.rng, self.tree)
        w = np.empty(len(self.order))
        w[self.order] = tree.GetCoefficients()
        return w, summary


def operon_setup(probs, max_iter, seed):
    """An OperonFit per problem (None where the rule does not translate one weight to one
    coefficient), each started at the best of evo_rules' constant starts."""
    fits = []
    for i, p in enumerate(probs):
        st = best_start(p["rule"], p["F"], Squared(p["y"]))
        w0 = st[1] if st is not None else np.zeros(len(p["rule"].params))
        f = OperonFit(p, w0, max_iter, seed + i)
        fits.append(f if f.tree is not None else None)
    return fits


def compare_with_operon(probs, max_iter, repeats, seed):
    """Fits/s of evo_rules.fit (squared loss) and pyoperon's LM side by side, and final losses."""
    if pyoperon is None:
        print("pyoperon LM: skipped (pyoperon is not importable: pip install pyoperon)")
        return
    from importlib.metadata import version

    fits = operon_setup(probs, max_iter, seed)
    both = [(p, f) for p, f in zip(probs, fits) if f is not None]
    if not both:
        print("pyoperon LM: skipped (no rule translated to one coefficient per weight)")
        return

    def ours(caps):
        return [fit(p["rule"], p["X"], p["y"], loss="squared", max_iter=c) for (p, _), c in zip(both, caps)]

    def theirs():
        return [f.run() for _, f in both]

    # equal iterations, rule by rule: evo_rules capped at the iterations pyoperon took on each
    caps_eq = [max(1, s.Iterations) for _, s in theirs()]  # also warms both
    caps = [max_iter] * len(both)
    ours(caps)
    t_ours, t_theirs, t_eq = [], [], []
    for _ in range(repeats):
        t0 = clock()
        res_ours = ours(caps)
        t_ours.append(clock() - t0)
        t0 = clock()
        res_theirs = theirs()
        t_theirs.append(clock() - t0)
        t0 = clock()
        res_eq = ours(caps_eq)
        t_eq.append(clock() - t0)
    n = len(both)
    loss_ours, loss_theirs = [], []
    for (p, _), r, (w, _) in zip(both, res_ours, res_theirs):
        L = Squared(p["y"])
        loss_ours.append(r.loss if r.valid else np.inf)
        s, ok = p["rule"].run(p["F"], w, False)
        loss_theirs.append(loss_of(L, s[0], w) if ok else np.inf)
    lo, lt = np.array(loss_ours), np.array(loss_theirs)
    fin = np.isfinite(lo) & np.isfinite(lt)
    ours_better = int(np.sum(fin & (lo < lt * (1 - RTOL_LM))) + np.sum(np.isfinite(lo) & ~np.isfinite(lt)))
    theirs_better = int(np.sum(fin & (lt < lo * (1 - RTOL_LM))) + np.sum(np.isfinite(lt) & ~np.isfinite(lo)))
    its_ours = [r.iterations for r in res_ours]
    its_theirs = [s.Iterations for _, s in res_theirs]
    print()
    print(f"pyoperon {version('pyoperon')} LM (Eigen, float32) against evo_rules.fit (float64), "
          f"squared loss, cap {max_iter} iterations, {n} rules ({len(probs) - n} not translatable), "
          f"{len(probs[0]['y'])} rows, {repeats} alternating repeats")
    print(f"{'method':<25}{'fits/s':>9}{'iters med':>10}{'us/iter':>9}{'valid':>7}")

    def row(name, t, its, valid):
        print(f"{name:<25}{n / median(t):>9.0f}{median(its):>10g}"
              f"{median(t) / max(sum(its), 1) * 1e6:>9.0f}{valid:>7}")

    row("evo_rules LM", t_ours, its_ours, f"{int(np.isfinite(lo).sum())}")
    row("pyoperon LM", t_theirs, its_theirs, f"{int(np.isfinite(lt).sum())}")
    row("evo_rules LM, its iters", t_eq, [r.iterations for r in res_eq], f"{sum(r.valid for r in res_eq)}")
    print(f"  pyoperon: {sum(s.Success for _, s in res_theirs)}/{n} report success; function / "
          f"Jacobian evaluations median {median([s.FunctionEvaluations for _, s in res_theirs]):g} / "
          f"{median([s.JacobianEvaluations for _, s in res_theirs]):g}; us/iter = fit time / "
          f"iterations (evo_rules' time includes its constant and least-squares starts)")
    ratio = median([b / a for a, b in zip(t_ours, t_theirs)])
    print(f"  fits/s, evo_rules / pyoperon (median of adjacent ratios): {ratio:.2f}   "
          f"(target >= 1.0, stretch 2.0)")
    ratio_eq = median([b / a for a, b in zip(t_eq, t_theirs)])
    lq = np.array([r.loss if r.valid else np.inf for r in res_eq])
    print(f"  the same with evo_rules capped, rule by rule, at the iterations pyoperon took "
          f"(\"its iters\"): {ratio_eq:.2f}; its final loss then within {RTOL_LM:g} of pyoperon's "
          f"or lower on {int(np.sum(lq <= lt * (1 + RTOL_LM)))}/{n}")
    rel = (lo[fin] - lt[fin]) / np.maximum(np.abs(lt[fin]), 1e-300)
    print(f"  final loss (float64 at each one's weights): evo_rules clearly lower on {ours_better}, "
          f"pyoperon clearly lower on {theirs_better}, within {RTOL_LM:g} relative on "
          f"{n - ours_better - theirs_better}; median relative difference (ours - theirs) / theirs "
          f"{median(rel.tolist()) if rel.size else float('nan'):.2g}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rules", type=int, default=None)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--adam-iters", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=None,
                    help="alternating timed passes against pyoperon (default 5; quick 3)")
    ap.add_argument("--no-adam", action="store_true", help="only LM against pyoperon's LM")
    args = ap.parse_args(argv)
    n_rules = args.rules or (20 if args.quick else 100)
    max_iter = args.adam_iters or (500 if args.quick else 2000)
    grid = (1e-2, 3e-2, 1e-1) if args.quick else (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)

    probs, dropped = problems(n_rules, args.rows, args.seed)
    print(f"problems: {len(probs)} ({len(probs) - 1} random rules + eml template; {dropped} of "
          f"{n_rules} random rules dropped: not finite on these rows, or std(y) > 1e6), "
          f"{args.rows} rows, noise 5% of std(y); Adam budget {max_iter} steps, lr grid {grid}")
    # warm the kernel, and build every rule's gradients and program (done once per rule and
    # cached by key in the engine, so not part of a fit's time)
    for p in probs:
        p["rule"].program  # noqa: B018
    p0 = probs[0]
    fit(p0["rule"], p0["X"], p0["y"])
    compare_with_operon(probs, 20, args.repeats or (3 if args.quick else 5), args.seed)
    if args.no_adam:
        return

    # ---- LM (and LM allowed 100 iterations, to see what the cap costs)
    def run_lm(cap):
        runs = []
        for p in probs:
            c = Counting(p["rule"])
            t0 = clock()
            r = fit(p["rule"], p["X"], p["y"], loss="squared", max_iter=cap)
            dt = clock() - t0
            c.restore()
            runs.append({"res": r, "time": dt, "calls": c.calls})
        return runs

    lm = run_lm(20)
    lm100 = run_lm(100)

    # ---- Adam over the lr grid
    adam_runs = {lr: [] for lr in grid}
    for p, l in zip(probs, lm):
        t_lm = l["res"].loss * (1 + RTOL_LM) if l["res"].valid else -np.inf
        t_truth = p["truth"] * (1 + RTOL_TRUTH)
        for lr in grid:
            adam_runs[lr].append(adam(p["rule"], p["F"], p["y"], lr, [t_lm, t_truth], max_iter))

    def score(runs):  # share reaching the LM target, then speed
        hits = [r["reach"][0] for r in runs]
        n_hit = sum(h is not None for h in hits)
        return (n_hit, -median([h for h in hits if h is not None] or [max_iter]))

    best_lr = max(grid, key=lambda lr: score(adam_runs[lr]))
    tuned = adam_runs[best_lr]
    per_rule = []
    for i in range(len(probs)):
        cands = [adam_runs[lr][i] for lr in grid]
        per_rule.append(min(cands, key=lambda r: (r["reach"][0] is None,
                                                  r["reach"][0] if r["reach"][0] is not None else 0,
                                                  r["loss"])))

    n = len(probs)
    lm_valid = [l["res"].valid for l in lm]
    lm_truth = [l["res"].valid and l["res"].loss <= p["truth"] * (1 + RTOL_TRUTH)
                for l, p in zip(lm, probs)]
    lm_fits_s = n / sum(l["time"] for l in lm)
    print()
    print(f"LM (evo_rules.fit): valid {sum(lm_valid)}/{n}; iterations median "
          f"{median([l['res'].iterations for l in lm])}, max {max(l['res'].iterations for l in lm)}; "
          f"kernel calls median {median([l['calls'] for l in lm])}; "
          f"reached the iteration cap {sum(l['res'].message == 'iteration cap' for l in lm)}")
    print(f"Adam tuned lr = {best_lr:g} (share reaching LM's loss per lr: " +
          ", ".join(f"{lr:g}: {score(adam_runs[lr])[0]}/{n}" for lr in grid) + ")")
    print()
    hdr = (f"{'method':<22}{'reach LM loss':>14}{'reach truth':>12}{'iters med':>10}"
           f"{'calls med':>10}{'fits/s':>9}")
    print(hdr)

    def row(name, reach_lm, reach_truth, iters, calls, fits_s):
        print(f"{name:<22}{reach_lm:>14}{reach_truth:>12}{iters:>10}{calls:>10}{fits_s:>9.0f}")

    row("LM (cap 20)", f"{sum(lm_valid)}/{n}", f"{sum(lm_truth)}/{n}",
        f"{median([l['res'].iterations for l in lm]):g}", f"{median([l['calls'] for l in lm]):g}",
        lm_fits_s)
    row("LM (cap 100)", f"{sum(l['res'].valid and l['res'].loss <= a['res'].loss * (1 + RTOL_LM) for l, a in zip(lm100, lm))}/{n}",
        f"{sum(l['res'].valid and l['res'].loss <= p['truth'] * (1 + RTOL_TRUTH) for l, p in zip(lm100, probs))}/{n}",
        f"{median([l['res'].iterations for l in lm100]):g}",
        f"{median([l['calls'] for l in lm100]):g}", n / sum(l["time"] for l in lm100))
    for name, runs in (("Adam, tuned lr", tuned), ("Adam, per-rule lr", per_rule)):
        hit = [r["reach"][0] for r in runs]
        tr = [r["reach"][1] for r in runs]
        its = [h for h in hit if h is not None]
        row(name, f"{sum(h is not None for h in hit)}/{n}", f"{sum(t is not None for t in tr)}/{n}",
            f"{median(its):g}" if its else "-",
            f"{median([r['calls'] for r in runs]):g}",
            n / sum(r["time"] for r in runs))

    print()
    print("ratios, Adam / LM, over the rules where Adam reached LM's final loss "
          "(> 1: Adam needs more):")
    for name, runs in (("Adam, tuned lr", tuned), ("Adam, per-rule lr", per_rule)):
        both = [(r, l) for r, l in zip(runs, lm) if r["reach"][0] is not None and l["res"].valid]
        if not both:
            print(f"  {name}: never reached LM's loss")
            continue
        it_r = median([max(r["reach"][0], 1) / max(l["res"].iterations, 1) for r, l in both])
        calls_r = median([r["calls"] / l["calls"] for r, l in both])
        time_r = median([r["time"] / l["time"] for r, l in both])
        print(f"  {name:<20} on {len(both):>3} rules: iterations x{it_r:.1f}, kernel calls "
              f"x{calls_r:.1f}, wall time per fit x{time_r:.1f}")
    missed = [(r, l) for r, l in zip(tuned, lm) if r["reach"][0] is None and l["res"].valid]
    if missed:
        gap = median([(r["loss"] - l["res"].loss) / max(abs(l["res"].loss), 1e-300)
                      for r, l in missed])
        print(f"  Adam, tuned lr missed LM's loss on {len(missed)} rules after {max_iter} steps: "
              f"median relative excess loss {gap:.2g}")
    better = sum(r["loss"] < l["res"].loss * (1 - RTOL_LM) for r, l in zip(per_rule, lm)
                 if l["res"].valid)
    print(f"  rules where Adam (per-rule lr) ends clearly below LM's loss: {better}/{n}")
    stuck = [i for i, (l, p) in enumerate(zip(lm, probs)) if not lm_truth[i]]
    at_cap = sum(lm[i]["res"].message == "iteration cap" for i in stuck)
    fixed100 = sum(lm100[i]["res"].valid and lm100[i]["res"].loss <= probs[i]["truth"] * (1 + RTOL_TRUTH)
                   for i in stuck)
    adam_fixed = sum(per_rule[i]["reach"][1] is not None for i in stuck)
    print(f"  LM (cap 20) missed the truth target on {len(stuck)} rules: {at_cap} of them stopped "
          f"at the cap; cap 100 reaches it on {fixed100}, Adam (per-rule lr) on {adam_fixed}")
    tp = [i for i, p in enumerate(probs) if p["template"]]
    if tp:
        i = tp[0]
        r = lm[i]["res"]
        a = tuned[i]
        print(f"eml template: LM loss {r.loss:.4g} in {r.iterations} iterations "
              f"({lm[i]['calls']} kernel calls), weights {np.round(r.weights, 3)} "
              f"(truth {probs[i]['w_true']}); Adam (lr {best_lr:g}) reached LM's loss at step "
              f"{a['reach'][0]}, truth target at step {a['reach'][1]}")


if __name__ == "__main__":
    main()
