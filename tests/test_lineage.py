"""Lineage graph, GraphML export, rule families and plots, on one tiny run."""

import json
import math
import os
import shutil
import subprocess
import sys
import tracemalloc
from types import SimpleNamespace

import networkx as nx
import pytest

from evo_rules import app, lineage
from evo_rules.families import families, family_index, head, shorten
from evo_rules.lineage_graph import ancestry, best_individual, build_graph, records, write_graphml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "evo_rules.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lineage") / "run"
    app.run_search({
        "run": {"seed": 5, "generations": 4, "population": 16},
        "task": {"name": "and-match", "settings": {"n_train": 200, "n_valid": 100, "n_test": 100}},
        "search": {"hall_of_fame": 5},
        "grammar": {"max_size": 15},
        "fit": {"max_iter": 8},
        "evaluation": {"backend": "serial"},
    }, out=str(out))
    return str(out)


def test_heads_and_short_names():
    assert head("(eml (add (mul w0 x.color) w1) (add (exp (mul w2 x.shape)) 1))") == "eml(color ; shape)"
    assert head("(eml (add (mul w0 x.shape) w1) (add (exp (mul w2 x.color)) 1))") == "eml(shape ; color)"
    assert head("(add (mul w0 x.color) (mul w1 x.shape) w2)") == "add(color ; shape)"
    assert head("(add (mul w0 x.shape) (mul w1 x.color))") == "add(color ; shape)"  # a set
    assert head("(mul (exp (add (mul w0 x.color) w1)) w2 x.shape)") == "mul(color ; shape)"
    assert head("(exp (mul w0 x.color x.shape))") == "exp(color+shape)"
    assert head("x.color") == "x.color" and head("w0") == "w"
    long = ("(eml (add (mul w0 x.color) w1) "
            "(add (exp (add (mul w2 x.shape) (mul x.color x.color x.color) w3)) 1))")
    short = shorten(long, 48)
    assert len(short) <= 48 and short.startswith("(eml (add (mul w x.color) w)") and "…" in short
    assert shorten("(mul w0 x.color)") == "(mul w x.color)"
    assert len(shorten(long, 10)) <= 10


def test_graph_holds_every_birth_and_parent_link(run):
    recs = list(records(run))
    g = build_graph(run)
    assert g.number_of_nodes() == len(recs) == len({r["id"] for r in recs})
    # a crossover may pick one parent twice: one edge
    assert g.number_of_edges() == sum(len(set(r["parents"])) for r in recs)
    for r in recs:
        node = g.nodes[r["id"]]
        for name in ("key", "op", "gen", "metric"):
            assert node[name] == r[name]
        assert node["text"] and node["valid"] == (r["metric"] is not None)
        for k, p in enumerate(r["parents"]):
            role = "parent" if k == 0 or p == r["parents"][0] else "donor"
            assert g.edges[p, r["id"]] == {"op": r["op"], "role": role}
            assert g.nodes[p]["gen"] < r["gen"]
    assert nx.is_directed_acyclic_graph(g)
    best = best_individual(run)
    with open(os.path.join(run, "report.json")) as fh:
        assert best == json.load(fh)["best"]["id"]
    anc = ancestry(g, best)
    assert best in anc and all(p in anc for p in g.predecessors(best))


def test_graphml_round_trip_through_the_cli(run, tmp_path):
    path = tmp_path / "lineage.graphml"
    res = cli("lineage", run, "--graphml", str(path), "--top", "3")
    assert res.returncode == 0, res.stderr
    assert "families" in res.stdout and "F1" in res.stdout and "graphml:" in res.stdout
    g = build_graph(run)
    back = nx.read_graphml(path)
    assert back.number_of_nodes() == g.number_of_nodes()
    assert back.number_of_edges() == g.number_of_edges()
    for n, data in g.nodes(data=True):
        got = back.nodes[str(n)]
        assert got["key"] == data["key"] and got["text"] == data["text"] and got["gen"] == data["gen"]
        if data["metric"] is None:
            assert math.isnan(got["metric"]) and got["valid"] is False
        else:
            assert got["metric"] == data["metric"] and got["valid"] is True
    for a, b, data in g.edges(data=True):
        assert back.edges[str(a), str(b)] == data
    # a graph in hand (the best rule's ancestry) through networkx's writer
    anc = ancestry(g, best_individual(run))
    write_graphml(anc, str(tmp_path / "ancestry.graphml"))
    small = nx.read_graphml(tmp_path / "ancestry.graphml")
    assert small.number_of_nodes() == anc.number_of_nodes()
    assert small.number_of_edges() == anc.number_of_edges()


def test_families_cover_every_rule_once(run):
    recs = list(records(run))
    fams = families(run)
    index = family_index(fams)
    members = [i for f in fams for i in f.members]
    assert sorted(members) == sorted(r["id"] for r in recs)  # each individual exactly once
    assert len(index) == len(recs)
    by_id = {r["id"]: r for r in recs}
    for f in fams:
        assert {head(by_id[i]["text"]) for i in f.members} == {f.head}
        assert f.founder == min(f.members) and f.name.startswith(f"F{f.id} ")
        vals = [f.best_by_gen[g] for g in sorted(f.best_by_gen)]
        assert vals == sorted(vals)  # a running best
        if f.best_metric is not None:
            assert max(vals) == f.best_metric
    # a parent link between rules of one head never crosses families; a founder has no such link
    founders = {f.founder for f in fams}
    for r in recs:
        same = [p for p in r["parents"] if head(by_id[p]["text"]) == head(r["text"])]
        for p in same:
            assert index[p] == index[r["id"]]
        if r["id"] in founders:
            assert not same
    assert [f.id for f in fams] == list(range(1, len(fams) + 1))
    assert fams[0].best_metric == max(r["metric"] for r in recs if r["metric"] is not None)
    assert fams[0].best == best_individual(run)  # F1 holds the report's best rule


def test_plot_writes_five_pngs(run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    res = cli("plot", str(folder))
    assert res.returncode == 0, res.stderr
    names = sorted(os.listdir(folder / "plots"))
    assert names == ["ancestry.png", "families.png", "logbook.png", "muller.png", "pareto.png"]
    assert sorted(os.path.basename(line) for line in res.stdout.split()) == names
    for name in names:
        data = (folder / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert cli("plot", str(tmp_path / "nothing")).returncode == 2


def test_old_lineage_without_texts_gets_them_from_the_cache(run, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(run, folder)
    path = folder / lineage.NAME
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "text"}) + "\n" for r in recs))
    assert [r["text"] for r in records(str(folder))] == [r["text"] for r in recs]


def test_lineage_writer_keeps_nothing_in_memory(tmp_path):
    writer = lineage.LineageWriter(str(tmp_path))
    ind = SimpleNamespace(id=0, key="k" * 32, parents=(1, 2), op="crossover", birth=3, size=12,
                          valid=True, metric=0.5, text="(add (mul w0 x.color) (mul w1 x.shape) w2)")
    for i in range(200):  # warm up
        ind.id = i
        writer.record(ind)
    writer.flush()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(200, 10_200):
        ind.id = i
        writer.record(ind)
        if i % 2000 == 0:
            writer.flush()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    writer.close()
    assert grown < 200_000, grown  # 10,000 records of ~190 bytes would be ~2 MB
    assert sum(1 for _ in lineage.read(str(tmp_path))) == 10_200
