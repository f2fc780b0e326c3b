"""Optimizers for the optimizer-rule track (issue 13): AdamW, Muon, and Muon steered by a rule.

`Trainer` is one optimizer with three faces, so that the baselines and the rule-driven optimizer
share every line of arithmetic they have in common:

- base "adamw": AdamW (decoupled weight decay, bias-corrected moments) on every parameter;
- base "muon": Muon as modded-nanogpt and nanochat use it for 2-D weight matrices (the linear
  layers of the blocks): momentum buffer `m = lerp(m, g, 1 - beta)`, Nesterov look-ahead
  `lerp(g, m, beta)`, orthogonalised by 5 quintic Newton-Schulz steps, scaled by
  sqrt(max(1, rows / cols)); AdamW on the rest (token and position embeddings, norms);
- with a `rule`: the base's step is replaced, gated or corrected by a compiled update rule.

Features of the rule, per parameter element: `g` gradient, `m` momentum (Muon's buffer for
matrices, AdamW's first moment otherwise), `v` second moment (EMA of g^2, beta2; kept for Muon's
matrices too), `u` the base optimizer's step direction before the learning rate (Muon's
orthogonalised step for matrices, AdamW's m_hat / (sqrt(v_hat) + eps) otherwise), `w` the
parameter, `t` the step fraction (step / steps), `n` the base's step normalised per row as
NorMuon does it (Muon's u divided by the root of an EMA, beta2, bias-corrected, of the mean of
u^2 over its row, that is per output neuron, then rescaled to u's Frobenius norm; AdamW's u
itself for the other parameters): a per-element feature built from a row statistic, which no
element-wise rule over the other six can compute. A parameter moves by -lr_t * s with

    replace:  s = rule
    gate:     s = u * rule
    correct:  s = u + rule     (in terms of the base's update U = lr_t * u: U + lr_t * rule)

lr_t being the parameter group's scheduled learning rate. So `x.u` in replace mode, `1` in gate
mode and `0` in correct mode reproduce the base exactly (`muon_rule`). Weight decay, where set,
is applied as in the base, outside the rule.

The rule is compiled once (`compile_rule`) from its canonical term into straight-line Python
source over torch tensors, the same instruction patterns as the engine's own program
(`evo_rules.program`): stable softplus and sigmoid, 1/v for exp(-log v), plain IEEE semantics
elsewhere (log of 0 is -inf, of a negative number NaN, as in the kernels). It runs in float64, as
the engine does, and its result is cast to the parameter's dtype. A non-finite step raises
`NonFiniteStep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from evo_rules import kernels as K
from evo_rules.program import _plan  # the engine's own instruction patterns (softplus, recip, ...)
from evo_rules.rule import parse
from evo_rules.terms import Term

FEATURES = ("g", "m", "v", "u", "w", "t", "n")
MODES = ("replace", "gate", "correct")
BASES = ("adamw", "muon")
NS_COEFFS = (3.4445, -4.7750, 2.0315)  # modded-nanogpt's quintic Newton-Schulz iteration


class NonFiniteStep(FloatingPointError):
    """The rule produced a NaN or infinite step."""


# ---------------------------------------------------------------------- rule compilation

_UNARY = {K.EXP: "torch.exp({})", K.LOG: "torch.log({})", K.NEG: "(-{})", K.RECIP: "(1.0 / {})",
          K.SOFTPLUS: "(torch.clamp({0}, min=0.0) + torch.log1p(torch.exp(-torch.abs({0}))))",
          K.SIGMOID: "torch.where({0} >= 0.0, 1.0, torch.exp(-torch.abs({0}))) / "
                     "(1.0 + torch.exp(-torch.abs({0})))",
          K.SIN: "torch.sin({})", K.COS: "torch.cos({})", K.SQRT: "torch.sqrt({})",
          K.ABS: "torch.abs({})",
          K.SIGN: "torch.where(({0} > 0.0) | ({0} < 0.0), torch.sign({0}), {0})"}  # 0 and NaN pass
_BINARY = {K.DIV: "({} / {})", K.POW: "torch.pow({}, {})"}


class _Source:
    """Straight-line source for a term: one assignment per distinct subterm (by text)."""

    def __init__(self, weights: Mapping[str, float]):
        self.lines: list[str] = []
        self.consts: dict[str, float] = {}
        self.slots: dict[str, str] = {}
        self.weights = weights

    def const(self, value: float) -> str:
        name = f"c{len(self.consts)}"
        self.consts[name] = float(value)
        return name

    def emit(self, expr: str) -> str:
        name = f"s{len(self.lines)}"
        self.lines.append(f"    {name} = {expr}")
        return name

    def term(self, t: Term) -> str:
        key = t.text
        if key not in self.slots:
            self.slots[key] = self._compile(t)
        return self.slots[key]

    def _compile(self, t: Term) -> str:
        code, operands = _plan(t)
        if code == K.CONST:
            return self.const(t.value)
        if code == K.WEIGHT:
            return self.const(self.weights["w" + str(t.value)])
        if code == K.FEAT:
            if t.value not in FEATURES:
                raise ValueError(f"feature x.{t.value} is not an update-rule feature "
                                 f"(use {', '.join('x.' + f for f in FEATURES)})")
            return str(t.value)
        if code == K.SUB:  # eml: exp-like part minus log-like part, each planned by the engine
            (ce, e), (cl, lg) = operands
            return self.emit(f"{self._unary(ce, e)} - {self._unary(cl, lg)}")
        if code in (K.ADD, K.MUL):
            names = [self.term(a) for a in operands]
            return self.emit((" + " if code == K.ADD else " * ").join(names))
        if code in _BINARY:
            return self.emit(_BINARY[code].format(*(self.term(a) for a in operands)))
        return self.emit(self._unary(code, operands[0]))

    def _unary(self, code: int, arg: Term) -> str:
        a = self.term(arg)
        return _UNARY[code].format(a)


def compile_rule(text: str, weights: Sequence[float] | Mapping[str, float] | None = None
                 ) -> Callable[..., torch.Tensor]:
    """The rule as `f(g, m, v, u, w, t, n) -> tensor` (float64, broadcast to g's shape), compiled
    once from its canonical term. `weights`: in the rule's `params` order or by name."""
    rule = parse(text, check_constants=False)
    if weights is None:
        weights = [1.0] * len(rule.params)
    if not isinstance(weights, Mapping):
        weights = list(weights)
        if len(weights) != len(rule.params):
            raise ValueError(f"rule {rule.text} has {len(rule.params)} weight(s), got {len(weights)}")
        weights = dict(zip(rule.params, weights))
    src = _Source(weights)
    out = src.term(rule.term)
    body = "\n".join(src.lines) or "    pass"
    source = f"def rule({', '.join(FEATURES)}):\n{body}\n    return {out}\n"
    namespace = {"torch": torch}
    namespace.update({k: torch.tensor(v, dtype=torch.float64) for k, v in src.consts.items()})
    exec(compile(source, f"<rule {rule.key[:8]}>", "exec"), namespace)  # noqa: S102 - our own text
    fn = namespace["rule"]

    def run(g, m, v, u, w, t, n):
        r = fn(g, m, v, u, w, t, n)
        return r.expand(g.shape) if r.shape != g.shape else r

    run.source = source  # for reading and tests
    run.text = rule.text
    return run


def muon_rule(mode: str) -> str:
    """The rule that reproduces the base optimizer exactly in `mode`."""
    return {"replace": "x.u", "gate": "1", "correct": "0"}[mode]


def in_mode(text: str, from_mode: str, to_mode: str) -> str | None:
    """The rule `text` of `from_mode` rewritten for `to_mode` so that it takes the same step (up
    to rounding), or None where `to_mode` cannot express it (gate mode: s / u is undefined at
    u = 0)."""
    if from_mode == to_mode:
        return parse(text, check_constants=False).text
    step = {"replace": text, "gate": f"(mul x.u {text})", "correct": f"(add x.u {text})"}[from_mode]
    if to_mode == "replace":
        return parse(step, check_constants=False).text
    if to_mode == "correct":
        return parse(f"(add {step} (mul -1 x.u))", check_constants=False).text
    return None


# ---------------------------------------------------------------------- Muon's orthogonalisation


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of G = U S V^T (singular values land near 1, about 0.7-1.2), by the
    quintic iteration of modded-nanogpt. float32 here (modded-nanogpt uses bfloat16 on GPUs)."""
    a, b, c = NS_COEFFS
    X = G.float()
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    X = X / (X.norm() + eps)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.T if tall else X


# ---------------------------------------------------------------------- the optimizer


@dataclass(frozen=True)
class OptimSettings:
    base: str = "muon"  # "muon" or "adamw"
    lr: float = 0.02  # Muon's learning rate (matrices)
    adam_lr: float = 3e-3  # AdamW's (every parameter with base adamw; the rest with muon)
    momentum: float = 0.95  # Muon
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW; betas[1] is also v's for Muon's matrices
    eps: float = 1e-8
    weight_decay: float = 0.0  # AdamW's decoupled decay on matrices and embeddings (dim >= 2)
    ns_steps: int = 5
    warmdown: float = 0.2  # share of the steps at the end over which the lr falls linearly to 0


def lr_factor(step: int, steps: int, warmdown: float) -> float:
    """Constant, then linear to 0 over the last `warmdown` share of the steps (nanochat's shape)."""
    left = steps - step
    span = warmdown * steps
    return 1.0 if span <= 0 or left >= span else max(left / span, 0.0)


def muon_params(model: torch.nn.Module) -> set[str]:
    """Names of the parameters Muon updates: the 2-D weights of the transformer blocks (not the
    embeddings, which are 2-D too but read by row)."""
    return {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")}


class Trainer:
    """One optimizer over `model`'s parameters (see the module doc); `step(k)` after backward."""

    def __init__(self, model: torch.nn.Module, steps: int, settings: OptimSettings = OptimSettings(),
                 rule: str | None = None, mode: str = "replace", weights=None):
        if settings.base not in BASES:
            raise ValueError(f"base: must be one of {', '.join(BASES)}, got {settings.base!r}")
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
        self.s = settings
        self.steps = steps
        self.mode = mode
        self.rule = compile_rule(rule, weights) if rule is not None else None
        matrices = muon_params(model) if settings.base == "muon" else set()
        self.params = [(n, p, n in matrices) for n, p in model.named_parameters() if p.requires_grad]
        self.state = {n: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for n, p, _ in self.params}
        self.k = 0  # steps taken

    @torch.no_grad()
    def step(self) -> None:
        s = self.s
        self.k += 1
        f = lr_factor(self.k - 1, self.steps, s.warmdown)
        t = torch.tensor((self.k - 1) / max(self.steps, 1), dtype=torch.float64)
        b1, b2 = s.betas
        for name, p, is_muon in self.params:
            if p.grad is None:
                continue
            g, st = p.grad, self.state[name]
            m, v = st["m"], st["v"]
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            if is_muon:
                lr = s.lr * f
                m.lerp_(g, 1 - s.momentum)
                u = newton_schulz(g.lerp(m, s.momentum), s.ns_steps).to(p.dtype)
                u = u * max(1.0, p.size(0) / p.size(1)) ** 0.5
                n = self._row_normalised(st, u, b2) if self.rule is not None else u
            else:
                lr = s.adam_lr * f
                m.lerp_(g, 1 - b1)
                m_hat = m / (1 - b1 ** self.k)
                v_hat = v / (1 - b2 ** self.k)
                u = m_hat / (v_hat.sqrt() + s.eps)
                n = u
                if s.weight_decay and p.dim() >= 2:
                    p.mul_(1 - lr * s.weight_decay)
            p.add_(self._direction(g, m, v, u, p, t, n), alpha=-lr)

    def _row_normalised(self, st: dict, u: torch.Tensor, beta: float) -> torch.Tensor:
        """NorMuon's step: u over the root of its rows' EMA mean square (bias-corrected), at
        u's Frobenius norm. The EMA lives in the parameter's state beside m and v."""
        q = st.setdefault("q", torch.zeros(u.size(0), 1, dtype=u.dtype))
        q.lerp_((u * u).mean(dim=1, keepdim=True), 1 - beta)
        n = u / (q / (1 - beta ** self.k)).sqrt().add(1e-10)
        return n * (u.norm() / n.norm().clamp_min(1e-12))

    def _direction(self, g, m, v, u, p, t, n) -> torch.Tensor:
        if self.rule is None:
            return u
        d = torch.float64
        r = self.rule(g.to(d), m.to(d), v.to(d), u.to(d), p.to(d), t, n.to(d))
        if self.mode == "replace":
            out = r
        elif self.mode == "gate":
            out = u.to(d) * r
        else:
            out = u.to(d) + r
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteStep(f"rule {self.rule.text} gave a non-finite step at step {self.k}")
        return out.to(p.dtype)


# ---------------------------------------------------------------------- the seed's hand designs

# The seed system's three hand designs, rewritten in this term language (its exact formulas were
# not kept; these follow its descriptions), and NorMuon. Each is a rule for its mode.
REFERENCE_RULES = {
    # gradient gating (gate mode): Muon's step scaled per element by 0.5 + m^2 / v, the momentum's
    # signal-to-noise ratio (in [0, 1] for EMAs of equal beta): consistent directions step up to
    # 1.5x, noisy ones 0.5x
    "gating": ("gate", "(add 0.5 (mul x.m x.m (exp (mul -1 (log (add x.v 1e-12))))))"),
    # optimizer replacement (replace mode): an Adam-style element-wise step m / sqrt(v) instead
    # of Muon's, scaled by 0.1 to Muon's per-element step size (RMS about 1/sqrt(width))
    "replacement": ("replace", "(mul 0.1 x.m (exp (mul -0.5 (log (add x.v 1e-16)))))"),
    # lr-scaled correction (correct mode): Muon's step plus lr times a small element-wise
    # adaptive term, 0.02 m / sqrt(v)
    "correction": ("correct", "(mul 0.02 x.m (exp (mul -0.5 (log (add x.v 1e-16)))))"),
    # NorMuon (Li et al. 2025; replace mode): Muon's step normalised per row, the feature n. Not
    # one of the seed's designs: a published one, so that a search starts from it too and the
    # table shows it beside Muon
    "normuon": ("replace", "x.n"),
}
# the reference rules that are published optimizers rather than the seed's hand designs
PUBLISHED = frozenset({"normuon"})
