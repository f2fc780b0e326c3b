"""Export and reuse: NumPy source/callable, LaTeX, SymPy; load(DIR) and `evo-rules predict`."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import evo_rules
from evo_rules.cli import main
from evo_rules.rule import Rule, parse

from strategies import FEATURES, terms

N = 64


def _data(seed: int, n: int = N) -> dict:
    rng = np.random.default_rng(seed)
    return {f: rng.uniform(0.1, 2.0, n) for f in FEATURES}


def _conditioned(rule: Rule, X: dict, w, nudge: float = 1e-13, rtol: float = 1e-7) -> np.ndarray:
    """Rows where the rule is finite and well-conditioned: a relative nudge of the inputs (the
    features, and the weights: an exp of a weight carries its own few-ulp error inside the rule)
    moves the engine's own value by less than rtol. Elsewhere (a log of a cancellation, exp of
    exp of a large value, a sine of a power tower) the few ulp by which two correct exp/log
    implementations differ are amplified beyond any fixed tolerance."""
    want = rule.evaluate(X, w)
    ok = np.isfinite(want)
    w = np.asarray(w, dtype=float)
    for d in (nudge, -nudge, nudge / 4, -nudge / 4):  # two sizes: rounding noise can look stable at one
        # features and weights apart: nudged together, a quotient x.a / w would not move at all
        for v in (rule.evaluate({f: c * (1 + d) for f, c in X.items()}, w), rule.evaluate(X, w * (1 + d))):
            with np.errstate(all="ignore"):
                ok &= np.isfinite(v) & np.isclose(v, want, rtol=rtol, atol=rtol * 1e-3)
    return ok


def _no_cancellation(rule: Rule, X: dict, w, digits: float = 1e-8) -> np.ndarray:
    """Rows where no sum in the rule (an add, or eml's exp(u) - ln(v)) cancels to less than
    `digits` of its terms' size. Where one does (exp(log a) - log(exp a), 0 in exact arithmetic)
    its value is rounding noise, and the few ulp by which two exp/log implementations differ
    decide between log(0) = -inf and a finite log(1e-16): nudging the inputs does not show it
    where that rounding is the same for every nudge (CI drew sin(eml(a, eml(log a, exp a))))."""
    names = list(rule.params)
    bound = re.sub(r"\bw\d+\b", lambda m: repr(float(w[names.index(m.group(0))])), rule.text)
    term = parse(bound, check_constants=False).term
    n = len(next(iter(X.values())))
    ok = np.ones(n, dtype=bool)

    def value(t):
        return np.broadcast_to(np.asarray(Rule(t).evaluate(X, []), dtype=float), (n,))

    stack = [term]
    while stack:
        t = stack.pop()
        if t.is_leaf:
            continue
        stack.extend(t.args)
        if t.op == "add":
            parts = [value(a) for a in t.args]
        elif t.op == "eml":
            with np.errstate(all="ignore"):
                parts = [np.exp(value(t.args[0])), np.log(value(t.args[1]))]
        else:
            continue
        with np.errstate(all="ignore"):
            ok &= ~(np.abs(value(t)) < digits * sum(np.abs(p) for p in parts))
    return ok


@settings(max_examples=150, deadline=None)
@given(terms(max_leaves=10), st.integers(0, 2**32 - 1))
def test_callable_agrees_with_the_engine_where_finite(term, seed):
    rule = Rule(term)
    X = _data(seed)
    w = np.random.default_rng(seed + 1).uniform(-1.5, 1.5, len(rule.params))
    want = rule.evaluate(X, w)
    fitted = rule.to_callable(w)(X)  # weights filled in
    symbolic = rule.to_callable()(X, w)  # weights passed
    assert fitted.shape == symbolic.shape == (N,)
    # 1e-12 where an input nudge of 9 ulp moves the value by less than 1e-13 (condition number
    # below about 50): NumPy's exp/log and the kernel's vector math differ by up to 3 ulp
    sane = np.abs(want) < 1e12  # not a quotient of rounding noise (a / (log a - log a))
    ok = _conditioned(rule, X, w, nudge=2e-15, rtol=1e-13) & sane & _no_cancellation(rule, X, w)
    assert np.allclose(fitted[ok], want[ok], rtol=1e-12, atol=1e-12)
    assert np.array_equal(fitted, symbolic, equal_nan=True)
    # where the engine is finite and not near an overflow, the export is finite too
    assert np.all(np.isfinite(fitted[_conditioned(rule, X, w) & sane & _no_cancellation(rule, X, w)]))


@settings(max_examples=60, deadline=None)
@given(terms(max_leaves=8), st.integers(0, 2**32 - 1))
def test_sympy_and_latex_describe_the_same_function(term, seed):
    sympy = pytest.importorskip("sympy")
    rule = Rule(term)
    X = _data(seed, 16)
    w = np.random.default_rng(seed + 1).uniform(-1.5, 1.5, len(rule.params)).round(3)
    tex = rule.to_latex(w)
    assert tex and "$" not in tex
    expr = rule.to_sympy(w)
    # SymPy folds a constant log(0) to complex infinity, which lambdify cannot print
    assume(not expr.has(sympy.zoo, sympy.nan))
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    assert {s.name for s in symbols} <= set(rule.features)
    fn = sympy.lambdify(symbols, expr, "numpy")
    with np.errstate(all="ignore"):
        got = np.broadcast_to(np.asarray(fn(*[X[s.name] for s in symbols]), dtype=complex), (16,))
    want = rule.evaluate(X, w)
    ok = _conditioned(rule, X, w) & (np.abs(want) < 1e12)
    assert np.allclose(got[ok], want[ok], rtol=1e-6, atol=1e-9)  # real where the engine is finite


def test_latex_and_sympy_read_as_math():
    r = evo_rules.parse("(eml (add (mul w x.color) w) (+ 1 (exp (* w x.stale))))")
    assert r.to_latex() == (r"e^{w_{0} \cdot \mathit{color} + w_{1}} - "
                            r"\operatorname{softplus}\left(w_{2} \cdot \mathit{stale}\right)")
    assert r.to_latex([1.5, -0.25, 2e-7]) == (
        r"e^{1.5 \cdot \mathit{color} - 0.25} - \operatorname{softplus}\left(2 \cdot 10^{-7} "
        r"\cdot \mathit{stale}\right)")
    assert evo_rules.parse("(eml x.a_b 2)").to_latex() == r"e^{\mathit{a\_b}} - \ln\left(2\right)"
    sympy = pytest.importorskip("sympy")
    a, b = sympy.symbols("a b", real=True)
    assert sympy.simplify(evo_rules.parse("(eml x.a x.b)").to_sympy() - (sympy.exp(a) - sympy.log(b))) == 0


def test_to_sympy_without_sympy_says_how_to_get_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_sympy(name, *args, **kwargs):
        if name == "sympy":
            raise ImportError("no sympy")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sympy)
    with pytest.raises(ImportError, match=r"evo-rules\[sympy\]"):
        evo_rules.parse("(exp x.a)").to_sympy()


def test_numpy_source_runs_without_the_engine(tmp_path):
    """The source is a self-contained module: run in a fresh interpreter with only NumPy."""
    import subprocess
    import sys

    r = evo_rules.parse("(eml (add (mul w x.a) w) (+ 1 (exp (* w x.b))))")
    w = [0.7, -0.2, 1.3]
    (tmp_path / "exported.py").write_text(r.to_numpy(w))
    X = _data(3)
    code = ("import sys; sys.modules['evo_rules'] = None; import numpy as np, exported; "
            f"print(repr(exported.rule({{'a': np.array({X['a'].tolist()}), 'b': np.array({X['b'].tolist()})}}).tolist()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert np.allclose(eval(out.stdout), r.evaluate(X, w), rtol=1e-12, atol=0)


def test_rule_without_features_gives_one_value_per_row():
    X = {"a": np.arange(5.0)}
    assert np.array_equal(evo_rules.parse("(exp 1)").to_callable()(X), np.full(5, np.exp(1.0)))
    f = evo_rules.parse("w").to_callable([0.5])
    assert np.array_equal(f(X), np.full(5, 0.5))
    structured = np.zeros(7, dtype=[("a", "f8"), ("b", "f8")])
    assert np.array_equal(f(structured), np.full(7, 0.5))


# ------------------------------------------------------------------ a real run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny real search on the shipped regression example (serial, 16 x 2 generations)."""
    from evo_rules.app import run_search

    out = str(tmp_path_factory.mktemp("runs") / "reg")
    cfg = {"task": {"name": "regression", "settings": {"path": "example_regression.csv", "target": "y"}},
           "evaluation": {"backend": "serial"}, "search": {"seed_reference": False},
           "rerun": {"seeds": 1, "finalists": 3}}
    run_search(cfg, out, seed=3, population=16, generations=2)
    return out


def test_every_hall_of_fame_rule_exports_and_predicts_like_the_engine(run_dir):
    run = evo_rules.load(run_dir)
    assert len(run.hall_of_fame) >= 2
    X = {f: np.random.default_rng(7).normal(0.0, 1.5, 500) for f in ("a", "b", "c")}
    for fr in run.hall_of_fame:
        want = fr.rule.evaluate(X, fr.weights)
        ok = np.isfinite(want)
        assert ok.mean() > 0.5, fr.text
        for got in (fr.to_callable()(X), fr.predict(X)):
            assert np.array_equal(np.isfinite(got), ok)
            assert np.allclose(got[ok], want[ok], rtol=1e-12, atol=1e-12)
    best = run.best
    assert best.metrics["r2"] == run.hall_of_fame[0].metrics["r2"] or run.winner is not None


def test_predict_takes_dicts_structured_arrays_named_columns_and_dataframes(run_dir):
    fr = evo_rules.load(run_dir).hall_of_fame[0]
    rng = np.random.default_rng(1)
    cols = ["c", "extra", "b", "a"]
    arr = rng.normal(size=(40, 4))
    want = fr.predict({c: arr[:, j] for j, c in enumerate(cols)})
    assert want.shape == (40,)
    assert np.array_equal(fr.predict(arr, columns=cols), want)
    structured = np.zeros(40, dtype=[(c, "f8") for c in cols])
    for j, c in enumerate(cols):
        structured[c] = arr[:, j]
    assert np.array_equal(fr.predict(structured), want)
    pd = pytest.importorskip("pandas")
    assert np.array_equal(fr.predict(pd.DataFrame(arr, columns=cols)), want)
    with pytest.raises(ValueError, match="no column"):
        fr.predict({"z": arr[:, 0]})
    with pytest.raises(ValueError, match="columns="):
        fr.predict(arr)


def _write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(path)


def test_cli_predict_prints_and_writes_one_score_per_row(run_dir, tmp_path, capsys):
    run = evo_rules.load(run_dir)
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(12, 3)).round(6)
    data = _write_csv(tmp_path / "new.csv", ["id", "c", "b", "a"],
                      [[f"row{i}", *r] for i, r in enumerate(rows)])
    X = {"c": rows[:, 0], "b": rows[:, 1], "a": rows[:, 2]}
    assert main(["predict", run_dir, data, "--rule", "2"]) == 0
    printed = np.array([float(v) for v in capsys.readouterr().out.split()])
    assert np.array_equal(printed, run.hall_of_fame[1].predict(X))  # exact: repr round-trips
    out = tmp_path / "scores.txt"
    expected = run.winner or run.hall_of_fame[0]
    args = ["predict", run_dir, data, "--out", str(out)] + ([] if run.winner else ["--rule", "1"])
    assert main(args) == 0
    assert np.array_equal(np.loadtxt(out), expected.predict(X))


@pytest.mark.parametrize("content, words", [
    ("a,c\n1,2\n", "no column(s) b"),
    ("a,b,c\n1,2,x\n", "new.csv:2: column c: 'x' is not a number"),
    ("a,b,c\n1,2\n", "new.csv:2: 2 fields, the header has 3"),
    ("", "empty file"),
    (b"a,b,c\n1,2,3\n1,\xff,3\n", "new.csv:3: not UTF-8 text"),
])
def test_cli_predict_bad_csv_is_one_line(run_dir, tmp_path, capsys, content, words):
    path = tmp_path / "new.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "scores.txt"
    out.write_text("kept\n")
    assert main(["predict", run_dir, str(path), "--rule", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert out.read_text() == "kept\n"  # nothing already written is lost


def test_cli_predict_bad_folder_and_rule_number(run_dir, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", ["a", "b", "c"], [[1, 2, 3]])
    assert main(["predict", str(tmp_path), data]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["predict", run_dir, data, "--rule", "99"]) == 2
    assert "--rule 99" in capsys.readouterr().err


def test_load_reads_a_run_without_report_from_its_checkpoint(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    os.remove(copy / "report.json")
    from_ckpt = evo_rules.load(str(copy))
    from_report = evo_rules.load(run_dir)
    assert from_ckpt.winner is None
    assert [r.text for r in from_ckpt.hall_of_fame] == [r.text for r in from_report.hall_of_fame]
    assert [r.weights for r in from_ckpt.hall_of_fame] == [r.weights for r in from_report.hall_of_fame]


def test_load_gives_the_pruned_winner_the_report_shows(run_dir, tmp_path):
    import json
    import shutil

    from evo_rules.prune import prune
    from evo_rules.fitness.registry import get_task

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with open(copy / "report.json", encoding="utf-8") as fh:
        report = json.load(fh)
    win = report["winner"] or report["hall_of_fame"][0]
    task = get_task("regression", path="example_regression.csv", target="y")
    res = prune(win["text"], task, {"max_iter": 20}, tol=1e6)  # a loose tolerance: something goes
    assert res["dropped"] and res["size"] < win["size"]
    report["winner"] = dict(win, pruned={"text": res["text"], "weights": res["weights"], "size": res["size"]})
    (copy / "report.json").write_text(json.dumps(report))
    run = evo_rules.load(str(copy))
    assert run.pruned.text == res["text"]
    X = {f: np.random.default_rng(3).normal(0.0, 1.0, 50) for f in ("a", "b", "c")}
    expected = evo_rules.parse(res["text"]).evaluate(X, np.asarray(res["weights"]))
    assert np.allclose(run.pruned.predict(X), expected, equal_nan=True)
    # a report without one (written before pruning existed, or nothing could go): None
    report["winner"] = win
    (copy / "report.json").write_text(json.dumps(report))
    assert evo_rules.load(str(copy)).pruned is None
