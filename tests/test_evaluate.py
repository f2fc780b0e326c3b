"""The one evaluation contract: FitSettings is the cache key, Evaluation records, one path that
fits and scores for the search, the sweep, the rerun gate and the report."""

from __future__ import annotations

import json
import math
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_rules import app, fitting
from evo_rules.backends import SerialBackend
from evo_rules.cache import FitnessCache, settings_digest
from evo_rules.evaluate import (INVALID_METRIC, OPTIONAL_TASK_PARTS, Evaluation, StoredFits,
                                evaluate_rule, fit_and_score, rescore, task_has)
from evo_rules.evaluator import Evaluator
from evo_rules.fit_settings import FitSettings, FitSettingsError
from evo_rules.fitness.arrays import ArrayTask
from evo_rules.gate import rerun_gate
from evo_rules.kernels import KERNEL_KIND
from evo_rules.report import build_report, stored_fits
from evo_rules.rule import parse

# non-finite on the training rows at every start: log of a product that changes sign
INVALID = "(add (mul w x.b) (log (mul w x.a)))"
GOOD = "(add (mul w x.a) (mul w x.b x.b) w)"
CURVED = "(add (exp (mul w x.a)) (mul w x.b x.b))"  # not linear in its first weight: iterations


def array_task() -> ArrayTask:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 3))
    return ArrayTask(X, X[:, 0] - 0.5 * X[:, 1] ** 2, ("a", "b", "c"), "squared")


# ---------------------------------------------------------------------- FitSettings

constants = st.fixed_dictionaries({
    "max_iter": st.integers(1, 200),
    "starts": st.lists(st.floats(-3, 3), min_size=1, max_size=5).map(tuple),
    "tol": st.floats(0, 1e-3),
    "l2": st.floats(0, 1.0),
    "version": st.integers(0, 50),
    "kernel": st.sampled_from(["libm", "libmvec", "libmvec-avx512"]),
})


@settings(max_examples=80, deadline=None)
@given(constants)
def test_equal_settings_have_one_key_however_they_are_written(c):
    a = FitSettings(**c)
    assert a.key() == FitSettings(**c).key()
    assert FitSettings.coerce(a.as_dict()).key() == a.key()  # what a worker receives
    assert FitSettings.coerce(json.loads(json.dumps(dict(a)))) == a  # through JSON, as a mapping
    assert hash(FitSettings.coerce(a.as_dict())) == hash(a)


def test_numbers_are_normalised_before_the_key():
    """0, 0.0 and -0.0 start a fit alike: one key."""
    keys = {FitSettings(starts=s, tol=t).key() for s, t in (((0, 1), 0), ((0.0, 1.0), 0.0), ((-0.0, 1), -0.0))}
    assert len(keys) == 1


@settings(max_examples=80, deadline=None)
@given(constants, constants, st.sampled_from(sorted(["max_iter", "starts", "tol", "l2", "version", "kernel"])))
def test_any_changed_constant_changes_the_key(c, other, name):
    a = FitSettings(**c)
    b = FitSettings(**dict(c, **{name: other[name]}))
    assert (a.key() == b.key()) == (getattr(a, name) == getattr(b, name))
    assert (a == b) == (a.key() == b.key())


def test_the_key_is_the_one_caches_were_written_under(tmp_path):
    """Existing caches stay valid (for an unchanged kernel): the default settings digest to what
    the cache always used, the kernel variant named by kernels.KERNEL_KIND."""
    for n in (8, 20):
        old = settings_digest(dict({"max_iter": n}, kernel=KERNEL_KIND, fitter=fitting.FITTER))
        assert FitSettings(max_iter=n).key() == old
        assert FitSettings.coerce({"max_iter": n}).key() == old
        cache = FitnessCache(tmp_path / f"c{n}.sqlite", "task", FitSettings(max_iter=n))
        assert cache.settings == old
        cache.close()
    assert KERNEL_KIND in ("libm", "libmvec", "libmvec-avx512")  # the names caches were keyed by
    assert app.from_dict({"fit": {"max_iter": 8}}).fit_settings == FitSettings(max_iter=8)


def test_bad_fit_settings_are_named():
    with pytest.raises(FitSettingsError, match="unknown key.*'maxiter'"):
        FitSettings.coerce({"maxiter": 3})
    with pytest.raises(FitSettingsError, match="max_iter must be an integer >= 1"):
        FitSettings(max_iter=0)
    with pytest.raises(FitSettingsError, match="l2 must be a finite number"):
        FitSettings(l2=math.nan)
    with pytest.raises(FitSettingsError, match="unknown fitter constant.*'momentum'"):
        FitSettings.coerce({"fitter": {"momentum": 0.9}})


def test_a_fit_this_process_cannot_make_is_refused_not_marked_invalid():
    task = array_task()
    for change in ({"starts": (0.0,)}, {"version": fitting.FITTER["version"] + 1}, {"kernel": "other"}):
        with pytest.raises(FitSettingsError, match="cannot make"):
            fit_and_score(GOOD, task, FitSettings(**change))


def test_tol_and_l2_reach_the_fitter():
    task = array_task()
    rule, b = parse(CURVED), task.batch("train")
    plain = fit_and_score(CURVED, task, FitSettings())
    for tol, l2 in ((0.5, 1e-8), (1e-10, 10.0)):
        got = fit_and_score(CURVED, task, FitSettings(tol=tol, l2=l2))
        want = fitting.fit(rule, b.X, b.y, loss=task.loss, tol=tol, l2=l2)
        assert got.weights == tuple(want.weights) and got.iterations == want.iterations
    assert got.weights != plain.weights  # a strong ridge moves the weights


# ---------------------------------------------------------------------- Evaluation

floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
records = st.builds(
    Evaluation,
    key=st.text("0123456789abcdef", min_size=1, max_size=32), text=st.text(max_size=40),
    size=st.integers(1, 500), valid=st.booleans(), weights=st.lists(floats, max_size=6).map(tuple),
    fit_loss=st.none() | floats, iterations=st.integers(0, 100), metric=floats,
    metrics=st.dictionaries(st.text(min_size=1, max_size=8), floats, max_size=4),
    seconds=st.floats(0, 1e4), error=st.none() | st.text(max_size=30))


@settings(max_examples=150, deadline=None)
@given(records)
def test_an_evaluation_round_trips_through_json(ev):
    back = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back == ev
    assert back.to_dict() == ev.to_dict()
    assert ("error" in ev.to_dict()) == (ev.error is not None)


def test_an_evaluation_is_read_only_and_a_bad_record_is_named():
    ev = fit_and_score(GOOD, array_task())
    with pytest.raises(TypeError):
        ev.metrics["r2"] = 1.0
    d = ev.to_dict()
    del d["weights"]
    with pytest.raises(ValueError, match="no weights"):
        Evaluation.from_dict(d)
    assert evaluate_rule(GOOD, array_task()) | {"seconds": 0} == ev.to_dict() | {"seconds": 0}


def test_stored_weights_rescored_equal_a_fresh_fit():
    task = array_task()
    fitted = fit_and_score(GOOD, task)
    assert fitted.valid
    for part in ("valid", "test"):
        assert rescore(GOOD, fitted, task, part).timeless() == fit_and_score(GOOD, task, None, part).timeless()
    with pytest.raises(ValueError, match="does not belong"):
        rescore("(mul w x.c)", fitted, task, "test")


# ---------------------------------------------------------------------- one path everywhere

def _factory():
    return array_task()


def test_an_invalid_rule_gets_the_same_evaluation_on_every_path(tmp_path):
    task = array_task()
    fs = FitSettings(max_iter=10)
    direct = fit_and_score(INVALID, task, fs)  # the gate's and the report's call
    assert not direct.valid and direct.metric == INVALID_METRIC and dict(direct.metrics) == {}
    want = direct.timeless()
    # the search's and the sweep's path: a backend through the cache (a miss, then a hit)
    cache = FitnessCache(tmp_path / "c.sqlite", "arrays", fs)
    ev = Evaluator(cache, SerialBackend(_factory, "arrays-invalid", fs), fs)
    rule = parse(INVALID)
    for n in range(2):
        (got,), hits = ev.evaluations([rule])
        assert got.timeless() == want and hits == n
    # the report: the cache's invalid record is no stored fit; it is fitted again, the same way
    fits = StoredFits(task, fs, cache.get_many)
    assert fits.evaluation(INVALID, "valid").timeless() == want
    assert fits.evaluation(INVALID, "test").timeless() == want
    assert fits.reused == 0 and fits.refitted == 2
    cache.close()
    # the rerun gate: invalid in every rerun, so it never passes
    gate = rerun_gate([INVALID], task, fs, task.linear_rule_text(), seeds=2)
    assert gate[0]["metrics"] == [INVALID_METRIC, INVALID_METRIC] and not gate[0]["passed"]


class Raising:
    """A task whose scoring raises: a bug shows as an invalid rule with its error, on every path."""

    def __init__(self):
        self._task = array_task()
        self.loss, self.metric_name = self._task.loss, self._task.metric_name

    def batch(self, part):
        return self._task.batch(part)

    def score(self, part, scorer):
        raise RuntimeError("scoring failed")


def test_a_rule_whose_scoring_raises_is_invalid_with_its_error_on_every_path(tmp_path):
    task = Raising()
    direct = fit_and_score(GOOD, task)
    assert not direct.valid and direct.error == "RuntimeError: scoring failed"
    assert direct.weights == (0.0, 0.0, 0.0) and direct.metric == INVALID_METRIC
    cache = FitnessCache(tmp_path / "c.sqlite", "raising", FitSettings())
    (got,), _ = Evaluator(cache, SerialBackend(Raising, "raising", FitSettings()), FitSettings()).evaluations([parse(GOOD)])
    assert got.timeless() == direct.timeless()
    assert StoredFits(task, None, cache.get_many).evaluation(GOOD, "test").timeless() == direct.timeless()
    cache.close()
    assert rerun_gate([GOOD], task, {}, None, seeds=1)[0]["metrics"] == [INVALID_METRIC]


def test_the_evaluator_refuses_a_cache_keyed_by_other_settings_and_skips_foreign_rows(tmp_path):
    fs = FitSettings(max_iter=5)
    cache = FitnessCache(tmp_path / "c.sqlite", "arrays", fs)
    backend = SerialBackend(_factory, "arrays-foreign", fs)
    with pytest.raises(ValueError, match="keyed by fit settings"):
        Evaluator(cache, backend, FitSettings(max_iter=6))
    rule = parse(GOOD)
    cache.put_many([{"key": rule.key, "metric": 0.5}])  # not an evaluation: a miss
    (got,), hits = Evaluator(cache, backend, fs).evaluations([rule])
    assert hits == 0 and got.timeless() == fit_and_score(GOOD, _factory(), fs).timeless()
    assert Evaluation.from_dict(cache.get_many([rule.key])[rule.key]) == got  # overwritten
    cache.close()


def test_task_parts_are_named_in_one_place():
    task = array_task()
    assert task_has(task, "linear_rule_text") and task_has(task, "score_units")
    assert not task_has(task, "oracle")
    with pytest.raises(ValueError, match="not an optional task part"):
        task_has(task, "linear_rule")
    assert "resample" in OPTIONAL_TASK_PARTS


# ---------------------------------------------------------------------- the report

def tiny(out):
    cfg = app.from_dict({
        "run": {"seed": 3, "generations": 2, "population": 16},
        "task": {"name": "and-match", "settings": {"n_train": 200, "n_valid": 100, "n_test": 100}},
        "search": {"hall_of_fame": 5},
        "grammar": {"max_size": 15},
        "fit": {"max_iter": 8},
        "evaluation": {"backend": "serial", "workers": 1},
        "rerun": {"seeds": 1},
    })
    search = app.make_search(cfg, str(out), progress=False)
    search.run()
    return search


def test_the_report_reads_stored_fits_and_equals_the_refitting_report(tmp_path):
    search = tiny(tmp_path / "run")
    try:
        fits = stored_fits(search)
        stored = build_report(search, fits)
        refit_fits = StoredFits(search.task, search.config.fit_settings)  # no store: fit everything
        refitted = build_report(search, refit_fits)
    finally:
        search.close()
    assert stored == refitted
    shown = {e["text"] for e in stored["hall_of_fame"] + stored["pareto_front"]}
    assert fits.reused >= len(shown) and refit_fits.reused == 0
    # only rules the search never evaluated are fitted again: baselines (test and validation
    # split each) and the pruned winner
    pruned = (stored["winner"] or {}).get("pruned")
    assert fits.refitted <= 2 * (1 + len(stored["baselines"].get("reference", []))) + (pruned is not None)
    json.dumps(stored)  # plain JSON data


def test_the_default_fit_settings_evaluate_as_the_mapping_forms():
    task = array_task()
    a = fit_and_score(CURVED, task, FitSettings())
    for form in ({"max_iter": 20}, {}, None, dict(FitSettings())):
        assert fit_and_score(CURVED, task, form).timeless() == a.timeless()
