"""The rule artifact: canonical term, key, parameters, symbolic gradients, compiled program."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np

from .derivative import gradients
from .kernels import run_program
from .parse import check_folded, check_sums, read
from .program import Program, compile_terms
from .simplify import _fold_numbers, canonical
from .terms import Term, features_in, size, weights_in


def rule_key(canonical_text: str) -> str:
    """Stable digest of canonical text (never Python's process-salted hash())."""
    return hashlib.blake2b(canonical_text.encode("utf-8"), digest_size=16).hexdigest()


class Rule:
    """A canonical rule. Build with `parse(text)` or `Rule.from_term(term)`."""

    def __init__(self, term: Term):
        term = canonical(term)
        self.term = term
        self.text = term.text
        self.key = rule_key(self.text)
        self.params = weights_in(term)
        self.features = features_in(term)
        self.size = size(term)

    @classmethod
    def from_term(cls, term: Term) -> "Rule":
        return cls(term)

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Rule) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def to_infix(self, weights: Sequence[float] | Mapping[str, float] | None = None) -> str:
        """Readable math; with fitted weights (in `params` order, or by name) filled in."""
        from .infix import to_infix

        if weights is not None and not isinstance(weights, Mapping):
            weights = dict(zip(self.params, (float(v) for v in weights)))
        return to_infix(self.term, weights)

    # export (evo_rules/export.py): weights in `params` order or by name; None keeps them symbolic

    def to_latex(self, weights=None, digits: int = 4) -> str:
        from .export import to_latex

        return to_latex(self, weights, digits)

    def to_sympy(self, weights=None):
        from .export import to_sympy

        return to_sympy(self, weights)

    def to_numpy(self, weights=None, name: str = "rule") -> str:
        """Source of a plain NumPy function `def rule(X, w=...)` (no engine needed to run it)."""
        from .export import to_numpy

        return to_numpy(self, weights, name)

    def to_callable(self, weights=None):
        from .export import to_callable

        return to_callable(self, weights)

    @cached_property
    def gradients(self) -> dict[str, Term]:
        """d rule / d w for each weight, in `params` order. The terms share subterms (one object
        per distinct subterm): their DAG size grows linearly with the rule."""
        return gradients(self.term)

    @cached_property
    def program(self) -> Program:
        """Forward and every gradient, merged: outputs[0] is the score, outputs[1+k] d/dw_k."""
        return compile_terms(self.term, [self.gradients[p] for p in self.params], self.params,
                             self.features)

    @cached_property
    def forward_program(self) -> Program:
        return compile_terms(self.term, [], self.params, self.features)

    # ------------------------------------------------------------------ evaluation

    def feature_matrix(self, X, names: Sequence[str] | None = None) -> np.ndarray:
        """(n_features_of_rule, n_rows) C-contiguous float64 matrix from a mapping or 2-D array."""
        return feature_matrix(self.features, X, names)

    def _weights(self, weights) -> np.ndarray:
        if weights is None:
            weights = ()
        if isinstance(weights, Mapping):
            missing = [p for p in self.params if p not in weights]
            if missing:
                raise KeyError(f"no value for weight(s) {', '.join(missing)} of rule {self.text}")
            w = np.array([weights[p] for p in self.params], dtype=np.float64)
        else:
            w = np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != len(self.params):
            raise ValueError(
                f"rule {self.text} has {len(self.params)} weight(s), got {w.shape[0]} value(s)"
            )
        return w

    def run(self, F: np.ndarray, w: np.ndarray, jacobian: bool) -> tuple[np.ndarray, bool]:
        """Low level: F from feature_matrix, w float64 array. Returns (outputs, finite)."""
        prog = self.program if jacobian else self.forward_program
        n = F.shape[1]
        out = np.empty((len(prog.outputs), n))
        ok = run_program(prog.code, prog.arg_a, prog.arg_b, prog.consts, F, w, prog.outputs, out)
        return out, bool(ok)

    def evaluate(self, X, weights=None, names: Sequence[str] | None = None) -> np.ndarray:
        """Scores for every row. Non-finite values are returned as they are (see `run`)."""
        out, _ = self.run(self.feature_matrix(X, names), self._weights(weights), False)
        return out[0]

    def jacobian(self, X, weights=None, names: Sequence[str] | None = None):
        """(scores, J) with J[r, k] = d score_r / d params[k]."""
        out, _ = self.run(self.feature_matrix(X, names), self._weights(weights), True)
        return out[0], out[1:].T.copy()


def feature_matrix(features: Sequence[str], X, names: Sequence[str] | None = None) -> np.ndarray:
    if isinstance(X, Mapping):
        cols = []
        for f in features:
            if f not in X:
                raise KeyError(f"feature {f!r} is not in the data (have: {', '.join(sorted(X))})")
            cols.append(np.asarray(X[f], dtype=np.float64).reshape(-1))
        n = len(next(iter(X.values()))) if X else 0
    else:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError("X must be a mapping name -> 1-D array, or a 2-D array with names")
        if names is None:
            raise ValueError("a 2-D X needs `names`, the feature name of each column")
        index = {n: i for i, n in enumerate(names)}
        cols = []
        for f in features:
            if f not in index:
                raise KeyError(f"feature {f!r} is not in the data (have: {', '.join(names)})")
            cols.append(arr[:, index[f]])
        n = arr.shape[0]
    lengths = {c.shape[0] for c in cols}
    if len(lengths) > 1:
        raise ValueError(f"feature columns differ in length: {sorted(lengths)}")
    if cols:
        n = cols[0].shape[0]
    F = np.empty((len(cols), n))
    for i, c in enumerate(cols):
        F[i] = c
    return F


def parse(text: str, check_constants: bool = True) -> Rule:
    """Parse rule text into its canonical `Rule`. Raises `ParseError` on malformed text, on
    text over the size limits (terms.MAX_DEPTH, MAX_SIZE, MAX_TEXT), and (unless
    `check_constants` is False, for re-reading the engine's own canonical texts) on a sum or
    product of constants that overflows the float range: it could not be folded."""
    term, positions = read(text)
    if check_constants:
        check_sums(term, text, positions, _fold_numbers)
    rule = Rule(term)
    if check_constants:
        check_folded(rule.term, text)
    return rule
