"""The optimizer-rule track (issue 13) with a tiny GPT (2 layers, width 32) and a few steps:
Muon's orthogonalisation, the rule compiler against the engine's own evaluation, the base
optimizers reproduced by their rules, determinism per seed, the black-box engine path, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")  # the lm extra; CI installs it

from evo_rules.evaluate import BLACKBOX_WEIGHT, INVALID_METRIC, evaluate_rule  # noqa: E402
from evo_rules.fitness import registry  # noqa: E402
from evo_rules.fitness.base import SettingsError  # noqa: E402
from evo_rules.fitness.lm import model as gpt  # noqa: E402
from evo_rules.fitness.lm.optim import (FEATURES, MODES, REFERENCE_RULES, OptimSettings, Trainer,  # noqa: E402
                                        compile_rule, in_mode, muon_rule, newton_schulz)
from evo_rules.fitness.optimizer import OptimizerTask, check_task_settings  # noqa: E402
from evo_rules.rule import parse  # noqa: E402
from evo_rules.terms import Term, feature, num, weight  # noqa: E402

TINY = dict(n_layer=2, n_embd=32, n_head=2, context=64, batch=4, steps=3, long_steps=4, max_stories=30,
            eval_sequences=6, final_seeds=2, threads=1)
torch.set_num_threads(1)  # tiny tensors: a second thread only waits (and spins on a busy machine)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> OptimizerTask:
    return registry.get_task("tinystories-optimizer", cache_dir=str(tmp_path_factory.mktemp("runs")), **TINY)


# ---------------------------------------------------------------------- Muon


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (32, 96), (128, 512)])
def test_newton_schulz_is_near_orthogonal(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    X = newton_schulz(G)
    assert X.shape == G.shape
    s = torch.linalg.svdvals(X)
    assert float(s.min()) > 0.6 and float(s.max()) < 1.25, s
    # it orthogonalises G itself: close to U V^T of G's SVD
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    cos = float((X * (U @ Vh)).sum() / (X.norm() * (U @ Vh).norm()))
    assert cos > 0.95


# ---------------------------------------------------------------------- the rule compiler

_OPS1 = ("exp", "log", "sin", "cos", "sqrt", "abs", "sign")
_OPS2 = ("eml", "div", "pow")


def _leaves():
    return st.one_of(st.builds(feature, st.sampled_from(FEATURES)), st.builds(weight, st.sampled_from(["", "1"])),
                     st.builds(num, st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, 1e-12])))


def _terms():
    def extend(children):
        return st.one_of(
            st.builds(lambda op, a: Term(op, tuple(a)), st.sampled_from(["add", "mul"]),
                      st.lists(children, min_size=2, max_size=3)),
            st.builds(lambda op, a: Term(op, (a,)), st.sampled_from(_OPS1), children),
            st.builds(lambda op, a, b: Term(op, (a, b)), st.sampled_from(_OPS2), children, children),
        )

    return st.recursive(_leaves(), extend, max_leaves=10)


# the engine's special instruction patterns, and log/eml of non-positive values
PATTERNS = ["(log (add 1 (exp x.g)))", "(exp (add x.m (mul -1 (log (add 1 (exp x.m))))))",
            "(exp (mul -1 (log x.v)))", "(mul -1 x.u)", "(eml x.g x.m)", "(eml 0 (add 1 (exp x.w)))",
            "(log x.g)", "(mul x.m (exp (mul -0.5 (log (add x.v 1e-16)))))", "(div x.g (add x.m x.m))",
            *[t for _, t in REFERENCE_RULES.values()]]


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = {f: rng.normal(0.0, 2.0, n) for f in FEATURES}
    for f in FEATURES:  # exact zeros and huge values: log(0), 1/0, exp overflow
        X[f][:: 7] = 0.0
        X[f][3:: 11] = 800.0
    X["v"] = np.abs(X["v"])
    return X


def _same(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    # the engine's exp/log may be libmvec's (within 3 ulp): near the overflow edge one side may
    # reach inf where the other stays finite and huge
    fin_o, fin_r = np.isfinite(ours), np.isfinite(ref)
    differ = fin_o != fin_r
    assert np.all(np.abs(np.where(fin_o, ours, ref)[differ]) > 1e250)
    both = fin_o & fin_r
    np.testing.assert_allclose(ours[both], ref[both], rtol=1e-6, atol=1e-9)
    neither = ~fin_o & ~fin_r
    assert np.array_equal(np.isnan(ours[neither]), np.isnan(ref[neither]))


def _check_rule(text: str, seed: int) -> None:
    rule = parse(text, check_constants=False)
    if not rule.features:  # the engine evaluates a feature-less rule on no rows
        return
    w = np.random.default_rng(seed).normal(0.0, 1.0, len(rule.params))
    X = _inputs(64, seed)
    ref = rule.evaluate({f: X[f] for f in rule.features}, w)
    f = compile_rule(text, list(w))
    ours = f(*(torch.from_numpy(X[k]) for k in FEATURES)).numpy()
    _same(ours, ref)


@pytest.mark.parametrize("text", PATTERNS)
def test_compiled_patterns_equal_engine(text):
    _check_rule(text, 0)


@settings(max_examples=150, derandomize=True)
@given(_terms(), st.integers(0, 1000))
def test_compiled_rule_equals_engine_evaluation(term, seed):
    text = str(term)
    try:
        parse(text)
    except ValueError:  # constants that cannot be folded: not a rule
        return
    _check_rule(text, seed)


def test_compiled_rule_is_straight_line_source():
    f = compile_rule("(add (mul x.g x.m) (exp (mul x.g x.m)))")
    assert "(mul" not in f.source and f.source.count("g * m") == 1  # shared subterm computed once
    with pytest.raises(ValueError, match="x.q"):
        compile_rule("(mul x.q x.g)")
    out = compile_rule("1")(*(torch.zeros(3, 2, dtype=torch.float64) for _ in FEATURES))
    assert out.shape == (3, 2) and float(out.sum()) == 6.0


@pytest.mark.parametrize("name", list(REFERENCE_RULES))
@pytest.mark.parametrize("to_mode", MODES)
def test_reference_rule_in_another_mode_takes_the_same_step(name, to_mode):
    mode, text = REFERENCE_RULES[name]
    other = in_mode(text, mode, to_mode)
    if other is None:
        assert to_mode == "gate" and mode != "gate"
        return
    X = _inputs(64, 1)
    X["v"] = X["v"] + 1e-3
    args = [torch.from_numpy(X[k]) for k in FEATURES]

    def step(m, f):
        r = f(*args)
        u = args[FEATURES.index("u")]
        return {"replace": r, "gate": u * r, "correct": u + r}[m].numpy()

    np.testing.assert_allclose(step(to_mode, compile_rule(other)), step(mode, compile_rule(text)),
                               rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------- the optimizers


def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return gpt.GPT(gpt.GPTConfig(vocab_size=64, context=16, n_layer=2, n_head=2, n_embd=32))


def _train(base: str, rule=None, mode="replace", steps=4, settings=None) -> dict:
    model = _tiny_model()
    opt = Trainer(model, steps, settings or OptimSettings(base=base), rule=rule, mode=mode)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x = torch.randint(0, 64, (3, 16), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, 64), x[:, 1:].reshape(-1))
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("base", ["muon", "adamw"])
@pytest.mark.parametrize("mode", MODES)
def test_base_rule_reproduces_the_base_exactly(base, mode):
    want = _train(base)
    got = _train(base, rule=muon_rule(mode), mode=mode)
    assert all(torch.equal(want[n], got[n]) for n in want)
    other = _train(base, rule=REFERENCE_RULES["correction"][1], mode="correct")
    assert not all(torch.equal(want[n], other[n]) for n in want)


def test_muon_updates_block_matrices_and_adamw_the_rest():
    start = {n: p.detach().clone() for n, p in _tiny_model().named_parameters()}
    muon = _train("muon", steps=1, settings=OptimSettings(base="muon", warmdown=0.0))
    for n, p in muon.items():
        d = p - start[n]
        if n.startswith("blocks.") and p.dim() == 2:  # one Muon step: lr * scaled orthogonal matrix
            s = torch.linalg.svdvals(d / 0.02 / max(1.0, p.size(0) / p.size(1)) ** 0.5)
            assert float(s.max()) < 1.25 and float(s.median()) > 0.5  # a rank-poor gradient keeps tiny ones
        else:  # one AdamW step moves every element by about lr (|m_hat / sqrt(v_hat)| = 1)
            moved = d.abs()[d != 0]
            assert torch.allclose(moved, torch.full_like(moved, 3e-3), rtol=1e-2)


def test_n_is_muons_step_normalised_per_row_and_adamws_step_elsewhere():
    """x.n: after one step (the EMA bias-corrected: each row's own mean square) every row of a
    block matrix's step has the same norm, the whole step has Muon's Frobenius norm; the
    embeddings and norms take AdamW's step, as with x.u. Later steps average the rows' squares."""
    start = {n: p.detach().clone() for n, p in _tiny_model().named_parameters()}
    flat = OptimSettings(base="muon", warmdown=0.0)
    muon = _train("muon", steps=1, settings=flat)
    nor = _train("muon", rule="x.n", mode="replace", steps=1, settings=flat)
    for name, p in nor.items():
        d, dm = p - start[name], muon[name] - start[name]
        if name.startswith("blocks.") and p.dim() == 2:
            rows = d.norm(dim=1)
            assert torch.allclose(rows, rows.mean().expand_as(rows), rtol=1e-4)
            assert float(d.norm()) == pytest.approx(float(dm.norm()), rel=1e-5)
            assert not torch.allclose(d, dm)
        else:
            assert torch.equal(p, muon[name])
    later = _train("muon", rule="x.n", mode="replace", steps=3, settings=flat)
    assert not all(torch.equal(later[n], _train("muon", steps=3, settings=flat)[n]) for n in later)
    assert all(torch.isfinite(t).all() for t in later.values())


def test_adamw_matches_torch_adamw():
    s = OptimSettings(base="adamw", adam_lr=1e-2, weight_decay=0.1, warmdown=0.0)
    ours = _train("adamw", settings=s)
    model = _tiny_model()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-2, betas=s.betas, eps=s.eps)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        x = torch.randint(0, 64, (3, 16), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, 64), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(ours[n], p.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- the task


def test_same_seed_same_losses_other_seed_other_losses(task):
    from evo_rules.fitness.optimizer import train_run

    a = train_run(task.data, task.settings, seed=3, steps=3)
    b = train_run(task.data, task.settings, seed=3, steps=3)
    c = train_run(task.data, task.settings, seed=4, steps=3)
    assert (a["valid"], a["test"], a["train"]) == (b["valid"], b["test"], b["train"])
    assert a["valid"] != c["valid"] and a["train"] != c["train"]
    assert all(math.isfinite(a[k]) for k in ("valid", "test", "train"))


def test_engine_path_scores_reference_rules_and_marks_nan_rules_invalid(task):
    refs = task.reference_rules()
    assert set(refs) == set(REFERENCE_RULES)  # correct mode expresses all four
    for text in [*refs.values(), task.linear_rule_text()]:
        r = evaluate_rule(text, task, {"max_iter": 20}, "valid")
        assert r["valid"] and math.isfinite(r["metric"]) and r["metric"] < 0
        assert r["metrics"]["loss"] == -r["metric"]
    # the rule reproducing Muon scores as Muon
    muon = task.run(base="muon")
    assert evaluate_rule(task.linear_rule_text(), task, {}, "test")["metric"] == -muon["test"]
    # log of a gradient that is negative or 0: NaN steps, an invalid rule, no exception
    bad = evaluate_rule("(log x.g)", task, {}, "valid")
    assert not bad["valid"] and bad["metric"] == INVALID_METRIC
    # weights of a black-box rule are constants
    r = evaluate_rule("(mul w x.m)", task, {}, "valid")
    assert r["weights"] == [BLACKBOX_WEIGHT] and r["valid"]
    assert r["metric"] == evaluate_rule("x.m", task, {}, "valid")["metric"]


def test_runs_are_cached_on_disk(task, monkeypatch):
    from evo_rules.fitness import optimizer

    first = task.run(rule="(log x.g)", mode="correct")
    assert math.isnan(first["valid"])
    muon = task.run(base="muon")

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(optimizer, "train_run", no_training)
    again = task.run(rule="(log x.g)", mode="correct")
    assert math.isnan(again["valid"]) and again["failed"] == first["failed"]
    assert task.run(base="muon") == muon


def test_a_resampled_task_shares_the_runs_of_its_seed_and_steps(task, monkeypatch):
    """The gate's tasks (resampled to a seed and a horizon) and the benchmarks (the base task with
    explicit seed and steps) read the same cached run; a run cached under the earlier key (which
    held the task's own seed and steps) is still read."""
    from evo_rules.fitness import optimizer

    rule = "(mul 0.25 x.m)"
    gate = task.resample(1003, 4, fitness="short")
    assert gate.run_fingerprint == task.run_fingerprint and gate.fingerprint != task.fingerprint
    first = task.run(rule=rule, mode="correct", seed=1003, steps=4)
    path, text, weights, seed, steps = gate._run_path(rule, None, "correct", "muon", None, None)
    legacy = gate._run_file(gate._legacy_runs, text, weights, "correct", "muon", seed, steps)
    assert path.exists() and legacy != path

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(optimizer, "train_run", no_training)
    assert gate.run(rule=rule, mode="correct") == first
    path.rename(legacy)
    assert gate.run(rule=rule, mode="correct") == first and gate.cached_run(rule=rule, mode="correct") == first


def test_resample_linear_rule_and_modes(task):
    other = task.resample(1001)
    assert other.settings["seed"] == 1001 and other.fingerprint != task.fingerprint
    assert task.resample(task.settings["seed"]).fingerprint == task.fingerprint
    assert other.run(base="muon")["valid"] != task.run(base="muon")["valid"]
    for mode in MODES:
        t = registry.get_task("tinystories-optimizer", mode=mode, cache_dir=str(task.cache_dir), **TINY)
        ours, muon = t.run(rule=t.linear_rule_text(), mode=mode), t.run(base="muon")
        assert [ours[k] for k in ("valid", "test", "train")] == [muon[k] for k in ("valid", "test", "train")]
        assert evaluate_rule(t.linear_rule_text(), t, {}, "valid")["metric"] == -t.run(base="muon")["valid"]
        assert ("gating" in t.reference_rules()) and (len(t.reference_rules()) == (1 if mode == "gate" else 4))


def test_gate_long_makes_the_gate_train_at_both_horizons(task):
    from evo_rules.gate import rerun_gate

    long = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), gate_long=True, **TINY)
    assert long.fingerprint == task.fingerprint  # the search's runs and cache are the same
    assert [how for _, how in task.rerun_tasks(1000)] == ["seed 1000, 3 steps"]
    rule = "(mul 0.5 x.m)"
    got = rerun_gate([rule], long, {"max_iter": 5}, long.linear_rule_text(), seeds=2)[0]
    assert got["reruns"] == ["seed 1000, 3 steps", "seed 1000, 4 steps", "seed 1001, 3 steps",
                             "seed 1001, 4 steps"]
    want = [-task.run(rule=rule, mode="correct", seed=seed, steps=steps)["valid"]
            for seed in (1000, 1001) for steps in (3, 4)]
    muon = [-task.run(base="muon", seed=seed, steps=steps)["valid"] for seed in (1000, 1001) for steps in (3, 4)]
    assert got["metrics"] == pytest.approx(want) and got["linear"] == pytest.approx(muon)
    assert got["passed"] == all(a > b for a, b in zip(want, muon))


def test_fitness_both_scores_the_smaller_lead_over_muon_and_races_the_long_run(task):
    both = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both", **TINY)
    assert both.metric_name == "lead_vs_muon" and both.fingerprint != task.fingerprint  # its own fitness cache
    assert both.run_fingerprint == task.run_fingerprint  # ... and the same training runs
    muon = task.linear_rule_text()
    raced = {}
    for rule in [muon, "(mul 0.5 x.m)", "(mul -0.5 x.u)", "x.u", "(mul 3 x.u)", "(mul -1 x.g)"]:
        r = evaluate_rule(rule, both, {}, "valid")
        short = task.run(rule=muon, mode="correct")["valid"] - task.run(rule=rule, mode="correct")["valid"]
        long_run = task.cached_run(rule=rule, mode="correct", steps=4)
        if short > 0:  # leads at `steps`: trained at long_steps too, the metric is the smaller lead
            lead_long = task.run(rule=muon, mode="correct", steps=4)["valid"] - long_run["valid"]
            assert r["metric"] == pytest.approx(min(short, lead_long))
            assert r["metrics"]["lead_long"] == pytest.approx(lead_long)
        else:  # no lead at `steps`: no long run, the metric is the short lead (<= 0)
            assert long_run is None and r["metric"] == pytest.approx(short) and r["metric"] <= 0
        raced[rule] = short > 0
        t = evaluate_rule(rule, both, {}, "test")  # the test part races on the valid stories too
        assert (task.cached_run(rule=rule, mode="correct", steps=4) is not None) == (short > 0)
        assert math.isfinite(t["metric"])
    assert raced[muon] is False and True in raced.values() and False in list(raced.values())[1:]
    # the gate compares losses, one horizon at a time, at both horizons
    assert [(t.metric_name, how) for t, how in both.rerun_tasks(1000)] == [
        ("neg_loss", "seed 1000, 3 steps"), ("neg_loss", "seed 1000, 4 steps")]


def test_fitness_both_marks_a_rule_invalid_whose_long_run_fails(task, monkeypatch):
    # a rule that leads at `steps` and diverges by `long_steps` is invalid, not scored by its short lead
    both = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both", **TINY)
    muon = task.linear_rule_text()
    rule = next(r for r in ("(mul 0.5 x.m)", "(mul -0.5 x.u)", "x.u", "(mul 3 x.u)", "(mul -1 x.g)")
                if task.run(rule=muon, mode="correct")["valid"] > task.run(rule=r, mode="correct")["valid"])
    run = both.run

    def diverging(**kw):
        out = run(**kw)
        if kw.get("rule") == rule and kw.get("steps") == 4:
            out = {**out, "valid": math.nan, "test": math.nan}
        return out

    monkeypatch.setattr(both, "run", diverging)
    r = evaluate_rule(rule, both, {}, "valid")
    assert not r["valid"] and r["metric"] == INVALID_METRIC


def test_prefetch_trains_what_the_gate_then_looks_up(task, monkeypatch):
    from evo_rules.fitness import optimizer
    from evo_rules.gate import rerun_gate

    both = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both",
                             final_workers=1, **TINY)
    rules = ["(mul 0.25 x.m x.t)", "(mul w x.g)"]
    both.prefetch([(t, parse(x).text, [BLACKBOX_WEIGHT] * len(parse(x).params))
                   for t, _ in both.rerun_tasks(1002) for x in [*rules, both.linear_rule_text()]])

    def no_training(*a, **k):
        raise AssertionError("trained after the prefetch")

    monkeypatch.setattr(optimizer, "train_run", no_training)
    got = rerun_gate(rules, both, {}, both.linear_rule_text(), seeds=1, first_seed=1002)
    assert [g["reruns"] for g in got] == [["seed 1002, 3 steps", "seed 1002, 4 steps"]] * 2
    assert all(math.isfinite(m) for g in got for m in g["metrics"] + g["linear"])


def test_final_evaluation_table(task):
    res = task.final_evaluation([{"name": "searched", "text": "(mul 0.5 x.m)", "weights": []},
                                 {"name": "linear rule", "text": "0", "weights": []}],  # is Muon: no row
                                progress=False)
    assert res["seeds"] == [2000, 2001]
    assert [h["steps"] for h in res["horizons"]] == [3, 4]
    for h in res["horizons"]:
        names = [r["name"] for r in h["rows"]]
        assert names[:2] == ["AdamW", "Muon"] and names[-1] == "searched" and len(names) == 7
        muon = h["rows"][1]
        assert muon["wins_vs_muon"] == 0
        for r in h["rows"]:
            assert len(r["losses"]) == 2 and r["mean"] == pytest.approx(sum(r["losses"]) / 2)
            assert r["wins_vs_muon"] == sum(a < b for a, b in zip(r["losses"], muon["losses"]))
    assert "AdamW" in res["text"] and "4 steps" in res["text"]
    muon_lines = [x for x in res["text"].splitlines() if " Muon " in x]
    assert len(muon_lines) == 2 and all(x.endswith(" -") for x in muon_lines)  # no wins against itself


def test_final_table_is_the_same_from_one_process_or_several(tmp_path):
    """The final table's runs go to `final_workers` processes; each run is seeded and
    single-threaded, so the table does not depend on how many there are."""
    rules = [{"name": "searched", "text": "(mul 0.5 x.m)", "weights": []}]
    tables = []
    for workers in (1, 2):
        t = registry.get_task("tinystories-optimizer", cache_dir=str(tmp_path / f"w{workers}"),
                              final_workers=workers, **{**TINY, "long_steps": 3})
        tables.append([(r["name"], r["losses"]) for h in t.final_evaluation(rules, progress=False)["horizons"]
                       for r in h["rows"]])
        assert len(list((tmp_path / f"w{workers}" / "optimizer-runs").glob("*.json"))) == 7 * 2  # all cached
    assert tables[0] == tables[1]


# ---------------------------------------------------------------------- settings and registry


@pytest.mark.parametrize("bad, key", [({"steps": 0}, "steps"), ({"mode": "sideways"}, "mode"),
                                      ({"stepz": 3}, "stepz"), ({"lr": -1.0}, "lr"),
                                      ({"n_embd": 32, "n_head": 3}, "n_head"), ({"batch": 2.5}, "batch"),
                                      ({"threads": 0}, "threads")])
def test_bad_settings_name_the_key(bad, key):
    with pytest.raises(SettingsError) as exc:
        registry.check_task_settings("tinystories-optimizer", bad)
    assert exc.value.key == key and str(exc.value).startswith(key)
    with pytest.raises(SettingsError):
        check_task_settings(bad)


def test_registered_with_its_features():
    assert "tinystories-optimizer" in registry.task_names()
    assert registry.features_before_build("tinystories-optimizer", {}) == FEATURES


def _baselines_script(name: str = "optimizer_baselines"):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                        f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_baselines_script_trains_a_users_rule_beside_the_baselines(task, capsys):
    """--rule: the rule's row in the table (same seeds, weights 1.0, the task's mode); a text that
    is no rule, or reads a feature the track lacks, stops the script with one line and exit 2
    before anything is trained."""
    mod = _baselines_script()
    rules = mod.user_rules(["(mul w x.t x.u)"])
    assert rules == [{"name": "rule (mul w0 x.t x.u)", "text": "(mul w0 x.t x.u)", "weights": [1.0]}]
    res = task.final_evaluation(rules, progress=False)
    # a long rule's row shows its whole text (cut at 44 characters, rules that differ late read alike)
    long = mod.user_rules(["(mul -0.5 x.u (add 1 (mul -1 (exp (mul x.u x.g)))))"])
    text = task.final_evaluation(long, progress=False)["text"]
    assert long[0]["name"] in text and len(long[0]["name"]) > 44
    for h in res["horizons"]:
        names = [r["name"] for r in h["rows"]]
        assert names[-1] == "rule (mul w0 x.t x.u)" and "Muon" in names
        row = h["rows"][-1]
        direct = task.run(rule="(mul x.t x.u)", mode=task.mode, seed=res["seeds"][0], steps=h["steps"])
        assert row["losses"][0] == pytest.approx(direct["test"])  # the rule as written, weight 1.0
    for bad, says in (("(mul x.u", "never closed"), ("(mul x.z x.u)", "no feature x.z")):
        assert mod.main(["--rule", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and bad in err[0]


def test_probe_on_tuning_seeds_trains_muon_and_the_rules_on_the_chosen_seeds_and_stories(task, capsys):
    """The probe form (--muon-only --first-seed 3000 --split valid): Muon and the user's rules
    only, on seeds of the caller's choice, losses on the stories asked for; bad values stop the
    script with one line and exit 2."""
    mod = _baselines_script()
    rules = mod.user_rules(["(mul -0.5 x.w)"])
    res = task.final_evaluation(rules, progress=False, first_seed=3000, split="valid", baselines=False)
    assert res["seeds"] == [3000 + i for i in range(task.settings["final_seeds"])]
    assert "loss on the valid stories" in res["text"]
    for h in res["horizons"]:
        assert [r["name"] for r in h["rows"]] == ["Muon", "rule (mul -0.5 x.w)"]
        muon, rule = h["rows"]
        direct = task.run(rule="(mul -0.5 x.w)", mode=task.mode, seed=3000, steps=h["steps"])
        assert rule["losses"][0] == pytest.approx(direct["valid"]) != pytest.approx(direct["test"])
        plain = task.run(base="muon", seed=3000, steps=h["steps"])
        assert muon["losses"][0] == pytest.approx(plain["valid"])
        assert rule["wins_vs_muon"] == sum(a < b for a, b in zip(rule["losses"], muon["losses"]))
    with pytest.raises(ValueError, match="split: must be one of valid, test, got 'train'"):
        task.final_evaluation([], progress=False, split="train")
    for argv, says in ((["--first-seed", "-1"], "--first-seed: must be >= 0, got -1"),
                       (["--plot", "/nonexistent-folder/leads.png"], "--plot: no folder /nonexistent-folder")):
        assert mod.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"optimizer_baselines: {says}"]


def test_lr_sweep_picks_each_rate_by_the_mean_valid_loss_at_both_horizons(tmp_path, capsys):
    mod = _baselines_script()
    settings = {**TINY, "final_seeds": 1, "final_workers": 1}
    task = registry.get_task("tinystories-optimizer", cache_dir=str(tmp_path), **settings)
    tuned = mod.sweep(task, settings, str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + 4 + 3  # Muon's lr, Muon's AdamW part, the AdamW baseline
    for key, base, block in (("lr", "muon", lines[:3]), ("adam_lr", "muon", lines[3:7]),
                             ("adamw_lr", "adamw", lines[7:])):
        scores = {float(ln.split("= ")[1].split(":")[0]): float(ln.rsplit("(mean ", 1)[1].rstrip(")")) for ln in block}
        assert all(f" {base} {key} = " in ln and " at 3, " in ln and " at 4 " in ln for ln in block)
        assert tuned.settings[key] == pytest.approx(min(scores, key=scores.get), rel=1e-3)
    # each score is the mean over the two horizons of the valid-story loss, on the sweep's seed
    t = registry.get_task("tinystories-optimizer", cache_dir=str(tmp_path),
                          **{**settings, **{k: tuned.settings[k] for k in ("lr", "adam_lr", "adamw_lr")}})
    want = sum(t.run(base="adamw", seed=mod.SWEEP_FIRST_SEED, steps=h)["valid"] for h in (3, 4)) / 2
    best_adamw = min(float(ln.rsplit("(mean ", 1)[1].rstrip(")")) for ln in lines[7:])
    assert want == pytest.approx(best_adamw, abs=1e-4)


def test_a_lead_within_the_race_margin_is_a_tie_and_is_not_raced(task, monkeypatch):
    """race_margin: the long run is trained only for a rule leading at `steps` by more than the
    margin; a smaller lead scores 0 (min(lead, 0)). The margin is part of the fitness cache's
    key only when set, so caches of margin 0 stay valid."""
    plain = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both", **TINY)
    wide = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both",
                             race_margin=0.001, **TINY)
    assert wide.fingerprint != plain.fingerprint and wide.run_fingerprint == plain.run_fingerprint
    zero = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both",
                             race_margin=0.0, **TINY)
    assert zero.fingerprint == plain.fingerprint
    muon = wide.linear_rule_text()
    # valid / test losses by (rule, steps): Muon 3.0 at 3 steps, 2.5 at 4
    losses = {(muon, 3): 3.0, (muon, 4): 2.5, ("tie", 3): 2.9995, ("lead", 3): 2.998,
              ("lead", 4): 2.499, ("behind", 3): 3.1}
    trained = []

    def fake_run(rule=None, steps=None, **kw):
        key = (rule, steps or 3)
        trained.append(key)
        return {"valid": losses[key], "test": losses[key], "train": losses[key]}

    for t in (wide, plain):
        monkeypatch.setattr(t, "run", fake_run)
    got = {rule: wide.evaluate(rule, [], "valid") for rule in ("tie", "lead", "behind")}
    assert got["tie"]["lead_vs_muon"] == 0.0 and "lead_long" not in got["tie"]
    assert got["lead"]["lead_vs_muon"] == pytest.approx(min(0.002, 0.001))
    assert got["behind"]["lead_vs_muon"] == pytest.approx(-0.1)
    assert ("tie", 4) not in trained and ("lead", 4) in trained and ("behind", 4) not in trained
    # at margin 0 the tie is raced as before (and its long lead counts)
    losses[("tie", 4)] = 2.6
    assert plain.evaluate("tie", [], "valid")["lead_vs_muon"] == pytest.approx(-0.1)
    assert ("tie", 4) in trained


def test_race_margin_is_checked():
    with pytest.raises(SettingsError, match="race_margin"):
        check_task_settings({"race_margin": -0.1})


def test_fitness_seeds_takes_the_smallest_lead_over_seeds_and_races_each(task, monkeypatch):
    """fitness_seeds = 2: every seed at `steps`, then every seed at `long_steps`; the metric is the
    smallest of the four leads, and a run whose valid lead is within the margin ends the race.
    The setting joins the fitness cache's key only when it is not 1."""
    one = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both",
                            race_margin=0.001, **TINY)
    assert registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both",
                             race_margin=0.001, fitness_seeds=1, **TINY).fingerprint == one.fingerprint
    two = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir), fitness="both",
                            race_margin=0.001, fitness_seeds=2, **TINY)
    assert two.fingerprint != one.fingerprint and two.run_fingerprint == one.run_fingerprint
    muon = two.linear_rule_text()
    # valid / test losses by (rule, seed, steps); Muon 3.0 / 2.5 on both seeds (seeds 1 and 2)
    losses = {(muon, s, h): v for s in (1, 2) for h, v in ((3, 3.0), (4, 2.5))}
    losses.update({("good", 1, 3): 2.99, ("good", 2, 3): 2.995, ("good", 1, 4): 2.49, ("good", 2, 4): 2.497,
                   ("seed2 behind", 1, 3): 2.99, ("seed2 behind", 2, 3): 3.02,
                   ("long tie", 1, 3): 2.99, ("long tie", 2, 3): 2.99, ("long tie", 1, 4): 2.4995,
                   ("long lost", 1, 3): 2.99, ("long lost", 2, 3): 2.99, ("long lost", 1, 4): 2.49,
                   ("long lost", 2, 4): 2.6})
    trained = []

    def fake_run(rule=None, seed=None, steps=None, **kw):
        key = (rule, seed or 1, steps or 3)
        trained.append(key)
        return {"valid": losses[key], "test": losses[key], "train": losses[key]}

    monkeypatch.setattr(two, "run", fake_run)
    got = {r: two.evaluate(r, [], "valid") for r in ("good", "seed2 behind", "long tie", "long lost")}
    assert got["good"]["lead_vs_muon"] == pytest.approx(0.003)  # the smallest of 0.01, 0.005, 0.01, 0.003
    assert got["good"]["lead_short"] == pytest.approx(0.005) and got["good"]["lead_long"] == pytest.approx(0.003)
    assert got["seed2 behind"]["lead_vs_muon"] == pytest.approx(-0.02)
    assert not any(k[0] == "seed2 behind" and k[2] == 4 for k in trained)  # no long runs
    assert got["long tie"]["lead_vs_muon"] == 0.0 and ("long tie", 2, 4) not in trained
    assert got["long lost"]["lead_vs_muon"] == pytest.approx(-0.1)
    with pytest.raises(SettingsError, match="fitness_seeds"):
        check_task_settings({"fitness_seeds": 0})


def test_seed_combine_mean_ranks_by_the_mean_lead_and_races_on_it(task, monkeypatch):
    """seed_combine = "mean": at each horizon the seeds' mean lead; the metric is the smaller of
    the two means; the long runs are trained only when the mean valid lead at `steps` is above
    the race margin (one seed behind does not end the race); a key of its own."""
    kw = dict(cache_dir=str(task.cache_dir), fitness="both", race_margin=0.001, fitness_seeds=2, **TINY)
    two = registry.get_task("tinystories-optimizer", **kw)
    mean = registry.get_task("tinystories-optimizer", seed_combine="mean", **kw)
    assert registry.get_task("tinystories-optimizer", seed_combine="min", **kw).fingerprint == two.fingerprint
    assert mean.fingerprint != two.fingerprint and mean.run_fingerprint == two.run_fingerprint
    muon = mean.linear_rule_text()
    losses = {(muon, s, h): v for s in (1, 2) for h, v in ((3, 3.0), (4, 2.5))}
    losses.update({("one seed behind", 1, 3): 2.98, ("one seed behind", 2, 3): 3.01,
                   ("one seed behind", 1, 4): 2.51, ("one seed behind", 2, 4): 2.47,
                   ("behind", 1, 3): 3.01, ("behind", 2, 3): 2.995,
                   ("tie", 1, 3): 2.9995, ("tie", 2, 3): 2.9995,
                   ("long worse", 1, 3): 2.98, ("long worse", 2, 3): 2.98, ("long worse", 1, 4): 2.55,
                   ("long worse", 2, 4): 2.49})
    trained = []

    def fake_run(rule=None, seed=None, steps=None, **kw):
        key = (rule, seed or 1, steps or 3)
        trained.append(key)
        return {"valid": losses[key], "test": losses[key], "train": losses[key]}

    monkeypatch.setattr(mean, "run", fake_run)
    got = {r: mean.evaluate(r, [], "valid") for r in ("one seed behind", "behind", "tie", "long worse")}
    # short: mean of +0.02 and -0.01 = +0.005; long: mean of -0.01 and +0.03 = +0.01
    assert got["one seed behind"]["lead_short"] == pytest.approx(0.005)
    assert got["one seed behind"]["lead_long"] == pytest.approx(0.01)
    assert got["one seed behind"]["lead_vs_muon"] == pytest.approx(0.005)
    monkeypatch.setattr(two, "run", fake_run)
    assert two.evaluate("one seed behind", [], "valid")["lead_vs_muon"] == pytest.approx(-0.01)  # "min"
    assert got["behind"]["lead_vs_muon"] == pytest.approx(-0.0025)  # mean of -0.01 and +0.005
    assert not any(k[0] in ("behind", "tie") and k[2] == 4 for k in trained)  # raced out at steps
    assert got["tie"]["lead_vs_muon"] == 0.0
    assert got["long worse"]["lead_vs_muon"] == pytest.approx(-0.02)  # mean of -0.05 and +0.01
    with pytest.raises(SettingsError, match="seed_combine"):
        check_task_settings({"seed_combine": "median"})


def test_runs_are_measured_on_every_held_out_story_by_default(task):
    """eval_sequences 0 (the default): every story of each part, not the first 128 (a lead over
    Muon measured on 128 stories had a standard error as large as the leads)."""
    from evo_rules.fitness import tinystories

    every = registry.get_task("tinystories-optimizer", cache_dir=str(task.cache_dir),
                              **{**TINY, "eval_sequences": 0})
    splits = tinystories.load_splits(None)
    assert {p: len(every.data["held"][p]) for p in ("valid", "test")} == {
        p: len(tinystories.story_texts(splits[p])) for p in ("valid", "test")}
    assert len(task.data["held"]["valid"]) == 6 and every.run_fingerprint != task.run_fingerprint


@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50), st.integers(1, 60)), min_size=2, max_size=30))
@settings(max_examples=50, deadline=None)
def test_eval_noise_paired_lead_is_the_token_weighted_difference(rows):
    """The eval-noise script's lead is Muon's loss per token minus the rule's over the same
    stories; its standard error is 0 when every story's difference is the same per token."""
    mod = _baselines_script("optimizer_eval_noise")
    base = [(a, t) for a, _, t in rows]
    other = [(b, t) for _, b, t in rows]
    tokens = sum(t for *_, t in rows)
    lead, se = mod.paired_lead(base, other)
    assert lead == pytest.approx((sum(a for a, *_ in rows) - sum(b for _, b, _ in rows)) / tokens, abs=1e-9)
    assert se >= 0
    shifted = [(a + 0.25 * t, t) for a, t in base]
    assert mod.paired_lead(shifted, base) == pytest.approx((0.25, 0.0), abs=1e-9)


def test_runs_keep_story_losses_and_the_table_gives_each_lead_its_standard_error(task):
    """A run keeps each held-out story's summed loss (its mean loss is their total over the
    tokens); the final table gives each seed's lead over Muon with its paired standard error."""
    from evo_rules.fitness.optimizer import paired_lead

    run = task.run(rule="(mul 0.5 x.m)", mode="correct", seed=2000, steps=3)
    tokens = [s.shape[1] - 1 for s in task.data["held"]["test"]]
    assert len(run["test_story_sums"]) == len(tokens)
    assert run["test"] == pytest.approx(sum(run["test_story_sums"]) / sum(tokens), rel=1e-12)
    res = task.final_evaluation([{"name": "searched", "text": "(mul 0.5 x.m)", "weights": []}], progress=False)
    for h in res["horizons"]:
        muon = next(r for r in h["rows"] if r["name"] == "Muon")
        mine = next(r for r in h["rows"] if r["name"] == "searched")
        for k, (lead, se) in enumerate(mine["lead_se"]):
            assert lead == pytest.approx(muon["losses"][k] - mine["losses"][k], abs=1e-9)
            assert se > 0
        assert all(lead == 0 and se == 0 for lead, se in muon["lead_se"])
    assert "paired standard error" in res["text"]  # the leads line
    assert paired_lead([3.0, 5.0], [2.0, 4.0], [2, 2]) == pytest.approx((0.5, 0.0))
