"""Plots of a run folder, written as PNGs to DIR/plots/ by `evo-rules plot DIR`.

- `families.png`: the best validation metric of each of the top rule families (see
  `families`) over generations: a family's line runs from its first birth to the last
  generation it is known alive (x: it died out before the end), with the population's best
  from the logbook for reference; below, the rules born in each family per generation (how
  much of the search's work it gets).
- `ancestry.png`: the ancestry of the run's best rule, layered by generation (ancestors at the
  top): its line of first parents back to generation 0 first, then crossover donors, up to
  `max_nodes` rules; nodes show id, generation, metric and the shortened rule, edges the
  operator (dashed: a crossover donor); "+k" marks a rule with k ancestors not drawn. An edge
  whose straight line would cross another node is routed around it through the gaps between
  columns; a colour bar and a legend explain node colours and borders.
- `pareto.png`: the Pareto front (size vs metric) of all valid rules born up to a few
  generations. The lineage records births, not survival; for NSGA-II selection this front is
  exactly the population's first front (a non-dominated rule is never dropped). Grey dots are
  every valid rule born in the run.
  The winner (star) and the linear and reference rules (diamonds: their sizes and validation
  metrics) are marked, the oracle drawn as a line; the title lists the generations shown.
- `logbook.png`: best and median metric of the population per generation, with the linear
  baseline and the oracle as horizontal lines (from report.json), and evaluations, cache hits,
  duplicates dropped and invalid rules per generation.
- `muller.png`: a Muller plot: each family's share (stacked areas) of the rules born in each
  generation, families nested next to the family they descend from (`families.muller_shares`).
  The lineage records births, not the surviving population (a checkpoint holds only the last
  population), so the shares are of births; the title says so.
- `leads.png` (only for a run whose report has a final table with per-seed leads, the optimizer
  track's): each rule's lead over the table's baseline (Muon) on each seed, with its paired
  standard error over the stories, one panel per horizon, the rerun gate's margin drawn: how
  far a rule's lead varies from seed to seed beside how precisely one run measures it.

Only matplotlib (Agg, through `matplotlib.figure.Figure`: no pyplot state, no display).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure

from . import checkpoint
from .families import Family, families, muller_shares, shorten
from .lineage_graph import best_individual, records
from .run_folder import RunFolder

TOP_FAMILIES = 8


def _run_info(folder: str) -> tuple[str, str, list[dict], dict]:
    """(run title, metric name, logbook rows, report) from report.json, else from the checkpoint
    (report {})."""
    try:
        with open(RunFolder(folder).report, encoding="utf-8") as fh:
            rep = json.load(fh)
        return (f"{rep['task']['name']} — {os.path.basename(os.path.abspath(folder))}",
                rep["task"].get("metric", "metric"), rep.get("logbook", []), rep)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no report, or a damaged one
        pass
    try:
        state = checkpoint.read_latest(folder)
        return (f"{state['task']['name']} — {os.path.basename(os.path.abspath(folder))}", "metric",
                state.get("logbook", []), {})
    except (ValueError, OSError, KeyError, TypeError, AttributeError):
        return os.path.basename(os.path.abspath(folder)), "metric", [], {}


def baseline_marks(report: dict, metric: str) -> list[dict]:
    """The report's baselines as plot marks: name, validation metric where the report has it
    (else the test metric, said in `split`), and size (None for the oracle)."""
    b = report.get("baselines", {})
    rules = [("linear rule", b.get("linear")), ("oracle", b.get("oracle"))]
    rules += [(f"reference {k + 1}", r) for k, r in enumerate(b.get("reference", []))]
    marks = []
    for name, r in rules:
        if not r:
            continue
        split = "validation" if metric in r.get("valid_metrics", {}) else "test"
        value = r.get("valid_metrics" if split == "validation" else "test_metrics", {}).get(metric)
        if value is not None:
            marks.append({"name": name, "value": float(value), "split": split, "size": r.get("size")})
    return marks


def plot_run(folder: str, out: str | None = None, top: int = TOP_FAMILIES,
             max_nodes: int = 24) -> list[str]:
    """Write the five PNGs (to `out`, default DIR/plots); returns their paths."""
    paths = [os.fspath(p) for p in RunFolder(folder).plot_paths(out)]
    recs = list(records(folder))
    if not recs:
        raise ValueError(f"{folder}: the lineage is empty (no generation finished)")
    os.makedirs(os.path.dirname(paths[0]), exist_ok=True)  # only for a run that can be plotted
    title, metric, logbook, report = _run_info(folder)
    fams = families(folder, recs)
    try:  # what the plots read of the report: a damaged one is named, not half plotted
        marks = baseline_marks(report, metric)
        winner = report.get("winner")
        if winner and not (isinstance(winner.get("size"), int) and isinstance(winner.get("metric"), (int, float))):
            raise ValueError("the winner has no size and metric")
        if not all(isinstance(r, dict) for r in logbook):
            raise ValueError("a logbook row is not an object")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{RunFolder(folder).report}: not a readable run report "
                         f"({type(exc).__name__}: {exc})") from None
    plot_families(fams, logbook, metric, title, paths[0], top)
    plot_ancestry(recs, best_individual(folder, recs), fams, metric, title, paths[1], max_nodes)
    plot_pareto(recs, metric, title, paths[2], winner=winner, marks=marks)
    plot_logbook(logbook, metric, title, paths[3], marks=marks)
    plot_muller(fams, title, paths[4], top, metric)
    final = report.get("final") or {}
    if lead_points(final):
        margin = max([g.get("margin") or 0.0 for g in report.get("rerun_gate", [])] or [0.0])
        paths.append(plot_leads(final, title, os.fspath(RunFolder(folder).leads_plot_path(out)), margin))
    return paths


# ---------------------------------------------------------------------- 1. families

def _pick_families(fams: list[Family], top: int) -> list[Family]:
    """F1 (it holds the best rule), then the best families of more than one rule."""
    valid = [f for f in fams if f.best_metric is not None]
    if not valid:
        return []
    several = [f for f in valid[1:] if f.size > 1]
    rest = several if len(several) >= top - 1 else valid[1:]
    return [valid[0]] + rest[: top - 1]


def _families_caption(fams: list[Family], chosen: list[Family], metric: str) -> str:
    """Which families a plot shows and why the others are left out."""
    left = len(fams) - len(chosen)
    if not left:
        return f"all {len(fams)} rule families"
    singles = any(f.size == 1 for f in fams[1:]) and all(f.size > 1 for f in chosen[1:])
    return (f"top {len(chosen)} of {len(fams)} rule families by best {metric} ({left} left out for "
            "readability" + ("; families of a single rule skipped" if singles else "") + ")")


def plot_families(fams: list[Family], logbook: list[dict], metric: str, title: str, path: str,
                  top: int = TOP_FAMILIES) -> str:
    from matplotlib.ticker import MaxNLocator

    chosen = _pick_families(fams, top)
    n_leg = len(chosen) + 1
    fig = Figure(figsize=(11, 7.4 + 0.24 * n_leg), layout="constrained")
    ax, births = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1))
    colors = [f"C{k}" for k in range(10)]
    last = max((r["gen"] for r in logbook), default=max((f.last_gen for f in fams), default=0))
    if logbook:
        gens = [r["gen"] for r in logbook if r.get("best") is not None]
        ax.step(gens, [r["best"] for r in logbook if r.get("best") is not None], where="post",
                color="0.6", lw=5, alpha=0.45, label="population best (logbook)", zorder=1)
    for k, fam in enumerate(chosen):
        c = colors[k % len(colors)]
        gens = sorted(fam.best_by_gen)
        rules = f"{fam.size} rule{'s' if fam.size != 1 else ''}"
        label = (f"F{fam.id}  {shorten(fam.best_text)}   [{fam.head}; {rules}, "
                 f"gen {fam.first_gen}–{fam.last_gen}{'' if fam.alive_at_end else ', died out'}]")
        if gens:
            vals = [fam.best_by_gen[g] for g in gens]
            ax.step(gens, vals, where="post", color=c, lw=1.8, label=label, zorder=3)
            ax.plot(gens[0], vals[0], "o", color=c, ms=5, zorder=4)
            if not fam.alive_at_end:
                ax.plot(gens[-1], vals[-1], "x", color=c, ms=8, mew=2, zorder=4)
        span = range(fam.first_gen, fam.last_gen + 1)
        births.plot(list(span), [fam.births_by_gen.get(g, 0) for g in span], "-", color=c, lw=1.4,
                    marker="." if len(span) < 30 else None)
    ax.set_ylabel(f"best validation {metric} so far")
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}: {_families_caption(fams, chosen, metric)}\n(o = founded, x = died out)",
                 fontsize=11)
    births.xaxis.set_major_locator(MaxNLocator(integer=True))
    births.set_xlabel("generation")
    births.set_ylabel("rules born in the family")
    births.set_xlim(-0.5, last + 0.5)
    births.set_ylim(bottom=0)
    births.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=1, frameon=False,
               prop={"family": "monospace", "size": 8})
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------- 2. ancestry

def _select_ancestors(by_id: dict[int, dict], best: int, max_nodes: int) -> list[int]:
    """Ancestors of `best`, fewest donor edges first, then nearest: the first-parent line first."""
    import heapq

    seen = {best: (0, 0)}
    heap = [(0, 0, -by_id[best]["gen"], best)]
    chosen: list[int] = []
    while heap and len(chosen) < max_nodes:
        donors, dist, _, n = heapq.heappop(heap)
        if seen.get(n) != (donors, dist) or n in chosen:
            continue
        chosen.append(n)
        for k, p in enumerate(by_id[n]["parents"]):
            if p not in by_id:
                continue
            cost = (donors + (k > 0), dist + 1)
            if p not in seen or cost < seen[p]:
                seen[p] = cost
                heapq.heappush(heap, (cost[0], cost[1], -by_id[p]["gen"], p))
    return chosen


def _wrap(text: str, width: int) -> str:
    lines, cur = [], ""
    for word in text.split(" "):
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = "  " + word
        else:
            cur = f"{cur} {word}" if cur else word
    return "\n".join(lines + [cur])


def _count_ancestors(by_id: dict[int, dict], node: int, limit: int = 999) -> int:
    stack, seen = list(by_id[node]["parents"]), set()
    while stack and len(seen) < limit:
        p = stack.pop()
        if p in seen or p not in by_id:
            continue
        seen.add(p)
        stack.extend(by_id[p]["parents"])
    return len(seen)


def plot_ancestry(recs: list[dict], best: int | None, fams: list[Family], metric: str, title: str,
                  path: str, max_nodes: int = 24) -> str:
    import matplotlib
    from matplotlib import colors as mcolors
    from matplotlib.patches import FancyArrowPatch

    by_id = {r["id"]: r for r in recs}
    if best is None or best not in by_id:
        fig = Figure(figsize=(8, 3), layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no valid rule in this run: no ancestry to draw", ha="center", va="center")
        fig.savefig(path, dpi=110)
        return path
    nodes = _select_ancestors(by_id, best, max_nodes)
    keep = set(nodes)
    fam_of = {i: f.id for f in fams for i in f.members if i in keep}
    # layers: one row per generation that holds a drawn node, ancestors at the top
    gens = sorted({by_id[n]["gen"] for n in nodes})
    row = {g: k for k, g in enumerate(gens)}
    # columns: the first-parent line of the best rule in column 0, others placed next to their
    # children (barycentre), then spread so that no two nodes of a row overlap
    line, n = [], best
    while True:
        line.append(n)
        ps = [p for p in by_id[n]["parents"] if p in keep]
        if not by_id[n]["parents"] or by_id[n]["parents"][0] not in keep:
            break
        n = ps[0]
    x: dict[int, float] = {n: 0.0 for n in line}
    children = defaultdict(list)
    for n in nodes:
        for p in by_id[n]["parents"]:
            if p in keep:
                children[p].append(n)
    for n in sorted(nodes, key=lambda n: -by_id[n]["gen"]):  # children before parents
        if n not in x:
            kids = [x[c] for c in children[n] if c in x]
            x[n] = (sum(kids) / len(kids) if kids else 0.0) + 0.5
    for g in gens:
        members = sorted((n for n in nodes if by_id[n]["gen"] == g), key=lambda n: (x[n], n))
        fixed = [n for n in members if n in line]
        others = [n for n in members if n not in line]
        taken = {x[n] for n in fixed}
        for n in others:
            want = max(round(x[n]), 1) if x[n] > 0 else min(round(x[n]), -1)
            col = want
            step = 0
            while col in taken:
                step += 1
                col = want + step
            x[n] = float(col)
            taken.add(col)
    xs = sorted({x[n] for n in nodes})
    col_of = {v: k for k, v in enumerate(xs)}
    ncols, nrows = len(xs), len(gens)
    col_w, row_h = 3.6, 1.0
    fig = Figure(figsize=(max(7.5, col_w * ncols + 1.4), max(3.5, row_h * nrows + 1.4)),
                 layout="constrained")
    ax = fig.add_subplot()
    pos = {n: (col_of[x[n]] * col_w, -row[by_id[n]["gen"]]) for n in nodes}
    metrics = [by_id[n]["metric"] for n in nodes if by_id[n]["metric"] is not None]
    norm = mcolors.Normalize(min(metrics, default=0.0), max(metrics, default=1.0))
    # viridis lightened (the text stays readable); the colour bar shows the same map
    cmap = mcolors.ListedColormap(0.55 + 0.45 * matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3])
    boxes = {}
    for n in nodes:
        r = by_id[n]
        m = r["metric"]
        light = cmap(norm(m)) if m is not None else (0.85, 0.85, 0.85, 1.0)
        hidden = sum(1 for p in r["parents"] if p not in keep)
        more = f"  +{_count_ancestors(by_id, n)}" if hidden else ""
        head = (f"#{n} F{fam_of.get(n, '?')} {r['op']}  {metric} "
                f"{'invalid' if m is None else f'{m:.4f}'}  size {r['size']}{more}")
        boxes[n] = ax.text(*pos[n], f"{head}\n{_wrap(shorten(r['text'], 3 * 48), 48)}",
                           ha="center", va="center", fontsize=6.6, family="monospace", zorder=3,
                           bbox={"boxstyle": "round,pad=0.3", "fc": light,
                                 "ec": "crimson" if n == best else "0.3",
                                 "lw": 2.0 if n == best else 0.8})
    ax.set_xlim(-col_w * 0.55, col_w * (ncols - 1) + col_w * 0.55)
    ax.set_ylim(-(nrows - 1) - 0.6, 0.6)
    ax.set_yticks([-k for k in range(nrows)], [f"gen {g}" for g in gens], fontsize=8)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    total = _count_ancestors(by_id, best, limit=10**9)
    ax.set_title(f"{title}: ancestry of the best rule #{best} ({len(nodes) - 1} of its {total} "
                 f"ancestors; first-parent line first)\nnode: id, family, operator, {metric}, size "
                 f"(+k: ancestors not drawn); edge label: operator, dashed = crossover donor",
                 fontsize=9.5)
    _ancestry_legend(fig, ax, cmap, norm, metric)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # lays the boxes (and the axes) out: edges are clipped at and routed around them
    to_data = ax.transData.inverted()
    extent = {n: tuple(to_data.transform(b.get_bbox_patch().get_window_extent().get_points()).ravel())
              for n, b in boxes.items()}
    lanes = [col_w * (k + 0.5) for k in range(-1, ncols)]
    for n in nodes:
        for k, p in enumerate(dict.fromkeys(by_id[n]["parents"])):  # a self-cross: one edge
            if p not in keep:
                continue
            others = [e for m, e in extent.items() if m not in (n, p)]
            line = route_edge(pos[p], pos[n], others, lanes)
            style = {"lw": 1.0, "color": "0.35", "linestyle": "--" if k > 0 else "-"}
            if len(line) > 2:  # routed: the bends drawn as a line, the last leg as the arrow
                ax.plot([q[0] for q in line[:-1]], [q[1] for q in line[:-1]], zorder=1, **style)
            ax.add_patch(FancyArrowPatch(line[-2], line[-1], arrowstyle="-|>", mutation_scale=10,
                                         patchA=boxes[p].get_bbox_patch() if len(line) == 2 else None,
                                         patchB=boxes[n].get_bbox_patch(), zorder=1, **style))
            (x0, y0), (x1, y1) = (line[2], line[3]) if len(line) > 2 else (pos[p], pos[n])
            # a first parent's label half a row above the child, a donor's half a row below
            # the donor: two edges into one child keep their labels apart
            t = 0.5 if len(line) > 2 else (0.5 / (y0 - y1) if k > 0 else 1 - 0.5 / (y0 - y1))
            ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), by_id[n]["op"] if k == 0 else "donor",
                    fontsize=6.5, ha="center", va="center", color="0.2", zorder=2, style="italic",
                    bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.9})
    fig.savefig(path, dpi=110)
    return path


def _ancestry_legend(fig, ax, cmap, norm, metric: str) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8, pad=0.01,
                 label=f"node colour: validation {metric}")
    ax.legend(handles=[Patch(fc="white", ec="crimson", lw=2, label="the best rule"),
                       Patch(fc=(0.85, 0.85, 0.85), ec="0.3", label="invalid rule"),
                       Line2D([], [], color="0.35", lw=1, label="first parent (label: operator)"),
                       Line2D([], [], color="0.35", lw=1, ls="--", label="crossover donor")],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


def _crosses(a, b, box, margin: float = 0.02) -> bool:
    """Does the segment a-b pass through the box (x0, y0, x1, y1), grown by `margin`?
    (Liang-Barsky clipping: the segment's parameter range inside the box is not empty.)"""
    x0, y0, x1, y1 = box
    lo, hi = 0.0, 1.0
    for d, start, low, high in ((b[0] - a[0], a[0], x0 - margin, x1 + margin),
                                (b[1] - a[1], a[1], y0 - margin, y1 + margin)):
        if d == 0:
            if not low <= start <= high:
                return False
            continue
        t0, t1 = sorted(((low - start) / d, (high - start) / d))
        lo, hi = max(lo, t0), min(hi, t1)
        if lo > hi:
            return False
    return True


def route_edge(a, b, obstacles, lanes, half: float = 0.5, shift: float = 0.3) -> list[tuple[float, float]]:
    """A parent -> child edge (`a` above `b`, node centres) as a polyline that crosses none of
    the `obstacles` (boxes (x0, y0, x1, y1) of the other nodes): straight when that is clear,
    else down half a row, along to a free lane (x between columns), down to half a row above the
    child, and across into it; the nearest lane that is clear is taken. The legs leave and enter
    the nodes `shift` towards the lane, so they do not run on top of a straight edge."""
    a, b = (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))

    def clear(line):
        return not any(_crosses(p, q, box) for p, q in zip(line, line[1:]) for box in obstacles)

    if clear([a, b]):
        return [a, b]
    mid = (a[0] + b[0]) / 2
    for lane in sorted(lanes, key=lambda x: (abs(x - mid), x)):
        xa, xb = a[0] + math.copysign(shift, lane - a[0]), b[0] + math.copysign(shift, lane - b[0])
        line = [(xa, a[1]), (xa, a[1] - half), (lane, a[1] - half), (lane, b[1] + half), (xb, b[1] + half),
                (xb, b[1])]
        if clear(line):
            return line
    return [a, b]  # nowhere to go (cannot happen with lanes between columns): straight


# ---------------------------------------------------------------------- 3. Pareto fronts

def _front(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Non-dominated (size, metric) points: smaller size, larger metric."""
    out: list[tuple[int, float]] = []
    best = None
    for size, m in sorted(points, key=lambda p: (p[0], -p[1])):
        if best is None or m > best:
            out.append((size, m))
            best = m
    return out


def plot_pareto(recs: list[dict], metric: str, title: str, path: str, n_fronts: int = 5,
                winner: dict | None = None, marks: list[dict] = ()) -> str:
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    valid = [(r["gen"], r["size"], r["metric"]) for r in recs if r["metric"] is not None]
    fig = Figure(figsize=(13, 5.8), layout="constrained")
    full, zoom = fig.subplots(1, 2, width_ratios=(1, 1.25))
    if not valid:
        for ax in (full, zoom):
            ax.text(0.5, 0.5, "no valid rule in this run", ha="center", va="center",
                    transform=ax.transAxes)
        fig.savefig(path, dpi=110)
        return path
    last = max(g for g, _, _ in valid)
    picks = sorted({round(last * k / (n_fronts - 1)) for k in range(n_fronts)}) if last else [0]
    cmap = matplotlib.colormaps["viridis"]
    fronts = {g: _front([(s, m) for gen, s, m in valid if gen <= g]) for g in picks}
    for ax in (full, zoom):
        ax.scatter([s for _, s, _ in valid], [m for _, _, m in valid], s=7, color="0.72",
                   alpha=0.5, lw=0, label="every valid rule born in the run", zorder=1)
        for k, g in enumerate(picks):
            front = fronts[g]
            ax.step([s for s, _ in front], [m for _, m in front], where="post",
                    color=cmap(0.9 * k / max(len(picks) - 1, 1)), lw=1.8, marker="o", ms=4.5,
                    label=f"front of rules born up to generation {g} ({len(front)} rules)",
                    zorder=2 + k)
        _mark_pareto(ax, winner, marks, metric)
        ax.set_xlim(0, max([s for _, s, _ in valid] + [m["size"] for m in marks if m["size"]]) + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("rule size (nodes of the canonical term)")
        ax.grid(alpha=0.3)
    full.set_ylabel(f"validation {metric}")
    full.set_title("every valid rule", fontsize=10)
    # zoom: the upper half of every front (small rules with poor metrics fall below it)
    top = max([m for f in fronts.values() for _, m in f]
              + [m["value"] for m in marks if m["split"] == "validation"])
    low = min(sorted(m for _, m in f)[len(f) // 2] for f in fronts.values())
    span = max(top - low, 1e-3)
    zoom.set_ylim(low - 0.35 * span, top + 0.15 * span)
    zoom.set_title("zoom on the top of the fronts", fontsize=10)
    zoom.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title}: Pareto front (size vs validation {metric}) after generations "
                 f"{', '.join(map(str, picks))} of 0–{last}\n(all rules born up to each generation; with "
                 "NSGA-II this is the population's first front)", fontsize=10.5)
    fig.savefig(path, dpi=110)
    return path


def _mark_pareto(ax, winner: dict | None, marks: list[dict], metric: str) -> None:
    """The winner (star), the baseline rules at their sizes (diamonds), the oracle (a line)."""
    if winner:
        ax.plot(winner["size"], winner["metric"], "*", ms=16, color="crimson", mec="k", zorder=20,
                label=f"winner (size {winner['size']}, {metric} {winner['metric']:.4f})")
    for k, m in enumerate(marks):
        label = f"{m['name']}: {m['split']} {metric} {m['value']:.4f}"
        if m["size"] is None:
            ax.axhline(m["value"], color="k", ls=":", lw=1.3, label=label, zorder=1)
        elif m["split"] == "validation":  # a test metric would not belong on these axes
            ax.plot(m["size"], m["value"], "D", ms=7, mec="k", zorder=19,
                    color="C3" if m["name"] == "linear rule" else f"C{(k + 4) % 10}",
                    label=f"{label}, size {m['size']}")


# ---------------------------------------------------------------------- 4. logbook

_MARK_STYLE = {"linear rule": ("C3", "--"), "oracle": ("k", ":")}


def plot_logbook(logbook: list[dict], metric: str, title: str, path: str,
                 marks: list[dict] = ()) -> str:
    fig = Figure(figsize=(9, 7), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    rows = [r for r in logbook if "gen" in r]
    gens = [r["gen"] for r in rows]
    for key, style in (("best", "-o"), ("median", "-s")):
        pts = [(r["gen"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax1.plot([g for g, _ in pts], [v for _, v in pts], style, ms=3.5, lw=1.6,
                     label=f"{key} {metric} of the population")
    for m in marks:  # the references are rules of the Pareto plot; here: the two yardsticks
        if m["name"] in _MARK_STYLE:
            color, ls = _MARK_STYLE[m["name"]]
            ax1.axhline(m["value"], color=color, ls=ls, lw=1.3,
                        label=f"{m['name']}: {m['split']} {metric} {m['value']:.4f}")
    ax1.set_ylabel(f"validation {metric}")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title(f"{title}: logbook", fontsize=11)
    evals = [r.get("evals", 0) for r in rows]
    hits = [r.get("cache_hits", 0) for r in rows]
    ax2.bar(gens, evals, color="C0", label="evaluations (cache misses)")
    ax2.bar(gens, hits, bottom=evals, color="C2", label="cache hits")
    ax2.plot(gens, [r.get("dedup", 0) for r in rows], "-^", color="C3", ms=3.5, lw=1.2,
             label="duplicates dropped before evaluation")
    ax2.plot(gens, [r.get("invalid", 0) for r in rows], "-x", color="C1", ms=4, lw=1.2,
             label="invalid rules")
    ax2.set_xlabel("generation")
    ax2.set_ylabel("rules per generation")
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, frameon=False)
    if rows:
        ax2.set_ylim(0, max(max(e + h, r.get("dedup", 0), r.get("invalid", 0))
                            for e, h, r in zip(evals, hits, rows)) * 1.08 + 1)
    if not rows:
        ax1.text(0.5, 0.5, "no logbook (no generation finished)", ha="center", transform=ax1.transAxes)
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------- 5. Muller plot

def plot_muller(fams: list[Family], title: str, path: str, top: int = TOP_FAMILIES,
                metric: str = "metric") -> str:
    chosen = _pick_families(fams, top)
    colour = {f.id: f"C{k % 10}" for k, f in enumerate(chosen)}  # as in families.png
    gens, order, shares = muller_shares(fams, chosen)
    fig = Figure(figsize=(11, 5.2 + 0.2 * (len(order) + 1)), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"F{f.id}  {shorten(f.best_text)}  [{f.head}]" for f in order]
    labels.append(f"the other {len(fams) - len(order)} families")
    colours = [colour[f.id] for f in order] + ["0.85"]
    if len(gens) == 1:  # one generation: a bar, not an area of zero width
        gens, shares = [gens[0] - 0.4, gens[0] + 0.4], [row * 2 for row in shares]  # [a] -> [a, a]
    ax.stackplot(gens, shares, labels=labels, colors=colours, alpha=0.9, lw=0.3, edgecolor="white")
    ax.set_xlim(gens[0], gens[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("generation")
    ax.set_ylabel("share of the rules born in the generation")
    ax.grid(alpha=0.25)
    ax.set_title(f"{title}: Muller plot of rule families\n{_families_caption(fams, chosen, metric)}\n"
                 "shares of the rules BORN in each generation (the lineage records births, not the "
                 "surviving population);\nfamilies stacked next to the family they descend from",
                 fontsize=10)
    fig.legend(loc="outside lower center", ncol=1, frameon=False, prop={"family": "monospace", "size": 8})
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------- 6. leads per seed

def lead_points(final: dict) -> list[dict]:
    """The leads a final table holds (`final["horizons"][k]["rows"][j]["lead_se"]`, one
    (lead, standard error) per seed, None where a run kept no per-story losses): one dict per
    rule, horizon and seed with rule, steps, seed, lead and se. Empty when the table has none."""
    seeds = final.get("seeds") or []
    out = []
    for h in final.get("horizons") or []:
        for row in h.get("rows") or []:
            for seed, pair in zip(seeds, row.get("lead_se") or []):
                if pair is not None and row.get("name") != "Muon":
                    out.append({"rule": row["name"], "steps": h["steps"], "seed": seed,
                                "lead": float(pair[0]), "se": float(pair[1])})
    return out


def plot_leads(final: dict, title: str, path: str, margin: float = 0.0) -> str:
    """One panel per horizon: every rule's lead over Muon (Muon's loss minus the rule's, + =
    ahead) on each seed as a dot with +- 2 standard errors, seeds side by side; the zero line is
    Muon, the dashed line the gate's margin."""
    pts = lead_points(final)
    steps = sorted({p["steps"] for p in pts})
    rules = list(dict.fromkeys(p["rule"] for p in pts))
    seeds = sorted({p["seed"] for p in pts})
    fig = Figure(figsize=(max(7.0, 1.6 * len(rules) + 2), 4.0 * len(steps) + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(steps), 1, sharex=True))
    width = 0.8 / max(len(seeds), 1)
    for ax, n in zip(axes, steps):
        for k, seed in enumerate(seeds):
            at = [(rules.index(p["rule"]), p) for p in pts if p["steps"] == n and p["seed"] == seed]
            xs = [i - 0.4 + width * (k + 0.5) for i, _ in at]
            ax.errorbar(xs, [p["lead"] for _, p in at], yerr=[2 * p["se"] for _, p in at], fmt="o",
                        ms=4, capsize=2, color=f"C{k % 10}", label=f"seed {seed}")
        ax.axhline(0.0, color="0.3", lw=1.0)
        if margin:
            ax.axhline(margin, color="C3", ls="--", lw=1.0, label=f"gate margin {margin:g}")
        ax.set_ylabel(f"lead over Muon at {n} steps\n(nats; + = ahead)")
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    axes[-1].set_xticks(range(len(rules)))
    axes[-1].set_xticklabels([_wrap(r, 22) for r in rules], fontsize=8)
    split = final.get("split", "test")
    fig.suptitle(f"{title}\neach seed's lead over Muon on the {split} stories, "
                 "+- 2 standard errors over the stories", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
