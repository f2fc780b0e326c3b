"""The inner loop: damped Gauss-Newton (Levenberg-Marquardt) on the kernel's Jacobian.

A handful of iterations (cap 20 by default). The start is data-informed: a few constant starts
are tried and the best finite one kept; for the squared loss, weights that enter the rule
linearly are then solved exactly by least squares. A step whose scores are not finite, or that
raises the loss, is rejected and the damping raised. Deterministic: no randomness.

Kernel runs: the starts are compared on forward runs (scores only), and the Jacobian is computed
once, at the best; each trial step is one run with the Jacobian, which an accepted step hands to
the next iteration together with the loss's reusable state (listwise: each group's
log-sum-exp); a step too small to change any weight's bits is not run at all.
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
# version 2 (issue 11): the listwise loss takes its exponentials from NumPy's vectorized exp and
# its curvature from matrix products, which round differently in the last bits
FITTER = {"version": 2, "starts": list(STARTS), "tol": TOL, "l2": L2}


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

    def objective(w, s):
        """(loss + ridge at scores s of weights w, what the loss reuses of it at s)."""
        v, state = L.value_state(s)
        return v + 0.5 * l2 * float(w @ w), state

    def at(w):
        """_Point at w with the Jacobian, or None where the scores or Jacobian are not finite."""
        out, ok = rule.run(F, w, True)
        if not ok:
            return None
        f, state = objective(w, out[0])
        return _Point(w, out[0], out[1:], f, state)

    def forward_loss(w):
        """The objective at w from the scores alone (inf where they are not finite)."""
        out, ok = rule.run(F, w, False)
        return objective(w, out[0])[0] if ok else np.inf

    # ---- start point: the best finite one. With several starts the losses come from forward
    # runs and the Jacobian from one run at the winner; a start whose Jacobian is not finite
    # gives way to the next best, as when every start ran with its Jacobian
    starts = [np.asarray(init, dtype=np.float64).reshape(k)] if init is not None else [
        np.full(k, c) for c in STARTS]
    if len(starts) > 1:
        losses = [forward_loss(w0) for w0 in starts]
        order = sorted((f0, i) for i, f0 in enumerate(losses) if np.isfinite(f0))
    else:
        order = [(0.0, 0)]
    best = None
    for _, i in order:
        best = at(starts[i])
        if best is not None and np.isfinite(best.f):
            break
        best = None
    if best is None:
        return FitResult(np.zeros(k), float("inf"), 0, False, False, "not finite at any start")
    if loss == "squared" and init is None and k:
        lin = linear_params(rule)
        if lin:
            A = best.Jt[lin].T
            target = y - best.s + A @ best.w[lin]
            sol, *_ = np.linalg.lstsq(A, target, rcond=None)
            w_try = best.w.copy()
            w_try[lin] = sol
            r = at(w_try)
            if r is not None and r.f <= best.f:
                best = r
    if k == 0:
        return FitResult(best.w, best.f, 0, True, True, "no weights", (best.f,))

    # ---- damped Gauss-Newton; damping updated from the gain ratio (Nielsen's rule). An accepted
    # trial's scores, Jacobian and loss state are the next iteration's: one kernel run per trial
    cur = best
    lam, nu = 1e-3, 2.0
    history = [cur.f]
    converged = False
    it = 0
    ridge = l2 * np.eye(k)
    for it in range(1, max_iter + 1):
        gs, Hs = L.grad_curvature(cur.s, cur.Jt, cur.state)
        g = cur.Jt @ gs + l2 * cur.w
        H = Hs + ridge
        scale = np.maximum(np.diag(H), 1e-12)
        accepted = None
        for _ in range(12):
            A = H + lam * np.diag(scale)
            try:
                step = np.linalg.solve(A, -g)
            except np.linalg.LinAlgError:
                step = np.linalg.lstsq(A, -g, rcond=None)[0]
            if not np.all(np.isfinite(step)):
                lam, nu = lam * nu, nu * 2.0
                continue
            w_new = cur.w + step
            # a step below the weights' resolution leaves them bit for bit as they are: the run
            # would repeat cur exactly (the kernel is deterministic), so it is not made
            r = cur if _same_bits(w_new, cur.w) else at(w_new)
            if r is not None and r.f <= cur.f:
                predicted = -(g @ step + 0.5 * step @ H @ step)
                rho = (cur.f - r.f) / predicted if predicted > 0 else 0.0
                lam = max(lam * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), 1e-12)
                nu = 2.0
                accepted = r
                break
            lam, nu = lam * nu, nu * 2.0
        if accepted is None:
            converged = True
            it -= 1
            break
        f_old = cur.f
        cur = accepted
        history.append(cur.f)
        if f_old - cur.f <= tol * (1.0 + abs(f_old)):
            converged = True
            break
    return FitResult(cur.w, cur.f, it, True, converged, "converged" if converged else "iteration cap",
                     tuple(history))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


@dataclass
class _Point:
    """Weights with their scores, Jacobian rows (k, n), objective and the loss's state."""

    w: np.ndarray
    s: np.ndarray
    Jt: np.ndarray
    f: float
    state: object = None
