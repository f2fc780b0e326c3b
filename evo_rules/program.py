"""Compilation of terms to one flat instruction program (forward and gradients merged).

Equal subterms get one slot (hash-consing), so the gradient terms reuse the forward pass's
exp/log values. Patterns compiled specially:
  log(1 + exp z)        -> SOFTPLUS z   (stable)
  exp(z - log(1+exp z)) -> SIGMOID z    (stable; the softplus derivative)
  exp(-log v)           -> RECIP v      (the derivative of log; v > 0 where log v is defined)
  (mul -1 a)            -> NEG a
The wider operators (terms.WIDE) compile one to one (sin -> SIN, ..., div u v -> DIV u v).
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
            elif self.code[i] in K.BINARY_OPS:
                arg = f"%{self.arg_a[i]} %{self.arg_b[i]}"
            else:
                arg = f"%{self.arg_a[i]}"
            lines.append(f"%{i} = {op} {arg}")
        lines.append("out " + " ".join(f"%{s}" for s in self.outputs))
        return "\n".join(lines)


class _Builder:
    def __init__(self, params: tuple[str, ...], features: tuple[str, ...]):
        self.code: list[int] = []
        self.a: list[int] = []
        self.b: list[int] = []
        self.c: list[float] = []
        self.memo: dict[tuple, int] = {}
        # slot of each term object already compiled: gradient terms share subterm objects (a
        # DAG), so a shared subterm is walked once. Only objects reachable from the terms
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
        """Slot of t: post-order over distinct objects, children left to right. Recursive (one
        Python frame per level: the fastest walk, and a quarter of a set-up is this walk); gradient
        terms share subterms (a DAG) and can be deeper than any rule, so a term deeper than
        Python's recursion limit is compiled by the iterative walk, to the same program."""
        mark = len(self.code)
        try:
            return self._term_recursive(t)
        except RecursionError:
            # undo the partial walk: slots emitted since `mark` and the objects mapped to them
            self.by_id = {k: v for k, v in self.by_id.items() if v < mark}
            self.memo = {k: v for k, v in self.memo.items() if v < mark}
            del self.code[mark:], self.a[mark:], self.b[mark:], self.c[mark:]
            return self._term_iterative(t)

    def _term_recursive(self, t: Term) -> int:
        by_id, emit, emit_plan, SUB = self.by_id, self.emit, self._emit_plan, K.SUB

        def slot(n: Term) -> int:
            s = by_id.get(id(n))
            if s is not None:
                return s
            code, operands = _plan(n)
            if code == SUB:  # eml: exp(u) is emitted before log(v)'s operand is compiled
                (ce, u), (cl, v) = operands
                e = emit(ce, slot(u))
                s = emit(SUB, e, emit(cl, slot(v)))
            else:
                for o in operands:
                    slot(o)
                s = emit_plan(n, code, operands)
            by_id[id(n)] = s
            return s

        return slot(t)

    def _term_iterative(self, t: Term) -> int:
        """`_term_recursive`'s walk with an explicit stack: the same slots in the same order."""
        half: dict[int, int] = {}  # eml node -> slot of its exp part, emitted before the log part
        plans: dict[int, tuple] = {}  # a node is met again once its operands are compiled
        by_id, emit, SUB = self.by_id, self.emit, K.SUB
        stack = [t]
        while stack:
            n = stack[-1]
            nid = id(n)
            if nid in by_id:
                stack.pop()
                continue
            plan = plans.get(nid)
            if plan is None:
                plan = plans[nid] = _plan(n)
            code, operands = plan
            if code == SUB:  # eml: exp(u) is emitted before log(v)'s operand is compiled
                (ce, u), (cl, v) = operands
                uid = id(u)
                if uid not in by_id:
                    stack.append(u)
                    continue
                if nid not in half:
                    half[nid] = emit(ce, by_id[uid])
                vid = id(v)
                if vid not in by_id:
                    stack.append(v)
                    continue
                slot = emit(SUB, half.pop(nid), emit(cl, by_id[vid]))
            else:
                missing = [o for o in operands if id(o) not in by_id]
                if missing:
                    stack.extend(reversed(missing))
                    continue
                slot = self._emit_plan(n, code, operands)
            stack.pop()
            by_id[nid] = slot
        return by_id[id(t)]

    def _emit_plan(self, t: Term, code: int, operands: tuple[Term, ...]) -> int:
        if code == K.CONST:
            return self.emit(K.CONST, c=float(t.value))
        if code == K.WEIGHT:
            return self.emit(K.WEIGHT, a=self.param_index["w" + str(t.value)])
        if code == K.FEAT:
            return self.emit(K.FEAT, a=self.feature_index[str(t.value)])
        if code in (K.ADD, K.MUL):
            # commutative: order operand slots so (a, b) and (b, a) share a slot
            slots = sorted(self.by_id[id(o)] for o in operands)
            acc = slots[0]
            for s in slots[1:]:
                acc = self.emit(code, min(acc, s), max(acc, s))
            return acc
        if code in (K.DIV, K.POW):  # not commutative: operands in order
            return self.emit(code, self.by_id[id(operands[0])], self.by_id[id(operands[1])])
        return self.emit(code, self.by_id[id(operands[0])])


def _plan(t: Term):
    """(opcode, operand terms) for t, the special patterns recognised."""
    op = t.op
    if op == "num":
        return K.CONST, ()
    if op == "w":
        return K.WEIGHT, ()
    if op == "x":
        return K.FEAT, ()
    if op in ("add", "mul"):
        args = t.args
        if op == "mul" and len(args) == 2 and MINUS_ONE in args:
            return K.NEG, (args[1] if args[0] == MINUS_ONE else args[0],)
        return (K.ADD if op == "add" else K.MUL), args
    if op == "log":
        return _log_plan(t.args[0])
    if op == "exp":
        return _exp_plan(t.args[0])
    if op == "eml":
        ce, (e,) = _exp_plan(t.args[0])
        cl, (lg,) = _log_plan(t.args[1])
        return K.SUB, ((ce, e), (cl, lg))
    if op in _WIDE:
        return _WIDE[op], t.args
    raise ValueError(f"cannot compile operator {op!r}")


_WIDE = {"sin": K.SIN, "cos": K.COS, "sqrt": K.SQRT, "abs": K.ABS, "sign": K.SIGN,
         "div": K.DIV, "pow": K.POW}


def _log_plan(v: Term):
    z = is_softplus_arg(v)
    return (K.SOFTPLUS, (z,)) if z is not None else (K.LOG, (v,))


def _exp_plan(u: Term):
    sig = _sigmoid_arg(u)
    if sig is not None:
        return K.SIGMOID, (sig,)
    if u.op == "mul" and len(u.args) == 2 and MINUS_ONE in u.args:
        inner = u.args[1] if u.args[0] == MINUS_ONE else u.args[0]
        if inner.op == "log" and is_softplus_arg(inner.args[0]) is None:
            return K.RECIP, (inner.args[0],)
    return K.EXP, (u,)


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

