"""The grammar: what a rule may be built from, and how large it may grow.

A `Grammar` is plain, immutable, validated data (it goes into run configs and checkpoints).
Its operators are a subset of `evo_rules.terms.OPERATORS`: by default the five of EML rules
(add, mul, exp, log, eml); symbolic regression may add the wider set `terms.WIDE` (sin, cos,
sqrt, abs, sign, div, pow).
Every operator in this package takes one and returns only rules the grammar admits
(`Grammar.admits`): size and depth of the *canonical* term within the limits, at least one
feature, and only the grammar's features.

`feature_weights` (optional, one positive number per feature) makes the operators draw
features in proportion to them instead of uniformly: with many features (bAbI's word
indicators) the useful ones come up more often, and every feature can still be drawn. Empty
(the default) keeps the uniform draws, random number for random number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from evo_rules.terms import OPERATORS as TERM_OPERATORS
from evo_rules.terms import depth

_FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# the seed's structured form (eml signal (add 1 (exp damping))), sums of (mul w x.f ...) terms
TEMPLATE_OPERATORS = ("add", "mul", "exp", "eml")


@dataclass(frozen=True)
class Grammar:
    features: tuple[str, ...]
    operators: tuple[str, ...] = ("add", "mul", "exp", "log", "eml")
    max_size: int = 25
    max_depth: int = 8
    template_share: float = 0.3
    constants: tuple[float, ...] = (1.0,)
    feature_weights: tuple[float, ...] = ()
    # (feature, partner, weight > 0): a product term starting with `feature` draws its second
    # feature with `partner`'s weight raised (by weight x the sum of the feature weights)
    pair_weights: tuple = ()
    _partners: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _feature_set: frozenset = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("features", _names("features", self.features))
        for f in self.features:
            if not _FEATURE_NAME.match(f):
                raise ValueError(
                    f"Grammar.features: {f!r} is not a feature name (letters, digits, _; "
                    "not starting with a digit; written without the 'x.' prefix)"
                )
        if not self.features:
            raise ValueError("Grammar.features: a grammar needs at least one feature")

        ops = _names("operators", self.operators)
        unknown = [o for o in ops if o not in TERM_OPERATORS]
        if unknown:
            raise ValueError(
                f"Grammar.operators: unknown operator(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(TERM_OPERATORS)})"
            )
        if not ops:
            raise ValueError(f"Grammar.operators: name at least one of {', '.join(TERM_OPERATORS)}")
        # one spelling per grammar: the term layer's order
        set_("operators", tuple(o for o in TERM_OPERATORS if o in ops))

        for name in ("max_size", "max_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Grammar.{name}: must be an integer >= 1, got {v!r}")

        ts = self.template_share
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not (0.0 <= ts <= 1.0):
            raise ValueError(f"Grammar.template_share: must be a number in [0, 1], got {ts!r}")
        set_("template_share", float(ts))
        if ts > 0:
            missing = [o for o in TEMPLATE_OPERATORS if o not in self.operators]
            if missing:
                raise ValueError(
                    f"Grammar.template_share: {ts} > 0 but the template "
                    f"(eml signal (add 1 (exp damping))) needs operator(s) {', '.join(missing)}; "
                    "add them to operators or set template_share = 0"
                )

        consts = self.constants
        if isinstance(consts, (str, bytes)) or not hasattr(consts, "__iter__"):
            raise ValueError(f"Grammar.constants: must be a list of numbers, got {consts!r}")
        out = []
        for c in consts:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                raise ValueError(f"Grammar.constants: {c!r} is not a finite number")
            c = float(c) + 0.0  # no negative zero
            if c in out:
                raise ValueError(f"Grammar.constants: {c!r} is listed twice")
            out.append(c)
        set_("constants", tuple(out))
        set_("feature_weights", _weights(self.feature_weights, len(self.features)))
        set_("pair_weights", _pairs(self.pair_weights, self.features))
        partners: dict = {}
        for a, b, w in self.pair_weights:  # symmetric: either feature may come first
            partners.setdefault(a, {})[b] = partners.setdefault(b, {})[a] = w
        set_("_partners", partners)
        set_("_feature_set", frozenset(self.features))

    # ------------------------------------------------------------------ config

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Grammar":
        """Build from a config table (e.g. `[grammar]` of a run TOML). Unknown keys are errors."""
        if not isinstance(d, Mapping):
            raise ValueError(f"grammar config must be a table/mapping, got {type(d).__name__}")
        known = [f.name for f in fields(cls) if f.init]
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"grammar config: unknown key(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(known)})"
            )
        if "features" not in d:
            raise ValueError("grammar config: missing required key 'features'")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers): `Grammar.from_dict(g.to_dict()) == g`."""
        d = {
            "features": list(self.features),
            "operators": list(self.operators),
            "max_size": self.max_size,
            "max_depth": self.max_depth,
            "template_share": self.template_share,
            "constants": list(self.constants),
        }
        if self.feature_weights:  # absent when uniform: older dicts stay as they were
            d["feature_weights"] = list(self.feature_weights)
        if self.pair_weights:
            d["pair_weights"] = [list(p) for p in self.pair_weights]
        return d

    # ------------------------------------------------------------------ limits

    @property
    def feature_set(self) -> frozenset:
        return self._feature_set

    def partners(self, f: str) -> dict:
        """partner -> pair weight of feature f ({} when it has none)."""
        return self._partners.get(f, {})

    def admits(self, rule) -> bool:
        """True when a canonical `Rule` is within the limits and uses only (and some) features."""
        if rule.size > self.max_size or not rule.features:
            return False
        if not self._feature_set.issuperset(rule.features):
            return False
        return depth(rule.term) <= self.max_depth


def _weights(value, n: int) -> tuple[float, ...]:
    """() or n finite numbers > 0 (a zero would make a feature unreachable)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"Grammar.feature_weights: must be a list of numbers, got {value!r}")
    out = tuple(value)
    if not out:
        return ()
    if len(out) != n:
        raise ValueError(f"Grammar.feature_weights: {len(out)} weight(s) for {n} feature(s); "
                         "give one per feature or none")
    for w in out:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"Grammar.feature_weights: {w!r} is not a finite number > 0")
    return tuple(float(w) for w in out)


def _pairs(value, features) -> tuple:
    """() or (feature, partner, weight) triples of two different features and a weight > 0."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"Grammar.pair_weights: must be a list of [feature, partner, weight], got {value!r}")
    out = []
    for p in value:
        ok = not isinstance(p, (str, bytes)) and hasattr(p, "__len__") and len(p) == 3
        if ok:
            a, b, w = p
            ok = (a in features and b in features and a != b and not isinstance(w, bool)
                  and isinstance(w, (int, float)) and math.isfinite(w) and w > 0)
        if not ok:
            raise ValueError(f"Grammar.pair_weights: {p!r} is not [feature, other feature, weight > 0] "
                             "over the grammar's features")
        out.append((str(a), str(b), float(w)))
    return tuple(out)


def _names(field_name: str, value) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise ValueError(
            f"Grammar.{field_name}: must be a list of names, not the single string {value!r}"
        )
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"Grammar.{field_name}: must be a list of names, got {value!r}") from None
    seen = set()
    for v in items:
        if not isinstance(v, str):
            raise ValueError(f"Grammar.{field_name}: {v!r} is not a name (a string)")
        if v in seen:
            raise ValueError(f"Grammar.{field_name}: {v!r} is listed twice")
        seen.add(v)
    return items
