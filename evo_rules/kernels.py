"""The numba interpreter: one jitted function runs any compiled program over all rows.

A program is a list of SSA instructions (opcode, a, b, constant); instruction i writes slot i.
Rows are processed in blocks so each instruction is a tight loop over a block held in cache;
constant and weight slots are filled once. Compiled once and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

CONST, WEIGHT, FEAT, ADD, SUB, MUL, NEG, EXP, LOG, SOFTPLUS, SIGMOID, RECIP = range(12)
OPNAMES = ("const", "weight", "feat", "add", "sub", "mul", "neg", "exp", "log", "softplus",
           "sigmoid", "recip")
BLOCK = 256


@njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
def run_program(code, arg_a, arg_b, consts, X, weights, outs, result):
    """Evaluate slots `outs` of the program for every column of X.

    X: (n_features, n_rows) float64, C-contiguous. result: (len(outs), n_rows).
    Returns True when every output value is finite.
    """
    n_rows = X.shape[1]
    n_slots = code.shape[0]
    buf = np.empty((n_slots, BLOCK))
    for i in range(n_slots):
        op = code[i]
        if op == CONST:
            buf[i, :] = consts[i]
        elif op == WEIGHT:
            buf[i, :] = weights[arg_a[i]]
    finite = True
    for start in range(0, n_rows, BLOCK):
        m = min(BLOCK, n_rows - start)
        for i in range(n_slots):
            op = code[i]
            a = arg_a[i]
            b = arg_b[i]
            if op == FEAT:
                for r in range(m):
                    buf[i, r] = X[a, start + r]
            elif op == ADD:
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
                for r in range(m):
                    buf[i, r] = np.exp(buf[a, r])
            elif op == LOG:
                for r in range(m):
                    buf[i, r] = np.log(buf[a, r])
            elif op == SOFTPLUS:
                for r in range(m):
                    z = buf[a, r]
                    if z > 0.0:
                        buf[i, r] = z + np.log1p(np.exp(-z))
                    else:
                        buf[i, r] = np.log1p(np.exp(z))
            elif op == SIGMOID:
                for r in range(m):
                    z = buf[a, r]
                    if z >= 0.0:
                        buf[i, r] = 1.0 / (1.0 + np.exp(-z))
                    else:
                        e = np.exp(z)
                        buf[i, r] = e / (1.0 + e)
            elif op == RECIP:
                for r in range(m):
                    buf[i, r] = 1.0 / buf[a, r]
        for k in range(outs.shape[0]):
            s = outs[k]
            for r in range(m):
                v = buf[s, r]
                result[k, start + r] = v
                if not np.isfinite(v):
                    finite = False
    return finite
