"""Kernel throughput: this project's interpreter against DEAP, a NumPy tree walk and fused numba.

    PYTHONPATH=. python benchmarks/kernels.py            # 500 rules, 1,000 and 100,000 rows
    PYTHONPATH=. python benchmarks/kernels.py --quick    # 60 rules: a smoke run

Everything runs on one thread (see benchmarks/common.py, imported first). Rules: see
benchmarks/common.py (DEAP genHalfAndHalf over add/mul/exp/log/eml, canonical size 15..25,
finite on the data). For every row count, one "pass" evaluates every rule once with one engine;
passes of all engines are interleaved inside each repeat, and each ratio is the median over
repeats of the per-repeat ratio, so machine noise hits the peers alike.

Engines (node-evaluations/s = canonical rule size x rows / seconds, summed over rules):
  forward         Rule.run(F, w, jacobian=False) on a prepared feature matrix F
  evaluate        Rule.evaluate(X dict, w): builds F from the dict on every call
  fwd+jacobian    Rule.run(F, w, jacobian=True): score and d score / d w_k for every weight
  deap c+e        gp.compile(tree, pset) (string eval, as DEAP does for every individual of
                  every generation) then the lambda called on NumPy columns (vectorized)
  deap eval       the same lambdas, compiled beforehand: evaluation alone
  numpy walk      evo_rules.reference.tree_eval: recursive NumPy tree walk
  fused numba     per rule, generated Python source with one loop over rows and the whole
                  expression inlined, njit-compiled (compile time excluded, reported apart),
                  same contract as the kernel: writes the scores and returns all-finite
Ratios:
  forward / fused          fused time / forward time (>= 0.8 wanted at 1,000 rows)
  forward / deap c+e       DEAP compile+eval time / forward time (>= 6 wanted at 1,000 rows)
  jacobian / forward       (rule evaluations with Jacobian per second) / (rule evaluations per
                           second) = forward time / jacobian time (>= 0.6 wanted)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (first: pins thread pools before numpy/numba load)
from benchmarks.common import FEATURES, clock, make_data, make_rules, median  # noqa: E402

import numpy as np  # noqa: E402
from deap import gp  # noqa: E402
from numba import njit  # noqa: E402

from evo_rules import kernels as K  # noqa: E402
from evo_rules.reference import tree_eval  # noqa: E402
from evo_rules.terms import Term  # noqa: E402


# ---------------------------------------------------------------- fused numba ceiling

def fused_source(t: Term, features: tuple[str, ...], n_weights: int) -> str:
    """Python source of one njit-able function (F, w, out) -> all finite, for term t."""
    feat_index = {f: i for i, f in enumerate(features)}
    body: list[str] = []
    memo: dict[str, str] = {}

    def emit(expr: str) -> str:
        v = memo.get(expr)
        if v is None:
            v = f"v{len(memo)}"
            memo[expr] = v
            body.append(f"        {v} = {expr}")
        return v

    def rec(u: Term) -> str:
        if u.op == "num":
            return repr(float(u.value))
        if u.op == "w":
            return "w" + str(u.value)
        if u.op == "x":
            return emit(f"F[{feat_index[str(u.value)]}, r]")
        args = [rec(a) for a in u.args]
        if u.op in ("add", "mul"):
            sym = " + " if u.op == "add" else " * "
            acc = args[0]
            for a in args[1:]:
                acc = emit(f"{acc}{sym}{a}")
            return acc
        if u.op == "exp":
            return emit(f"np.exp({args[0]})")
        if u.op == "log":
            return emit(f"np.log({args[0]})")
        if u.op == "eml":
            return emit(f"np.exp({args[0]}) - np.log({args[1]})")
        raise ValueError(u.op)

    res = rec(t)
    head = ["def fused(F, w, out):", "    ok = True"]
    head += [f"    w{k} = w[{k}]" for k in range(n_weights)]
    head += ["    for r in range(F.shape[1]):"]
    tail = [f"        out[r] = {res}", f"        if not np.isfinite({res}):", "            ok = False",
            "    return ok"]
    return "\n".join(head + body + tail)


def compile_fused(br):
    r = br.rule
    src = fused_source(r.term, r.features, len(r.params))
    ns: dict = {"np": np}
    exec(compile(src, f"<fused {r.key[:8]}>", "exec"), ns)
    t0 = time.perf_counter()
    fn = njit("b1(f8[:, ::1], f8[::1], f8[::1])", cache=False, boundscheck=False,
              fastmath=False)(ns["fused"])
    return fn, time.perf_counter() - t0


# ---------------------------------------------------------------- passes

def make_passes(rules, X, pset, fused, n):
    Fs = [br.rule.feature_matrix(X) for br in rules]
    cols = [X[f] for f in FEATURES]
    wds = [br.wdict for br in rules]
    lambdas = [gp.compile(br.deap, pset) for br in rules]
    outs = [np.empty(n) for _ in rules]

    def forward():
        for br, F in zip(rules, Fs):
            br.rule.run(F, br.w, False)

    def evaluate():
        for br in rules:
            br.rule.evaluate(X, br.w)

    def jacobian():
        for br, F in zip(rules, Fs):
            br.rule.run(F, br.w, True)

    def deap_ce():
        for br in rules:
            gp.compile(br.deap, pset)(*cols)

    def deap_e():
        for f in lambdas:
            f(*cols)

    def walk():
        for br, wd in zip(rules, wds):
            tree_eval(br.rule.term, X, wd, n)

    def fused_pass():
        for (fn, _), F, br, out in zip(fused, Fs, rules, outs):
            fn(F, br.w, out)

    return {
        "forward": forward,
        "evaluate": evaluate,
        "fwd+jacobian": jacobian,
        "deap c+e": deap_ce,
        "deap eval": deap_e,
        "numpy walk": walk,
        "fused numba": fused_pass,
    }


def check_agreement(rules, X, pset, fused, n):
    """All engines compute the same scores (max relative difference over rules)."""
    Fs = [br.rule.feature_matrix(X) for br in rules]
    cols = [X[f] for f in FEATURES]
    worst = {"deap": 0.0, "numpy walk": 0.0, "fused": 0.0, "jacobian[0]": 0.0}
    for br, F, (fn, _) in zip(rules, Fs, fused):
        ref, ok = br.rule.run(F, br.w, False)
        assert ok, br.rule.text
        ref = ref[0]
        scale = np.abs(ref) + 1e-300
        got = {
            "deap": gp.compile(br.deap, pset)(*cols),
            "numpy walk": tree_eval(br.rule.term, X, br.wdict, n),
            "jacobian[0]": br.rule.run(F, br.w, True)[0][0],
        }
        out = np.empty(n)
        assert fn(F, br.w, out)
        got["fused"] = out
        for k, v in got.items():
            v = np.broadcast_to(v, ref.shape)
            worst[k] = max(worst[k], float(np.max(np.abs(v - ref) / np.maximum(scale, 1e-12))))
    return worst


def bench_rows(rules, pset, fused, n, repeats, target_s):
    X = make_data(n, seed=1)
    # the rules were chosen finite on other rows: keep those finite here too
    keep = [i for i, br in enumerate(rules) if br.rule.run(br.rule.feature_matrix(X), br.w, False)[1]]
    rules = [rules[i] for i in keep]
    fused = [fused[i] for i in keep]
    agree = check_agreement(rules, X, pset, fused, n)
    passes = make_passes(rules, X, pset, fused, n)
    nodes = sum(br.rule.size for br in rules) * n
    # calibrate inner repetitions so one timed pass lasts about target_s
    inner = {}
    for name, fn in passes.items():
        fn()  # warm
        t0 = clock()
        fn()
        dt = clock() - t0
        inner[name] = max(1, int(round(target_s / max(dt, 1e-9))))
    times: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(repeats):
        for name, fn in passes.items():
            k = inner[name]
            t0 = clock()
            for _ in range(k):
                fn()
            times[name].append((clock() - t0) / k)
    return rules, nodes, times, agree


def ratio(times, num, den):
    """median over repeats of times[num] / times[den]"""
    return median([a / b for a, b in zip(times[num], times[den])])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 rules, fewer repeats")
    ap.add_argument("--rules", type=int, default=None)
    ap.add_argument("--rows", type=int, nargs="*", default=[1_000, 100_000])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n_rules = args.rules or (60 if args.quick else 500)
    repeats = args.repeats or (3 if args.quick else 5)
    target_s = 0.05 if args.quick else 0.15

    t0 = clock()
    X_gen = make_data(20_000, seed=0)
    rules, stats = make_rules(n_rules, X_gen, seed=args.seed)
    t_gen = clock() - t0
    sizes = [br.rule.size for br in rules]
    n_trans = [br.rule.text.count("(exp") + br.rule.text.count("(log") + 2 * br.rule.text.count("(eml")
               for br in rules]
    print(f"rules: {len(rules)} (generated {stats['generated']} DEAP trees in {t_gen:.1f}s; "
          f"size mean {np.mean(sizes):.1f}, min {min(sizes)}, max {max(sizes)}; "
          f"weights mean {np.mean([len(b.rule.params) for b in rules]):.2f}; "
          f"exp/log calls per rule mean {np.mean(n_trans):.2f})")
    print(f"kernel: block={K.BLOCK} vector math: {getattr(K, 'VECTOR_MATH', 'none')}")

    pset = common.pset()
    # warm the interpreter (numba cache) before anything is timed
    br0 = rules[0]
    br0.rule.run(br0.rule.feature_matrix(X_gen), br0.w, True)
    br0.rule.run(br0.rule.feature_matrix(X_gen), br0.w, False)
    t0 = clock()
    fused = [compile_fused(br) for br in rules]
    t_fc = clock() - t0
    ct = [c for _, c in fused]
    print(f"fused numba compile: {np.mean(ct) * 1e3:.0f} ms per rule (median {median(ct) * 1e3:.0f} ms, "
          f"total {t_fc:.1f}s for {len(rules)} rules)")
    ce = []
    for br in rules[:100]:
        t1 = clock()
        gp.compile(br.deap, pset)
        ce.append(clock() - t1)
    print(f"deap gp.compile: {np.mean(ce) * 1e6:.0f} us per rule; "
          f"program compile (Rule.program, forward+gradients): "
          f"{_program_compile_us(rules[:100]):.0f} us per rule")

    for n in args.rows:
        t1 = clock()
        reps = repeats if n <= 10_000 else max(2, repeats - 2)
        kept, nodes, times, agree = bench_rows(rules, pset, fused, n, reps, target_s)
        print()
        print(f"== {n:,} rows, {len(kept)} rules, {reps} repeats, one thread "
              f"({clock() - t1:.0f}s) ==")
        print("max relative difference vs forward: " +
              ", ".join(f"{k} {v:.1e}" for k, v in agree.items()))
        print(f"{'engine':<14}{'Mnode-evals/s':>15}{'us/rule':>10}{'rules/s':>11}  vs forward")
        for name, ts in times.items():
            t = median(ts)
            print(f"{name:<14}{nodes / t / 1e6:>15.1f}{t / len(kept) * 1e6:>10.1f}"
                  f"{len(kept) / t:>11.0f}  {ratio(times, name, 'forward'):>6.2f}x time")
        r1 = ratio(times, "fused numba", "forward")
        r2 = ratio(times, "deap c+e", "forward")
        r3 = ratio(times, "forward", "fwd+jacobian")
        print(f"ratio forward / fused ceiling (throughput)        : {r1:6.2f}   (target >= 0.8 at 1,000 rows)")
        print(f"ratio forward / DEAP compile+eval (throughput)    : {r2:6.2f}   (target >= 6 at 1,000 rows)")
        print(f"ratio forward / DEAP eval only                    : {ratio(times, 'deap eval', 'forward'):6.2f}")
        print(f"ratio forward / NumPy tree walk                   : {ratio(times, 'numpy walk', 'forward'):6.2f}")
        print(f"ratio fwd+jacobian / forward (rule evals/s each)  : {r3:6.2f}   (target >= 0.6)")
        print(f"ratio evaluate / forward (dict->matrix included)  : {ratio(times, 'forward', 'evaluate'):6.2f}")


def _program_compile_us(rules) -> float:
    from evo_rules import parse
    t0 = clock()
    for br in rules:
        r = parse(br.rule.text)
        r.program  # noqa: B018  (symbolic gradients + compile to an instruction program)
    return (clock() - t0) / len(rules) * 1e6


if __name__ == "__main__":
    main()
