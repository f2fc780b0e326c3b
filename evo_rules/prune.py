"""Pruning a fitted rule: drop the parts whose weights do not matter.

A search keeps parts that its fit barely uses (a product whose weight fitted near 0, a second
recency term, a feature inside an exp that could be a constant). After the search, `prune`
removes them from the rule it reports. The moves, largest removal first: drop a term of a sum,
or make any other subterm a constant (a fresh weight). A move is taken when re-fitting the
smaller rule raises the fitted training loss by at most `tol` (relative) over the full rule's;
the comparison is always with the full rule, never the last accepted one, so all the moves
together cost at most `tol`. Then the moves are tried again on the smaller rule, until none is
taken. The report shows both the rule as searched and the pruned one, each with its test
metric: pruning is for reading and reuse, never fed back into the search.

Each move is tried once (named by the shape of what it removes): a size-40 rule takes a few
dozen fits.
"""

from __future__ import annotations

import math
from typing import Mapping

from .evaluate import fit_on_train
from .rule import parse
from .simplify import shape_text
from .terms import Term, size, to_text, weight

TOL = 1e-3  # relative rise in the fitted training loss a dropped term may cost


def _replace(t: Term, path: tuple[int, ...], new: Term | None) -> Term:
    """t with the subterm at `path` replaced by `new` (None: dropped from its sum)."""
    i = path[0]
    if len(path) == 1 and new is None:
        rest = t.args[:i] + t.args[i + 1:]
        return rest[0] if len(rest) == 1 else Term(t.op, rest)
    child = new if len(path) == 1 else _replace(t.args[i], path[1:], new)
    return Term(t.op, t.args[:i] + (child,) + t.args[i + 1:], t.value)


def _candidates(t: Term) -> list[tuple[str, Term, str]]:
    """(what is removed, the smaller term, a name for the move that survives renumbering), for
    every term of a sum dropped and every other subterm made a constant (a fresh weight: a
    feature in a product, an inner exp or log), largest removal first."""
    out = []

    def walk(node: Term, path: tuple[int, ...]) -> None:
        for i, a in enumerate(node.args):
            here = path + (i,)
            if node.op == "add":  # a constant term too: an offset a listwise loss cannot see
                out.append((size(a), to_text(a), _replace(t, here, None), "drop " + shape_text(a)))
            elif a.op not in ("w", "num"):
                out.append((size(a), to_text(a), _replace(t, here, weight()), "const " + shape_text(a)))
            walk(a, here)

    walk(t, ())
    out.sort(key=lambda c: -c[0])  # stable: pre-order among equal sizes
    return [(what, smaller, name) for _, what, smaller, name in out]


def _fit(text: str, task, fit_settings: Mapping) -> dict | None:
    """The rule's canonical text, size, fitted weights and training loss (None: not a rule)."""
    try:
        rule = parse(text, check_constants=False)
    except ValueError:  # what is left is no rule (nothing but numbers, say)
        return None
    res = fit_on_train(rule, task, fit_settings)
    loss = float(res.loss) if res.valid and math.isfinite(res.loss) else math.inf
    return {"text": rule.text, "size": rule.size, "weights": [float(v) for v in res.weights],
            "loss": loss, "term": rule.term}


def prune(text: str, task, fit_settings: Mapping, tol: float = TOL) -> dict:
    """The rule without the parts its fit does not need (see the module doc): {"text", "size",
    "weights", "fit_loss", "full_fit_loss", "dropped": [texts removed, in order], "fits"}."""
    current = _fit(text, task, fit_settings)
    if current is None:
        raise ValueError(f"not a rule: {text[:80]}")
    full = current["loss"]
    fits, dropped = 1, []
    limit = full + tol * max(abs(full), 1e-12)
    # a move is tried once, named by its shape (weights unnamed: renumbering after a drop keeps it)
    tried: set[str] = set()
    while math.isfinite(full):
        step = None
        for what, smaller_term, name in _candidates(current["term"]):
            if name in tried:
                continue
            tried.add(name)
            smaller = _fit(to_text(smaller_term), task, fit_settings)
            fits += 1
            if smaller is not None and smaller["size"] < current["size"] and smaller["loss"] <= limit:
                step = (smaller, what)
                break
        if step is None:
            break
        current = step[0]
        dropped.append(step[1])
    return {"text": current["text"], "size": current["size"], "weights": current["weights"],
            "fit_loss": current["loss"] if math.isfinite(current["loss"]) else None,
            "full_fit_loss": full if math.isfinite(full) else None, "dropped": dropped, "fits": fits}
