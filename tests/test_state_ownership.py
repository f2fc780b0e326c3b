"""Who owns what: the run folder's paths (`RunFolder`), the population manager's state
(`state()` / `restore()`, one non-dominated sort per generation), the cache's schema
(`mark()` / `rollback()`), and the one registry of variation operators."""

import json
import os

import numpy as np
import pytest
from deap import tools
from hypothesis import given, settings
from hypothesis import strategies as st

import evo_rules.operators as ops
from evo_rules import app, checkpoint, population
from evo_rules.cache import FitnessCache, stored_results
from evo_rules.config import ConfigError, from_dict
from evo_rules.population import Individual, PopulationManager
from evo_rules.run_folder import PLOT_NAMES, RunFolder, default_folder


def tiny(generations=2, **search):
    return {
        "run": {"seed": 3, "generations": generations, "population": 12},
        "task": {"name": "and-match", "settings": {"n_train": 200, "n_valid": 100, "n_test": 100}},
        "search": {"hall_of_fame": 5, **search},
        "grammar": {"max_size": 15},
        "fit": {"max_iter": 8},
        "evaluation": {"backend": "serial"},
        "rerun": {"seeds": 0},
    }


# ------------------------------------------------------------------ RunFolder


def test_every_file_a_run_writes_is_a_run_folder_path(tmp_path):
    from evo_rules.families import families, write_families
    from evo_rules.plots import plot_run

    out = tmp_path / "run"
    app.run_search(tiny(), out=str(out), progress=False)
    folder = RunFolder(out)
    written = set(os.listdir(out))
    assert {p.name for p in (folder.config, folder.checkpoint, folder.previous_checkpoint, folder.lineage,
                             folder.cache, folder.report, folder.lock)} <= written
    assert written <= RunFolder.names(), written - RunFolder.names()
    # the tools that write into a run folder: families, plots
    assert write_families(str(out), families(str(out))) == os.fspath(folder.families)
    paths = plot_run(str(out))
    assert paths == [os.fspath(p) for p in folder.plot_paths()]
    assert set(os.listdir(folder.plots)) == set(PLOT_NAMES)
    assert set(os.listdir(out)) <= RunFolder.names()


def test_overwrite_removes_exactly_the_run_files(tmp_path):
    out = tmp_path / "run"
    app.run_search(tiny(generations=0), out=str(out), progress=False)
    (out / "notes.txt").write_text("mine")
    app.run_search(tiny(generations=0), out=str(out), progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert RunFolder(out).holds_run()


def test_the_default_run_folder_is_the_first_free_one(tmp_path):
    runs = tmp_path / "runs"
    first = default_folder("and-match", 3, runs)
    assert first.path == runs / "and-match-seed3-1"
    assert default_folder("and-match", 3, runs, resume=True) == first  # nothing to resume: the same
    first.path.mkdir(parents=True)
    first.checkpoint.write_text("{}")
    assert default_folder("and-match", 3, runs).path.name == "and-match-seed3-2"
    assert default_folder("and-match", 3, runs, resume=True) == first


# ------------------------------------------------------------------ the population manager


def _variation(config):
    return app.variation(from_dict(config), ("color", "shape", "size"))


def _fake_result(rule) -> dict:
    """A deterministic stand-in for an evaluation: a metric from the key (some invalid)."""
    u = int(rule.key[:8], 16) / 2**32
    valid = u > 0.1
    return {"valid": valid, "metric": round(u, 2) if valid else -1e9, "weights": [0.5] * len(rule.params),
            "metrics": {"m": u} if valid else {}}


def _generation(m: PopulationManager, gen: int) -> list:
    if gen == 0:
        births, _ = m.initial_births([])
        inds = [m.make_individual(b, _fake_result(b.rule), 0) for b in births]
        m.set_population(m.select(inds) if len(inds) > m.size else inds)
    else:
        births, _ = m.offspring_births(m.size)
        inds = [m.make_individual(b, _fake_result(b.rule), gen) for b in births]
        m.set_population(m.select(m.population + inds))
    return [(b.rule.key, b.parents, b.op) for b in births]


@pytest.mark.parametrize("selection", ["nsga2", "tournament"])
def test_population_state_round_trips_through_json_to_the_same_next_generation(selection):
    cfg = tiny(selection=selection)
    make = lambda: PopulationManager(_variation(cfg), 12, np.random.default_rng(7), selection=selection,  # noqa: E731
                                     hall_of_fame=5, elite=2)
    a = make()
    for gen in range(4):
        _generation(a, gen)
    saved = json.loads(json.dumps(a.state()))
    b = make()
    b.restore(saved)
    assert b.state() == saved
    for gen in range(4, 7):
        assert _generation(a, gen) == _generation(b, gen)
        assert a.state() == b.state()
        assert a.statistics() == b.statistics()


def test_nsga2_sorts_once_per_generation(monkeypatch):
    cfg = tiny()
    m = PopulationManager(_variation(cfg), 12, np.random.default_rng(7), hall_of_fame=5)
    _generation(m, 0)
    calls = []
    import evo_rules.population as population_mod

    real = population_mod.sort_nondominated
    monkeypatch.setattr(population_mod, "sort_nondominated",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    _generation(m, 1)
    assert len(calls) == 1


def _ind(i, metric, size) -> Individual:
    return Individual(i, f"k{i}", f"t{i}", (), "random", 0, size, True, metric, [], {})


@settings(max_examples=80)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.3, 0.5]), st.integers(1, 6)), min_size=2, max_size=40),
       st.integers(1, 40))
def test_one_sort_selects_as_deap_and_keeps_the_ranks_of_a_fresh_sort(fits, k):
    """The chosen set is DEAP's selNSGA2's, in its order; the ranks taken from the candidates'
    sort are those a sort of the chosen set alone gives (what a restored population computes)."""
    cands = [_ind(i, m, s) for i, (m, s) in enumerate(fits)]
    want = tools.selNSGA2([_ind(i, m, s) for i, (m, s) in enumerate(fits)], k)
    chosen, ranks = population._select_nsga2(cands, k)
    assert [c.id for c in chosen] == [w.id for w in want]
    assert ranks == population._front_ranks(chosen)


# ------------------------------------------------------------------ the cache


def test_cache_mark_and_rollback(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = FitnessCache(path, "task", {"max_iter": 5})
    cache.put_many([{"key": "a", "metric": 1.0}])
    mark = cache.mark()
    assert json.loads(json.dumps(mark)) == mark  # a checkpoint stores it
    cache.put_many([{"key": "b", "metric": 2.0}, {"key": "c", "metric": 3.0}])
    other = FitnessCache(path, "other-task", {"max_iter": 5})
    other.put_many([{"key": "a", "metric": 9.0}])
    other.close()
    cache.rollback(mark)
    assert set(cache.get_many(["a", "b", "c"])) == {"a"}
    other = FitnessCache(path, "other-task", {"max_iter": 5})
    assert other.get_many(["a"]) == {}  # stored after the mark too
    other.close()
    cache.rollback(cache.mark())  # nothing after the newest mark
    assert len(cache) == 1
    cache.close()
    assert [r["key"] for r in stored_results(path)] == ["a"]
    assert list(stored_results(tmp_path / "missing.sqlite")) == []


# ------------------------------------------------------------------ the operator registry


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so a test's operator is gone afterwards."""
    monkeypatch.setattr(ops, "VARIATION", dict(ops.VARIATION))
    return ops


def test_a_registered_operator_is_usable_from_config_with_no_other_edit(tmp_path, registry):
    calls = []

    def swap_first_feature(rule, grammar, rng):
        calls.append(rule.key)
        return ops.point_mutation(rule, grammar, rng)

    registry.register("toy", swap_first_feature)
    assert registry.N_PARENTS["toy"] == 1 and registry.OPERATORS["toy"] is swap_first_feature
    off = {k: 0.0 for k in ("crossover", "subtree", "point", "hoist", "shrink", "insert")}
    cfg = tiny(**off, operator_weights={"toy": 0.5})
    app.run_search(cfg, out=str(tmp_path / "run"), progress=False)
    births = [json.loads(line) for line in (tmp_path / "run" / "lineage.jsonl").read_text().splitlines()]
    assert calls and {b["op"] for b in births if b["gen"] > 0} == {"toy"}
    assert from_dict(cfg).search.variation_weights()["toy"] == 0.5


def test_operator_weights_are_checked_against_the_registry(registry):
    with pytest.raises(ConfigError, match=r"\[search\].operator_weights: unknown variation operator 'toy'"):
        from_dict({"search": {"operator_weights": {"toy": 0.5}}})
    with pytest.raises(ConfigError, match=r"\[search\].operator_weights.point: point has its own key"):
        from_dict({"search": {"operator_weights": {"point": 0.5}}})
    registry.register("toy", lambda rule, grammar, rng: rule)
    with pytest.raises(ConfigError, match=r"\[search\].operator_weights.toy: must be in \[0, 1\]"):
        from_dict({"search": {"operator_weights": {"toy": 2.0}}})
    with pytest.raises(ConfigError, match="operator probabilities .*operator_weights.toy.* are all 0"):
        from_dict({"search": {k: 0.0 for k in ("crossover", "subtree", "point", "hoist", "shrink", "insert")}})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("toy", lambda rule, grammar, rng: rule)
    with pytest.raises(ValueError, match="parents must be 1"):
        registry.register("trio", lambda a, b, c, grammar, rng: a, parents=3)


def test_checkpoint_names_are_the_run_folders():
    assert checkpoint.NAME == RunFolder(".").checkpoint.name
    assert checkpoint.PREVIOUS == RunFolder(".").previous_checkpoint.name


def test_a_plain_mapping_and_fit_settings_key_the_cache_alike(tmp_path):
    """The two ways callers give fit settings name one set of cached results (kernel variant
    included: an AVX-512 run never reads an AVX2 run's fitnesses)."""
    from evo_rules.fit_settings import FitSettings

    plain = FitnessCache(tmp_path / "c.sqlite", "task", {"max_iter": 9})
    typed = FitnessCache(tmp_path / "c.sqlite", "task", FitSettings(max_iter=9))
    assert plain.settings == typed.settings == FitSettings(max_iter=9).key()
    plain.close()
    typed.close()
