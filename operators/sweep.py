"""Grammar sweeps over the seed's template (stage two of the seed's procedure).

    (eml signal (add 1 (exp damping)))

`enumerate_rules` lists every rule whose signal is a sum of 1..S terms and whose damping is a sum
of 0..D terms (plus a bias weight), the terms drawn from a finite vocabulary of feature terms
(`term_vocabulary`). `expand` grows survivors by one term in signal or damping. Both are
deterministic: vocabulary in sorted order, results sorted by (size, text), deduplicated by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Iterable, Iterator, Sequence

from evo_rules.rule import Rule
from evo_rules.simplify import canonical
from evo_rules.terms import Term, feature, num, weight

from .grammar import Grammar
from .template import shape, split_template, template


@dataclass(frozen=True)
class Sweep:
    """A sweep's rules (unique by key, sorted by size then text) and its counts:
    `enumerated` candidates were built, `duplicates` of them had a key seen before,
    `rejected` were outside the grammar's limits; `unique == enumerated - duplicates - rejected`.
    `parents[i]` is the key of the survivor `rules[i]` was grown from (`expand`), else None."""

    rules: tuple[Rule, ...]
    enumerated: int
    duplicates: int
    rejected: int = 0
    parents: tuple[str | None, ...] = ()

    @property
    def unique(self) -> int:
        return len(self.rules)

    def summary(self) -> str:
        return (f"{self.enumerated} enumerated, {self.duplicates} duplicate(s) by key, "
                f"{self.rejected} outside the limits, {self.unique} unique")


# ------------------------------------------------------------------ vocabulary


def term_vocabulary(features: Sequence[str] | Grammar, *, pairs: bool = True,
                    squares: bool = False, log1p: bool = False) -> tuple[Term, ...]:
    """Feature terms, sorted by text, each with its own anonymous weight:
    `(mul w x.f)` for every feature; with `pairs` `(mul w x.f x.g)` for f < g; with `squares`
    `(mul w x.f x.f)`; with `log1p` `(mul w (log (add 1 x.f)))` (finite only where x.f > -1)."""
    names = sorted(_features(features))
    out = [Term("mul", (weight(), feature(f))) for f in names]
    if pairs:
        out += [Term("mul", (weight(), feature(f), feature(h))) for f, h in combinations(names, 2)]
    if squares:
        out += [Term("mul", (weight(), feature(f), feature(f))) for f in names]
    if log1p:
        out += [Term("mul", (weight(), Term("log", (Term("add", (num(1.0), feature(f))),))))
                for f in names]
    # canonical argument order, anonymous weights: each term as it appears inside a rule
    out = [_anon(canonical(t)) for t in out]
    if len({t.text for t in out}) != len(out):
        raise ValueError("term vocabulary holds two equal terms")
    return tuple(sorted(out, key=lambda t: t.text))


def _features(spec) -> tuple[str, ...]:
    if isinstance(spec, Grammar):
        return spec.features
    if isinstance(spec, str):
        raise ValueError(f"features must be a list of names, not the single string {spec!r}")
    return tuple(spec)


def _anon(t: Term) -> Term:
    if t.op == "w":
        return weight()
    if not t.args:
        return t
    return Term(t.op, tuple(_anon(a) for a in t.args))


def count_rules(n_terms: int, max_signal: int, max_damping: int, min_signal: int = 1,
                min_damping: int = 0) -> int:
    """How many candidates `enumerate_rules` builds for a vocabulary of `n_terms` terms."""
    s = sum(comb(n_terms, k) for k in range(min_signal, max_signal + 1))
    d = sum(comb(n_terms, k) for k in range(min_damping, max_damping + 1))
    return s * d


# ------------------------------------------------------------------ enumeration


def iter_template_terms(vocabulary: Sequence[Term], max_signal: int, max_damping: int,
                        min_signal: int = 1, min_damping: int = 0,
                        damping_bias: bool = True) -> Iterator[Term]:
    """Raw template terms in a fixed order: signal size, signal terms, damping size, damping."""
    if min_signal < 1:
        raise ValueError(f"min_signal must be >= 1 (the signal sum is never empty), got {min_signal}")
    if min_damping < 0 or max_damping < min_damping or max_signal < min_signal:
        raise ValueError(
            f"bad term counts: signal {min_signal}..{max_signal}, damping {min_damping}..{max_damping}"
        )
    bias = (weight(),) if damping_bias else ()
    vocab = tuple(vocabulary)
    for ks in range(min_signal, max_signal + 1):
        for sig in combinations(vocab, ks):
            for kd in range(min_damping, max_damping + 1):
                for dam in combinations(vocab, kd):
                    yield template(sig, dam + bias if dam else ())


def enumerate_rules(spec: Sequence[str] | Grammar, max_signal: int = 2, max_damping: int = 1, *,
                    vocabulary: Sequence[Term] | None = None, min_signal: int = 1,
                    min_damping: int = 0, damping_bias: bool = True) -> Sweep:
    """Every template rule over the vocabulary (default: `term_vocabulary(spec)`, linear terms
    and pair products). `spec` is a list of feature names or a `Grammar`, whose size and depth
    limits then apply. Damping with no terms is a bare weight: `(eml signal w0)`.

    Sizes: `count_rules(len(vocabulary), S, D)`; 6 features (21 terms) give 462 rules for
    S=D=1 and 5,082 for S=2, D=1."""
    grammar = spec if isinstance(spec, Grammar) else None
    vocab = term_vocabulary(spec) if vocabulary is None else tuple(vocabulary)
    terms = iter_template_terms(vocab, max_signal, max_damping, min_signal, min_damping,
                                damping_bias)
    return _collect(((t, None) for t in terms), grammar)


def expand(rules: Iterable[Rule], vocabulary: Sequence[Term] | Sequence[str] | Grammar, *,
           grammar: Grammar | None = None, signal: bool = True, damping: bool = True,
           damping_bias: bool = True) -> Sweep:
    """Each survivor grown by one vocabulary term it does not yet hold, in its signal or its
    damping sum, deduplicated by key (a child equal to a survivor counts as a duplicate).
    `vocabulary` is a term list, or feature names / a `Grammar` for `term_vocabulary`.
    A damping sum that was empty gets a bias weight with its first term when `damping_bias`.
    Survivors not of the template shape are skipped. Survivors are taken in order of their
    text, so the result does not depend on the order they come in."""
    if isinstance(vocabulary, Grammar) or (vocabulary and isinstance(next(iter(vocabulary)), str)):
        if grammar is None and isinstance(vocabulary, Grammar):
            grammar = vocabulary
        vocab = term_vocabulary(vocabulary)
    else:
        vocab = tuple(_anon(canonical(t)) for t in vocabulary)
    shapes = [(shape(t), t) for t in vocab]
    survivors = sorted({r.key: r for r in rules}.values(), key=lambda r: r.text)

    def children() -> Iterator[tuple[Term, str]]:
        for r in survivors:
            parts = split_template(r.term)
            if parts is None:
                continue
            sig, dam = parts
            sig_shapes = {shape(t) for t in sig}
            dam_shapes = {shape(t) for t in dam}
            bias = tuple(t for t in dam if t.op == "w")
            dam_terms = tuple(t for t in dam if t.op != "w")
            for sh, t in shapes:
                if signal and sh not in sig_shapes:
                    yield template(sig + (t,), dam), r.key
                if damping and sh not in dam_shapes:
                    # a damping sum that was empty gets its bias weight with its first term
                    new_bias = bias if dam else ((weight(),) if damping_bias else ())
                    yield template(sig, dam_terms + (t,) + new_bias), r.key

    return _collect(children(), grammar, exclude={r.key for r in survivors})


def _collect(items: Iterable[tuple[Term, str | None]], grammar: Grammar | None,
             exclude: set[str] = frozenset()) -> Sweep:
    seen: dict[str, tuple[Rule, str | None]] = {}
    enumerated = duplicates = rejected = 0
    for t, parent in items:
        enumerated += 1
        r = Rule(t)
        if r.key in seen or r.key in exclude:
            duplicates += 1
        elif grammar is not None and not grammar.admits(r):
            rejected += 1
        else:
            seen[r.key] = (r, parent)
    ordered = sorted(seen.values(), key=lambda rp: (rp[0].size, rp[0].text))
    return Sweep(tuple(r for r, _ in ordered), enumerated, duplicates, rejected,
                 tuple(p for _, p in ordered))


__all__ = ["Sweep", "count_rules", "enumerate_rules", "expand", "iter_template_terms",
           "term_vocabulary"]
