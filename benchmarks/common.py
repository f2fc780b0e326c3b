"""Shared set-up for the benchmark scripts: single-threaded environment, random rules, data.

Import this module FIRST in a benchmark script (before numpy / numba): it pins every thread
pool to one thread through environment variables, which only work if set before those
libraries load.

Rule generator (documented because every figure depends on it): DEAP's `gp.genHalfAndHalf`
(depth 2..5) over a `PrimitiveSet` with add(2), mul(2), exp(1), log(1), eml(2) (eml(u, v) =
exp(u) - log(v)), the features x.a .. x.e as arguments and three ephemeral weight terminals
(so a leaf is a weight with probability 3/8). Each DEAP tree is printed as an s-expression (the
ephemeral becomes an anonymous weight `w`), parsed into the canonical `Rule`, and kept when the
canonical size is 15..25 nodes, it has a weight, and, with weights drawn uniformly from [-1, 1],
every output on the generation rows is finite (checked with the NumPy tree walk on the first
1,000 rows and with the kernel on all). Features: a, b, c uniform 0.1..2; d, e standard normal.
The canonical rule is the source of truth: it is converted *back* into a DEAP tree (n-ary
add/mul as left-nested binary chains, each weight a constant terminal holding its value), so
every engine evaluates exactly the same function with the same weights. Sizes are the canonical
`Rule.size`, used as the node count for every engine (DEAP trees of n-ary nodes are longer).
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
           "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_v] = "1"

import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
from deap import gp  # noqa: E402

from evo_rules import Rule, parse  # noqa: E402
from evo_rules.reference import tree_eval  # noqa: E402
from evo_rules.terms import Term  # noqa: E402

FEATURES = ("a", "b", "c", "d", "e")
N_WEIGHT_TERMINALS = 3


def make_data(n_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Positive features a, b, c (uniform 0.1..2), signed d, e (standard normal)."""
    rng = np.random.default_rng(seed)
    X = {}
    for f in FEATURES[:3]:
        X[f] = rng.uniform(0.1, 2.0, n_rows)
    for f in FEATURES[3:]:
        X[f] = rng.normal(size=n_rows)
    return X


def _eml(u, v):
    return np.exp(u) - np.log(v)


def make_pset() -> gp.PrimitiveSet:
    pset = gp.PrimitiveSet("RULE", len(FEATURES))
    pset.addPrimitive(np.add, 2, name="add")
    pset.addPrimitive(np.multiply, 2, name="mul")
    pset.addPrimitive(np.exp, 1, name="exp")
    pset.addPrimitive(np.log, 1, name="log")
    pset.addPrimitive(_eml, 2, name="eml")
    for k in range(N_WEIGHT_TERMINALS):  # more weight leaves than one in six
        pset.addEphemeralConstant(f"bench_w{k}", _uniform_weight)
    pset.renameArguments(**{f"ARG{i}": f"x_{f}" for i, f in enumerate(FEATURES)})
    return pset


def _uniform_weight():
    return random.uniform(-1.0, 1.0)


_PSET: gp.PrimitiveSet | None = None


def pset() -> gp.PrimitiveSet:
    global _PSET
    if _PSET is None:
        _PSET = make_pset()
    return _PSET


def deap_to_sexpr(tree: gp.PrimitiveTree) -> str:
    """DEAP prefix list -> s-expression; ephemerals become anonymous weights."""
    out: list[str] = []
    stack: list[int] = []  # remaining arity of open primitives
    for node in tree:
        if isinstance(node, gp.Primitive):
            out.append("(" + node.name)
            stack.append(node.arity)
            continue
        if not isinstance(node.value, str):
            out.append("w")
        else:
            out.append("x." + node.value[2:])  # "x_a" -> "x.a"
        while stack:
            stack[-1] -= 1
            if stack[-1] > 0:
                break
            stack.pop()
            out.append(")")
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def term_to_deap(t: Term, weights: dict[str, float]) -> gp.PrimitiveTree:
    """Canonical term -> DEAP tree computing the same function (weights as constants)."""
    ps = pset()
    prims = {p.name: p for p in ps.primitives[ps.ret]}
    args = {a.value: a for a in ps.terminals[ps.ret] if isinstance(a.value, str)}
    nodes: list = []

    def rec(u: Term):
        if u.op == "num":
            nodes.append(gp.Terminal(float(u.value), False, object))
        elif u.op == "w":
            nodes.append(gp.Terminal(float(weights["w" + str(u.value)]), False, object))
        elif u.op == "x":
            nodes.append(args["x_" + str(u.value)])
        elif u.op in ("add", "mul"):
            for _ in range(len(u.args) - 1):
                nodes.append(prims[u.op])
            rec(u.args[0])
            for a in u.args[1:]:
                rec(a)
        else:
            nodes.append(prims[u.op])
            for a in u.args:
                rec(a)

    # left-nested chain add(add(a, b), c) in prefix is: add add a b c
    rec(t)
    return gp.PrimitiveTree(nodes)


@dataclass
class BenchRule:
    rule: Rule
    w: np.ndarray  # weights in rule.params order
    deap: gp.PrimitiveTree

    @property
    def wdict(self) -> dict[str, float]:
        return dict(zip(self.rule.params, self.w))


def make_rules(n_rules: int, X: dict[str, np.ndarray], seed: int = 0, min_size: int = 15,
               max_size: int = 25, max_tries: int = 200_000) -> tuple[list[BenchRule], dict]:
    """`n_rules` distinct canonical rules finite on X (see the module docstring)."""
    random.seed(seed)
    rng = np.random.default_rng(seed)
    ps = pset()
    n_head = min(1000, len(next(iter(X.values()))))
    X_head = {k: v[:n_head] for k, v in X.items()}
    seen: set[str] = set()
    out: list[BenchRule] = []
    stats = {"generated": 0, "wrong_size": 0, "duplicate": 0, "not_finite": 0, "no_weight": 0}
    while len(out) < n_rules and stats["generated"] < max_tries:
        stats["generated"] += 1
        tree = gp.PrimitiveTree(gp.genHalfAndHalf(ps, min_=2, max_=5))
        if not (min_size <= len(tree) <= 2 * max_size):  # canonical size <= tree length
            stats["wrong_size"] += 1
            continue
        r = parse(deap_to_sexpr(tree))
        if not (min_size <= r.size <= max_size):
            stats["wrong_size"] += 1
            continue
        if r.key in seen:
            stats["duplicate"] += 1
            continue
        if not r.params:
            stats["no_weight"] += 1
            continue
        w = rng.uniform(-1.0, 1.0, len(r.params))
        wd = dict(zip(r.params, w))
        if not (np.all(np.isfinite(tree_eval(r.term, X_head, wd, n_head)))
                and r.run(r.feature_matrix(X), w, False)[1]):
            stats["not_finite"] += 1
            continue
        seen.add(r.key)
        out.append(BenchRule(r, w, term_to_deap(r.term, wd)))
    return out, stats


def median(xs):
    return statistics.median(xs)


def clock() -> float:
    return time.perf_counter()

