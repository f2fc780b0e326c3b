"""The rule artifact: canonical term, key, parameters, symbolic gradients, compiled program.

Set-up is paid once per rule per process: the rules built most recently are kept by canonical
text (a bounded LRU, `_RULES`), so `parse` of a text the process has seen (the engine re-reads
the canonical texts its operators made) skips the canonical form, and a `Rule` of a known key
takes its gradients and programs from the kept one instead of building them again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np

from .derivative import gradients
from .kernels import run_program
from .parse import check_folded, check_sums, read
from .program import Program, compile_terms
from .simplify import _fold_numbers, canonical
from .terms import Term, summary


def rule_key(canonical_text: str) -> str:
    """Stable digest of canonical text (never Python's process-salted hash())."""
    return hashlib.blake2b(canonical_text.encode("utf-8"), digest_size=16).hexdigest()


class _RuleCache:
    """Canonical text -> the first `Rule` built with it, least recently used dropped first, at most
    `max_rules` rules and `max_nodes` rule nodes (big rules have big gradient DAGs)."""

    def __init__(self, max_rules: int = 1024, max_nodes: int = 100_000):
        self.max_rules = max_rules
        self.max_nodes = max_nodes
        self.nodes = 0
        self._items: OrderedDict[str, Rule] = OrderedDict()
        self._lock = threading.Lock()  # thread backends (dask threads) build rules concurrently

    def get(self, text: str) -> "Rule | None":
        with self._lock:
            rule = self._items.get(text)
            if rule is not None:
                self._items.move_to_end(text)
            return rule

    def add(self, rule: "Rule") -> None:
        with self._lock:
            if rule.text in self._items:
                return
            self._items[rule.text] = rule
            self.nodes += rule.size
            while len(self._items) > self.max_rules or (self.nodes > self.max_nodes and len(self._items) > 1):
                _, old = self._items.popitem(last=False)
                self.nodes -= old.size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nodes = 0

    def __len__(self) -> int:
        return len(self._items)


_RULES = _RuleCache()


class Rule:
    """A canonical rule. Build with `parse(text)` or `Rule(term)` (any term: it is canonicalized)."""

    def __init__(self, term: Term):
        term = canonical(term)
        self.term = term
        self.text = term.text
        self.key = rule_key(self.text)
        self.size, self.params, self.features = summary(term)
        _RULES.add(self)

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

    def _kept(self) -> "Rule | None":
        """The rule of the same key that the cache keeps, when it is another object."""
        kept = _RULES.get(self.text)
        return kept if kept is not None and kept is not self else None

    @cached_property
    def gradients(self) -> dict[str, Term]:
        """d rule / d w for each weight, in `params` order. The terms share subterms (one object
        per distinct subterm): their DAG size grows linearly with the rule."""
        kept = self._kept()
        return kept.gradients if kept is not None else gradients(self.term)

    @cached_property
    def program(self) -> Program:
        """Forward and every gradient, merged: outputs[0] is the score, outputs[1+k] d/dw_k."""
        kept = self._kept()
        if kept is not None:
            return kept.program
        return compile_terms(self.term, [self.gradients[p] for p in self.params], self.params,
                             self.features)

    @cached_property
    def forward_program(self) -> Program:
        """The score alone. Its instructions are the first ones of `program` (the forward term
        is compiled first there), so both give bit-identical scores."""
        kept = self._kept()
        if kept is not None:
            return kept.forward_program
        return compile_terms(self.term, [], self.params, self.features)

    # ------------------------------------------------------------------ evaluation

    def feature_matrix(self, X, names: Sequence[str] | None = None) -> np.ndarray:
        """(n_features_of_rule, n_rows) C-contiguous float64 matrix from a mapping or 2-D array."""
        return feature_matrix(self.features, X, names)

    def columns(self, names: Sequence[str]) -> np.ndarray:
        """Positions of the rule's features (in `features` order) among `names`: built once per
        data layout, `X[:, cols].T` (rows x names data) or `Xt[cols]` (names x rows) is the
        matrix `scores` takes."""
        index = {n: i for i, n in enumerate(names)}
        missing = [f for f in self.features if f not in index]
        if missing:
            raise KeyError(f"feature {missing[0]!r} is not in the data (have: {', '.join(names)})")
        return np.array([index[f] for f in self.features], dtype=np.intp)

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

    def run(self, F: np.ndarray, w: np.ndarray, jacobian: bool,
            stop_early: bool = False) -> tuple[np.ndarray, bool]:
        """Low level: F from feature_matrix, w float64 array. Returns (outputs, finite).
        stop_early: the outputs are wanted only when all are finite (the fit): the kernel stops
        at the first block of rows that is not, and the outputs are then incomplete."""
        prog = self.program if jacobian else self.forward_program
        n = F.shape[1]
        out = np.empty((len(prog.outputs), n))
        if stop_early:
            ok = run_program(prog.code, prog.arg_a, prog.arg_b, prog.consts, F, w, prog.outputs,
                             out, True)
        else:
            ok = run_program(prog.code, prog.arg_a, prog.arg_b, prog.consts, F, w, prog.outputs, out)
        return out, bool(ok)

    def evaluate(self, X, weights=None, names: Sequence[str] | None = None) -> np.ndarray:
        """Scores for every row. Non-finite values are returned as they are (see `run`)."""
        out, _ = self.run(self.feature_matrix(X, names), self._weights(weights), False)
        return out[0]

    def scores(self, F, weights=None) -> np.ndarray:
        """Scores for a prebuilt feature matrix F: (len(features), n_rows), row i holding feature
        `features[i]` (`feature_matrix`, or data indexed by `columns`). No copy when F is
        C-contiguous float64, so a matrix built once serves every call."""
        F = np.ascontiguousarray(F, dtype=np.float64)
        if F.ndim != 2 or F.shape[0] != len(self.features):
            raise ValueError(f"rule {self.text} reads {len(self.features)} feature(s) "
                             f"({', '.join(self.features)}): F must be a 2-D array with one row "
                             f"per feature, got shape {F.shape}")
        out, _ = self.run(F, self._weights(weights), False)
        return out[0]

    def jacobian(self, X, weights=None, names: Sequence[str] | None = None):
        """(scores, J) with J[r, k] = d score_r / d params[k]."""
        out, _ = self.run(self.feature_matrix(X, names), self._weights(weights), True)
        return out[0], out[1:].T.copy()


def feature_matrix(features: Sequence[str], X, names: Sequence[str] | None = None) -> np.ndarray:
    if type(X) is dict and features:
        # the common case in one NumPy call; anything unusual (a missing feature, ragged or
        # non-1-D columns) takes the checked path below for its error or reshaping
        try:
            F = np.array([X[f] for f in features], dtype=np.float64)
        except (KeyError, ValueError, TypeError):
            F = None
        if F is not None and F.ndim == 2:
            return F
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
    # a canonical text reads back as its canonical term, which is its own canonical form: a
    # kept rule with this text is the rule (the text is still read: limits and syntax)
    rule = _RULES.get(text) or Rule(term)
    if check_constants:
        check_folded(rule.term, text)
    return rule
