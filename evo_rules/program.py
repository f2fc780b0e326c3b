"""Compilation of terms to one flat instruction program (forward and gradients merged).

Equal subterms get one slot (hash-consing), so the gradient terms reuse the forward pass's
exp/log values. Patterns compiled specially:
  log(1 + exp z)        -> SOFTPLUS z   (stable)
  exp(z - log(1+exp z)) -> SIGMOID z    (stable; the softplus derivative)
  exp(-log v)           -> RECIP v      (the derivative of log; v > 0 where log v is defined)
  (mul -1 a)            -> NEG a
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels as K
from .derivative import is_softplus_arg
from .terms import MINUS_ONE, Term


@dataclass(frozen=True)
class Program:
    code: np.ndarray  # int32 opcodes
    arg_a: np.ndarray  # int32
    arg_b: np.ndarray  # int32
    consts: np.ndarray  # float64
    outputs: np.ndarray  # int32 slots: forward first, then one per gradient
    features: tuple[str, ...]  # FEAT index -> feature name
    n_weights: int

    def __len__(self) -> int:
        return int(self.code.shape[0])

    def listing(self) -> str:
        lines = []
        for i in range(len(self)):
            op = K.OPNAMES[self.code[i]]
            if op == "const":
                arg = repr(float(self.consts[i]))
            elif op == "weight":
                arg = f"w{self.arg_a[i]}"
            elif op == "feat":
                arg = "x." + self.features[self.arg_a[i]]
            elif op in ("add", "sub", "mul"):
                arg = f"%{self.arg_a[i]} %{self.arg_b[i]}"
            else:
                arg = f"%{self.arg_a[i]}"
            lines.append(f"%{i} = {op} {arg}")
        lines.append("out " + " ".join(f"%{s}" for s in self.outputs))
        return "\n".join(lines)

    def forward_only(self) -> "Program":
        """The sub-program that computes the first output alone (dead slots removed)."""
        return _prune(self, self.outputs[:1])


class _Builder:
    def __init__(self, params: tuple[str, ...], features: tuple[str, ...]):
        self.code: list[int] = []
        self.a: list[int] = []
        self.b: list[int] = []
        self.c: list[float] = []
        self.memo: dict[tuple, int] = {}
        # slot of each term object already compiled: gradient terms share subterm objects with
        # the rule, so a shared subtree is walked once. Only objects reachable from the terms
        # passed to compile_terms go in (alive for the whole build, so their ids are not reused)
        self.by_id: dict[int, int] = {}
        self.param_index = {p: i for i, p in enumerate(params)}
        self.feature_index = {f: i for i, f in enumerate(features)}

    def emit(self, op: int, a: int = -1, b: int = -1, c: float = 0.0) -> int:
        key = (op, a, b, c)
        slot = self.memo.get(key)
        if slot is None:
            slot = len(self.code)
            self.code.append(op)
            self.a.append(a)
            self.b.append(b)
            self.c.append(c)
            self.memo[key] = slot
        return slot

    def term(self, t: Term) -> int:
        slot = self.by_id.get(id(t))
        if slot is None:
            slot = self.by_id[id(t)] = self._term(t)
        return slot

    def _term(self, t: Term) -> int:
        op = t.op
        if op == "num":
            return self.emit(K.CONST, c=float(t.value))
        if op == "w":
            return self.emit(K.WEIGHT, a=self.param_index["w" + str(t.value)])
        if op == "x":
            return self.emit(K.FEAT, a=self.feature_index[str(t.value)])
        if op in ("add", "mul"):
            args = t.args
            if op == "mul" and len(args) == 2 and MINUS_ONE in args:
                other = args[1] if args[0] == MINUS_ONE else args[0]
                return self.emit(K.NEG, self.term(other))
            # commutative: order operand slots so (a, b) and (b, a) share a slot
            slots = sorted(self.term(a) for a in args)
            code = K.ADD if op == "add" else K.MUL
            acc = slots[0]
            for s in slots[1:]:
                acc = self.emit(code, min(acc, s), max(acc, s))
            return acc
        if op == "log":
            z = is_softplus_arg(t.args[0])
            if z is not None:
                return self.emit(K.SOFTPLUS, self.term(z))
            return self.emit(K.LOG, self.term(t.args[0]))
        if op == "exp":
            u = t.args[0]
            sig = _sigmoid_arg(u)
            if sig is not None:
                return self.emit(K.SIGMOID, self.term(sig))
            if u.op == "mul" and len(u.args) == 2 and MINUS_ONE in u.args:
                inner = u.args[1] if u.args[0] == MINUS_ONE else u.args[0]
                if inner.op == "log" and is_softplus_arg(inner.args[0]) is None:
                    return self.emit(K.RECIP, self.term(inner.args[0]))
            return self.emit(K.EXP, self.term(u))
        if op == "eml":
            # fresh temporaries: compiled without the by-id memo (their ids may be reused)
            e = self._term(Term("exp", (t.args[0],)))
            lg = self._term(Term("log", (t.args[1],)))
            return self.emit(K.SUB, e, lg)
        raise ValueError(f"cannot compile operator {op!r}")


def _sigmoid_arg(u: Term) -> Term | None:
    """For u = (add z (mul -1 (log (add 1 (exp z))))) return z."""
    if u.op != "add" or len(u.args) != 2:
        return None
    for z, other in (u.args, u.args[::-1]):
        if other.op == "mul" and len(other.args) == 2 and MINUS_ONE in other.args:
            inner = other.args[1] if other.args[0] == MINUS_ONE else other.args[0]
            if inner.op == "log" and is_softplus_arg(inner.args[0]) == z:
                return z
    return None


def compile_terms(forward: Term, gradients: list[Term], params: tuple[str, ...],
                  features: tuple[str, ...]) -> Program:
    b = _Builder(params, features)
    outs = [b.term(forward)] + [b.term(g) for g in gradients]
    return Program(
        code=np.asarray(b.code, dtype=np.int32),
        arg_a=np.asarray(b.a, dtype=np.int32),
        arg_b=np.asarray(b.b, dtype=np.int32),
        consts=np.asarray(b.c, dtype=np.float64),
        outputs=np.asarray(outs, dtype=np.int32),
        features=features,
        n_weights=len(params),
    )


def _prune(p: Program, outputs: np.ndarray) -> Program:
    live = np.zeros(len(p), dtype=bool)
    stack = [int(s) for s in outputs]
    while stack:
        s = stack.pop()
        if live[s]:
            continue
        live[s] = True
        op = p.code[s]
        if op in (K.ADD, K.SUB, K.MUL):
            stack += [int(p.arg_a[s]), int(p.arg_b[s])]
        elif op not in (K.CONST, K.WEIGHT, K.FEAT):
            stack.append(int(p.arg_a[s]))
    new_index = np.cumsum(live) - 1
    keep = np.flatnonzero(live)
    code = p.code[keep]
    a = p.arg_a[keep].copy()
    b = p.arg_b[keep].copy()
    for j, op in enumerate(code):
        if op not in (K.CONST, K.WEIGHT, K.FEAT):
            a[j] = new_index[a[j]]
            if op in (K.ADD, K.SUB, K.MUL):
                b[j] = new_index[b[j]]
    return Program(code, a, b, p.consts[keep].copy(), new_index[outputs].astype(np.int32),
                   p.features, p.n_weights)
