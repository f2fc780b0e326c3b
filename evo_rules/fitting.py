"""The inner loop: damped Gauss-Newton (Levenberg-Marquardt) on the kernel's Jacobian.

A handful of iterations (cap 20 by default). The start is data-informed: a few constant starts
are tried and the best finite one kept; for the squared loss, weights that enter the rule
linearly are then solved exactly by least squares. A step whose scores are not finite, or that
raises the loss, is rejected and the damping raised. Deterministic: no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .losses import make_loss
from .rule import Rule
from .terms import weights_in

STARTS = (0.0, 0.1, 1.0, -0.1)
TOL = 1e-10  # relative loss decrease below which the fit stops
L2 = 1e-8  # ridge on the weights: keeps the normal equations solvable
# Everything besides max_iter that changes a fit's outcome. The fitness cache keys on it, so
# changing a constant here can never return a fitness measured under the old one.
FITTER = {"version": 1, "starts": list(STARTS), "tol": TOL, "l2": L2}


@dataclass(frozen=True)
class FitResult:
    weights: np.ndarray
    loss: float
    iterations: int
    valid: bool
    converged: bool = False
    message: str = ""
    history: tuple[float, ...] = field(default=(), repr=False)

    def as_dict(self, params) -> dict[str, float]:
        return {p: float(v) for p, v in zip(params, self.weights)}


@lru_cache(maxsize=4096)
def linear_params(rule: Rule) -> list[int]:
    """Indices of weights the rule is jointly affine in (each gradient free of the set)."""
    grads = rule.gradients
    deps = {p: set(weights_in(grads[p])) for p in rule.params}
    chosen: list[str] = []
    for p in rule.params:
        if p in deps[p] or deps[p] & set(chosen) or any(p in deps[q] for q in chosen):
            continue
        chosen.append(p)
    return [rule.params.index(p) for p in chosen]


def fit(rule: Rule, X, y, loss: str = "squared", groups=None, max_iter: int = 20,
        init=None, tol: float = TOL, l2: float = L2, names=None) -> FitResult:
    """Fit the rule's weights to (X, y). Returns weights, final loss, iterations, validity."""
    # overflow in a trial step is expected and handled (the step is rejected): no warnings
    with np.errstate(all="ignore"):
        return _fit(rule, X, y, loss, groups, max_iter, init, tol, l2, names)


def _fit(rule, X, y, loss, groups, max_iter, init, tol, l2, names) -> FitResult:
    L = make_loss(loss, y, groups)
    F = rule.feature_matrix(X, names)
    k = len(rule.params)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if F.shape[1] != y.shape[0]:
        raise ValueError(f"X has {F.shape[1]} rows but y has {y.shape[0]}")

    def evaluate(w):
        out, ok = rule.run(F, w, True)
        if not ok:
            return None
        s, Jt = out[0], out[1:]
        return s, Jt, L.value(s) + 0.5 * l2 * float(w @ w)

    # ---- start point
    starts = [np.asarray(init, dtype=np.float64).reshape(k)] if init is not None else [
        np.full(k, c) for c in STARTS]
    best = None
    for w0 in starts:
        r = evaluate(w0)
        if r is not None and np.isfinite(r[2]) and (best is None or r[2] < best[1][2]):
            best = (w0, r)
    if best is None:
        return FitResult(np.zeros(k), float("inf"), 0, False, False, "not finite at any start")
    w, (s, Jt, f) = best
    if loss == "squared" and init is None and k:
        lin = linear_params(rule)
        if lin:
            A = Jt[lin].T
            target = y - s + A @ w[lin]
            sol, *_ = np.linalg.lstsq(A, target, rcond=None)
            w_try = w.copy()
            w_try[lin] = sol
            r = evaluate(w_try)
            if r is not None and r[2] <= f:
                w, (s, Jt, f) = w_try, r
    if k == 0:
        return FitResult(w, f, 0, True, True, "no weights", (f,))

    # ---- damped Gauss-Newton; damping updated from the gain ratio (Nielsen's rule)
    lam, nu = 1e-3, 2.0
    history = [f]
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        gs, Hs = L.grad_curvature(s, Jt)
        g = Jt @ gs + l2 * w
        H = Hs + l2 * np.eye(k)
        scale = np.maximum(np.diag(H), 1e-12)
        accepted = False
        for _ in range(12):
            A = H + lam * np.diag(scale)
            try:
                step = np.linalg.solve(A, -g)
            except np.linalg.LinAlgError:
                step = np.linalg.lstsq(A, -g, rcond=None)[0]
            if not np.all(np.isfinite(step)):
                lam, nu = lam * nu, nu * 2.0
                continue
            w_new = w + step
            r = evaluate(w_new)
            if r is not None and r[2] <= f:
                predicted = -(g @ step + 0.5 * step @ H @ step)
                rho = (f - r[2]) / predicted if predicted > 0 else 0.0
                lam = max(lam * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), 1e-12)
                nu = 2.0
                accepted = True
                break
            lam, nu = lam * nu, nu * 2.0
        if not accepted:
            converged = True
            it -= 1
            break
        f_old = f
        w, (s, Jt, f) = w_new, r
        history.append(f)
        if f_old - f <= tol * (1.0 + abs(f_old)):
            converged = True
            break
    return FitResult(w, f, it, True, converged, "converged" if converged else "iteration cap",
                     tuple(history))
