"""The lineage graph, built on demand from a run folder's `lineage.jsonl`.

The run itself never holds the graph: `lineage.LineageWriter` streams one record per birth to
disk. Here the records are read back into a networkx `DiGraph`:

- node = individual id (int), with `key`, `text`, `op` (the operator that made it: seed,
  random, crossover, subtree, point, hoist, shrink), `gen` (birth generation), `size`,
  `metric` (validation metric; None when the rule is invalid) and `valid`;
- edge = parent -> child, with `op` (the child's operator) and `role`: "parent" for the first
  parent of the record, "donor" for a crossover's second one (a crossover of a rule with itself
  gives one edge).

`export_graphml` streams a run's whole graph to GraphML record by record (memory flat however
long the run); `write_graphml` writes a graph in hand (an `ancestry`, say) through networkx.
Both convert what GraphML cannot hold: None becomes NaN (with `valid` = false), and lists are
not stored (parents are the edges). Older lineage files without rule texts get them from the
run's fitness cache.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Iterator

import networkx as nx

from . import lineage
from .run_folder import RunFolder


def records(folder: str) -> Iterator[dict]:
    """The lineage records of a run folder, in birth order, each with its rule `text`."""
    if not RunFolder(folder).lineage.exists():
        raise ValueError(f"{folder}: no {lineage.NAME} (is this a run folder?)")
    missing = None
    for rec in lineage.read(folder):
        if "text" not in rec:
            if missing is None:
                missing = _texts_from_cache(folder)
            rec["text"] = missing.get(rec["key"], rec["key"][:12])
        yield rec


def _texts_from_cache(folder: str) -> dict[str, str]:
    """key -> canonical text from the run's cache (for lineage files written before texts)."""
    from .cache import stored_results  # here: the cache module loads the kernels

    run = RunFolder(folder)
    shared = ""
    try:
        with open(run.config, encoding="utf-8") as fh:
            shared = json.load(fh).get("cache", {}).get("path") or ""
    except (OSError, ValueError, AttributeError):
        pass
    out = {}
    for result in stored_results(run.cache_path(shared)):
        try:
            out[result["key"]] = result["text"]
        except (KeyError, TypeError):
            continue
    return out


def build_graph(folder: str | None = None, recs: Iterable[dict] | None = None) -> nx.DiGraph:
    """The lineage DiGraph of a run folder (or of records already read)."""
    g = nx.DiGraph()
    for rec in (records(folder) if recs is None else recs):
        i = rec["id"]
        g.add_node(i, key=rec["key"], text=rec.get("text", ""), op=rec["op"], gen=rec["gen"],
                   size=rec["size"], metric=rec["metric"], valid=rec["metric"] is not None)
        for k, p in enumerate(rec["parents"]):
            if p not in g:  # a parent the file does not hold (should not happen): keep the edge
                g.add_node(p, key="", text="", op="unknown", gen=-1, size=0, metric=None, valid=False)
            if not g.has_edge(p, i):  # a crossover of a rule with itself: one edge
                g.add_edge(p, i, op=rec["op"], role="parent" if k == 0 else "donor")
    return g


def ancestry(g: nx.DiGraph, node: int) -> nx.DiGraph:
    """The subgraph of `node` and all its ancestors."""
    return g.subgraph(nx.ancestors(g, node) | {node}).copy()


def graphml_ready(g: nx.DiGraph) -> nx.DiGraph:
    """A copy GraphML can hold: None -> NaN (metric) or "" (strings); lists/dicts -> JSON text."""
    h = nx.DiGraph()
    for n, data in g.nodes(data=True):
        h.add_node(n, **{k: _plain(k, v) for k, v in data.items()})
    for a, b, data in g.edges(data=True):
        h.add_edge(a, b, **{k: _plain(k, v) for k, v in data.items()})
    return h


def _plain(key: str, v):
    if v is None:
        return math.nan if key == "metric" else ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v


def write_graphml(g: nx.DiGraph, path: str) -> str:
    """A graph in hand (e.g. an `ancestry`) as GraphML, through networkx."""
    nx.write_graphml(graphml_ready(g), path)
    return path


_NODE_KEYS = (("key", "string"), ("text", "string"), ("op", "string"), ("gen", "int"),
              ("size", "int"), ("metric", "double"), ("valid", "boolean"))
_EDGE_KEYS = (("op", "string"), ("role", "string"))


def export_graphml(folder: str, path: str) -> tuple[int, int]:
    """The whole lineage graph of a run folder as GraphML, streamed record by record (memory
    does not grow with the run; networkx's writer holds the whole document). Returns (nodes,
    edges). `networkx.read_graphml` reads it back as `build_graph` would build it, with node
    ids as strings and NaN for invalid metrics."""
    from xml.sax.saxutils import escape

    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; give the GraphML file's name")
    nodes = edges = 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("<?xml version='1.0' encoding='utf-8'?>\n"
                 '<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
                 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                 'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
                 'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n')
        for k, (name, kind) in enumerate(_NODE_KEYS):
            fh.write(f'  <key id="n{k}" for="node" attr.name="{name}" attr.type="{kind}" />\n')
        for k, (name, kind) in enumerate(_EDGE_KEYS):
            fh.write(f'  <key id="e{k}" for="edge" attr.name="{name}" attr.type="{kind}" />\n')
        fh.write('  <graph edgedefault="directed">\n')
        for rec in records(folder):
            m = rec["metric"]
            values = (rec["key"], rec.get("text", ""), rec["op"], int(rec["gen"]), int(rec["size"]),
                      "nan" if m is None else repr(float(m)), "false" if m is None else "true")
            data = "".join(f'<data key="n{k}">{escape(str(v))}</data>' for k, v in enumerate(values))
            fh.write(f'    <node id="{rec["id"]}">{data}</node>\n')
            nodes += 1
            for k, p in enumerate(dict.fromkeys(rec["parents"])):
                fh.write(f'    <edge source="{p}" target="{rec["id"]}"><data key="e0">'
                         f'{escape(rec["op"])}</data><data key="e1">{"parent" if k == 0 else "donor"}'
                         "</data></edge>\n")
                edges += 1
        fh.write("  </graph>\n</graphml>\n")
    os.replace(tmp, path)
    return nodes, edges


def best_individual(folder: str, recs: Iterable[dict] | None = None) -> int | None:
    """Id of the run's best rule: the report's, else the highest metric (smallest, earliest)."""
    try:
        with open(RunFolder(folder).report, encoding="utf-8") as fh:
            best = json.load(fh).get("best")
        if best is not None:
            return int(best["id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    top = None
    for rec in (records(folder) if recs is None else recs):
        if rec["metric"] is None:
            continue
        k = (rec["metric"], -rec["size"], -rec["id"])
        if top is None or k > top[0]:
            top = (k, rec["id"])
    return None if top is None else top[1]
