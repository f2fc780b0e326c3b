"""Synthetic "and-match" tasks: pick the one candidate that matches several clues at once.

Every variant is a seeded, fully known generative model, so the Bayes-optimal answer (the
*oracle*) is computed exactly, and a linear rule is provably below it because the optimal
score is an AND (a soft minimum of per-clue evidence), not a sum.

Generative model
----------------
An episode has ``C`` candidates (tokens); exactly one is the target. Each candidate ``i`` has a
latent class ``k_i``: the target has class ``T``; every other candidate draws its class
independently from the variant's distractor classes with probabilities ``pi_k``. A class fixes
the mean ``m[k, f]`` of each clue feature ``f`` (``x.color``, ``x.shape``): 1 = the candidate
matches that clue, 0 = it does not, 2 = it matches *more strongly than the target does*
(a decoy: "vivid red" when the clue is "reddish").

1. Ages (variants with ``x.age`` only). Either class-dependent, ``age ~ Exponential(mean
   a[k])`` (variant ``recent``: old candidates are stale referents), or shared,
   ``age ~ Uniform(0, A)`` iid for every candidate whatever its class.
2. Target slot. Uniform over the ``C`` slots, or, for variants with a freshness prior
   (``stale``), drawn after the ages with probability proportional to
   ``sigmoid(k * (a0 - age_i))``: old candidates are rarely the answer.
3. Distractor classes iid with probabilities ``pi_k`` for the other ``C - 1`` slots.
4. Clue features ``x_f = m[k_i, f] + sd(age_i) * eps``, ``eps ~ N(0, 1)`` iid, with
   ``sd(age) = sigma * exp(fade * age / 2)``: with ``fade > 0`` evidence about old candidates
   is noisier (it has gone stale), so it must be damped by ``exp(-fade * age)``.

Draws happen in exactly that order from ``numpy.random.default_rng`` seeded by
``SeedSequence([seed, crc32(variant), split])``, so a (variant, seed, sizes) triple fixes
every array.

Bayes-optimal rule (the oracle)
-------------------------------
Candidates are independent given the target slot, so the posterior that candidate ``i`` is
the target is exactly::

    P(target = i | episode)  ∝  s(age_i) * p(x_i | T) / sum_k pi_k p(x_i | k)

with ``s(age) = sigmoid(k (a0 - age))`` (1 without a freshness prior) and ``p(x | k)`` the
product of the clue densities (and the age density for class-dependent ages). Its logarithm is
``-log sum_k exp(lin_k(x))`` with ``lin_k`` linear in the clues (times ``exp(-fade * age)``
when evidence fades), minus ``softplus(k (age - a0))``: a soft minimum over the ways a
candidate could be a distractor. ``oracle(part)`` takes the argmax of this posterior per
episode and reports its answer score on the sampled episodes.

Because the listwise loss is exactly the conditional log-likelihood of the target slot, a rule
family that contains this log posterior (up to a constant) recovers it when fitted.
``reference_rules()`` writes those families compactly ("softmin..." rules, 11-28 nodes) as
``(eml 0 (add (exp lin_1) (exp lin_2) ...))`` = ``1 - ln sum_k exp(lin_k)``, next to the
``eml``-gated seed shape ``(eml signal (add 1 (exp damping)))`` ("gated") and a product of
per-clue sigmoid gates ``(eml 0 (mul (add 1 (exp d_color)) (add 1 (exp d_shape))))``
("gated-and", the log of ``sigmoid(-d_color) * sigmoid(-d_shape)``: an AND).

Variants (clue means (color, shape); sigma is the clue noise sd; C = 8 by default)
--------------------------------------------------------------------------------
==========================  ==============================================================
``and-match``               sigma .4; target (1,1); distractors (1,0) .4, (0,1) .4, (0,0) .2
``and-match-distractor``    sigma .45; target (1,1); decoys (1.8,0) .45, (0,1.8) .45 match
                            one clue more strongly than the target; (0,0) .1. A linear rule
                            cannot say "too much colour means decoy"
``and-match-recent``        sigma .3; x.age; target (1,1) age ~ Exp(mean .5); old referents
                            (1,1) .3 with age ~ Exp(mean 5); (1,0) .35, (0,1) .35 with
                            age ~ Exp(mean .5): match both clues AND be recent
``and-match-stale``         sigma .4; x.age ~ U(0, 4); target slot drawn with the freshness
                            prior sigmoid(2 (2 - age)); distractors (1,0) .5, (0,1) .5: the
                            AND of the clues, damped by softplus(2 (age - 2))
``and-match-fading``        sigma .2; x.age ~ U(0, 3); clue noise variance grows as
                            sigma^2 exp(age); distractors (1,0) .5, (0,1) .5: evidence must
                            be damped by exp(-age) inside the AND
``and-match-negated``       sigma .4; "the red one that is NOT a square": target (1,0);
                            distractors (1,1) .5 (the trap), (0,0) .25, (0,1) .25
==========================  ==============================================================

Measured (seed 20240611, 3000 test episodes, evo_rules.fit listwise, 20 iterations): the
oracle answer score is 0.73-0.80, the fitted linear rule 0.10-0.16 below it (0.2 vs 0.8 with
decoys), and the best reference rule closes 94-100% of the linear -> oracle gap.

Run ``python -m evo_rules.fitness.synthetic`` to print oracle / linear / reference answer scores.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
from numba import njit

from .base import (MAX_SEED, PARTS, Batch, Scorer, Setting, SettingsError, check_settings,
                   fingerprint_of, top1_accuracy, top1_hits)

__all__ = [
    "VARIANTS",
    "SyntheticTask",
    "VariantSpec",
    "fit_and_score",
    "linear_rule_text",
    "measure_baselines",
    "reference_rules",
    "variant_names",
]

DEFAULT_SEED = 20240611
MAX_ROWS = 10_000_000  # candidates per split (episodes x candidates): a few GB of features at most

# `[task.settings]` of every and-match variant (checked before a run starts and by the task)
SETTINGS = {"seed": Setting(int, 0, MAX_SEED), "n_train": Setting(int, 1, 1_000_000),
            "n_valid": Setting(int, 1, 1_000_000), "n_test": Setting(int, 1, 1_000_000),
            "candidates": Setting(int, 2, 1_000)}


def check_task_settings(settings: Mapping) -> None:
    """SettingsError for an unknown, mistyped or out-of-range setting, or splits too large."""
    check_settings(settings, SETTINGS)
    c = settings.get("candidates", 8)  # a split left at its default is far below the cap
    for part in ("n_train", "n_valid", "n_test"):
        n = settings.get(part, 1)
        if n * c > MAX_ROWS:
            raise SettingsError(part, f"{n} episodes x {c} candidates is over {MAX_ROWS:,} rows")


@dataclass(frozen=True)
class DistractorClass:
    means: tuple[float, ...]  # clue means, in the order of VariantSpec.clues
    prob: float
    age_mean: float | None = None  # Exponential age mean (class-dependent ages only)


@dataclass(frozen=True)
class VariantSpec:
    """One generative model (see the module docstring)."""

    name: str
    description: str
    clues: tuple[str, ...]
    target: tuple[float, ...]
    distractors: tuple[DistractorClass, ...]
    sigma: float
    target_age_mean: float | None = None  # class-dependent Exponential ages when set
    age_max: float | None = None  # shared Uniform(0, age_max) ages when set
    fade: float = 0.0  # clue noise variance grows as exp(fade * age)
    freshness: tuple[float, float] | None = None  # (k, a0): target prior sigmoid(k (a0 - age))
    reference: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def has_age(self) -> bool:
        return self.target_age_mean is not None or self.age_max is not None

    @property
    def features(self) -> tuple[str, ...]:
        return self.clues + (("age",) if self.has_age else ())

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("reference")
        d.pop("description")
        return d


def _d(means, prob, age_mean=None) -> DistractorClass:
    return DistractorClass(tuple(float(m) for m in means), float(prob), age_mean)


# Reference rules. "softmin" rules are the exact log posterior family of their variant
# (a negative log-sum-exp over the distractor classes, written as eml(w, sum) = e^w - ln sum);
# "gated" rules are the seed shape eml(signal, 1 + exp(damping)).
_SOFTMIN2 = "(eml 0 (add (exp (mul w x.color)) (exp (mul w x.shape))))"
_SOFTMIN3 = ("(eml 0 (add (exp (mul w x.color)) (exp (mul w x.shape))"
             " (exp (add w (mul w x.color) (mul w x.shape)))))")
_GATED_CS = ("(eml (add w (mul w x.color) (mul w x.shape))"
             " (add 1 (exp (add w (mul w x.color) (mul w x.shape)))))")
# log of a product of per-clue sigmoids, sigmoid(-d_color) * sigmoid(-d_shape): an AND
_GATED_AND = ("(eml 0 (mul (add 1 (exp (add w (mul w x.color))))"
              " (add 1 (exp (add w (mul w x.shape))))))")
_GATED_AND_AGE = ("(eml 0 (mul (add 1 (exp (add w (mul w x.color))))"
                  " (add 1 (exp (add w (mul w x.shape)))) (add 1 (exp (add w (mul w x.age))))))")

VARIANTS: dict[str, VariantSpec] = {}


def _register(spec: VariantSpec) -> None:
    VARIANTS[spec.name] = spec


_register(VariantSpec(
    name="and-match",
    description="pick the candidate matching both a colour clue and a shape clue; "
                "distractors match one clue or none",
    clues=("color", "shape"), target=(1.0, 1.0),
    distractors=(_d((1, 0), 0.4), _d((0, 1), 0.4), _d((0, 0), 0.2)),
    sigma=0.4,
    reference={
        "softmin3": _SOFTMIN3,
        "softmin2": _SOFTMIN2,
        "gated": _GATED_CS,
        "gated-and": _GATED_AND,
    },
))

_register(VariantSpec(
    name="and-match-distractor",
    description="and-match with decoys that match one clue more strongly than the target "
                "does (too much colour means decoy)",
    clues=("color", "shape"), target=(1.0, 1.0),
    distractors=(_d((1.8, 0), 0.45), _d((0, 1.8), 0.45), _d((0, 0), 0.1)),
    sigma=0.45,
    reference={
        "softmin-decoy3": ("(eml 0 (add (exp (add (mul w x.color) (mul w x.shape)))"
                           " (exp (add (mul w x.color) (mul w x.shape)))"
                           " (exp (add w (mul w x.color) (mul w x.shape)))))"),
        "softmin-decoy2": ("(eml 0 (add (exp (add (mul w x.color) (mul w x.shape)))"
                           " (exp (add (mul w x.color) (mul w x.shape)))))"),
        "gated": _GATED_CS,
        "gated-and": _GATED_AND,
    },
))

_register(VariantSpec(
    name="and-match-recent",
    description="and-match where the target must also be recent: old candidates that "
                "match both clues are stale referents (x.age)",
    clues=("color", "shape"), target=(1.0, 1.0), target_age_mean=0.5,
    distractors=(_d((1, 1), 0.3, 5.0), _d((1, 0), 0.35, 0.5), _d((0, 1), 0.35, 0.5)),
    sigma=0.3,
    reference={
        "softmin-recent": ("(eml 0 (add (exp (add w (mul w x.age))) (exp (mul w x.color))"
                           " (exp (mul w x.shape))))"),
        "gated": ("(eml (add w (mul w x.color) (mul w x.shape))"
                  " (add 1 (exp (add w (mul w x.age)))))"),
        "gated-and": _GATED_AND_AGE,
    },
))

_register(VariantSpec(
    name="and-match-stale",
    description="and-match with a freshness prior: old candidates are rarely the answer, "
                "so the AND of the clues is damped by softplus of age",
    clues=("color", "shape"), target=(1.0, 1.0), age_max=4.0, freshness=(2.0, 2.0),
    distractors=(_d((1, 0), 0.5), _d((0, 1), 0.5)),
    sigma=0.4,
    reference={
        "softmin-damped": ("(eml 0 (mul (add (exp (mul w x.color)) (exp (mul w x.shape)))"
                           " (add 1 (exp (add w (mul w x.age))))))"),
        "gated": ("(eml (add w (mul w x.color) (mul w x.shape))"
                  " (add 1 (exp (add w (mul w x.age)))))"),
        "gated-and": _GATED_AND_AGE,
    },
))

_register(VariantSpec(
    name="and-match-fading",
    description="and-match where clue evidence about old candidates is noisier (variance "
                "grows with x.age) and must be damped by exp(-age)",
    clues=("color", "shape"), target=(1.0, 1.0), age_max=3.0, fade=1.0,
    distractors=(_d((1, 0), 0.5), _d((0, 1), 0.5)),
    sigma=0.2,
    reference={
        "softmin-faded": ("(eml 0 (add (exp (mul w (add w x.color) (exp (mul w x.age))))"
                          " (exp (mul w (add w x.shape) (exp (mul w x.age))))))"),
        "gated": ("(eml (add w (mul w x.color) (mul w x.shape))"
                  " (add 1 (exp (add w (mul w x.age)))))"),
        "gated-and": _GATED_AND_AGE,
    },
))

_register(VariantSpec(
    name="and-match-negated",
    description="the candidate matching the colour clue but NOT the shape clue; the trap "
                "is a candidate matching both",
    clues=("color", "shape"), target=(1.0, 0.0),
    distractors=(_d((1, 1), 0.5), _d((0, 0), 0.25), _d((0, 1), 0.25)),
    sigma=0.4,
    reference={
        "softmin-negated": ("(eml 0 (add (exp (add w (mul w x.shape))) (exp (add w (mul w x.color)))"
                            " (exp (add (mul w x.color) (mul w x.shape)))))"),
        "softmin2": _SOFTMIN2,
        "gated": _GATED_CS,
        "gated-and": _GATED_AND,
    },
))


def variant_names() -> tuple[str, ...]:
    return tuple(VARIANTS)


# --------------------------------------------------------------------------- generation


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


@dataclass(frozen=True)
class _Split:
    X: dict[str, np.ndarray]  # feature -> (G, C)
    target: np.ndarray  # (G,) slot of the target
    classes: np.ndarray  # (G, C) latent class, 0 = target, 1.. = distractor classes


def _sample(spec: VariantSpec, rng: np.random.Generator, G: int, C: int) -> _Split:
    probs = np.array([d.prob for d in spec.distractors])
    probs = probs / probs.sum()
    means = np.array([spec.target] + [d.means for d in spec.distractors])  # (K+1, F)
    rows = np.arange(G)
    age = None
    if spec.age_max is not None:  # 1. shared ages
        age = rng.uniform(0.0, spec.age_max, size=(G, C))
    if spec.freshness is not None:  # 2. target slot
        k, a0 = spec.freshness
        logits = -_softplus(k * (age - a0))
        target = np.argmax(logits + rng.gumbel(size=(G, C)), axis=1)
    else:
        target = rng.integers(0, C, size=G)
    classes = 1 + rng.choice(len(probs), size=(G, C), p=probs)  # 3. distractor classes
    classes[rows, target] = 0
    if spec.target_age_mean is not None:  # 1'. class-dependent ages
        age_means = np.array([spec.target_age_mean] + [d.age_mean for d in spec.distractors])
        age = rng.exponential(age_means[classes])
    sd = spec.sigma * (np.exp(0.5 * spec.fade * age) if spec.fade else 1.0)
    noise = rng.standard_normal(size=(len(spec.clues), G, C))  # 4. clue features
    X = {f: means[classes, j] + sd * noise[j] for j, f in enumerate(spec.clues)}
    if age is not None:
        X["age"] = age
    return _Split(X=X, target=target, classes=classes)


def _log_posterior(spec: VariantSpec, X: Mapping[str, np.ndarray]) -> np.ndarray:
    """log P(target = i | episode) under the generative model, same shape as the features.
    Works on (G, C) arrays (normalised per episode) or flat rows (unnormalised: the
    per-candidate log likelihood ratio plus log prior)."""
    means = np.array([spec.target] + [d.means for d in spec.distractors])
    logpi = np.log(np.array([d.prob for d in spec.distractors]) /
                   sum(d.prob for d in spec.distractors))
    age = X.get("age")
    var = spec.sigma ** 2 * (np.exp(spec.fade * age) if spec.fade else 1.0)
    lp = []  # log p(x | class), dropping terms shared by every class
    for k in range(len(means)):
        s = sum((np.asarray(X[f]) - means[k, j]) ** 2 for j, f in enumerate(spec.clues))
        s = -0.5 * s / var
        if spec.target_age_mean is not None:
            a = spec.target_age_mean if k == 0 else spec.distractors[k - 1].age_mean
            s = s - np.log(a) - age / a
        lp.append(s)
    lp = np.stack(lp)
    log_lr = lp[0] - _logsumexp(lp[1:] + logpi.reshape((-1,) + (1,) * (lp.ndim - 1)), axis=0)
    if spec.freshness is not None:
        k, a0 = spec.freshness
        log_lr = log_lr - _softplus(k * (age - a0))
    if log_lr.ndim == 2:
        log_lr = log_lr - _logsumexp(log_lr, axis=1)[:, None]
    return log_lr


# --------------------------------------------------------------------------- the task


class SyntheticTask:
    """An and-match variant as a `fitness.base.Task`.

    Rows are candidates, grouped by episode (groups 0..G-1, each episode's C rows contiguous);
    y = 1.0 on the target. `score` reports ``answer_score`` (share of episodes whose
    top-scored candidate is the target), ``mrr`` and ``n_episodes``.
    """

    loss = "listwise"
    metric_name = "answer_score"

    def __init__(self, variant: str = "and-match", *, seed: int = DEFAULT_SEED,
                 n_train: int = 3000, n_valid: int = 1500, n_test: int = 3000,
                 candidates: int = 8):
        if variant not in VARIANTS:
            raise KeyError(f"unknown and-match variant {variant!r} "
                           f"(known: {', '.join(VARIANTS)})")
        sizes = {"train": n_train, "valid": n_valid, "test": n_test}
        check_task_settings(dict(seed=seed, n_train=n_train, n_valid=n_valid, n_test=n_test,
                                 candidates=candidates))
        self.spec = VARIANTS[variant]
        self.name = variant
        self.seed = int(seed)
        self.sizes = {p: int(n) for p, n in sizes.items()}
        self.candidates = int(candidates)
        self.features = self.spec.features
        self.settings = {"variant": variant, "seed": self.seed, "candidates": self.candidates,
                         **{f"n_{p}": n for p, n in self.sizes.items()},
                         "model": self.spec.settings()}
        variant_id = zlib.crc32(variant.encode())
        self._splits: dict[str, _Split] = {}
        for i, part in enumerate(PARTS):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, variant_id, i]))
            self._splits[part] = _sample(self.spec, rng, self.sizes[part], self.candidates)
        self._batches = {p: self._make_batch(s) for p, s in self._splits.items()}
        arrays = []
        for part in PARTS:
            b = self._batches[part]
            arrays += [part] + [x for f in sorted(b.X) for x in (f, b.X[f])] + [b.y, b.groups]
        self.fingerprint = fingerprint_of(self.name, self.settings, *arrays)

    def __repr__(self) -> str:
        return (f"SyntheticTask({self.name!r}, seed={self.seed}, "
                f"sizes={self.sizes}, candidates={self.candidates})")

    def resample(self, seed: int) -> "SyntheticTask":
        """The same task with every split redrawn from `seed` (for rerun gates)."""
        return SyntheticTask(self.name, seed=seed, n_train=self.sizes["train"],
                             n_valid=self.sizes["valid"], n_test=self.sizes["test"],
                             candidates=self.candidates)

    def _make_batch(self, s: _Split) -> Batch:
        G, C = s.classes.shape
        X = {f: np.ascontiguousarray(v, dtype=np.float64).reshape(-1) for f, v in s.X.items()}
        y = (s.classes == 0).astype(np.float64).reshape(-1)
        groups = np.repeat(np.arange(G, dtype=np.int64), C)
        return Batch(X=X, y=y, groups=groups)

    def _part(self, part: str) -> str:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r} (expected one of {', '.join(PARTS)})")
        return part

    def batch(self, part: str) -> Batch:
        return self._batches[self._part(part)]

    def latent(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(target slot per episode (G,), latent class per candidate (G, C); 0 = target)."""
        s = self._splits[self._part(part)]
        return s.target, s.classes

    def score(self, part: str, scorer: Scorer) -> dict[str, float]:
        b = self.batch(part)
        scores = np.asarray(scorer(b.X), dtype=np.float64).reshape(-1)
        if scores.shape[0] != b.n_rows:
            raise ValueError(f"scorer returned {scores.shape[0]} scores for {b.n_rows} rows")
        return self._metrics(scores, b)

    def score_units(self, part: str, scorer: Scorer) -> np.ndarray:
        """Per episode: 1 if the top candidate is the target (the mean is the answer score)."""
        b = self.batch(part)
        return top1_hits(np.asarray(scorer(b.X), dtype=np.float64).reshape(-1), b.y, b.groups)

    def _metrics(self, scores: np.ndarray, b: Batch) -> dict[str, float]:
        G, C = b.n_rows // self.candidates, self.candidates
        rank = np.empty(G)
        _target_ranks(np.ascontiguousarray(scores, dtype=np.float64), b.y, C, rank)
        return {
            "answer_score": top1_accuracy(scores, b.y, b.groups),
            "mrr": float(np.mean(1.0 / rank)),
            "n_episodes": float(G),
        }

    # ------------------------------------------------------------------ oracle

    def oracle_scores(self, part: str) -> np.ndarray:
        """Exact log P(candidate is the target | episode) per row (flat, batch order)."""
        s = self._splits[self._part(part)]
        return _log_posterior(self.spec, s.X).reshape(-1)

    def oracle(self, part: str = "test") -> float:
        """Answer score of the Bayes-optimal rule (argmax of the exact posterior)."""
        b = self.batch(part)
        return top1_accuracy(self.oracle_scores(part), b.y, b.groups)

    def oracle_scorer(self) -> Scorer:
        """The oracle as a scorer over flat rows (log likelihood ratio + log prior)."""
        return lambda X: _log_posterior(self.spec, X)

    # ------------------------------------------------------------------ baselines

    def linear_rule_text(self) -> str:
        return linear_rule_text(self)

    def reference_rules(self) -> dict[str, str]:
        return reference_rules(self)


@njit(cache=True, nogil=True)
def _target_ranks(scores, y, C, rank):
    """Per episode of C rows (exactly one target): 1 + the rows scored above the target + the
    other rows tied with it, a score that is not finite counting as -inf."""
    for g in range(rank.shape[0]):
        a = g * C
        st = -np.inf
        for r in range(a, a + C):
            if y[r] > 0.5:
                v = scores[r]
                st = v if v - v == 0.0 else -np.inf
        above = 0
        for r in range(a, a + C):
            v = scores[r]
            v = v if v - v == 0.0 else -np.inf
            if v > st or (v == st and not y[r] > 0.5):
                above += 1
        rank[g] = 1.0 + above


def linear_rule_text(task: SyntheticTask | str) -> str:
    """The linear rule over the task's features: (add (mul w x.a) (mul w x.b) ...)."""
    feats = _spec(task).features
    return "(add " + " ".join(f"(mul w x.{f})" for f in feats) + ")"


def reference_rules(task: SyntheticTask | str) -> dict[str, str]:
    """Hand-written rules (name -> text) for the variant: the exact log-posterior family
    ("softmin...", an AND as a negative log-sum-exp) and the eml-gated seed shape."""
    return dict(_spec(task).reference)


def _spec(task) -> VariantSpec:
    return VARIANTS[task] if isinstance(task, str) else task.spec


def fit_and_score(task: SyntheticTask, rule_text: str, part: str = "test", *,
                  max_iter: int = 20, **fit_kwargs) -> dict:
    """Fit `rule_text` on train with `evo_rules.fit` (listwise, the task's loss) and score it
    on `part`. Returns rule (canonical text), size, weights, loss, iterations, valid, and
    the metrics of `task.score`."""
    import evo_rules  # the engine; imported lazily so the data side works without it

    rule = evo_rules.parse(rule_text)
    tr = task.batch("train")
    res = evo_rules.fit(rule, tr.X, tr.y, loss=task.loss, groups=tr.groups,
                        max_iter=max_iter, **fit_kwargs)
    weights = np.asarray(res.weights, dtype=np.float64)
    out = {"rule": rule.text, "size": rule.size, "weights": weights.tolist(),
           "loss": float(res.loss), "iterations": int(res.iterations),
           "valid": bool(res.valid)}
    if res.valid and np.all(np.isfinite(weights)):
        out.update(task.score(part, lambda X: rule.evaluate(X, weights)))
    else:
        out.update({task.metric_name: 0.0, "mrr": 0.0})
    return out


def measure_baselines(task: SyntheticTask, part: str = "test", **fit_kwargs) -> dict:
    """Oracle, fitted linear rule and fitted reference rules on `part`, with the share of
    the linear -> oracle gap the best reference rule closes."""
    oracle = task.oracle(part)
    linear = fit_and_score(task, linear_rule_text(task), part, **fit_kwargs)
    refs = {n: fit_and_score(task, t, part, **fit_kwargs)
            for n, t in reference_rules(task).items()}
    best = max(refs, key=lambda n: refs[n]["answer_score"])
    lin, ref = linear["answer_score"], refs[best]["answer_score"]
    return {"variant": task.name, "oracle": oracle, "linear": lin, "best_ref": best,
            "ref": ref, "gap_closed": (ref - lin) / (oracle - lin) if oracle > lin else
            float("nan"), "linear_fit": linear, "refs": refs}


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--part", default="test")
    ap.add_argument("--max-iter", type=int, default=20)
    args = ap.parse_args(argv)
    print(f"{'variant':22s} {'oracle':>7s} {'linear':>7s} {'ref':>7s} {'closed':>7s}  "
          f"best reference (size)   [all refs]")
    for v in args.variants:
        m = measure_baselines(SyntheticTask(v, seed=args.seed), args.part,
                              max_iter=args.max_iter)
        allrefs = " ".join(f"{n}={r['answer_score']:.3f}" for n, r in m["refs"].items())
        print(f"{v:22s} {m['oracle']:7.3f} {m['linear']:7.3f} {m['ref']:7.3f} "
              f"{m['gap_closed']:7.1%}  {m['best_ref']} ({m['refs'][m['best_ref']]['size']})"
              f"   [{allrefs}]")


if __name__ == "__main__":
    main()
