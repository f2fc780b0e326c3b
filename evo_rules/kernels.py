"""The numba interpreter: one jitted function runs any compiled program over all rows.

A program is a list of SSA instructions (opcode, a, b, constant); instruction i writes slot i.
Rows are processed in blocks so each instruction is a tight loop over a block held in cache;
constant and weight slots are filled once. Compiled once and cached on disk by numba.

Vector math. exp/log dominate the cost of typical rules, and numba cannot vectorize them (the
llvmlite on PyPI has no SVML and no `-vector-library` option), so each of those instructions
calls glibc's libmvec through a small LLVM intrinsic, in the widest variant the CPU has, picked
at import:

    variant  libmvec entry points                       doubles a call  KERNEL_KIND
    avx512   _ZGVeN8v_exp / _log / _log1p (zmm)         8               libmvec-avx512
    avx2     _ZGVdN4v_exp / _log / _log1p (ymm)         4               libmvec
    scalar   libm's exp / log / log1p, one at a time    1               libm

glibc documents libmvec within 4 ulp of the correctly rounded result, with the IEEE special
cases of libm (NaN, +-inf, 0, overflow, underflow); tests/test_kernels_variants.py checks both
against libm on random and edge arguments (measured over 2M arguments each: exp within 3 ulp of
libm, log 1, log1p 2; the AVX-512 and AVX2 exp agree bit for bit, their log and log1p do not). Every lane of every block, and the slots computed
once, go through the same function, so a row's value does not depend on the number of rows or
its position. A vector variant is used only on x86-64 with the CPU feature (AVX-512F / AVX2),
numba compiling for the host CPU, and libmvec found.

`EVO_RULES_VECTOR_MATH` caps the choice: `avx2` (at most AVX2), `0` (scalar libm, also
`off`/`scalar`), `auto` or unset (the widest). Variants differ by a few ulp, so their fitted
numbers differ in the last bits: `KERNEL_KIND` names the variant in use and the fitness cache
keys on it (the AVX2 kind keeps the name it had when it was the only vector variant: its numbers
are unchanged, so fitnesses cached by it stay valid). Each variant is its own separately cached kernel (`kernel(name)`; `run_program` is
the selected one). No fastmath flag is used anywhere: non-finite values must propagate, the
finite check depends on them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import config as _nb_config
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

CONST, WEIGHT, FEAT, ADD, SUB, MUL, NEG, EXP, LOG, SOFTPLUS, SIGMOID, RECIP = range(12)
# the wider operator set (terms.WIDE); libm's scalar functions in every kernel variant
SIN, COS, SQRT, ABS, SIGN, DIV, POW = range(12, 19)
OPNAMES = ("const", "weight", "feat", "add", "sub", "mul", "neg", "exp", "log", "softplus",
           "sigmoid", "recip", "sin", "cos", "sqrt", "abs", "sign", "div", "pow")
BINARY_OPS = (ADD, SUB, MUL, DIV, POW)  # instructions that read slot b
BLOCK = 256  # rows per block (a multiple of every variant's lanes)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # names the variant in the fitness cache key
    lanes: int  # doubles per vector-math call; rows are padded to a multiple of it
    feature: str  # the CPU feature it needs (LLVM's name); "" for none
    symbols: tuple[tuple[str, str], ...]  # (function, libmvec symbol)


VARIANTS = {
    "avx512": Variant("avx512", "libmvec-avx512", 8, "avx512f",
                      (("exp", "_ZGVeN8v_exp"), ("log", "_ZGVeN8v_log"), ("log1p", "_ZGVeN8v_log1p"))),
    "avx2": Variant("avx2", "libmvec", 4, "avx2",
                    (("exp", "_ZGVdN4v_exp"), ("log", "_ZGVdN4v_log"), ("log1p", "_ZGVdN4v_log1p"))),
    "scalar": Variant("scalar", "libm", 1, "", ()),
}
WIDEST_FIRST = ("avx512", "avx2", "scalar")
ENV = "EVO_RULES_VECTOR_MATH"


def requested_cap(value: str | None) -> str:
    """The widest variant the environment allows: 'avx512' (no cap), 'avx2' or 'scalar'."""
    v = (value if value is not None else "auto").strip().lower()
    if v in ("", "1", "on", "yes", "true", "auto", "avx512"):
        return "avx512"
    if v == "avx2":
        return "avx2"
    if v in ("0", "off", "no", "false", "scalar", "libm"):
        return "scalar"
    raise ValueError(f"{ENV}={value!r}: expected auto (or 1), avx512, avx2, or 0 (scalar libm)")


def _libmvec_off_reason() -> str | None:
    """Why no vector variant can run in this process, or None when one might."""
    if _nb_config.DISABLE_JIT:
        return "NUMBA_DISABLE_JIT"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"no libmvec on {platform.machine()}"
    # the vector ABI passes vectors in ymm / zmm registers: only when code is built for the host
    if _nb_config.CPU_NAME not in (None, "host") or _nb_config.CPU_FEATURES is not None:
        return "NUMBA_CPU_NAME / NUMBA_CPU_FEATURES set"
    return None


def _load_libmvec(symbols) -> str | None:
    """Load the first libmvec holding all `symbols` into the process for the JIT; its name."""
    for name in ("libmvec.so.1", ctypes.util.find_library("mvec")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(lib, s) for s in symbols):
            _llvm.load_library_permanently(name)
            return name
    return None


def _probe() -> tuple[tuple[str, ...], dict[str, str]]:
    """(variants usable here, widest first; why each other one is not)."""
    usable = []
    why: dict[str, str] = {}
    off = _libmvec_off_reason()
    try:
        features = _llvm.get_host_cpu_features() if off is None else {}
    except Exception:  # pragma: no cover - feature query unsupported
        features, off = {}, "CPU features unknown"
    for name in WIDEST_FIRST[:-1]:
        v = VARIANTS[name]
        if off is not None:
            why[name] = off
        elif not features.get(v.feature, False):
            why[name] = f"CPU has no {v.feature.upper()}"
        else:
            lib = _load_libmvec([s for _, s in v.symbols])
            if lib is None:
                why[name] = f"no libmvec with {', '.join(s for _, s in v.symbols)}"
            else:
                usable.append(name)
                why[name] = lib
    usable.append("scalar")
    return tuple(usable), why


def select(cap: str, available) -> str:
    """The widest available variant no wider than `cap`."""
    order = WIDEST_FIRST[WIDEST_FIRST.index(cap):]
    return next(v for v in order if v in available)


AVAILABLE, _WHY = _probe()
VARIANT = select(requested_cap(os.environ.get(ENV)), AVAILABLE)
KERNEL_KIND = VARIANTS[VARIANT].kind
LANES = VARIANTS[VARIANT].lanes
VECTOR_MATH = VARIANT != "scalar"


def _describe() -> str:
    v = VARIANTS[VARIANT]
    if VECTOR_MATH:
        text = f"libmvec {VARIANT.upper()}, {v.lanes} doubles a call ({_WHY[VARIANT]})"
    else:
        text = "off: scalar libm"
    skipped = [f"{n}: {_WHY[n]}" for n in WIDEST_FIRST[:WIDEST_FIRST.index(VARIANT)]
               if n not in AVAILABLE]
    capped = [n for n in WIDEST_FIRST[:WIDEST_FIRST.index(VARIANT)] if n in AVAILABLE]
    if capped:
        skipped.append(f"{ENV}={os.environ.get(ENV)!r} caps it")
    return text + (f" [{'; '.join(skipped)}]" if skipped else "")


VECTOR_MATH_INFO = _describe()


def _vector_call(symbol: str, lanes: int):
    """Intrinsic buf[dst, r:r+lanes] = symbol(buf[src, r:r+lanes]) for a 2-D C-contiguous
    float64 buf: one libmvec call on `lanes` doubles passed in one vector register."""

    def call(typingctx, buf, dst, src, r):
        sig = types.void(buf, types.intp, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            aty = sig.args[0]
            arr = context.make_array(aty)(context, builder, args[0])
            vty = ir.VectorType(ir.DoubleType(), lanes)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), symbol)
            src_p = cgutils.get_item_pointer(context, builder, aty, arr, [args[2], args[3]],
                                             wraparound=False)
            dst_p = cgutils.get_item_pointer(context, builder, aty, arr, [args[1], args[3]],
                                             wraparound=False)
            x = builder.load(builder.bitcast(src_p, vty.as_pointer()), align=8)
            builder.store(builder.call(fn, [x]), builder.bitcast(dst_p, vty.as_pointer()), align=8)
            return context.get_dummy_value()

        return sig, codegen

    call.__name__ = call.__qualname__ = f"call{symbol}"
    return intrinsic(call)


# vector-math intrinsics of every vector variant, by variant and function (benchmarks reuse them)
VECTOR_CALLS = {name: {fn: _vector_call(sym, VARIANTS[name].lanes) for fn, sym in VARIANTS[name].symbols}
                for name in WIDEST_FIRST[:-1]}


def _named(tag: str):
    """njit under a name unique to the variant: numba's symbol names come from the qualified
    name, and two cached variants with equal names would resolve to one another's code."""

    def deco(fn):
        fn.__name__ = f"{fn.__name__}_{tag}"
        fn.__qualname__ = fn.__name__
        return njit(nogil=True, boundscheck=False, error_model="numpy")(fn)

    return deco


# Block math: buf[dst, r] = f(buf[src, r]) for r < m (m a multiple of the variant's lanes; dst
# may be src).

def _vector_block(tag: str, call, lanes: int):
    @_named(tag)
    def block(buf, dst, src, m):
        for r in range(0, m, lanes):
            call(buf, dst, src, r)

    return block


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


def _block_math(name: str):
    """(exp, log, log1p) block functions of a variant."""
    if name == "scalar":
        return _exp_scalar, _log_scalar, _log1p_scalar
    calls, lanes = VECTOR_CALLS[name], VARIANTS[name].lanes
    return tuple(_vector_block(f"{fn}_{name}", calls[fn], lanes) for fn in ("exp", "log", "log1p"))


def _make_interp(tag, lanes, f_exp, f_log, f_log1p):
    """The interpreter with its block math and lane count bound at compile time (plain calls,
    no dynamic globals, so the callers below can be cached on disk)."""

    @_named(tag)
    def step(buf, i, op, a, b, m):
        """Slot i := op(slot a, slot b) over lanes [0, m) (m a multiple of lanes)."""
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
    def interp(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early):
        n_rows = X.shape[1]
        n_slots = code.shape[0]
        B = BLOCK
        buf = np.empty((n_slots, B))
        # lanes any block uses: B, or fewer when there are fewer rows
        used = min(B, (n_rows + lanes - 1) // lanes * lanes)
        # slots that depend on no feature (constants, weights, exp/log of weights, ...) are the
        # same on every row: computed once here, skipped in the row blocks
        uniform = np.empty(n_slots, dtype=np.bool_)
        for i in range(n_slots):
            op = code[i]
            a = arg_a[i]
            b = arg_b[i]
            if op == CONST:
                uniform[i] = True
                buf[i, :used] = consts[i]
            elif op == WEIGHT:
                uniform[i] = True
                buf[i, :used] = weights[a]
            elif op == FEAT:
                uniform[i] = False
            else:
                u = uniform[a]
                if op == ADD or op == SUB or op == MUL or op == DIV or op == POW:
                    u = u and uniform[b]
                uniform[i] = u
                if u:
                    step(buf, i, op, a, b, used)
        bad = False
        for start in range(0, n_rows, B):
            m = min(B, n_rows - start)
            # every instruction runs over mp >= m lanes (a multiple of lanes); feature lanes past
            # the last row are padded with 1.0 so every lane holds a defined value; m are output
            mp = (m + lanes - 1) // lanes * lanes
            for i in range(n_slots):
                if uniform[i]:
                    continue
                op = code[i]
                a = arg_a[i]
                if op == FEAT:
                    # 1-D views indexed from 0: LLVM then vectorizes the copy (with X[a, start + r]
                    # it cannot prove the index non-negative and keeps numba's wraparound per row)
                    src = X[a, start:]
                    dst = buf[i]
                    for r in range(m):
                        dst[r] = src[r]
                    for r in range(m, mp):
                        dst[r] = 1.0
                else:
                    step(buf, i, op, a, arg_b[i], mp)
            for k in range(outs.shape[0]):
                got = buf[outs[k]]
                put = result[k, start:]  # a view, as for the features above
                for r in range(m):
                    v = got[r]
                    put[r] = v
                    bad |= (v - v) != 0.0  # NaN exactly when v is NaN or +-inf
            if bad and stop_early:  # the caller drops a run that is not finite: stop here
                return False
        return not bad

    return interp


# (exp, log, log1p) block functions of every variant; tests call them directly
BLOCK_MATH = {name: _block_math(name) for name in WIDEST_FIRST}
_interp_avx512 = _make_interp("avx512", VARIANTS["avx512"].lanes, *BLOCK_MATH["avx512"])
_interp_avx2 = _make_interp("avx2", VARIANTS["avx2"].lanes, *BLOCK_MATH["avx2"])
_interp_scalar = _make_interp("scalar", VARIANTS["scalar"].lanes, *BLOCK_MATH["scalar"])

# One cached entry point per variant (numba caches a top-level function by its name). A vector
# variant's code is compiled on first call only: calling one the CPU lacks would fault, so
# `kernel(name)` refuses those.


@njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
def _run_program_avx512(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early=False):
    return _interp_avx512(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early)


@njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
def _run_program_avx2(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early=False):
    return _interp_avx2(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early)


@njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
def _run_program_scalar(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early=False):
    return _interp_scalar(code, arg_a, arg_b, consts, X, weights, outs, result, stop_early)


_KERNELS = {"avx512": _run_program_avx512, "avx2": _run_program_avx2, "scalar": _run_program_scalar}


def kernel(name: str):
    """The run_program of variant `name` ('avx512', 'avx2', 'scalar'), if this machine has it."""
    if name not in _KERNELS:
        raise ValueError(f"unknown kernel variant {name!r}: expected one of {', '.join(WIDEST_FIRST)}")
    if name not in AVAILABLE:
        raise ValueError(f"kernel variant {name!r} is not available here: {_WHY[name]}")
    return _KERNELS[name]


run_program = kernel(VARIANT)
run_program.__doc__ = """Evaluate slots `outs` of the program for every column of X.

    X: (n_features, n_rows) float64, C-contiguous. result: (len(outs), n_rows).
    Returns True when every output value is finite. stop_early=True (the fit's runs, which
    drop a run that is not finite) returns False at the first block of rows holding a value
    that is not finite, with the later rows of result not written.
    """
