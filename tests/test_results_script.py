"""benchmarks/results.py: the README results tables are built from run reports and checked
against README.md's cells (a tiny real run keeps the table code from rotting)."""

import importlib.util
import math
import os
import string

import pytest
from hypothesis import given, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("results", os.path.join(ROOT, "benchmarks", "results.py"))
results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results)


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("results") / "and-match")
    extra = ("--population", "16", "--generations", "2", "--backend", "serial")
    report, seconds = results.run_config(os.path.join(ROOT, "runs", "and-match.toml"), folder, extra)
    return folder, report, seconds


def test_suite_row_from_a_tiny_run(tiny_run):
    folder, report, seconds = tiny_run
    row = results.suite_row("and-match", report, seconds)
    assert tuple(row) == results.SUITE_HEADER
    assert row["task (config)"] == "and-match (`runs/and-match.toml`, the default: 16 x 2)"
    m = report["task"]["metric"]
    searched = report["winner"]["test_metrics"][m]
    linear = report["baselines"]["linear"]["test_metrics"][m]
    oracle = report["baselines"]["oracle"]["test_metrics"][m]
    refs = [r["test_metrics"][m] for r in report["baselines"]["reference"]]
    assert row["searched"] == f"{searched:.4f}" and row["linear"] == f"{linear:.4f}"
    assert row["oracle"] == f"{oracle:.4f}" and row["best reference"] == f"{max(refs):.4f}"
    assert math.isclose(float(row["gap closed"].rstrip("%")),
                        100 * (searched - linear) / (oracle - linear), abs_tol=0.051)
    assert row["size"] == str(report["winner"]["size"])
    pruned = report["winner"].get("pruned")
    assert row["pruned: size / test"] == ("same" if not pruned else
                                         f"{pruned['size']} / {pruned['test_metrics'][m]:.4f}")
    m_, s_ = row["time"].split(":")
    assert abs(60 * int(m_) + int(s_) - seconds) <= 1
    # the printed table reads back as the same cells (what --check relies on)
    table = results.markdown(results.SUITE_HEADER, [row])
    assert results.readme_rows(table, results.SUITE_HEADER) == {"and-match": row}
    # a rerun reading the folder gives the same row (--reuse), wall time included
    assert results.suite_row("and-match", *results.read_run(folder)) == row
    assert results.run_commit(folder).startswith("commit ") and "unknown" not in results.run_commit(folder)


def test_readme_tables_parse_and_cover_every_config():
    text = results.results_section(_readme())
    suite = results.readme_rows(text, results.SUITE_HEADER)
    babi = results.readme_rows(text, results.BABI_HEADER)
    assert set(results.suite_names()) <= set(suite)
    assert {"babi-2", "babi-3"} <= set(babi)
    rules, named = results.readme_rules(text)
    assert len(rules) == len(suite) and {"babi-2", "babi-3"} <= set(named)
    assert results.REGRESSION_RE.search(" ".join(text.split())), "regression sentence not found"
    s3 = results.readme_rows(results.stage3_section(_readme()), results.STAGE3_HEADER)
    assert "recent-only (last K chunks)" in s3


def test_check_reports_metric_cells_and_ignores_time():
    text = results.results_section(_readme())
    old = results.readme_rows(text, results.SUITE_HEADER)["and-match"]
    assert results.compare(dict(old), old, "and-match") == []
    slower = dict(old, time="59:59")
    assert results.compare(slower, old, "and-match") == []
    worse = dict(old, searched="0.0001")
    (diff,) = results.compare(worse, old, "and-match")
    assert diff.startswith("and-match, searched: README ") and "rerun 0.0001" in diff
    assert results.compare(worse, None, "x") == ["x: not in README"]


cell = st.text(alphabet=string.ascii_letters + string.digits + " .%/*-+()`", max_size=20).map(str.strip)


@given(st.lists(st.tuples(st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=10),
                          cell, cell), min_size=1, max_size=5, unique_by=lambda r: r[0]))
def test_markdown_round_trip(rows):
    header = ("task (config)", "a", "b")
    dicts = [dict(zip(header, r)) for r in rows]
    back = results.readme_rows("text before\n\n" + results.markdown(header, dicts) + "\n\nafter", header)
    assert back == {r[0]: d for r, d in zip(rows, dicts)}


def _row(k, sel, loss, diff, se, gap):
    return {"K": k, "selection": sel, "loss": loss, "diff_vs_recent": diff, "se": se,
            "gap_closed": gap, "recall_loss": loss - 0.3, "target_overlap": 0.2}


def test_stage3_rows_order_bold_and_blank_gaps():
    rows = []
    for k in (2, 3):
        rows += [_row(k, "recent-only", 3.2, 0.0, 0.0, 0.0), _row(k, "full memory", 3.1, -0.1, 0.01, 1.0),
                 _row(k, "random", 3.3, 0.1, 0.01, -1.0), _row(k, "finalist 2", 3.15, -0.05, 0.01, 0.5),
                 _row(k, "searched rule (winner)", 3.18, -0.03 if k == 2 else -0.015, 0.01, 0.2)]
    report = {"baselines": {"linear": {"text": "(add (mul w x.a) (mul w x.b))"}},
              "final": {"rows": rows, "rules": [{"name": "searched rule (winner)"}, {"name": "finalist 2"}]}}
    out = results.stage3_rows(report)
    assert [r["selection"] for r in out] == ["full memory", "searched rule (winner, passed the gate)",
                                             "recent-only (last K chunks)", "random"]
    full, win, recent, rand = out
    assert full["gap"] == "100%" and recent["gap"] == "0%" and rand["gap"] == ""
    assert recent["vs recent-only (K = 2)"] == "0"
    assert win["vs recent-only (K = 2)"] == "**-0.0300 +- 0.0100**"  # a rule 3 SE better: bold
    assert win["vs recent-only (K = 3)"] == "-0.0150 +- 0.0100"  # 1.5 SE: plain
    assert rand["vs recent-only (K = 2)"] == "+0.1000 +- 0.0100"


def test_only_rejects_an_unknown_row(capsys):
    assert results.main(["--only", "and-match,nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1


def test_commit_line_names_head():
    line = results.commit_line()
    assert line.startswith("commit ") and len(line.split()[1].replace("+dirty", "")) >= 7


def _babi_report(winner: bool) -> dict:
    entry = {"text": "(mul w x.recency)", "size": 3, "test_metrics": {"support_recall": 0.9, "exact": 0.81}}
    return {"task": {"name": "babi-2", "metric": "support_recall"}, "winner": entry if winner else None,
            "hall_of_fame": [entry], "config": {"run": {"population": 8, "generations": 2}},
            "baselines": {"linear": {"test_metrics": {"support_recall": 0.5, "exact": 0.25}}},
            "rerun_gate": [{"text": entry["text"], "passed": winner, "metrics": [0.8, 0.9],
                            "linear": [0.7, 0.6]}]}


def test_babi_rows_with_and_without_a_winner():
    row = results.features_row("babi-2-generic", _babi_report(True))
    assert list(row.values()) == ["babi-2 (`runs/babi-2-generic.toml`)", "generic", "0.500 / 0.250",
                                  "0.900 / 0.810", "passed (0.850 vs 0.650 on validation)", "3"]
    row = results.features_row("babi-2-generic", _babi_report(False))
    assert row["searched recall / exact"] == "0.900 / 0.810 (best of the hall of fame)"
    assert row["rerun gate"] == "failed"
    main = results.babi_row("babi-2", _babi_report(False), 61.0, seed_system="0.350 / 0.000")
    assert main["searched recall / exact"] == results.NO_WINNER and main["time"] == "1:01"
    assert results.babi_row("babi-2", _babi_report(True), 0.0)["searched recall / exact"] == "**0.900 / 0.810**"
