"""End to end: the same rule search by this engine and by "the plain DEAP way", timed to a target.

    PYTHONPATH=. python benchmarks/end_to_end.py            # the full run (up to about 16 min)
    PYTHONPATH=. python benchmarks/end_to_end.py --quick    # a smoke run (under a minute)

Needs scipy for the DEAP side (`python -m pip install scipy`): the engine does not use it, it is
only the generic optimizer the plain-DEAP baseline fits its weights with.

Everything runs in this one process, one engine after the other (thread pools pinned to one
thread by benchmarks/common.py), so the ratios are measured side by side under the same machine
load (the load average is printed before and after).

The task (both sides): and-match (fitness/synthetic.py), n_train 1000 episodes x 8 candidates,
n_valid 500 episodes (--quick: 300 / 200). Fitness = answer score on valid (share of episodes
whose top-scored candidate is the target) after fitting the rule's weights on train with the
listwise softmax loss (mean over episodes of -log softmax(scores)[target]). Same population,
generation budget and seed; NSGA-II on (valid answer score up, size down) on both sides.

(a) this engine: `evo_rules.app.run_search(config, out=tmpdir)`: canonical terms, keys, dedup,
    SQLite fitness cache, numba kernel with symbolic Jacobian, Levenberg-Marquardt fit (at most
    20 iterations), serial backend; then the same with the process backend and 2 workers,
    reported separately. Config: runs/and-match.toml's search settings (seed_reference false:
    no hand-written rule is seeded; grammar template share 0.5, i.e. half the random rules are
    the seed shape (eml signal (add 1 (exp damping)))). An ablation run (serial, template
    share 0: ramped half-and-half trees only, like DEAP's initial population) separates what
    the template prior buys from what the machinery buys. The numba kernel is loaded once
    before the clocks start (a warm-up, printed).
    The per-generation wall clock is read by wrapping `Search._finish_generation` (after the
    checkpoint write): benchmark instrumentation only, the engine is unchanged.

(b) plain DEAP: `gp.PrimitiveSet` with add, mul, exp, log, eml(u, v) = exp(u) - log(v) (NumPy
    ufuncs, no protection: non-finite output = invalid), the features as arguments x_color,
    x_shape, an ephemeral weight w ~ U(-1, 1) and the constant 1 as terminals (leaf mix
    feature 1/2, weight 1/4, constant 1/4; the engine's grammar: .5 / .3 / .2). Classes defined
    at module level (no `creator`). Per evaluated individual: the tree is printed with its
    ephemerals lifted to a weight vector `w[i]` and compiled with `gp.compile` (against a
    twin primitive set whose arguments are w, x_color, x_shape); the weights are fitted by
    `scipy.optimize.minimize(method="BFGS", options={"maxiter": 20})` with its default
    2-point finite-difference gradient, starting from the tree's ephemeral values, on the same
    listwise loss (a non-finite loss is replaced by 1e10 so the line search backs off); the
    fitted weights are written back into the tree (Lamarckian: children start from their
    parents' fitted weights, which favours DEAP). No cache, no dedup: every individual with an
    invalid fitness is evaluated, as in DEAP's algorithms. Variation: `algorithms.varOr` over
    `tools.selTournamentDCD` parents (binary tournament on rank and crowding, like the
    engine's), crossover `gp.cxOnePoint` p .4, mutation p .6 split like the engine's operators:
    `gp.mutUniform` (subtree, `genFull` height 0..2) .25, `gp.mutNodeReplacement` (point) .15,
    `gp.mutShrink` (hoist + shrink) .20; static limits height <= 7 and len <= 25 on every
    operator (the engine: depth <= 8 counting the root, canonical size <= 25). Initial
    population `gp.genHalfAndHalf` height 1..5, redrawn while len > 25. Survivors:
    `tools.selNSGA2(population + offspring, mu)` (mu + lambda, lambda = mu).

Every run does the same number of generations; a run that is then still below the primary
target goes on (the engine through `app.resume`, 20 generations at a time, the run reports
in between untimed) until it reaches it or its time budget (420 s; --quick 10 s) runs out.
Throughput figures are over the shared generation budget only.

Targets (valid answer score): the oracle's (the Bayes-optimal rule's) score on valid, the
primary target (--target overrides it); the midpoint between the fitted linear rule and the
oracle; 0.75. On this task the weightless product (mul x.color x.shape) already scores above
the midpoint and 0.75, and random initialisation produces it in generation 0 or 1 on every
side, so those two targets time start-up, not search; they are printed for completeness. Time
to target = seconds from the start of the search call (task construction included on both
sides) to the end of the first generation whose best valid score reaches it. If DEAP never
reaches a target, the ratio is a lower bound (">"). One seed: the generation at which a search
first reaches the primary target is luck as much as speed (--seed to repeat).

Printed per engine: time to each target (and the generation), generations per minute,
evaluations per second (rules actually fitted and scored; cache hits and in-generation
duplicates are not counted), individuals per second (fitted + served from the cache), cache hit
rate (the engine), share of invalid (non-finite) rules, best valid score; then the ratios
DEAP / engine.
"""

from __future__ import annotations

import argparse
import copy
import math
import operator
import os
import random
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402,F401  (first: pins thread pools before numpy/numba load)
from benchmarks.common import clock  # noqa: E402

import numpy as np  # noqa: E402
from deap import algorithms, base, gp, tools  # noqa: E402

from evo_rules import app as app_mod  # noqa: E402
from evo_rules import search as search_mod  # noqa: E402
from evo_rules.app import run_search  # noqa: E402
from evo_rules.losses import Listwise  # noqa: E402
from evo_rules.run_folder import RunFolder  # noqa: E402
from evo_rules.fitness.synthetic import SyntheticTask, fit_and_score, linear_rule_text  # noqa: E402

try:
    import scipy  # noqa: E402
    from scipy.optimize import minimize  # noqa: E402
except ImportError:  # pragma: no cover
    scipy = None
    minimize = None

FEATURES = ("color", "shape")
INVALID = -1e9  # the engine's INVALID_METRIC
PENALTY = 1e10  # loss returned to the optimizer for non-finite scores


# ---------------------------------------------------------------- settings

FULL = dict(n_train=1000, n_valid=500, n_test=500, population=120, generations=20,
            budget=420.0, process=True, ablation=True, same_rules=100, repeats=3)
QUICK = dict(n_train=300, n_valid=200, n_test=200, population=40, generations=3,
             budget=10.0, process=False, ablation=False, same_rules=20, repeats=1)


def engine_config(s: dict, seed: int, backend: str, workers: int = 0) -> dict:
    """runs/and-match.toml's search, sized by `s`."""
    return {
        "run": {"seed": seed, "generations": s["generations"], "population": s["population"]},
        "task": {"name": "and-match",
                 "settings": {"n_train": s["n_train"], "n_valid": s["n_valid"],
                              "n_test": s["n_test"]}},
        "search": {"selection": "nsga2", "seed_reference": False},
        "grammar": {"max_size": 25, "max_depth": 8, "template_share": 0.5},
        "fit": {"max_iter": 20},
        "evaluation": {"backend": backend, "workers": workers},
    }


def make_task(s: dict) -> SyntheticTask:
    # exactly what the engine's task factory builds (fitness.registry -> SyntheticTask)
    return SyntheticTask("and-match", n_train=s["n_train"], n_valid=s["n_valid"],
                         n_test=s["n_test"])


# ---------------------------------------------------------------- (a) this engine

def run_engine(s: dict, seed: int, backend: str, chase: float, budget: float, workers: int = 0,
               template_share: float = 0.5, label: str = "") -> dict:
    """`run_search` for the shared generation budget; then, if the best valid score is still
    below `chase`, `app.resume` in steps of that many generations until it is reached or
    `budget` seconds have passed. The run reports written between steps are not timed."""
    rows: list[tuple] = []
    reports: list[tuple[float, float]] = []  # (end, seconds) of each run-report build
    original_finish = search_mod.Search._finish_generation
    original_report = app_mod.build_report

    def finish(self, gen, counts, dedup):
        original_finish(self, gen, counts, dedup)
        row = self.logbook[-1]
        rows.append((gen, clock(), row["best"], row["evals"], row["cache_hits"], row["dedup"],
                     row["invalid"]))

    def build_report(search):
        t = clock()
        out = original_report(search)
        reports.append((clock(), clock() - t))
        return out

    search_mod.Search._finish_generation = finish
    app_mod.build_report = build_report
    stopped = ""
    try:
        with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
            out = os.path.join(tmp, "run")
            config = engine_config(s, seed, backend, workers)
            config["grammar"]["template_share"] = template_share
            t0 = clock()
            report = run_search(config, out=out)
            t_end = clock()
            G = s["generations"]
            while rows[-1][2] < chase - 1e-12:
                if clock() - t0 > budget:
                    stopped = (f"below {chase:.4f} after generation {rows[-1][0]}: stopped at the "
                               f"time budget ({budget:.0f} s)")
                    break
                report = app_mod.resume(out, generations=rows[-1][0] + G, progress=False)[1]
                t_end = clock()
            if rows[-1][0] > G:
                stopped = (stopped + "; " if stopped else "") + (
                    f"ran {rows[-1][0]} generations ({G} is the shared budget; then more, "
                    f"resumed {G} at a time, while below {chase:.4f})")
            work = workload_of_cache(RunFolder(out).cache)
    finally:
        search_mod.Search._finish_generation = original_finish
        app_mod.build_report = original_report
    trace, evals, served, invalid = [], 0, 0, 0
    for gen, t, best, ev, hits, _, bad in rows:
        evals += ev
        served += ev + hits
        invalid += bad
        untimed = sum(sec for end, sec in reports if end <= t)
        trace.append((gen, t - t0 - untimed, best, evals, served, invalid))
    return {
        "name": label or f"engine {backend}" + (f" x{workers}" if backend != "serial" else ""),
        "trace": trace,
        "report_seconds": reports[-1][1] if reports else 0.0,
        "cache": True,
        "dedup": sum(r[5] for r in rows if r[0] <= s["generations"]),
        "best": report["best"]["metric"] if report["best"] else float("nan"),
        "best_text": report["best"]["text"] if report["best"] else "",
        "stopped": stopped,
        "workload": work,
    }


def workload_of_cache(path) -> dict:
    """Mean canonical size, weights and fit iterations over every rule the run evaluated."""
    from evo_rules.cache import stored_results

    res = list(stored_results(path))
    n = max(len(res), 1)
    return {"size": sum(r["size"] for r in res) / n,
            "weights": sum(len(r["weights"]) for r in res) / n,
            "iterations": sum(r["iterations"] for r in res) / n}


# ---------------------------------------------------------------- (b) the plain DEAP way

class DeapFitness(base.Fitness):
    weights = (1.0, -1.0)  # (valid answer score, tree length)


class DeapTree(gp.PrimitiveTree):
    def __init__(self, content):
        super().__init__(content)
        self.fitness = DeapFitness()


def _eml(u, v):
    return np.exp(u) - np.log(v)


def _weight():
    return random.uniform(-1.0, 1.0)


def _primitives(ps: gp.PrimitiveSet) -> None:
    ps.addPrimitive(np.add, 2, name="add")
    ps.addPrimitive(np.multiply, 2, name="mul")
    ps.addPrimitive(np.exp, 1, name="exp")
    ps.addPrimitive(np.log, 1, name="log")
    ps.addPrimitive(_eml, 2, name="eml")


def make_psets() -> tuple[gp.PrimitiveSet, gp.PrimitiveSet]:
    """(the evolved set: features as arguments, ephemeral weights, constant 1;
    its compile twin: arguments w (the weight vector), x_color, x_shape)."""
    ps = gp.PrimitiveSet("RULE", len(FEATURES))
    _primitives(ps)
    ps.addEphemeralConstant("e2e_w", _weight)
    ps.addTerminal(1.0, name="one")
    ps.renameArguments(**{f"ARG{i}": f"x_{f}" for i, f in enumerate(FEATURES)})
    fit_ps = gp.PrimitiveSet("RULEFIT", len(FEATURES) + 1)
    _primitives(fit_ps)
    fit_ps.addTerminal(1.0, name="one")
    fit_ps.renameArguments(ARG0="w", **{f"ARG{i + 1}": f"x_{f}" for i, f in enumerate(FEATURES)})
    return ps, fit_ps


def lifted_code(tree: gp.PrimitiveTree) -> tuple[str, list[int]]:
    """Python code of the tree with the i-th ephemeral written as w[i] (PrimitiveTree.__str__'s
    recipe), and the positions of the ephemerals in the tree."""
    index = {}  # tree position of an ephemeral -> its weight index (pre-order)
    string, stack = "", []
    for pos, node in enumerate(tree):
        if isinstance(type(node), gp.MetaEphemeral):
            index[pos] = len(index)
        stack.append((node, pos, []))
        while len(stack[-1][2]) == stack[-1][0].arity:
            prim, p, args = stack.pop()
            string = f"w[{index[p]}]" if p in index else prim.format(*args)
            if not stack:
                break
            stack[-1][2].append(string)
    return string, list(index)


def listwise_loss(s: np.ndarray, width: int, target_index: np.ndarray) -> float:
    """Mean over episodes of -log softmax(scores)[target] (the engine's Listwise.value)."""
    z = s.reshape(-1, width)
    z = z - z.max(axis=1, keepdims=True)
    lp = z[np.arange(z.shape[0]), target_index] - np.log(np.exp(z).sum(axis=1))
    return -float(lp.mean())


class DeapEvaluator:
    def __init__(self, task: SyntheticTask, fit_ps: gp.PrimitiveSet, maxiter: int):
        self.task = task
        self.fit_ps = fit_ps
        self.maxiter = maxiter
        tr = task.batch("train")
        self.width = task.candidates
        self.target = tr.y.reshape(-1, self.width).argmax(axis=1)
        self.xtr = [tr.X[f] for f in FEATURES]
        self.n = tr.n_rows
        self.evaluations = 0
        self.invalid = 0
        self.loss_calls = 0
        self.sum_size = 0
        self.sum_weights = 0
        self.sum_iterations = 0

    def scores(self, func, w, cols) -> np.ndarray:
        out = func(w, *cols)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), cols[0].shape)

    def __call__(self, tree: DeapTree) -> tuple[float, float]:
        self.evaluations += 1
        fitness = self._evaluate(tree)
        self.invalid += fitness[0] <= INVALID
        return fitness

    def _evaluate(self, tree: DeapTree) -> tuple[float, float]:
        code, slots = lifted_code(tree)
        func = gp.compile(code, self.fit_ps)
        w0 = np.array([tree[p].value for p in slots], dtype=np.float64)
        self.sum_size += len(tree)
        self.sum_weights += len(w0)
        with np.errstate(all="ignore"):
            def loss(w):
                self.loss_calls += 1
                s = self.scores(func, w, self.xtr)
                if not np.all(np.isfinite(s)):
                    return PENALTY
                v = listwise_loss(s, self.width, self.target)
                return v if math.isfinite(v) else PENALTY

            if len(w0):
                res = minimize(loss, w0, method="BFGS", options={"maxiter": self.maxiter})
                w = np.asarray(res.x, dtype=np.float64)
                self.sum_iterations += int(res.nit)
                if not np.all(np.isfinite(w)):
                    w = w0
            else:
                w = w0
            s = self.scores(func, w, self.xtr)
            if not np.all(np.isfinite(s)):
                return INVALID, float(len(tree))
            for p, v in zip(slots, w):  # Lamarckian: the tree keeps its fitted weights
                node = copy.copy(tree[p])
                node.value = float(v)
                tree[p] = node
            m = self.task.score("valid", lambda X: self.scores(func, w, [X[f] for f in FEATURES]))
        metric = m[self.task.metric_name]
        return (metric if math.isfinite(metric) else INVALID), float(len(tree))


def run_deap(s: dict, seed: int, budget: float, chase: float, maxiter: int = 20) -> dict:
    """The DEAP run: the same generation budget, then more generations while the best valid
    score is below `chase` (the primary target), up to `budget` seconds."""
    random.seed(seed)
    np.random.seed(seed)
    t0 = clock()
    task = make_task(s)
    ps, fit_ps = make_psets()
    evaluate = DeapEvaluator(task, fit_ps, maxiter)
    limits = [gp.staticLimit(key=operator.attrgetter("height"), max_value=7),
              gp.staticLimit(key=len, max_value=25)]
    tb = base.Toolbox()
    tb.register("expr_mut", gp.genFull, min_=0, max_=2)
    tb.register("mate", gp.cxOnePoint)
    muts = [(0.25, gp.mutUniform, dict(expr=tb.expr_mut, pset=ps)),
            (0.15, gp.mutNodeReplacement, dict(pset=ps)),
            (0.20, gp.mutShrink, {})]
    total = sum(p for p, _, _ in muts)

    def mutate(ind):
        u = random.random() * total
        for p, op, kw in muts:
            if u < p:
                return op(ind, **kw)
            u -= p
        return muts[-1][1](ind, **muts[-1][2])

    tb.register("mutate", mutate)
    for lim in limits:
        tb.decorate("mate", lim)
        tb.decorate("mutate", lim)

    def new_tree():
        while True:
            t = DeapTree(gp.genHalfAndHalf(ps, min_=1, max_=5))
            if len(t) <= 25:
                return t

    mu = s["population"]
    pop = [new_tree() for _ in range(mu)]
    for ind in pop:
        ind.fitness.values = evaluate(ind)
    pop = tools.selNSGA2(pop, mu)  # assigns the crowding distances selTournamentDCD reads

    def record(gen):
        e = evaluate.evaluations
        trace.append((gen, clock() - t0, max(i.fitness.values[0] for i in pop), e, e,
                      evaluate.invalid))

    trace: list[tuple] = []
    record(0)
    stopped, gen = "", 0
    while True:
        if gen >= s["generations"] and trace[-1][2] >= chase - 1e-12:
            break  # generation budget spent, and the primary target met
        if clock() - t0 > budget:
            stopped = (f"below {chase:.4f} after generation {gen}: stopped at the time budget "
                       f"({budget:.0f} s)")
            break
        gen += 1
        parents = tools.selTournamentDCD(pop, len(pop) - len(pop) % 4)
        offspring = algorithms.varOr(parents, tb, mu, cxpb=0.4, mutpb=0.6)
        for ind in offspring:
            if not ind.fitness.valid:
                ind.fitness.values = evaluate(ind)
        pop = tools.selNSGA2(pop + offspring, mu)
        record(gen)
    if gen > s["generations"] or stopped:
        stopped = (stopped + "; " if stopped else "") + (
            f"ran {gen} generations ({s['generations']} is the shared budget; then more while "
            f"below {chase:.4f})")
    best = max(pop, key=lambda i: (i.fitness.values[0], -len(i)))
    return {
        "name": "plain DEAP",
        "trace": trace,
        "report_seconds": 0.0,
        "cache": False,
        "dedup": None,
        "best": best.fitness.values[0],
        "best_text": str(best),
        "stopped": stopped,
        "workload": {"size": evaluate.sum_size / max(evaluate.evaluations, 1),
                     "weights": evaluate.sum_weights / max(evaluate.evaluations, 1),
                     "iterations": evaluate.sum_iterations / max(evaluate.evaluations, 1),
                     "loss_calls": evaluate.loss_calls / max(evaluate.evaluations, 1)},
    }


# ---------------------------------------------------------------- same rules, one evaluation each

def term_to_tree(t, ps: gp.PrimitiveSet, rng: random.Random) -> DeapTree:
    """A canonical term as a DEAP tree of the evolved set: n-ary add/mul as left-nested binary
    chains, each weight an ephemeral drawn like DEAP's (U(-1, 1)), numbers as constants."""
    prims = {p.name: p for p in ps.primitives[ps.ret]}
    args = {a.value: a for a in ps.terminals[ps.ret] if isinstance(a, gp.Terminal)
            and isinstance(a.value, str)}
    eph = next(e for e in ps.terminals[ps.ret] if isinstance(e, gp.MetaEphemeral))
    nodes: list = []

    def rec(u):
        if u.op == "num":
            nodes.append(gp.Terminal(float(u.value), False, object))
        elif u.op == "w":
            e = eph()
            e.value = rng.uniform(-1.0, 1.0)
            nodes.append(e)
        elif u.op == "x":
            nodes.append(args["x_" + str(u.value)])
        else:
            n_prims = len(u.args) - 1 if u.op in ("add", "mul") else 1
            nodes.extend([prims[u.op]] * n_prims)
            for a in u.args:
                rec(a)

    rec(t)
    return DeapTree(nodes)


def same_rules(task: SyntheticTask, n_rules: int, repeats: int, maxiter: int, seed: int) -> dict:
    """Both fitters on the same rules: `n_rules` random rules of the engine's grammar (template
    share 0.5, no duplicates), each fitted on train and scored on valid once per repeat by
    `evaluate_rule` (parse, canonical form, symbolic gradients, program, LM fit, score) and by
    the DEAP evaluator (lift, gp.compile, BFGS fit, score). Passes alternate inside a repeat;
    the ratio is the median over repeats of the per-repeat time ratio."""
    import evo_rules.operators as ops
    from evo_rules.evaluate import evaluate_rule

    g = ops.Grammar(features=FEATURES, max_size=25, max_depth=8, template_share=0.5)
    rng = np.random.default_rng(seed)
    rules, seen = [], set()
    while len(rules) < n_rules:
        r = ops.random_rule(g, rng)
        if r.key not in seen:
            seen.add(r.key)
            rules.append(r)
    ps, fit_ps = make_psets()
    prng = random.Random(seed)
    trees = [term_to_tree(r.term, ps, prng) for r in rules]
    ev = DeapEvaluator(task, fit_ps, maxiter)
    settings = {"max_iter": 20}
    times = {"engine": [], "deap": []}
    scores: dict[str, list] = {}
    for _ in range(repeats):
        t = clock()
        eng = [evaluate_rule(r.text, task, settings) for r in rules]
        times["engine"].append(clock() - t)
        fresh = [copy.deepcopy(tr) for tr in trees]  # same start weights every repeat
        t = clock()
        dp = [ev(tr) for tr in fresh]
        times["deap"].append(clock() - t)
        scores = {"engine": [e["metric"] for e in eng], "deap": [d[0] for d in dp]}
    ratio = common.median([d / e for d, e in zip(times["deap"], times["engine"])])
    both = [(e, d) for e, d in zip(scores["engine"], scores["deap"]) if e > INVALID and d > INVALID]
    return {
        "n": len(rules), "repeats": repeats,
        "size": sum(r.size for r in rules) / len(rules),
        "weights": sum(len(r.params) for r in rules) / len(rules),
        "engine_s": common.median(times["engine"]), "deap_s": common.median(times["deap"]),
        "ratio": ratio,
        "valid": {k: sum(v > INVALID for v in scores[k]) for k in scores},
        "both": len(both),
        "mean_engine": sum(e for e, _ in both) / max(len(both), 1),
        "mean_deap": sum(d for _, d in both) / max(len(both), 1),
        "engine_better": sum(e > d + 1e-12 for e, d in both),
        "deap_better": sum(d > e + 1e-12 for e, d in both),
    }


# ---------------------------------------------------------------- report

def time_to(trace, target):
    for g, t, best, *_ in trace:
        if best is not None and best >= target - 1e-12:
            return t, g
    return None, None


def window(r: dict, generations: int) -> dict:
    """Throughput over generations 0..`generations` (the shared budget) of one run."""
    tr = [row for row in r["trace"] if row[0] <= generations]
    g, t, best, evals, served, invalid = tr[-1]
    t_first = tr[0][1]
    return {"generations": g, "seconds": t, "best": best, "evals": evals, "served": served,
            "invalid": invalid / evals if evals else float("nan"),
            "gens_per_min": 60.0 * g / (t - t_first) if g and t > t_first else float("nan"),
            "evals_per_s": evals / t, "served_per_s": served / t,
            "hit_rate": (served - evals) / served if r["cache"] and served else None}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (under a minute)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", type=float, default=None,
                    help="primary target valid answer score (default: the oracle's on valid)")
    ap.add_argument("--budget", type=float, default=None,
                    help="time budget, seconds, for a run still below the primary target after "
                         "the shared generation budget (default 420; --quick 10)")
    ap.add_argument("--maxiter", type=int, default=20, help="DEAP's BFGS iteration cap")
    ap.add_argument("--no-process", action="store_true", help="skip the process-backend run")
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip the engine run with template_share 0")
    args = ap.parse_args(argv)
    if minimize is None:
        sys.exit("scipy is missing: `python -m pip install scipy` (only this benchmark's DEAP "
                 "baseline uses it; the engine does not)")
    s = dict(QUICK if args.quick else FULL)
    if args.budget is not None:
        s["budget"] = args.budget
    if args.no_process:
        s["process"] = False
    if args.no_ablation:
        s["ablation"] = False
    G = s["generations"]

    task = make_task(s)
    oracle = task.oracle("valid")
    linear = fit_and_score(task, linear_rule_text(task), "valid")["answer_score"]
    product = task.score("valid", lambda X: X["color"] * X["shape"])["answer_score"]
    mid = 0.5 * (linear + oracle)
    primary = oracle if args.target is None else args.target
    targets = [("primary", primary)] + [(n, v) for n, v in
                                        (("midpoint", mid), ("0.75", 0.75), ("oracle", oracle))
                                        if v != primary]
    print(f"end-to-end search, and-match: n_train {s['n_train']} episodes x {task.candidates} "
          f"candidates, n_valid {s['n_valid']}; population {s['population']}, {G} generations "
          f"after the initial population, seed {args.seed}" + ("  [--quick]" if args.quick else ""))
    print(f"valid answer score: fitted linear rule {linear:.4f}, oracle {oracle:.4f}, midpoint "
          f"{mid:.4f}; the weightless (mul x.color x.shape) scores {product:.4f}")
    print(f"targets: primary {primary:.4f}" + (" (the oracle's)" if args.target is None else "")
          + "".join(f", {n} {v:.4f}" for n, v in targets[1:]))
    if args.target is None:
        print(f"  (primary = the oracle's score, not the midpoint: the midpoint and 0.75 are below "
              f"what the weightless product scores, so random initialisation meets them in "
              f"generation 0 or 1 on every side and they time start-up, not search)")
    print(f"DEAP side: scipy {scipy.__version__} minimize BFGS maxiter {args.maxiter}, 2-point "
          f"numerical gradient. Time budget past the shared {G} generations while below the "
          f"primary target: {s['budget']:.0f} s per run")

    # the DEAP side fits the engine's listwise loss, and its lifted code is the tree's function
    tr = task.batch("train")
    probe = np.random.default_rng(0).normal(size=tr.n_rows)
    ev = DeapEvaluator(task, make_psets()[1], 1)
    assert abs(listwise_loss(probe, ev.width, ev.target) - Listwise(tr.y, tr.groups).value(probe)) < 1e-9
    check_lifted(tr)
    # warm-up outside the clocks: load the engine's numba kernel from its disk cache
    t = clock()
    fit_and_score(task, "(eml (mul w x.color) (add 1 (exp (mul w x.shape))))", "valid")
    print(f"engine warm-up (numba kernel load, once per process; not timed below): {clock() - t:.2f} s")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    B = s["budget"]
    runs = [run_engine(s, args.seed, "serial", primary, B)]
    if s["process"]:
        runs.append(run_engine(s, args.seed, "process", primary, B, workers=2))
    if s["ablation"]:  # the engine without its template prior: random trees only, like DEAP's
        runs.append(run_engine(s, args.seed, "serial", primary, B, template_share=0.0,
                               label="engine serial, tmpl 0"))
    runs.append(run_deap(s, args.seed, B, primary, args.maxiter))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")

    for r in runs:
        extra = r["report_seconds"]
        print(f"{r['name']}: generations 0..{r['trace'][-1][0]} in {r['trace'][-1][1]:.1f} s"
              + (f" (+{extra:.1f} s for the run report: test metrics, baselines)" if extra > 0.05 else ""))
        steps, last = [], None
        for row in r["trace"]:
            if row[2] != last:
                steps.append(f"{row[0]}:{row[2]:.3f}")
                last = row[2]
        print("  best valid (generation:score where it changes): " + " ".join(steps))
        print(f"  best {r['best']:.4f}  {r['best_text'][:120]}")
        if r["stopped"]:
            print(f"  note: {r['stopped']}")
    print()
    W = [window(r, G) for r in runs]
    width = 24
    print(f"{'':24s}" + "".join(f"{r['name']:>{width}s}" for r in runs))

    def row(label, cells):
        print(f"{label:24s}" + "".join(f"{c:>{width}s}" for c in cells))

    for name, v in targets:
        cells = []
        for r in runs:
            t, g = time_to(r["trace"], v)
            cells.append("never" if t is None else f"{t:.2f} s (gen {g})")
        row(f"to {v:.4f} ({name})", cells)
    row(f"seconds, gens 0..{G}", [f"{w['seconds']:.2f}" for w in W])
    row(f"best valid at gen {G}", [f"{w['best']:.4f}" for w in W])
    row("generations / min", [f"{w['gens_per_min']:.1f}" for w in W])
    row("evaluations / s", [f"{w['evals_per_s']:.1f}" for w in W])
    row("individuals / s", [f"{w['served_per_s']:.1f}" for w in W])
    row("evaluations", [str(w["evals"]) for w in W])
    row("invalid (non-finite)", [f"{w['invalid']:.1%}" for w in W])
    row("cache hit rate", ["-" if w["hit_rate"] is None else f"{w['hit_rate']:.1%}" for w in W])
    row("in-generation dups", ["-" if r["dedup"] is None else str(r["dedup"]) for r in runs])
    row("mean rule size *", [f"{r['workload']['size']:.1f}" for r in runs])
    row("mean weights fitted *", [f"{r['workload']['weights']:.2f}" for r in runs])
    row("mean fit iterations *", [f"{r['workload']['iterations']:.1f}" for r in runs])
    print(f"(over generations 0..{G}; generations / min counts generations 1..{G}, after the "
          "initial population; evaluations = rules fitted and scored; individuals = "
          "evaluations + cache hits; dups = children dropped as already seen this generation; "
          "* = per evaluated rule over the whole run: canonical size for the engine, tree "
          "length for DEAP (binary add/mul: a little longer); LM iterations vs BFGS iterations, "
          f"DEAP's {deap_loss_calls(runs):.1f} loss calls per evaluation include the "
          "finite-difference gradients)")

    deap, wd = runs[-1], W[-1]
    print("\nratios DEAP / engine (> 1: the engine is faster):")
    for r, w in zip(runs[:-1], W[:-1]):
        parts = []
        for name, v in targets:
            td, _ = time_to(deap["trace"], v)
            te, _ = time_to(r["trace"], v)
            if te is None:
                parts.append(f"to {v:.4f}: this engine run never reached it"
                             + (f" (DEAP: {td:.1f} s)" if td is not None else ""))
            elif td is None:
                parts.append(f"to {v:.4f}: > {deap['trace'][-1][1] / te:.1f}x (a lower bound: DEAP "
                             f"never reached it in {deap['trace'][-1][1]:.0f} s)")
            else:
                parts.append(f"to {v:.4f}: {td / te:.2f}x")
        print(f"  {r['name']}: time " + "; ".join(parts))
        print(f"  {'':{len(r['name'])}s}  generations/min {w['gens_per_min'] / wd['gens_per_min']:.2f}x, "
              f"evaluations/s {w['evals_per_s'] / wd['evals_per_s']:.2f}x, "
              f"individuals/s {w['served_per_s'] / wd['served_per_s']:.2f}x")
    print("wanted: >= 20x to the primary target")

    sr = same_rules(task, s["same_rules"], s["repeats"], args.maxiter, args.seed)
    print(f"\nsame rules, one evaluation each (fit on train + score on valid): {sr['n']} random "
          f"rules of the engine's grammar (mean canonical size {sr['size']:.1f}, "
          f"{sr['weights']:.2f} weights), median of {sr['repeats']} alternating passes")
    print(f"  engine evaluate_rule {sr['engine_s']:.2f} s ({sr['n'] / sr['engine_s']:.1f} rules/s); "
          f"DEAP compile + BFGS + score {sr['deap_s']:.2f} s ({sr['n'] / sr['deap_s']:.1f} rules/s): "
          f"ratio DEAP / engine {sr['ratio']:.2f}x")
    print(f"  valid (finite) fits: engine {sr['valid']['engine']}, DEAP {sr['valid']['deap']}; on the "
          f"{sr['both']} both fitted, mean valid answer score engine {sr['mean_engine']:.4f}, DEAP "
          f"{sr['mean_deap']:.4f}; engine better on {sr['engine_better']}, DEAP on "
          f"{sr['deap_better']}")


def deap_loss_calls(runs) -> float:
    return next((r["workload"]["loss_calls"] for r in runs if "loss_calls" in r["workload"]),
                float("nan"))


def check_lifted(tr) -> None:
    """The lifted, weight-vector code computes what gp.compile of the tree itself computes."""
    ps, fit_ps = make_psets()
    state = random.getstate()
    random.seed(12345)
    cols = [tr.X[f][:64] for f in FEATURES]
    with np.errstate(all="ignore"):
        for _ in range(50):
            t = DeapTree(gp.genHalfAndHalf(ps, min_=1, max_=4))
            code, slots = lifted_code(t)
            w = np.array([t[p].value for p in slots])
            a = np.broadcast_to(np.asarray(gp.compile(code, fit_ps)(w, *cols), float), cols[0].shape)
            b = np.broadcast_to(np.asarray(gp.compile(t, ps)(*cols), float), cols[0].shape)
            assert np.array_equal(a, b, equal_nan=True), (str(t), code)
    random.setstate(state)


if __name__ == "__main__":
    main()
