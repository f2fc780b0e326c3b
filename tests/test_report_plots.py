"""The printed report's summary, distinct gate finalists, the Muller plot's shares, the CLI niceties."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_lineage import cli, run  # noqa: F401 - the tiny run, shared as a fixture

from evo_rules.gate import distinct_finalists
from evo_rules.report import EML_NOTE, format_report, gap_closed, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINEAR = "(add (mul w0 x.color) (mul w1 x.shape))"
PLUS_ZERO = "(add (mul w0 x.color x.shape) (mul w1 x.color) (mul w2 x.shape))"  # canonical: interaction first
OTHER = "(mul (exp (mul w0 x.color)) x.shape)"


def cli_in(cwd, *args, **env):
    return subprocess.run([sys.executable, "-m", "evo_rules.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def task():
    from evo_rules.fitness.registry import get_task

    return get_task("and-match", n_train=100, n_valid=60, n_test=60)


# ---------------------------------------------------------------------- distinct finalists

def test_the_same_function_with_a_zero_weighted_term_is_not_a_second_finalist(task):
    rules = [(PLUS_ZERO, [0.0, 0.7, -1.3], 11), (OTHER, [0.5], 6), (LINEAR, [0.7, -1.3], 7)]
    # the bigger spelling ranks first; the smaller one stands for the pair, at the pair's place
    assert distinct_finalists(rules, task, 3) == [2, 1]
    assert distinct_finalists(rules, task, 1) == [2]
    assert distinct_finalists(rules, task, 0) == []


@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=2),
       st.floats(0.01, 3), st.booleans())
def test_distinct_finalists_merge_exactly_the_equal_functions(task, w, extra, zero_first):
    same = (PLUS_ZERO, [0.0, *w], 11)
    differs = (PLUS_ZERO, [extra, *w], 11)  # a real interaction term: another function
    lin = (LINEAR, w, 7)
    rules = [same, lin] if zero_first else [lin, same]
    assert distinct_finalists(rules, task, 3) == [rules.index(lin)]
    assert distinct_finalists([lin, differs], task, 3) == [0, 1]


def test_black_box_finalists_are_distinct_with_their_weights_as_the_constants_they_are():
    class BlackBox:  # no rows to compare outputs on: every weight is BLACKBOX_WEIGHT (1.0)
        loss = "blackbox"

    rules = [("(mul w0 x.u)", [], 3), ("x.u", [], 1), ("(mul 2 x.u)", [], 3), ("(add (mul w0 x.g x.w) x.u)", [], 6),
             ("(add (mul x.g x.w) x.u)", [], 5)]
    # (mul w0 x.u) is x.u: the pair stands at the first's place, as its smaller member
    assert distinct_finalists(rules, BlackBox(), 5) == [1, 2, 4]
    assert distinct_finalists(rules, BlackBox(), 2) == [1, 2]


def test_the_report_ranks_ties_to_the_smaller_rule_and_names_its_finalists(run):
    rep = json.load(open(os.path.join(run, "report.json")))
    keys = [(-e["metric"], e["size"], e["id"]) for e in rep["hall_of_fame"]]
    assert keys == sorted(keys)
    # finalists come from the hall of fame and the Pareto front (the winner's candidates)
    pool = rep["hall_of_fame"] + rep["pareto_front"]
    assert rep["finalists"] and set(rep["finalists"]) <= {e["id"] for e in pool}
    assert [g["text"] for g in rep["rerun_gate"]] == [
        next(e["text"] for e in pool if e["id"] == i) for i in rep["finalists"]]
    if rep["winner"]:
        assert rep["winner"]["id"] in rep["finalists"]


# ---------------------------------------------------------------------- summary

def test_gap_closed():
    assert gap_closed(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.6, 0.6, 1.0) == 0.0
    assert gap_closed(0.8, 0.6, None) is None and gap_closed(0.8, 0.6, 0.6) is None


def test_report_opens_with_the_summary(run):
    rep = json.load(open(os.path.join(run, "report.json")))
    sm = rep["summary"]
    metric = rep["task"]["metric"]
    rule = rep["winner"] or rep["best"]
    assert sm["rule"]["text"] == rule["text"] and sm["rule"]["infix"] == rule["infix"]
    assert sm["test_metric"] == rule["test_metrics"][metric]
    assert sm["linear"] == rep["baselines"]["linear"]["test_metrics"][metric]
    assert sm["gap_closed"] == pytest.approx((sm["test_metric"] - sm["linear"]) / (sm["oracle"] - sm["linear"]))
    assert sm["evaluations"] == sum(r["evals"] for r in rep["logbook"])
    assert 0 <= sm["cache_hit_rate"] <= 1
    for key in ("best", "hall_of_fame", "pareto_front", "baselines", "rerun_gate", "winner", "logbook"):
        assert key in rep  # the keys other code reads stay
    text = cli("report", run).stdout
    lines = text.splitlines()
    assert lines[1] == "summary:" and rule["infix"] in lines[2] and rule["text"] in lines[3]
    assert "gap closed" in lines[4] and "evaluations, cache hit rate" in lines[5]
    assert text.count("exp(u) - ln(v)") == (1 if "(eml " in text else 0)
    assert f"baseline: linear rule {rep['baselines']['linear']['text']}" in text
    assert rep["baselines"]["linear"]["name"] == "linear rule"


def test_the_gate_lines_show_the_margin(run):
    # a rerun won by less than the margin is marked as such, not as a win or a loss
    from evo_rules.report import format_report

    rep = json.load(open(os.path.join(run, "report.json")))
    assert rep["rerun_gate"] and all(g["margin"] == 0.0 for g in rep["rerun_gate"])
    assert "by more than" not in format_report(rep)
    g = rep["rerun_gate"][0]
    g["margin"] = max(m - lin for m, lin in zip(g["metrics"], g["linear"])) + 1.0
    text = format_report(rep)
    assert "beats the linear baseline by more than" in text
    won = sum(m > lin for m, lin in zip(g["metrics"], g["linear"]))
    assert text.count("(within the margin)") == won and won > 0


def test_a_task_that_names_its_baseline_is_reported_by_that_name(run):
    # the optimizer track's linear baseline is plain Muon: the report says so, not "linear rule"
    from evo_rules.report import format_report

    rep = json.load(open(os.path.join(run, "report.json")))
    rep["baselines"]["linear"]["name"] = "Muon"
    text = format_report(rep)
    assert "linear" not in text.split("baselines:")[0].split("summary:")[1]
    assert "  Muon baseline  " in text and "  linear baseline  " not in text
    if rep["rerun_gate"]:
        assert "beats the Muon baseline in every rerun" in text
        assert f"baseline: Muon {rep['baselines']['linear']['text']}" in text
    for e in rep["hall_of_fame"]:
        assert f"= {e['infix']}" in text


def test_an_old_report_without_summary_or_infix_still_prints():
    entry = {"id": 3, "key": "k" * 32, "text": "(eml (mul w0 x.a) w1)", "size": 5, "weights": [1.5, 2.0],
             "metric": 0.5, "test_metrics": {"acc": 0.6}}
    rep = {"run": "r", "task": {"name": "t", "metric": "acc"}, "generation": 2, "best": entry,
           "winner": entry, "hall_of_fame": [entry], "pareto_front": [entry],
           "baselines": {"linear": {"text": "(mul w0 x.a)", "test_metrics": {"acc": 0.4}, "weights": [1.0]}},
           "rerun_gate": [{"text": entry["text"], "metrics": [0.5], "linear": [0.3], "passed": True}],
           "logbook": [{"gen": 0, "evals": 3, "cache_hits": 1}], "seconds": [0.5]}
    text = format_report(rep)
    assert "exp(1.5 * a) - log(2)" in text and text.count(EML_NOTE) == 1
    assert "PASS  (eml (mul w0 x.a) w1)  0.5000 vs 0.3000" in text
    assert summary(rep)["cache_hit_rate"] == 0.25 and "oracle" not in text.split("baselines:")[0]


def test_gate_reruns_with_names_print_one_line_each_and_mark_the_losses():
    entry = {"id": 3, "key": "k" * 32, "text": "(mul w0 x.g)", "size": 3, "weights": [1.0],
             "metric": -3.8, "test_metrics": {"neg_loss": -3.7}}
    gate = {"text": entry["text"], "metrics": [-3.84, -3.34], "linear": [-3.90, -3.30], "passed": False,
            "reruns": ["seed 1000, 300 steps", "seed 1000, 1000 steps"]}
    rep = {"run": "r", "task": {"name": "t", "metric": "neg_loss"}, "generation": 1, "best": entry,
           "winner": None, "hall_of_fame": [entry], "pareto_front": [entry],
           "baselines": {"linear": {"text": "0", "test_metrics": {"neg_loss": -3.8}, "weights": []}},
           "rerun_gate": [gate], "logbook": [{"gen": 0, "evals": 1, "cache_hits": 0}], "seconds": [1.0]}
    lines = format_report(rep).splitlines()
    at = lines.index("  FAIL  (mul w0 x.g)")
    assert lines[at + 1].split() == ["seed", "1000,", "300", "steps:", "-3.8400", "vs", "-3.9000"]
    assert lines[at + 2].split()[-1] == "(lost)" and "-3.3400 vs -3.3000" in lines[at + 2]
    assert "winner: none (no finalist passed the rerun gate)" in lines


# ---------------------------------------------------------------------- plots

def test_muller_shares_sum_to_one_and_nest_families(run):
    from evo_rules.families import families, muller_shares

    fams = families(run)
    for shown in (fams[:3], fams[:1], fams, []):
        gens, order, shares = muller_shares(fams, shown)
        assert sorted(gens) == gens and len(shares) == len(order) + 1
        assert {f.id for f in order} == {f.id for f in shown}
        np.testing.assert_allclose(np.sum(shares, axis=0), 1.0, rtol=1e-12)
        assert all(0.0 <= v <= 1.0 for row in shares for v in row)
        for k, f in enumerate(order):  # a family is stacked after (inside) its parent family
            if f.parent_family in {g.id for g in order}:
                assert [g.id for g in order].index(f.parent_family) < k
    births = sum(f.size for f in fams)
    gens, order, shares = muller_shares(fams, fams)
    assert sum(s * sum(f.births_by_gen.get(g, 0) for f in fams) for row in shares[:-1]
               for s, g in zip(row, gens)) == pytest.approx(births)


def test_edges_are_routed_around_nodes():
    from evo_rules.plots import _crosses, route_edge

    between = (-0.8, -1.2, 0.8, -0.8)  # a node in the row between parent and child
    line = route_edge((0, 0), (0, -2), [between], lanes=[-1.8, 1.8])
    assert len(line) > 2 and line[0][1] == 0 and line[-1][1] == -2
    assert not any(_crosses(p, q, between) for p, q in zip(line, line[1:]))
    assert route_edge((0, 0), (0, -2), [(2.0, -1.2, 3.0, -0.8)], lanes=[-1.8, 1.8]) == [(0, 0), (0, -2)]
    assert _crosses((0, 0), (0, -2), between) and not _crosses((1, 0), (1, -2), between)


def test_plots_show_the_baselines_and_say_what_they_leave_out(run):
    from evo_rules.families import families
    from evo_rules.plots import _families_caption, _pick_families, baseline_marks

    rep = json.load(open(os.path.join(run, "report.json")))
    marks = {m["name"]: m for m in baseline_marks(rep, rep["task"]["metric"])}
    lin = rep["baselines"]["linear"]
    assert marks["linear rule"]["value"] == lin["valid_metrics"][rep["task"]["metric"]]
    assert marks["linear rule"]["split"] == "validation" and marks["linear rule"]["size"] == lin["size"]
    assert marks["oracle"]["size"] is None
    fams = families(run)
    chosen = _pick_families(fams, 3)
    assert _families_caption(fams, chosen, "acc").startswith(f"top 3 of {len(fams)} rule families by best acc")
    assert _families_caption(fams, fams, "acc") == f"all {len(fams)} rule families"


def _final_table():
    """A final table as the optimizer track writes it (figures of the README's seeds 2000-2001)."""
    muon = {"name": "Muon", "lead_se": [None, None]}
    return {"seeds": [2000, 2001], "split": "test", "horizons": [
        {"steps": 300, "rows": [muon, {"name": "NorMuon", "lead_se": [[0.0169, 0.0014], [0.0112, 0.0018]]},
                                {"name": "old run", "lead_se": None}]},
        {"steps": 1000, "rows": [muon, {"name": "NorMuon", "lead_se": [[0.0373, 0.0036], [-0.0030, 0.0030]]},
                                 {"name": "old run", "lead_se": [None, None]}]}]}


def test_lead_points_are_every_rule_seed_and_horizon_with_leads_but_muon():
    from evo_rules.plots import lead_points

    pts = lead_points(_final_table())
    assert [(p["rule"], p["steps"], p["seed"]) for p in pts] == [
        ("NorMuon", 300, 2000), ("NorMuon", 300, 2001), ("NorMuon", 1000, 2000), ("NorMuon", 1000, 2001)]
    assert pts[3]["lead"] == -0.0030 and pts[3]["se"] == 0.0030
    assert lead_points({}) == [] and lead_points({"seeds": [1], "horizons": [{"steps": 5, "rows": [
        {"name": "x", "lead_se": [None]}]}]}) == []


def test_plot_writes_the_leads_only_for_a_report_with_a_final_table_of_leads(run, tmp_path):
    import shutil

    from evo_rules.plots import plot_run

    folder = tmp_path / "run"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("plots"))
    names = sorted(os.path.basename(p) for p in plot_run(str(folder), str(tmp_path / "a")))
    assert "leads.png" not in names and len(names) == 5
    rep = json.loads((folder / "report.json").read_text())
    rep["final"] = _final_table()
    (folder / "report.json").write_text(json.dumps(rep))
    paths = plot_run(str(folder), str(tmp_path / "b"))
    assert os.path.basename(paths[-1]) == "leads.png" and len(paths) == 6
    with open(paths[-1], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- CLI

def test_a_shipped_config_runs_by_name_from_any_folder(tmp_path):
    from evo_rules.cli import CLIError, config_path

    assert os.path.samefile(config_path("babi-2"), config_path("babi-2.toml"))
    assert os.path.basename(config_path("babi-2")) == "babi-2.toml" and os.path.isfile(config_path("babi-2"))
    with pytest.raises(CLIError, match="no shipped config of that name.*babi-2"):
        config_path("babi-9")
    res = cli_in(tmp_path, "run", "and-match", "--generations", "0", "--population", "8", "--out", "r",
                 "--quiet")
    assert res.returncode == 0, res.stderr
    assert "and-match.toml" in res.stderr and (tmp_path / "r" / "report.json").exists()
    bad = cli_in(tmp_path, "run", "babi-9")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "babi-9" in bad.stderr


def test_resume_with_nothing_to_do_says_so_in_one_line(run, tmp_path):
    import shutil

    folder = tmp_path / "done"
    shutil.copytree(run, folder)
    before = (folder / "report.json").read_bytes()
    res = cli("resume", str(folder))
    assert res.returncode == 0 and res.stdout.count("\n") == 1 and "nothing to resume" in res.stdout
    assert (folder / "report.json").read_bytes() == before  # nothing rewritten
    interrupted = json.loads(before)
    interrupted["interrupted"] = True  # a report of an interrupted run: the resume has work to do
    (folder / "report.json").write_text(json.dumps(interrupted))
    again = cli("resume", str(folder), "--quiet")
    assert again.returncode == 0 and "nothing to resume" not in again.stdout and "summary:" in again.stdout


def test_a_mistyped_command_gets_did_you_mean():
    res = cli("reprot", "x")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "did you mean 'report'?" in res.stderr and "Traceback" not in res.stderr
    assert "did you mean" not in cli("zzzz").stderr


def test_first_run_note_while_numba_compiles(tmp_path):
    def start(out):
        return cli_in(tmp_path, "run", "and-match", "--generations", "0", "--population", "4", "--out", out,
                      "--quiet", NUMBA_CACHE_DIR=str(tmp_path / "numba"))

    first, second = start("a"), start("b")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "compiling kernels (first run only" in first.stderr
    assert "compiling kernels" not in second.stderr  # numba's on-disk cache is warm now
