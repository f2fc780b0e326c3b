"""Pruning a fitted rule: drop the terms whose weights do not matter.

A search keeps terms that its fit barely uses (a product whose weight fitted near 0, a second
recency term). After the search, `prune` removes them from the rule it reports: one pass over
the terms of every sum, largest rule first; a term is dropped when re-fitting the rule without
it raises the fitted training loss by at most `tol` (relative). The loss is compared with the
full rule's, not the last accepted one's, so the drops together cost at most `tol`. The
report shows both the rule as searched and the pruned one, each with its test metric: pruning
is for reading and reuse, never fed back into the search.

One fit per term tried (a size-70 rule with 20 terms: 20 fits).
"""

from __future__ import annotations

import math
from typing import Mapping

from .fitting import fit
from .rule import parse
from .simplify import shape_text
from .terms import Term, to_text

TOL = 1e-3  # relative rise in the fitted training loss a dropped term may cost


def _sum_paths(t: Term, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], int]]:
    """(path to an add node, index of one of its children), for every child of every sum."""
    out = []
    if t.op == "add":
        out += [(path, i) for i in range(len(t.args))]
    for i, a in enumerate(t.args):
        out += _sum_paths(a, path + (i,))
    return out


def _without(t: Term, path: tuple[int, ...], drop: int) -> Term:
    if not path:
        rest = tuple(a for i, a in enumerate(t.args) if i != drop)
        return rest[0] if len(rest) == 1 else Term("add", rest)
    i = path[0]
    return Term(t.op, t.args[:i] + (_without(t.args[i], path[1:], drop),) + t.args[i + 1:], t.value)


def _fit(text: str, task, fit_settings: Mapping) -> dict | None:
    """The rule's canonical text, size, fitted weights and training loss (None: not a rule)."""
    try:
        rule = parse(text, check_constants=False)
    except ValueError:  # what is left is no rule (nothing but numbers, say)
        return None
    batch = task.batch("train")
    res = fit(rule, batch.X, batch.y, loss=task.loss, groups=batch.groups,
              max_iter=int(fit_settings.get("max_iter", 20)))
    loss = float(res.loss) if res.valid and math.isfinite(res.loss) else math.inf
    return {"text": rule.text, "size": rule.size, "weights": [float(v) for v in res.weights],
            "loss": loss, "term": rule.term}


def prune(text: str, task, fit_settings: Mapping, tol: float = TOL) -> dict:
    """The rule with the terms its fit does not need dropped (see the module doc):
    {"text", "size", "weights", "fit_loss", "full_fit_loss", "dropped": [term texts], "fits"}."""
    current = _fit(text, task, fit_settings)
    if current is None:
        raise ValueError(f"not a rule: {text[:80]}")
    full = current["loss"]
    fits, dropped = 1, []
    limit = full + tol * max(abs(full), 1e-12)
    # a term is tried once, named by its shape (weights unnamed: renumbering after a drop keeps it)
    tried: set[str] = set()
    while math.isfinite(full):
        term, step = current["term"], None
        for path, i in _sum_paths(term):
            node = term
            for j in path:
                node = node.args[j]
            shape = shape_text(node.args[i])
            if shape in tried:
                continue
            tried.add(shape)
            smaller = _fit(to_text(_without(term, path, i)), task, fit_settings)
            fits += 1
            if smaller is not None and smaller["loss"] <= limit:
                step = (smaller, to_text(node.args[i]))
                break
        if step is None:
            break
        current = step[0]
        dropped.append(step[1])
    return {"text": current["text"], "size": current["size"], "weights": current["weights"],
            "fit_loss": current["loss"] if math.isfinite(current["loss"]) else None,
            "full_fit_loss": full if math.isfinite(full) else None, "dropped": dropped, "fits": fits}
