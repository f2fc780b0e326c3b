"""The inner loop: damped Gauss-Newton (Levenberg-Marquardt) on the kernel's Jacobian.

A handful of iterations (cap 20 by default). The start is data-informed: a few constant starts
are tried on the first START_ROWS rows (whole groups for the listwise loss) and the best finite
one kept; for the squared loss, weights that enter the rule
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
from numba import njit

from .losses import make_loss
from .rule import Rule
from .terms import weights_in

STARTS = (0.0, 0.1, 1.0, -0.1)
# the fit stops after PATIENCE iterations in a row that each lowered the objective by less than
# TOL (relative). TOL is Ceres's default function tolerance: a search ranks rules by metrics that
# do not move in the 7th digit of the loss, and 1e-10 spent a quarter of the iterations (1.9 of
# 7.9 on the default search's rules) on changes below 1e-6. Two in a row, not one: from constant
# starts a rule with mirrored weights sits on a saddle for an iteration before rounding breaks
# the tie (the distractor task's reference rule stopped there at 2.0 instead of 0.72)
TOL = 1e-6
PATIENCE = 2
L2 = 1e-8  # ridge on the weights: keeps the normal equations solvable
# rows the starts are compared on: a start's loss on 2,048 rows picks the same start as on all
# 12,000 of the default search's batch for 97% of its rules (and those it does not are close),
# at a sixth of the cost; a start not finite there is not finite on all rows either
START_ROWS = 2048
# Everything besides max_iter that changes a fit's outcome. The fitness cache keys on it, so
# changing a constant here can never return a fitness measured under the old one.
# version 2 (issue 11): the listwise loss takes its exponentials from NumPy's vectorized exp and
# its curvature from matrix products, which round differently in the last bits; version 3: the
# starts are compared on START_ROWS rows; version 4: TOL 1e-6 (was 1e-10) PATIENCE times in a row
FITTER = {"version": 4, "starts": list(STARTS), "tol": TOL, "l2": L2, "start_rows": START_ROWS}


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
    every = _Rows(rule, F, L, y, l2)

    # ---- start point: the best finite one. With several starts the losses come from forward
    # runs on the first rows and the Jacobian from one run at the winner; a start whose
    # Jacobian is not finite gives way to the next best, as when every start ran with it
    starts = [np.asarray(init, dtype=np.float64).reshape(k)] if init is not None else [
        np.full(k, c) for c in STARTS]
    if len(starts) > 1:
        head = every.head(START_ROWS)
        losses = [head.forward_loss(w0) for w0 in starts]
        order = sorted((f0, i) for i, f0 in enumerate(losses) if np.isfinite(f0))
    else:
        order = [(0.0, 0)]
    best = None
    for _, i in order:
        best = every.at(starts[i])
        if best is not None and np.isfinite(best.f):
            break
        best = None
    if best is None:
        return FitResult(np.zeros(k), float("inf"), 0, False, False, "not finite at any start")
    if loss == "squared" and init is None and k:
        best = every.solve_linear(best)
    if k == 0:
        return FitResult(best.w, best.f, 0, True, True, "no weights", (best.f,))
    cur, it, converged, history = _levenberg_marquardt(every, best, max_iter, tol, l2)
    return FitResult(cur.w, cur.f, it, True, converged,
                     "converged" if converged else "iteration cap", history)


def _levenberg_marquardt(rows: "_Rows", cur: "_Point", max_iter: int, tol: float, l2: float):
    """Damped Gauss-Newton from `cur` on `rows`: (last point, iterations, converged, the
    objective's history). The
    damping follows the gain ratio (Nielsen's rule). An accepted trial's scores, Jacobian and
    loss state are the next iteration's: one kernel run per trial."""
    k = cur.w.shape[0]
    L = rows.loss
    lam, nu = 1e-3, 2.0
    history = [cur.f]
    converged = False
    small = 0  # consecutive iterations that lowered the objective by less than tol
    it = 0
    ridge = l2 * np.eye(k)
    for it in range(1, max_iter + 1):
        gs, Hs = L.grad_curvature(cur.s, cur.Jt, cur.state)
        g = cur.Jt @ gs + l2 * cur.w
        H = Hs + ridge
        scale = np.maximum(np.diag(H), 1e-12)
        accepted = None
        for _ in range(12):
            step, predicted = damped_solve(H, g, lam, scale)
            if predicted == np.inf:  # a step that is not finite
                lam, nu = lam * nu, nu * 2.0
                continue
            w_new = cur.w + step
            # a step below the weights' resolution leaves them bit for bit as they are: the run
            # would repeat cur exactly (the kernel is deterministic), so it is not made
            r = cur if w_new.tobytes() == cur.w.tobytes() else rows.at(w_new)
            if r is not None and r.f <= cur.f:
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
            small += 1
            if small >= PATIENCE:
                converged = True
                break
        else:
            small = 0
    return cur, it, converged, tuple(history)


class _Rows:
    """The rows a fit runs on: the rule, its feature matrix, the loss and the ridge."""

    def __init__(self, rule: Rule, F: np.ndarray, loss, y: np.ndarray, l2: float):
        self.rule, self.F, self.loss, self.y, self.l2 = rule, F, loss, y, l2
        self.n = F.shape[1]

    def head(self, n_rows: int) -> "_Rows":
        """The first rows (whole groups for the listwise loss): itself when that is all."""
        L_head, m = self.loss.head(n_rows)
        if m >= self.n:
            return self
        return _Rows(self.rule, np.ascontiguousarray(self.F[:, :m]), L_head, self.y[:m], self.l2)

    def objective(self, w, s):
        """(loss + ridge at scores s of weights w, what the loss reuses of it at s)."""
        v, state = self.loss.value_state(s)
        return v + 0.5 * self.l2 * float(w @ w), state

    def at(self, w) -> "_Point | None":
        """_Point at w with the Jacobian, or None where the scores or Jacobian are not finite."""
        out, ok = self.rule.run(self.F, w, True, True)
        if not ok:
            return None
        f, state = self.objective(w, out[0])
        return _Point(w, out[0], out[1:], f, state)

    def forward_loss(self, w) -> float:
        """The objective from the scores alone (inf where they are not finite)."""
        out, ok = self.rule.run(self.F, w, False, True)
        return self.objective(w, out[0])[0] if ok else np.inf

    def solve_linear(self, best: "_Point") -> "_Point":
        """Squared loss: the weights the rule is jointly affine in, solved by least squares at
        `best` (kept only when that lowers the loss)."""
        lin = linear_params(self.rule)
        if not lin:
            return best
        A = best.Jt[lin].T
        target = self.y - best.s + A @ best.w[lin]
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(target))):
            return best  # (LAPACK's least squares never returns on NaN)
        sol, *_ = np.linalg.lstsq(A, target, rcond=None)
        w_try = best.w.copy()
        w_try[lin] = sol
        r = self.at(w_try)
        return r if r is not None and r.f <= best.f else best


def damped_solve(H: np.ndarray, g: np.ndarray, lam: float, scale: np.ndarray):
    """(step, predicted decrease) for (H + lam diag(scale)) step = -g; predicted is inf when no
    finite step exists. Cholesky in numba (k is small: NumPy's LAPACK call cost more in overhead
    than the solve); a matrix it cannot factor (not positive definite) goes to least squares."""
    step = np.empty(g.shape[0])
    predicted = _damped_step(H, g, lam, scale, step)
    if predicted != predicted:  # NaN: not factored
        A = H + lam * np.diag(scale)
        if np.all(np.isfinite(A)) and np.all(np.isfinite(g)):
            # (LAPACK's least squares never returns on a matrix holding NaN)
            step = np.linalg.lstsq(A, -g, rcond=None)[0]
            predicted = -(g @ step + 0.5 * step @ H @ step)
        if predicted != predicted or not np.all(np.isfinite(step)):
            predicted = np.inf
    return step, predicted


@njit(cache=True, nogil=True)
def _damped_step(H, g, lam, scale, step):
    """step = -(H + lam diag(scale))^-1 g by Cholesky; returns the decrease the quadratic model
    predicts, -(g.step + step.H.step / 2), NaN when the damped matrix is not positive definite
    (step not made) and inf when the step is not finite."""
    k = g.shape[0]
    C = np.empty((k, k))
    for i in range(k):
        for j in range(i + 1):
            t = H[i, j] + (lam * scale[i] if i == j else 0.0)
            for m in range(j):
                t -= C[i, m] * C[j, m]
            if i == j:
                if not t > 0.0:
                    return np.nan
                C[i, i] = np.sqrt(t)
            else:
                C[i, j] = t / C[j, j]
    for i in range(k):  # forward: C z = -g
        t = -g[i]
        for m in range(i):
            t -= C[i, m] * step[m]
        step[i] = t / C[i, i]
    for i in range(k - 1, -1, -1):  # back: C^T step = z
        t = step[i]
        for m in range(i + 1, k):
            t -= C[m, i] * step[m]
        step[i] = t / C[i, i]
    gs = 0.0
    sHs = 0.0
    for i in range(k):
        if not np.isfinite(step[i]):
            return np.inf
        gs += g[i] * step[i]
        t = 0.0
        for j in range(k):
            t += H[i, j] * step[j]
        sHs += step[i] * t
    return -(gs + 0.5 * sHs)


@dataclass
class _Point:
    """Weights with their scores, Jacobian rows (k, n), objective and the loss's state."""

    w: np.ndarray
    s: np.ndarray
    Jt: np.ndarray
    f: float
    state: object = None
