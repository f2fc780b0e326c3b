"""The numba interpreter: one jitted function runs any compiled program over all rows.

A program is a list of SSA instructions (opcode, a, b, constant); instruction i writes slot i.
Rows are processed in blocks so each instruction is a tight loop over a block held in cache;
constant and weight slots are filled once. Compiled once and cached on disk by numba.

Vector math. exp/log dominate the cost of typical rules, and numba cannot vectorize them (the
llvmlite on PyPI has no SVML and no `-vector-library` option), so each of those instructions
calls glibc's libmvec AVX2 entry points (`_ZGVdN4v_exp` / `_log` / `_log1p`, 4 doubles per call)
through a small LLVM intrinsic. Measured against libm over 4M random arguments: exp within 3 ulp,
log and log1p within 2 ulp; the same IEEE special cases (NaN, +-inf, 0, overflow, underflow).
Every lane of every block, and the slots computed once, go through the same function, so a row's
value does not depend on the number of rows or its position. Used only on x86-64 with AVX2,
numba compiling for the host CPU, and libmvec found; otherwise, or with EVO_RULES_VECTOR_MATH=0 in
the environment, the scalar libm path runs (results then differ by those few ulp). The two paths
are two separately cached kernels (`VECTOR_MATH` says which one `run_program` is). No fastmath
flag is used anywhere: non-finite values must propagate, the finite check depends on them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import config as _nb_config
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

CONST, WEIGHT, FEAT, ADD, SUB, MUL, NEG, EXP, LOG, SOFTPLUS, SIGMOID, RECIP = range(12)
# the wider operator set (terms.WIDE); libm's scalar functions in both kernel variants
SIN, COS, SQRT, ABS, SIGN, DIV, POW = range(12, 19)
OPNAMES = ("const", "weight", "feat", "add", "sub", "mul", "neg", "exp", "log", "softplus",
           "sigmoid", "recip", "sin", "cos", "sqrt", "abs", "sign", "div", "pow")
BINARY_OPS = (ADD, SUB, MUL, DIV, POW)  # instructions that read slot b
BLOCK = 256  # rows per block (a multiple of LANES)
LANES = 4  # doubles per vector-math call (AVX2)
_VEC_SYMBOLS = {"exp": "_ZGVdN4v_exp", "log": "_ZGVdN4v_log", "log1p": "_ZGVdN4v_log1p"}


def _find_libmvec() -> tuple[bool, str]:
    """(usable, description). Loads libmvec into the process for the JIT when usable."""
    if os.environ.get("EVO_RULES_VECTOR_MATH", "1").strip().lower() in ("0", "no", "off", "false"):
        return False, "off (EVO_RULES_VECTOR_MATH=0)"
    if _nb_config.DISABLE_JIT:
        return False, "off (NUMBA_DISABLE_JIT)"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False, f"off (no libmvec AVX2 on {platform.machine()})"
    # the vector ABI passes <4 x double> in a ymm register: only when code is built for the host
    if _nb_config.CPU_NAME not in (None, "host") or _nb_config.CPU_FEATURES is not None:
        return False, "off (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES set)"
    try:
        if not _llvm.get_host_cpu_features().get("avx2", False):
            return False, "off (CPU has no AVX2)"
    except Exception:  # pragma: no cover - feature query unsupported
        return False, "off (CPU features unknown)"
    for name in ("libmvec.so.1", ctypes.util.find_library("mvec")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(lib, s) for s in _VEC_SYMBOLS.values()):
            _llvm.load_library_permanently(name)
            return True, f"libmvec AVX2 ({name})"
    return False, "off (libmvec not found)"


VECTOR_MATH, VECTOR_MATH_INFO = _find_libmvec()


def _vector_call(symbol: str):
    """Intrinsic buf[dst, r:r+4] = symbol(buf[src, r:r+4]) for a 2-D C-contiguous float64 buf."""

    @intrinsic
    def call4(typingctx, buf, dst, src, r):
        sig = types.void(buf, types.intp, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            aty = sig.args[0]
            arr = context.make_array(aty)(context, builder, args[0])
            vty = ir.VectorType(ir.DoubleType(), LANES)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), symbol)
            src_p = cgutils.get_item_pointer(context, builder, aty, arr, [args[2], args[3]],
                                             wraparound=False)
            dst_p = cgutils.get_item_pointer(context, builder, aty, arr, [args[1], args[3]],
                                             wraparound=False)
            x = builder.load(builder.bitcast(src_p, vty.as_pointer()), align=8)
            builder.store(builder.call(fn, [x]), builder.bitcast(dst_p, vty.as_pointer()), align=8)
            return context.get_dummy_value()

        return sig, codegen

    return call4


_vexp4 = _vector_call(_VEC_SYMBOLS["exp"])
_vlog4 = _vector_call(_VEC_SYMBOLS["log"])
_vlog1p4 = _vector_call(_VEC_SYMBOLS["log1p"])

# Block math: buf[dst, r] = f(buf[src, r]) for r < m (m a multiple of LANES; dst may be src).


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _exp_vec(buf, dst, src, m):
    for r in range(0, m, LANES):
        _vexp4(buf, dst, src, r)


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _log_vec(buf, dst, src, m):
    for r in range(0, m, LANES):
        _vlog4(buf, dst, src, r)


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _log1p_vec(buf, dst, src, m):
    for r in range(0, m, LANES):
        _vlog1p4(buf, dst, src, r)


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _exp_scalar(buf, dst, src, m):
    for r in range(m):
        buf[dst, r] = np.exp(buf[src, r])


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _log_scalar(buf, dst, src, m):
    for r in range(m):
        buf[dst, r] = np.log(buf[src, r])


@njit(nogil=True, boundscheck=False, error_model="numpy")
def _log1p_scalar(buf, dst, src, m):
    for r in range(m):
        buf[dst, r] = np.log1p(buf[src, r])


def _named(tag: str):
    """njit under a name unique to the variant: numba's symbol names come from the qualified
    name, and two cached variants with equal names would resolve to one another's code."""

    def deco(fn):
        fn.__name__ = f"{fn.__name__}_{tag}"
        fn.__qualname__ = fn.__name__
        return njit(nogil=True, boundscheck=False, error_model="numpy")(fn)

    return deco


def _make_interp(tag, f_exp, f_log, f_log1p):
    """The interpreter with its block math bound at compile time (plain calls, no dynamic
    globals, so the callers below can be cached on disk)."""

    @_named(tag)
    def step(buf, i, op, a, b, m):
        """Slot i := op(slot a, slot b) over lanes [0, m) (m a multiple of LANES)."""
        if op == ADD:
            for r in range(m):
                buf[i, r] = buf[a, r] + buf[b, r]
        elif op == MUL:
            for r in range(m):
                buf[i, r] = buf[a, r] * buf[b, r]
        elif op == SUB:
            for r in range(m):
                buf[i, r] = buf[a, r] - buf[b, r]
        elif op == NEG:
            for r in range(m):
                buf[i, r] = -buf[a, r]
        elif op == EXP:
            f_exp(buf, i, a, m)
        elif op == LOG:
            f_log(buf, i, a, m)
        elif op == SOFTPLUS:
            # log(1 + exp z) = max(z, 0) + log1p(exp(-|z|))
            for r in range(m):
                buf[i, r] = -abs(buf[a, r])
            f_exp(buf, i, i, m)
            f_log1p(buf, i, i, m)
            for r in range(m):
                z = buf[a, r]
                buf[i, r] += z if z > 0.0 else 0.0
        elif op == SIGMOID:
            # 1 / (1 + exp(-z)) for z >= 0, e / (1 + e) with e = exp(z) otherwise
            for r in range(m):
                buf[i, r] = -abs(buf[a, r])
            f_exp(buf, i, i, m)
            for r in range(m):
                e = buf[i, r]
                top = 1.0 if buf[a, r] >= 0.0 else e
                buf[i, r] = top / (1.0 + e)
        elif op == RECIP:
            for r in range(m):
                buf[i, r] = 1.0 / buf[a, r]
        elif op == SIN:
            for r in range(m):
                buf[i, r] = np.sin(buf[a, r])
        elif op == COS:
            for r in range(m):
                buf[i, r] = np.cos(buf[a, r])
        elif op == SQRT:
            for r in range(m):
                buf[i, r] = np.sqrt(buf[a, r])  # NaN below 0
        elif op == ABS:
            for r in range(m):
                buf[i, r] = abs(buf[a, r])
        elif op == SIGN:
            for r in range(m):
                x = buf[a, r]
                buf[i, r] = 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x)  # 0 and NaN pass
        elif op == DIV:
            for r in range(m):
                buf[i, r] = buf[a, r] / buf[b, r]  # +-inf or NaN at 0 (numpy error model)
        elif op == POW:
            for r in range(m):
                buf[i, r] = np.power(buf[a, r], buf[b, r])  # NaN: negative base, real exponent

    @_named(tag)
    def interp(code, arg_a, arg_b, consts, X, weights, outs, result):
        n_rows = X.shape[1]
        n_slots = code.shape[0]
        B = BLOCK
        buf = np.empty((n_slots, B))
        # lanes any block uses: B, or fewer when there are fewer rows
        lanes = min(B, (n_rows + LANES - 1) // LANES * LANES)
        # slots that depend on no feature (constants, weights, exp/log of weights, ...) are the
        # same on every row: computed once here, skipped in the row blocks
        uniform = np.empty(n_slots, dtype=np.bool_)
        for i in range(n_slots):
            op = code[i]
            a = arg_a[i]
            b = arg_b[i]
            if op == CONST:
                uniform[i] = True
                buf[i, :lanes] = consts[i]
            elif op == WEIGHT:
                uniform[i] = True
                buf[i, :lanes] = weights[a]
            elif op == FEAT:
                uniform[i] = False
            else:
                u = uniform[a]
                if op == ADD or op == SUB or op == MUL or op == DIV or op == POW:
                    u = u and uniform[b]
                uniform[i] = u
                if u:
                    step(buf, i, op, a, b, lanes)
        bad = False
        for start in range(0, n_rows, B):
            m = min(B, n_rows - start)
            # every instruction runs over m4 >= m lanes (a multiple of LANES); feature lanes past
            # the last row are padded with 1.0 so every lane holds a defined value; m are output
            m4 = (m + LANES - 1) // LANES * LANES
            for i in range(n_slots):
                if uniform[i]:
                    continue
                op = code[i]
                a = arg_a[i]
                if op == FEAT:
                    for r in range(m):
                        buf[i, r] = X[a, start + r]
                    for r in range(m, m4):
                        buf[i, r] = 1.0
                else:
                    step(buf, i, op, a, arg_b[i], m4)
            for k in range(outs.shape[0]):
                s = outs[k]
                for r in range(m):
                    v = buf[s, r]
                    result[k, start + r] = v
                    bad |= (v - v) != 0.0  # NaN exactly when v is NaN or +-inf
        return not bad

    return interp


_interp_vector = _make_interp("vector", _exp_vec, _log_vec, _log1p_vec)
_interp_scalar = _make_interp("scalar", _exp_scalar, _log_scalar, _log1p_scalar)


@njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
def _run_program_vector(code, arg_a, arg_b, consts, X, weights, outs, result):
    return _interp_vector(code, arg_a, arg_b, consts, X, weights, outs, result)


@njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
def _run_program_scalar(code, arg_a, arg_b, consts, X, weights, outs, result):
    return _interp_scalar(code, arg_a, arg_b, consts, X, weights, outs, result)


run_program = _run_program_vector if VECTOR_MATH else _run_program_scalar
run_program.__doc__ = """Evaluate slots `outs` of the program for every column of X.

    X: (n_features, n_rows) float64, C-contiguous. result: (len(outs), n_rows).
    Returns True when every output value is finite.
    """
