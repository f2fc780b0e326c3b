"""Kernel throughput: this project's interpreter against DEAP, a NumPy tree walk, Operon and
hand-fused numba.

    PYTHONPATH=. python benchmarks/kernels.py            # 500 rules, 1,000 and 100,000 rows
    PYTHONPATH=. python benchmarks/kernels.py --quick    # 60 rules: a smoke run (~40 s)
    EVO_RULES_VECTOR_MATH=avx2 PYTHONPATH=. python benchmarks/kernels.py   # as on an AVX2-only CPU

The kernel variant (evo_rules.kernels: libmvec AVX-512, libmvec AVX2 or scalar libm) is the one
the engine picks at import, the widest the CPU has; EVO_RULES_VECTOR_MATH=avx2 (or 0) caps it,
which is how the AVX2-only figures are measured on an AVX-512 machine.

Everything runs on one thread (benchmarks/common.py, imported first, pins the thread pools).
Rules: benchmarks/common.py (DEAP genHalfAndHalf over add/mul/exp/log/eml, canonical size
15..25, finite on the data, the same function and weights in every engine). At 1,000 rows all
rules are timed; at 100,000 rows the first --big-rules of them. A "pass" evaluates every rule
once with one engine. In every repeat each engine's pass is timed right after a pass of its
reference engine (forward for most), and a ratio is the median over repeats of those adjacent
time ratios: the machine is shared, and load that comes and goes then hits both alike.

Engines (node-evaluations/s = canonical rule size x rows / seconds, summed over rules):
  forward         Rule.run(F, w, jacobian=False) on a prepared feature matrix F
  evaluate        Rule.evaluate(X dict, w): also builds F from the dict on every call
  fwd+jacobian    Rule.run(F, w, jacobian=True): score and d score / d w_k for every weight
  forward V,      every other kernel variant V this machine has (avx2, scalar: narrower vector
  fwd+jac V         math, or libm exp/log one at a time): the effect of vector width, side by side
  deap c+e        gp.compile(tree, pset) (string eval, as DEAP does for every individual of
                  every generation) then the lambda called on NumPy columns (vectorized)
  deap eval       the same lambdas, compiled beforehand: evaluation alone
  numpy walk      evo_rules.reference.tree_eval: recursive NumPy tree walk
  operon p+e,     optional (if pyoperon imports): InfixParser.Parse + Evaluate, and Evaluate of
  operon eval       trees parsed beforehand. The pip build of pyoperon computes in float32.
  fused row       per rule, generated source with one loop over rows and the expression
                  inlined (numba's scalar libm exp/log), njit-compiled
  fused blocked   per rule, generated source running the rule's program block by block like
                  the kernel but with no dispatch, arithmetic chains fused into single loops,
                  and the kernel's own exp/log (its libmvec variant): the ceiling for this design
  Fused code: compile time excluded from throughput and reported apart; same contract as the
  kernel (writes the scores, returns all-finite); compiled for the first --fused rules only
  (it takes 0.2-1 s a rule), and compared with "forward [sub]", the kernel on those rules.
Ratios:
  forward / fused ceiling  best fused time / forward time (>= 0.8 wanted at 1,000 rows)
  forward / deap c+e       DEAP compile+eval time / forward time (>= 6 wanted at 1,000 rows)
  forward / deap eval      DEAP eval-only (NumPy ufuncs) time / forward time (>= 1.2 wanted at
                           1,000 rows on AVX-512; NumPy's own exp/log use AVX-512 there)
  fwd+jacobian / forward   (rule evaluations with Jacobian per second) / (rule evaluations per
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

import numba  # noqa: E402
import numpy as np  # noqa: E402
from deap import gp  # noqa: E402
from numba import njit  # noqa: E402

from evo_rules import kernels as K  # noqa: E402
from evo_rules.reference import tree_eval  # noqa: E402
from evo_rules.terms import Term  # noqa: E402

try:  # optional peer: Operon's C++ evaluator (pip install pyoperon; the pip build is float32)
    import pyoperon  # noqa: E402
except Exception:  # pragma: no cover - optional
    pyoperon = None


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


def fused_blocked_source(prog, vector: bool) -> str:
    """Source of a per-rule function (F, w, out) -> all finite that runs the rule's forward
    program block by block like the interpreter, but with no dispatch: features are read
    straight from F, every chain of add/mul/sub/neg between exp/log calls is one fused loop whose
    temporaries stay in registers, and exp/log are the kernel's own block-math functions (libmvec
    when the kernel uses it). The practical ceiling for a blocked, vector-math evaluator."""
    code, A, Bs, C = prog.code, prog.arg_a, prog.arg_b, prog.consts
    n = len(code)
    uses = [0] * n
    for i in range(n):
        if code[i] in (K.ADD, K.SUB, K.MUL):
            uses[A[i]] += 1
            uses[Bs[i]] += 1
        elif code[i] not in (K.CONST, K.WEIGHT, K.FEAT):
            uses[A[i]] += 1
    expr: dict[int, str] = {}
    rows: dict[int, int] = {}  # slot -> buffer row
    pre: list[str] = []
    blk: list[str] = []

    def row_of(i: int) -> int:
        if i not in rows:
            rows[i] = len(rows)
        return rows[i]

    def materialize(i: int) -> int:
        """Make slot i a buffer row (one fused loop computing its expression)."""
        if i in rows:
            return rows[i]
        k = row_of(i)
        blk.append(f"        for r in range(m4):\n            buf[{k}, r] = {expr[i]}")
        expr[i] = f"buf[{k}, r]"
        return k

    for i in range(n):
        op = code[i]
        if op == K.CONST:
            expr[i] = repr(float(C[i]))
        elif op == K.WEIGHT:
            pre.append(f"    c{i} = w[{A[i]}]")
            expr[i] = f"c{i}"
        elif op == K.FEAT:
            k = row_of(i)  # padded copy only when an exp/log reads it; else read F directly
            blk.append(f"        for r in range(m):\n            buf[{k}, r] = F[{A[i]}, start + r]\n"
                       f"        for r in range(m, m4):\n            buf[{k}, r] = 1.0")
            expr[i] = f"buf[{k}, r]"
        elif op in (K.ADD, K.SUB, K.MUL):
            sym = {K.ADD: "+", K.SUB: "-", K.MUL: "*"}[op]
            expr[i] = f"({expr[A[i]]} {sym} {expr[Bs[i]]})"
            if uses[i] > 1 or len(expr[i]) > 400:
                materialize(i)
        elif op == K.NEG:
            expr[i] = f"(-{expr[A[i]]})"
        elif op in (K.EXP, K.LOG):
            src = materialize(A[i])
            k = row_of(i)
            fn = {K.EXP: "exp", K.LOG: "log"}[op]
            blk.append(f"        for r in range(0, m4, {K.LANES}):\n            v{fn}(buf, {k}, {src}, r)"
                       if vector else
                       f"        for r in range(m4):\n            buf[{k}, r] = np.{fn}(buf[{src}, r])")
            expr[i] = f"buf[{k}, r]"
        else:  # softplus / sigmoid / recip do not occur in forward programs of these rules
            raise NotImplementedError(K.OPNAMES[op])
    res = expr[int(prog.outputs[0])]
    lines = ["def fusedb(F, w, out):", "    n = F.shape[1]",
             f"    buf = np.empty(({max(len(rows), 1)}, {K.BLOCK}))", "    bad = False"] + pre
    lines += [f"    for start in range(0, n, {K.BLOCK}):",
              f"        m = min({K.BLOCK}, n - start)",
              f"        m4 = (m + {K.LANES - 1}) // {K.LANES} * {K.LANES}"] + blk
    lines += ["        for r in range(m):", f"            v = {res}", "            out[start + r] = v",
              "            bad |= (v - v) != 0.0", "    return not bad"]
    return "\n".join(lines)


def compile_fused_blocked(br):
    vec = getattr(K, "VECTOR_MATH", False)
    src = fused_blocked_source(br.rule.forward_program, vec)
    calls = getattr(K, "VECTOR_CALLS", {}).get(getattr(K, "VARIANT", None))
    if calls is None:  # a kernels module from before the variants: AVX2 only
        calls = {"exp": getattr(K, "_vexp4", None), "log": getattr(K, "_vlog4", None)}
    ns: dict = {"np": np, "vexp": calls["exp"], "vlog": calls["log"]}
    exec(compile(src, f"<fusedb {br.rule.key[:8]}>", "exec"), ns)
    t0 = time.perf_counter()
    fn = njit("b1(f8[:, ::1], f8[::1], f8[::1])", cache=False, boundscheck=False,
              error_model="numpy", fastmath=False)(ns["fusedb"])
    return fn, time.perf_counter() - t0


def operon_infix(t: Term) -> str:
    """Canonical term -> Operon infix text (features x.a.. -> X1..; weights as numbers)."""
    if t.op == "num":
        return f"({float(t.value)!r})"
    if t.op == "x":
        return f"X{FEATURES.index(str(t.value)) + 1}"
    if t.op in ("add", "mul"):
        sym = " + " if t.op == "add" else " * "
        return "(" + sym.join(operon_infix(a) for a in t.args) + ")"
    if t.op in ("exp", "log"):
        return f"{t.op}({operon_infix(t.args[0])})"
    if t.op == "eml":
        return f"(exp({operon_infix(t.args[0])}) - log({operon_infix(t.args[1])}))"
    raise ValueError(t.op)


def operon_text(br) -> str:
    return operon_text_with(br.rule.term, br.wdict)


def operon_text_with(t: Term, values: dict[str, float]) -> str:
    """Operon infix of term t with each weight written as the number values[name]."""
    from evo_rules.terms import num

    def subst(u: Term) -> Term:
        if u.op == "w":
            return num(values["w" + str(u.value)])
        return Term(u.op, tuple(subst(a) for a in u.args), u.value) if u.args else u

    return operon_infix(subst(t))


class OperonData:
    def __init__(self, X):
        M = np.asfortranarray(np.column_stack([X[f] for f in FEATURES]))
        self.ds = pyoperon.Dataset(M)
        self.vars = {v.Name: v.Hash for v in self.ds.Variables}
        self.range = pyoperon.Range(0, M.shape[0])


# ---------------------------------------------------------------- passes

def this_variant() -> str:
    """The kernel variant Rule.run uses (kernels from before the variants: libmvec AVX2 or libm)."""
    return getattr(K, "VARIANT", "avx2" if getattr(K, "VECTOR_MATH", False) else "libm")


def other_kernels() -> list[tuple[str, object]]:
    """(variant, run_program) of every other kernel variant this machine runs, widest first."""
    if hasattr(K, "kernel"):
        return [(v, K.kernel(v)) for v in K.AVAILABLE if v != K.VARIANT]
    return [("libm", K._run_program_scalar)] if getattr(K, "VECTOR_MATH", False) else []


def _run_with(kernel, rule, F, w, jacobian):
    prog = rule.program if jacobian else rule.forward_program
    out = np.empty((len(prog.outputs), F.shape[1]))
    return kernel(prog.code, prog.arg_a, prog.arg_b, prog.consts, F, w, prog.outputs, out)


def make_passes(rules, sub, fused, X, pset, n):
    """name -> (function running one pass, rules in the pass, reference engine timed right
    before it in every repeat). `sub`: the rules with fused code."""
    Fs = [br.rule.feature_matrix(X) for br in rules]
    cols = [X[f] for f in FEATURES]
    wds = [br.wdict for br in rules]
    lambdas = [gp.compile(br.deap, pset) for br in rules]
    sub_F = [br.rule.feature_matrix(X) for br in sub]
    out = np.empty(n)

    def forward():
        for br, F in zip(rules, Fs):
            br.rule.run(F, br.w, False)

    def evaluate():
        for br in rules:
            br.rule.evaluate(X, br.w)

    def jacobian():
        for br, F in zip(rules, Fs):
            br.rule.run(F, br.w, True)

    def with_kernel(kernel, jac):
        def go():
            for br, F in zip(rules, Fs):
                _run_with(kernel, br.rule, F, br.w, jac)
        return go

    def deap_ce():
        for br in rules:
            gp.compile(br.deap, pset)(*cols)

    def deap_e():
        for f in lambdas:
            f(*cols)

    def walk():
        for br, wd in zip(rules, wds):
            tree_eval(br.rule.term, X, wd, n)

    def forward_sub():
        for br, F in zip(sub, sub_F):
            br.rule.run(F, br.w, False)

    def fused_pass(which):
        fns = [fused[br.rule.key][which] for br in sub]

        def go():
            for fn, br, F in zip(fns, sub, sub_F):
                fn(F, br.w, out)
        return go

    N, S = len(rules), len(sub)
    passes = {
        "forward": (forward, N, None),
        "evaluate": (evaluate, N, "forward"),
        "fwd+jacobian": (jacobian, N, "forward"),
    }
    for name, kern in other_kernels():
        passes[f"forward {name}"] = (with_kernel(kern, False), N, "forward")
        passes[f"fwd+jac {name}"] = (with_kernel(kern, True), N, "fwd+jacobian")
    passes.update({
        "deap c+e": (deap_ce, N, "forward"),
        "deap eval": (deap_e, N, "forward"),
        "numpy walk": (walk, N, "forward"),
    })
    if pyoperon is not None:
        od = OperonData(X)
        texts = [operon_text(br) for br in rules]
        trees = [pyoperon.InfixParser.Parse(t, od.vars) for t in texts]

        def operon_pe():
            for t in texts:
                pyoperon.Evaluate(pyoperon.InfixParser.Parse(t, od.vars), od.ds, od.range)

        def operon_e():
            for tr in trees:
                pyoperon.Evaluate(tr, od.ds, od.range)

        passes["operon p+e"] = (operon_pe, N, "forward")
        passes["operon eval"] = (operon_e, N, "forward")
    if S:
        passes.update({
            "forward [sub]": (forward_sub, S, None),
            "fused row": (fused_pass(0), S, "forward [sub]"),
            "fused blocked": (fused_pass(1), S, "forward [sub]"),
        })
    return passes


def check_agreement(rules, sub, fused, X, pset, n):
    """All engines compute the same scores: max over rules and rows of |v - forward| / |forward|
    (differences come from rounding in exp(u) - log(v) close to zero and from libmvec vs libm)."""
    worst: dict[str, float] = {}

    def note(k, v, ref):
        v = np.broadcast_to(v, ref.shape)
        d = float(np.max(np.abs(v - ref) / np.maximum(np.abs(ref), 1e-12)))
        worst[k] = max(worst.get(k, 0.0), d)

    cols = [X[f] for f in FEATURES]
    subkeys = {br.rule.key for br in sub}
    od = OperonData(X) if pyoperon is not None else None
    operon_err = []
    for br in rules:
        F = br.rule.feature_matrix(X)
        res, ok = br.rule.run(F, br.w, False)
        assert ok, br.rule.text
        ref = res[0]
        note("deap", gp.compile(br.deap, pset)(*cols), ref)
        note("numpy walk", tree_eval(br.rule.term, X, br.wdict, n), ref)
        note("jacobian[0]", br.rule.run(F, br.w, True)[0][0], ref)
        if od is not None:
            tr = pyoperon.InfixParser.Parse(operon_text(br), od.vars)
            got = np.asarray(pyoperon.Evaluate(tr, od.ds, od.range), dtype=np.float64)
            operon_err.append(float(np.median(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12))))
        if br.rule.key in subkeys:
            for j, name in enumerate(("fused row", "fused blocked")):
                out = np.empty(n)
                assert fused[br.rule.key][j](F, br.w, out)
                note(name, out, ref)
    if operon_err:
        worst["operon (float32; median over rules of the median)"] = float(np.median(operon_err))
    return worst


def bench_rows(rules, fused, pset, n, max_rules, repeats, target_s):
    X = make_data(n, seed=1)
    # the rules were chosen finite on other rows: keep those finite on these rows too
    kept = [br for br in rules if br.rule.run(br.rule.feature_matrix(X), br.w, False)[1]]
    kept = kept[:max_rules]
    sub = [br for br in kept if br.rule.key in fused]
    agree = check_agreement(kept, sub, fused, X, pset, n)
    passes = make_passes(kept, sub, fused, X, pset, n)
    size = {id(br): br.rule.size for br in kept}
    sub_nodes = sum(size[id(br)] for br in sub) * n
    all_nodes = sum(size[id(br)] for br in kept) * n
    nodes = {name: (sub_nodes if cnt == len(sub) and (name == "forward [sub]" or ref == "forward [sub]")
                    else all_nodes) for name, (_, cnt, ref) in passes.items()}
    inner = {}
    for name, (fn, _, _) in passes.items():  # warm up, then size the inner loop to ~target_s
        fn()
        t0 = clock()
        fn()
        inner[name] = max(1, int(round(target_s / max(clock() - t0, 1e-9))))

    def timed(name):
        fn, k = passes[name][0], inner[name]
        t0 = clock()
        for _ in range(k):
            fn()
        return (clock() - t0) / k

    # every engine is timed right after its reference engine, so each ratio compares two
    # passes a fraction of a second apart (the machine is shared: load comes and goes)
    times: dict[str, list[float]] = {k: [] for k in passes}
    refs: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(repeats):
        for name, (_, _, ref) in passes.items():
            if ref is not None:
                refs[name].append(timed(ref))
            times[name].append(timed(name))
    counts = {name: cnt for name, (_, cnt, _) in passes.items()}
    return kept, sub, nodes, counts, times, refs, agree


def ratio(times, refs, name):
    """median over repeats of time(name) / time(its reference, timed just before)"""
    return median([a / b for a, b in zip(times[name], refs[name])])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: fewer rules and repeats")
    ap.add_argument("--rules", type=int, default=None, help="rules (default 500; quick 60)")
    ap.add_argument("--big-rules", type=int, default=None,
                    help="rules timed at >10,000 rows (default 60; quick 30)")
    ap.add_argument("--fused", type=int, default=None,
                    help="rules given fused numba code (default 40; quick 15): its compile "
                         "time is long, so the fused ratios use this subset")
    ap.add_argument("--rows", type=int, nargs="*", default=[1_000, 100_000])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n_rules = args.rules or (60 if args.quick else 500)
    n_big = args.big_rules or (30 if args.quick else 60)
    n_fused = args.fused if args.fused is not None else (15 if args.quick else 40)
    repeats = args.repeats or (3 if args.quick else 9)
    target_s = 0.03 if args.quick else 0.05

    t0 = clock()
    X_gen = make_data(20_000, seed=0)
    rules, stats = make_rules(n_rules, X_gen, seed=args.seed)
    t_gen = clock() - t0
    sizes = [br.rule.size for br in rules]
    n_trans = [br.rule.text.count("(exp") + br.rule.text.count("(log") + 2 * br.rule.text.count("(eml")
               for br in rules]
    print(f"rules: {len(rules)} (from {stats['generated']} DEAP trees in {t_gen:.1f}s); size mean "
          f"{np.mean(sizes):.1f} (min {min(sizes)}, max {max(sizes)}); weights per rule "
          f"{np.mean([len(b.rule.params) for b in rules]):.2f}; exp/log per rule {np.mean(n_trans):.2f}")
    print(f"kernel: BLOCK={K.BLOCK}, vector math: {getattr(K, 'VECTOR_MATH_INFO', 'none')}; "
          f"numba {numba.__version__}, numpy {np.__version__}, one thread; pyoperon "
          f"{_operon_version()}")

    pset = common.pset()
    br0 = rules[0]  # load the interpreter (numba disk cache) before anything is timed
    for jac in (False, True):
        br0.rule.run(br0.rule.feature_matrix(X_gen), br0.w, jac)
        for _, kern in other_kernels():
            _run_with(kern, br0.rule, br0.rule.feature_matrix(X_gen), br0.w, jac)
    fused: dict[str, tuple] = {}
    c_row, c_blk = [], []
    for br in rules[:n_fused]:
        f1, c1 = compile_fused(br)
        f2, c2 = compile_fused_blocked(br)
        fused[br.rule.key] = (f1, f2)
        c_row.append(c1)
        c_blk.append(c2)
    if fused:
        print(f"fused numba compile per rule (median of {len(fused)}): row loop "
              f"{median(c_row) * 1e3:.0f} ms, blocked {median(c_blk) * 1e3:.0f} ms")
    ce = []
    for br in rules[:100]:
        t1 = clock()
        gp.compile(br.deap, pset)
        ce.append(clock() - t1)
    print(f"per-rule set-up: DEAP gp.compile {median(ce) * 1e6:.0f} us; this project's "
          f"parse + canonical form + gradients + program {_program_compile_us(rules[:200]):.0f} us "
          f"(median; once per rule, cached by key; target <= 300 us)")

    for n in args.rows:
        t1 = clock()
        big = n > 10_000
        reps = max(3, repeats // 2) if big else repeats
        kept, sub, nodes, counts, times, refs, agree = bench_rows(
            rules, fused, pset, n, n_big if big else len(rules), reps, target_s)
        print()
        print(f"== {n:,} rows: {len(kept)} rules ({len(sub)} with fused code), {reps} repeats "
              f"({clock() - t1:.0f}s) ==")
        print("max relative difference vs forward: " +
              ", ".join(f"{k} {v:.1e}" for k, v in agree.items()))
        print(f"{'engine':<15}{'rules':>6}{'Mnode-evals/s':>15}{'us/rule':>10}{'rules/s':>10}")
        for name, ts in times.items():
            t = median(ts)
            print(f"{name:<15}{counts[name]:>6}{nodes[name] / t / 1e6:>15.1f}"
                  f"{t / counts[name] * 1e6:>10.1f}{counts[name] / t:>10.0f}")
        print("ratios: median over repeats of (engine time / reference time measured just before);"
              " > 1: forward is faster")

        def r(name):
            return ratio(times, refs, name)

        if sub:
            best = median([min(a / ra, b / rb) for a, ra, b, rb in zip(
                times["fused row"], refs["fused row"], times["fused blocked"], refs["fused blocked"])])
            print(f"  forward / fused ceiling, best of the two      : {best:6.2f}   (target >= 0.8 at 1,000 rows)")
            print(f"  forward / fused row loop (libm exp/log)       : {r('fused row'):6.2f}")
            print(f"  forward / fused blocked (kernel's exp/log)    : {r('fused blocked'):6.2f}")
        print(f"  forward / DEAP compile+eval                   : {r('deap c+e'):6.2f}   (target >= 6 at 1,000 rows)")
        print(f"  forward / DEAP eval only                      : {r('deap eval'):6.2f}   (target >= 1.2 at 1,000 rows, AVX-512)")
        print(f"  forward / NumPy tree walk                     : {r('numpy walk'):6.2f}")
        if "operon eval" in times:
            print(f"  forward / Operon parse+eval (float32)         : {r('operon p+e'):6.2f}")
            print(f"  forward / Operon eval only (float32)          : {r('operon eval'):6.2f}")
        print(f"  fwd+jacobian / forward, in rule evaluations/s : {1 / r('fwd+jacobian'):6.2f}   (target >= 0.6)")
        print(f"  evaluate (dict -> matrix each call) / forward : {1 / r('evaluate'):6.2f}")
        for name, _ in other_kernels():
            for p in ("forward", "fwd+jac"):
                label = f"{p}: {this_variant()} / {name} kernel (speed-up)"
                print(f"  {label:<46}: {r(f'{p} {name}'):6.2f}")


def _operon_version() -> str:
    if pyoperon is None:
        return "not installed (optional peer)"
    try:
        from importlib.metadata import version
        return version("pyoperon") + " (float32 build)"
    except Exception:
        return "installed"


def _program_compile_us(rules, repeats: int = 5) -> float:
    """Median over rules of the fastest of `repeats` set-ups, the rule cache emptied before each
    (every rule new to the process; benchmarks/throughput.py measures it the same way)."""
    from evo_rules import parse
    from evo_rules.rule import _RULES
    best = [float("inf")] * len(rules)
    for _ in range(repeats):
        for i, br in enumerate(rules):
            _RULES.clear()
            t0 = clock()
            parse(br.rule.text).program  # noqa: B018  (canonical form, gradients, program)
            best[i] = min(best[i], clock() - t0)
    return median(best) * 1e6


if __name__ == "__main__":
    main()
