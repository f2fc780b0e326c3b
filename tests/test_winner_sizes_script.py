"""benchmarks/winner_sizes.py: the table and the medians come from the run folders' reports."""

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("winner_sizes", os.path.join(ROOT, "benchmarks", "winner_sizes.py"))
winner_sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(winner_sizes)


def _report(folder, size, test, metric):
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({
        "task": {"metric": metric},
        "winner": {"size": size, "text": "(mul w0 x.a)", "test_metrics": {metric: test}}}))


def test_reads_finished_runs_and_prints_medians_and_paired_difference(tmp_path, capsys):
    for i, row in enumerate(winner_sizes.ROWS):
        metric = "r2" if row == "regression" else "answer_score"
        for seed in (1, 2):
            _report(tmp_path / f"old-s{seed}-{row}", 20 + i + seed, 0.70 + 0.01 * seed, metric)
            _report(tmp_path / f"new-s{seed}-{row}", 10 + i, 0.69 + 0.01 * seed + 0.002 * i, metric)
    assert winner_sizes.main(["--seeds", "1,2", "--out-dir", str(tmp_path), "--reuse"]) == 0
    out = capsys.readouterr().out
    assert "| and-match | 21, 22 | 10, 10 | 0.7150 | 0.7050 |" in out
    # per seed: old sizes 21+i / 22+i (i = 0..6) -> medians 24 and 25; new 10+i -> 13
    assert "seed 1: median winner size old 24, new 13 (46% smaller)" in out
    assert "seed 2: median winner size old 25, new 13 (48% smaller)" in out
    # the six synthetic rows: new - old = -0.01 + 0.002 i for i = 0..5, mean -0.005
    assert "mean -0.0050" in out


def test_a_missing_run_is_run_not_invented(tmp_path, monkeypatch):
    ran = []

    def fake_run(tree, row, seed, folder):
        ran.append((row, seed))
        _report(folder, 5, 0.5, "r2" if row == "regression" else "answer_score")

    monkeypatch.setattr(winner_sizes, "run_row", fake_run)
    monkeypatch.setattr(winner_sizes, "export_tree", lambda rev, dest: dest)
    _report(tmp_path / "new-s1-and-match", 7, 0.6, "answer_score")
    assert winner_sizes.main(["--seeds", "1", "--out-dir", str(tmp_path), "--reuse"]) == 0
    assert ("and-match", 1) in ran  # the old tree's run of that row
    assert len(ran) == 2 * len(winner_sizes.ROWS) - 1  # every run but the finished one
