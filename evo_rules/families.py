"""Rule families: lineages of rules that kept the same head.

Definition
----------
The **head** of a rule is its root operator and, for each argument of the root, the set of
features that argument reads (weights and numbers erased), computed on the canonical term:

    (eml (add (mul w0 x.color) w1) (add (exp (mul w2 x.shape)) 1))  ->  eml(color ; shape)
    (add (mul w0 x.color) (mul w1 x.shape) w2)                      ->  add(color ; shape)
    (mul (exp (add (mul w0 x.color) w1)) w2 x.shape)                 ->  mul(color ; shape)

For `eml` (and `exp`, `log`) the arguments keep their order, so the head of an eml rule says
which features feed its signal and which its damping; for `add` and `mul` the arguments form a
set (order is canonical anyway) and feature-free arguments (biases, scales) are dropped, so
adding a bias or re-weighting does not change the head. A bare leaf is its own head (`x.color`,
`w`).

A **family** is a connected component of the lineage graph restricted to parent -> child links
whose two ends have the same head: a child joins the family of any parent it shares its head
with (two such parents in different families join them); a child whose head differs from all
its parents' (a random rule, a seed, or a mutation or crossover that changed the head) founds a
new family. So a family is one line of descent working on one idea, and every individual
belongs to exactly one family. Two families can share a head: they found it independently.

Families are numbered by their best rule, ordered as the report orders rules (metric, then
smaller size, then earlier id), so F1 holds the run's best rule. A family's name is its number
and its best rule shortened to 48 characters (weights written `w`, deep subterms elided as `…`):
``F1 (eml (add (mul w x.color) w) (add (exp …) 1))``.

`Family.best_by_gen` is the running best metric of the family's members born up to each
generation, from its first birth to the last generation it is known alive: its last birth, the
generation before its last use as a parent, or the final generation if a member is in the last
checkpoint's population.

Everything is computed from `lineage.jsonl` in one streaming pass over its records (and the
last checkpoint for the final population); nothing here runs during a search.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable

from . import checkpoint
from .lineage_graph import records
from .parse import parse_term
from .run_folder import RunFolder
from .terms import Term, features_in, format_number, get_at, subterm_positions

NAME_WIDTH = 48


@dataclass
class Family:
    id: int  # 1 = the family holding the best rule
    head: str  # the head its members share, e.g. "eml(color ; shape)"
    founder: int  # id of its first member
    members: list[int] = field(default_factory=list)  # ids in birth order
    best: int | None = None  # id of its best valid member
    best_text: str = ""
    best_metric: float | None = None
    first_gen: int = 0
    last_gen: int = 0  # last generation the family is known to be alive
    alive_at_end: bool = False  # a member is in the last checkpoint's population
    best_by_gen: dict[int, float] = field(default_factory=dict)  # running best per generation
    births_by_gen: dict[int, int] = field(default_factory=dict)
    name: str = ""
    parent_family: int | None = None  # the family of its founder's first parent (None: a root)

    @property
    def size(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "head": self.head, "founder": self.founder,
                "size": self.size, "best": self.best, "best_text": self.best_text,
                "best_metric": self.best_metric, "first_gen": self.first_gen,
                "last_gen": self.last_gen, "alive_at_end": self.alive_at_end}


# ---------------------------------------------------------------------- heads and short names

def _features(t: Term) -> str:
    return "+".join(features_in(t)) or "·"


def head(term: Term | str) -> str:
    """The head of a rule (see the module docstring)."""
    t = parse_term(term) if isinstance(term, str) else term
    if t.is_leaf:
        return "x." + str(t.value) if t.op == "x" else ("w" if t.op == "w" else format_number(t.value))
    if t.op in ("add", "mul"):
        parts = sorted({_features(a) for a in t.args if features_in(a)})
    else:
        parts = [_features(a) for a in t.args]
    return f"{t.op}({' ; '.join(parts)})"


def _render(t: Term, elided: frozenset = frozenset(), path: tuple = ()) -> str:
    if path in elided:
        return "…"
    if t.op == "w":
        return "w"
    if t.op == "num":
        return format_number(t.value) if float(t.value).is_integer() else f"{t.value:.4g}"
    if t.op == "x":
        return "x." + str(t.value)
    return "(" + t.op + " " + " ".join(_render(a, elided, path + (k,)) for k, a in enumerate(t.args)) + ")"


def shorten(text: str, width: int = NAME_WIDTH) -> str:
    """Rule text in at most `width` characters: weights written `w`, numbers with 4 significant
    digits; if still too long, every subterm below the deepest level that fits is elided as
    `…`, then elided subterms are opened again, smallest first, while the text still fits."""
    try:
        t = parse_term(text)
    except ValueError:
        return text if len(text) <= width else text[: width - 1] + "…"
    s = _render(t)
    if len(s) <= width:
        return s
    inner = [p for p in subterm_positions(t) if p and not get_at(t, p).is_leaf]
    for depth in range(max((len(p) for p in inner), default=0), 0, -1):
        elided = frozenset(p for p in inner if len(p) == depth)
        s = _render(t, elided)
        if len(s) > width:
            continue
        opened = True
        while opened:
            opened = False
            for p in sorted(elided, key=lambda p: (len(_render(get_at(t, p))), p)):
                kids = {p + (k,) for k, a in enumerate(get_at(t, p).args) if not a.is_leaf}
                trial = (elided - {p}) | kids
                s2 = _render(t, trial)
                if len(s2) <= width:
                    elided, s, opened = frozenset(trial), s2, True
                    break
        return s
    s = _render(t, frozenset(p for p in inner if len(p) == 1))
    return s if len(s) <= width else s[: width - 1] + "…"


# ---------------------------------------------------------------------- families

def _final_population(folder: str) -> tuple[set[int], int | None]:
    try:
        state = checkpoint.read_latest(folder)
    except (ValueError, OSError):
        return set(), None
    return {int(d["id"]) for d in state.get("population", [])}, state.get("generation")


def families(folder: str, recs: Iterable[dict] | None = None) -> list[Family]:
    """The rule families of a run folder, F1 first (see the module docstring)."""
    heads_by_key: dict[str, str] = {}
    parent: dict[int, int] = {}
    head_of: dict[int, str] = {}
    info: dict[int, tuple[int, float | None, str, int]] = {}  # id -> (gen, metric, text, size)
    last_use: dict[int, int] = {}  # id -> last generation it was a parent
    first_parent: dict[int, tuple[int, ...]] = {}
    order: list[int] = []

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for rec in (records(folder) if recs is None else recs):
        i, gen = int(rec["id"]), int(rec["gen"])
        h = heads_by_key.get(rec["key"])
        if h is None:
            try:
                h = heads_by_key[rec["key"]] = head(rec["text"])
            except ValueError as exc:
                where = os.fspath(RunFolder(folder).lineage) if folder is not None else "lineage"
                raise ValueError(f"{where}: record id {i}: malformed rule text ({exc})") from None
        parent[i] = i
        head_of[i] = h
        info[i] = (gen, rec["metric"], rec["text"], int(rec["size"]))
        first_parent[i] = tuple(rec["parents"][:1])
        order.append(i)
        for p in rec["parents"]:
            if p in head_of:
                last_use[p] = max(last_use.get(p, gen), gen)
                if head_of[p] == h:
                    a, b = find(p), find(i)
                    if a != b:
                        parent[max(a, b)] = min(a, b)  # the root is the earliest member
    alive, final_gen = _final_population(folder) if folder else (set(), None)
    groups: dict[int, Family] = {}
    for i in order:
        root = find(i)
        fam = groups.get(root)
        gen, metric, text, size = info[i]
        if fam is None:
            fam = groups[root] = Family(0, head_of[root], root, first_gen=gen, last_gen=gen)
        fam.members.append(i)
        fam.births_by_gen[gen] = fam.births_by_gen.get(gen, 0) + 1
        fam.last_gen = max(fam.last_gen, gen, last_use.get(i, gen) - 1)
        if i in alive and final_gen is not None:
            fam.alive_at_end = True
            fam.last_gen = max(fam.last_gen, final_gen)
        if metric is not None and (fam.best_metric is None or metric > fam.best_metric
                                   or (metric == fam.best_metric and size < info[fam.best][3])):
            fam.best, fam.best_text, fam.best_metric = i, text, metric
    for fam in groups.values():
        running = None
        best_at: dict[int, float] = {}
        for i in fam.members:
            gen, metric = info[i][:2]
            if metric is not None and (gen not in best_at or metric > best_at[gen]):
                best_at[gen] = metric
        for g in range(fam.first_gen, fam.last_gen + 1):
            if g in best_at and (running is None or best_at[g] > running):
                running = best_at[g]
            if running is not None:
                fam.best_by_gen[g] = running
    # like the report's ordering of rules (metric, then size, then id): F1 holds the best rule
    ranked = sorted(groups.values(), key=lambda f: (
        f.best_metric is None, -(f.best_metric or 0.0),
        info[f.best][3] if f.best is not None else 0, f.best if f.best is not None else f.founder))
    for n, fam in enumerate(ranked, 1):
        fam.id = n
        fam.name = f"F{n} {shorten(fam.best_text or info[fam.founder][2])}"
    fam_of = {i: f.id for f in ranked for i in f.members}
    for fam in ranked:
        fam.parent_family = next((fam_of[p] for p in first_parent.get(fam.founder, ()) if p in fam_of), None)
    return ranked


def muller_shares(fams: list[Family], shown: list[Family]) -> tuple[list[int], list[Family], list[list[float]]]:
    """The Muller plot's data: (generations, families in stacking order, shares) where
    shares[k][g] is family k's share of the rules born in generation g; the families not in
    `shown` are pooled in a last row. Births, not the surviving population: the lineage records
    births only, and a checkpoint holds the last population only. Stacking order nests each
    family next to the family it descends from (depth first from the roots, earliest first), the
    usual Muller layout. Every generation's shares sum to 1."""
    births: dict[int, int] = {}
    for f in fams:
        for g, n in f.births_by_gen.items():
            births[g] = births.get(g, 0) + n
    gens = sorted(g for g, n in births.items() if n > 0)
    keep = {f.id: f for f in shown}
    by_id = {x.id: x for x in fams}
    children: dict[int | None, list[Family]] = {}
    for f in shown:  # a shown family hangs under its nearest shown ancestor family
        up, seen = f.parent_family, {f.id}
        while up is not None and up not in keep and up not in seen:
            seen.add(up)
            up = by_id[up].parent_family if up in by_id else None
        children.setdefault(up if up in keep and up != f.id else None, []).append(f)
    order: list[Family] = []

    def visit(parent):
        for f in sorted(children.get(parent, []), key=lambda f: (f.first_gen, f.founder)):
            order.append(f)
            visit(f.id)

    visit(None)
    counts = [[f.births_by_gen.get(g, 0) for g in gens] for f in order]
    counts.append([births[g] - sum(c[k] for c in counts) for k, g in enumerate(gens)])
    return gens, order, [[n / births[g] for n, g in zip(c, gens)] for c in counts]


def family_index(fams: Iterable[Family]) -> dict[int, int]:
    """individual id -> family id."""
    return {i: f.id for f in fams for i in f.members}


def metric_name(folder: str) -> str:
    """The task's metric name from the run's report, or "metric"."""
    try:
        with open(RunFolder(folder).report, encoding="utf-8") as fh:
            return json.load(fh)["task"]["metric"]
    except (OSError, ValueError, KeyError, TypeError):
        return "metric"


def format_families(fams: list[Family], top: int = 10, metric: str = "metric") -> str:
    singles = sum(1 for f in fams if f.size == 1)
    big = sum(1 for f in fams if f.size >= 10)
    lines = [f"{len(fams)} families ({big} of 10 rules or more, {singles} of one rule); "
             f"the top {min(top, len(fams))} by best {metric}:",
             f"  {'family':<7} {'rules':>6} {'gens':>9} {'best':>7}  head / best rule"]
    for f in fams[:top]:
        best = "   -   " if f.best_metric is None else f"{f.best_metric:7.4f}"
        gens = f"{f.first_gen}-{f.last_gen}" + ("+" if f.alive_at_end else "")
        lines.append(f"  F{f.id:<6} {f.size:6d} {gens:>9} {best}  {f.head}")
        lines.append(f"  {'':7} {'':6} {'':9} {'':7}  {f.best_text}")
    return "\n".join(lines)


def write_families(folder: str, fams: list[Family], path: str | None = None) -> str:
    path = path or os.fspath(RunFolder(folder).families)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n" + ",\n".join(
            json.dumps(dict(f.to_dict(), best_by_gen={str(k): v for k, v in f.best_by_gen.items()},
                            members=f.members), ensure_ascii=False) for f in fams) + "\n]\n")
    return path
