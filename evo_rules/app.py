"""The composition root: the one module (with the CLI on top of it) that imports every layer.

It turns a config into a task handle and bound operators, runs or resumes a search, and
writes the report. `run_search` is the Python API for notebooks and scripts. `start` and
`resume` route SIGINT/SIGTERM to a clean stop while they run (see `stopping`) and hold the run
folder's lock (see `runlock`).
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Mapping

from . import checkpoint, scriptguard, stopping
from .config import RunConfig, from_dict, load
from .evaluate import is_blackbox, task_has
from .population import Variation
from .report import build_report, reference_texts, write_json, write_report
from .run_folder import RunFolder, default_folder, make_folder
from .runlock import RunLock
from .screening import screened_seeds
from .search import RunFolderError, Search, TaskHandle
from .validate import checked_task

DEFAULT_CONFIG = "and-match.toml"
RUNS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs")


def default_config_path() -> str:
    """The built-in default search: runs/and-match.toml in a checkout, else the packaged copy."""
    here = os.path.join(RUNS_DIR, DEFAULT_CONFIG)
    if os.path.exists(here):
        return here
    from importlib import resources

    return str(resources.files("evo_rules.runs").joinpath(DEFAULT_CONFIG))


def task_handle(config: RunConfig) -> TaskHandle:
    from evo_rules.fitness.registry import get_task

    settings = dict(config.task.settings)
    token = json.dumps({"name": config.task.name, "settings": settings}, sort_keys=True)
    return TaskHandle(partial(get_task, config.task.name, **settings), token)


def variation(config: RunConfig, features, weights: tuple = ((), ()), blackbox: bool = False) -> Variation:
    """The registered variation operators (`evo_rules.operators.VARIATION`) with a weight > 0
    in the config, bound to its grammar. `weights`: (feature weights, pair weights) of the
    grammar (`grammar_weights`); empty for uniform draws. `blackbox`: the task fits no weights,
    so every rule drawn or varied has its weights replaced by grammar constants
    (`weights_to_constants`): the search chooses a black-box rule's numbers."""
    import evo_rules.operators as ops

    g = config.grammar
    grammar = ops.Grammar(features=tuple(g.features or features), operators=tuple(g.operators),
                          max_size=g.max_size, max_depth=g.max_depth,
                          template_share=g.template_share, constants=tuple(g.constants),
                          feature_weights=tuple(weights[0]),
                          pair_weights=tuple(weights[1]))
    probs = {name: w for name, w in config.search.variation_weights().items() if w > 0}
    bind = _with_constants if blackbox else _with_grammar
    bound = {name: (op.parents, partial(bind, op.fn, grammar))
             for name, op in ops.VARIATION.items() if name in probs}
    return Variation(random_rule=partial(bind, ops.random_rule, grammar), operators=bound,
                     probs=probs)


def _with_grammar(op, grammar, *args):
    """op(*rules, grammar, rng) called as (*rules, rng): an operator bound to a grammar."""
    *rules, rng = args
    return op(*rules, grammar, rng)


def _with_constants(op, grammar, *args):
    """`_with_grammar`, then each rule returned has its weights replaced by grammar constants."""
    from evo_rules.operators.generate import weights_to_constants

    rng = args[-1]
    out = _with_grammar(op, grammar, *args)
    if isinstance(out, tuple):
        return tuple(weights_to_constants(r, grammar, rng) for r in out)
    return weights_to_constants(out, grammar, rng)


def grammar_weights(config: RunConfig, task) -> tuple:
    """The `[grammar] feature_weights` draw weights for the task (fitted on its train batch):
    (one per feature, pairs), both empty for "uniform"."""
    from .feature_weights import feature_weights

    return feature_weights(config.grammar.feature_weights, task,
                           tuple(config.grammar.features or task.features), config.fit.max_iter)


def seed_texts(config: RunConfig, task) -> list[str]:
    texts = list(config.search.seed_rules)
    if config.search.seed_reference:
        texts += reference_texts(task)
    if config.search.seed_linear and task_has(task, "linear_rule_text"):
        texts.append(task.linear_rule_text())
    if config.search.screen_products:  # the start: the config's first seed rule, else the linear rule
        s = config.search
        texts += screened_seeds(task, config.fit_settings, s.screen_products,
                                s.seed_rules[0] if s.seed_rules else None,
                                tuple(config.grammar.features or task.features))
    return texts


def make_search(config: RunConfig, out: str, progress: bool = True, resume: bool = False,
                **options) -> Search:
    """`options`: Search's stop, overwrite, rebuild_cache, lock."""
    handle = task_handle(config)
    task = checked_task(config, handle.build)  # settings, data, features: before any folder
    search = Search(config, handle, variation(config, task.features, grammar_weights(config, task),
                                                   blackbox=is_blackbox(task)), out,
                    seeds=seed_texts(config, task), progress=progress, resume=resume, **options)
    return search


def _run_and_report(search: Search, prepare=lambda: None) -> tuple[Search, dict]:
    try:
        prepare()
        write_json(os.fspath(search.folder.config), search.config.to_dict())
        search.run()
        report = build_report(search)
        write_report(search.out, report)
    finally:
        search.close()  # the cache, and the folder's lock
    return search, report


def start(config: RunConfig, out: str | None = None, progress: bool = True,
          overwrite: bool = False, rebuild_cache: bool = False,
          stop: stopping.Stop | None = None) -> tuple[Search, dict]:
    """A new run in `out` (default: `run_folder.default_folder`, runs/TASK-seedN-K)."""
    out = out or os.fspath(default_folder(config.task.name, config.run.seed))
    with stopping.handlers(stop or stopping.Stop()) as stop:
        search = make_search(config, out, progress, stop=stop, overwrite=overwrite,
                             rebuild_cache=rebuild_cache)
        return _run_and_report(search)


# what may change in DIR/config.json between a run and its resume: nothing a result depends on
RESUMABLE_EDITS = {"run": {"generations", "max_seconds", "max_evaluations", "checkpoint_every"},
                   "evaluation": None}  # None: any key of the section


def _config_edits(out: str, config: RunConfig) -> RunConfig:
    """The run's config with the edits of DIR/config.json that a resume may take; any other edit
    is refused, naming the keys (a resume continues a run under its own config)."""
    path = os.fspath(RunFolder(out).config)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return config
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc}); restore it or delete it "
                             "(resume then uses the checkpoint's config)") from None
    edited = from_dict(data, source=path)
    have, now = config.to_dict(), edited.to_dict()
    diffs = [(sec, k) for sec in have for k in sorted(set(have[sec]) | set(now[sec]))
             if have[sec].get(k) != now[sec].get(k)]
    refused = [f"[{sec}].{k} = {json.dumps(have[sec].get(k))} in the checkpoint, "
               f"{json.dumps(now[sec].get(k))} in config.json" for sec, k in diffs
               if sec not in RESUMABLE_EDITS or (RESUMABLE_EDITS[sec] is not None and k not in RESUMABLE_EDITS[sec])]
    if refused:
        raise RunFolderError(
            f"{path} was edited since the run started ({'; '.join(refused)}); a resume continues "
            "a run under its own config (only [run] generations, max_seconds, max_evaluations, "
            "checkpoint_every and [evaluation] may change): undo the edit, or start a new run")
    for sec in dict.fromkeys(sec for sec, _ in diffs):
        config = config.replace(sec, **{k: getattr(getattr(edited, sec), k) for s2, k in diffs if s2 == sec})
    return config


def resume(out: str, generations: int | None = None, progress: bool = True,
           max_seconds: float | None = None, max_evaluations: int | None = None,
           rebuild_cache: bool = False, config: RunConfig | None = None,
           stop: stopping.Stop | None = None) -> tuple[Search, dict]:
    """Continue the run in `out` from its last checkpoint, under its own config (with the edits of
    DIR/config.json that are allowed) or under `config` (which must match it), and the
    given [run] changes."""
    if not os.path.isdir(out):
        raise RunFolderError(f"{out}: no such run folder")
    folder = RunFolder(out)
    if not folder.holds_run():
        checkpoint.read_latest(out)  # raises: nothing to resume (and no lock file left behind)
    with stopping.handlers(stop or stopping.Stop()) as stop:
        lock = RunLock(out)  # before reading: a run still writing this folder is refused
        try:
            state = checkpoint.read_latest(out)
            if config is None:
                config = _config_edits(out, from_dict(state["config"], source=os.fspath(folder.checkpoint)))
            changes = {k: v for k, v in (("generations", generations), ("max_seconds", max_seconds),
                                         ("max_evaluations", max_evaluations)) if v is not None}
            if changes:
                config = config.replace("run", **changes)
            search = make_search(config, out, progress, resume=True, stop=stop, lock=lock,
                                 rebuild_cache=rebuild_cache)
        except BaseException:
            lock.release()
            raise
        return _run_and_report(search, prepare=lambda: search.load_state(state))


_resume = resume  # run_search's `resume` argument hides the function


def run_search(config: Mapping | str | RunConfig | None = None, out: str | None = None,
               progress: bool = True, overwrite: bool = False, resume: bool = False,
               rebuild_cache: bool = False, **run_overrides) -> dict:
    """Notebook and script API: run a search from a config dict (or TOML path); return the report.

    `run_overrides` replace keys of [run] (seed, generations, population, max_seconds, ...).
    `out` defaults to runs/TASK-seedN-K, the first K free (`resume=True`: the last K that holds
    a run). `out` already holding a run: `resume=True` continues it (the config must match the run's,
    generations and budgets aside), `overwrite=True` replaces it; neither: refused. From a
    script, the process backend needs the script's top level under `if __name__ == "__main__":`
    (checked before anything is written). Ctrl-C (a notebook's interrupt) stops the run cleanly
    at its last completed generation; the report then has `interrupted` true."""
    if config is None:
        cfg = load(default_config_path())
    elif isinstance(config, RunConfig):
        cfg = config
    elif isinstance(config, str):
        cfg = load(config)
    else:
        cfg = from_dict(config)
    if run_overrides:
        cfg = cfg.replace("run", **run_overrides)
    ev = cfg.evaluation
    scriptguard.check(ev.backend, ev.backend == "process" or (ev.backend == "dask" and not ev.scheduler))
    out = out or os.fspath(default_folder(cfg.task.name, cfg.run.seed, resume=resume))
    if resume and RunFolder(out).holds_run():
        return _resume(out, progress=progress, rebuild_cache=rebuild_cache, config=cfg)[1]
    return start(cfg, out, progress, overwrite=overwrite, rebuild_cache=rebuild_cache)[1]


def sweep(config: RunConfig, out: str, progress: bool = True, rebuild_cache: bool = False) -> dict:
    """The seed's stage-two procedure: enumerate every template rule up to a size, evaluate all
    through the cache, keep the best; each expansion round grows the best by one more term."""
    import time

    import evo_rules.operators as ops

    from .backends import make_backend
    from .cache import FitnessCache
    from .evaluate import StoredFits
    from .evaluator import Evaluator
    from .gate import rerun_gate
    from .report import write_json

    started = time.perf_counter()
    handle = task_handle(config)
    task = checked_task(config, handle.build)
    sw = config.sweep
    features = tuple(config.grammar.features or task.features)
    vocab = ops.term_vocabulary(features, pairs=sw.pairs)
    make_folder(out)
    folder = RunFolder(out)
    cache = FitnessCache(folder.cache_path(config.cache.path), task.fingerprint, config.fit_settings,
                         rebuild=rebuild_cache)
    ev = config.evaluation
    backend = make_backend(ev.backend, handle.factory, handle.token, config.fit_settings,
                           workers=ev.n_workers, chunk=ev.chunk, retries=ev.retries,
                           scheduler=ev.scheduler)
    evaluator = Evaluator(cache, backend, config.fit_settings)
    rounds = []
    scored: dict[str, dict] = {}
    try:
        stage = ops.enumerate_rules(features, sw.max_signal, sw.max_damping, vocabulary=vocab)
        for rnd in range(sw.expand_rounds + 1):
            if rnd > 0:
                best = sorted(scored.values(), key=lambda r: (-r["metric"], r["size"], r["key"]))
                survivors = [ops_rule for ops_rule in (_parse(r["text"]) for r in best[: sw.expand_top])]
                stage = ops.expand(survivors, vocab)
            t0 = time.perf_counter()
            results, hits = _evaluate_in_chunks(evaluator, list(stage.rules), progress,
                                                f"sweep round {rnd}")
            for r in results:
                scored[r["key"]] = r
            rounds.append({"round": rnd, "enumerated": stage.enumerated,
                           "duplicates": stage.duplicates, "unique": stage.unique,
                           "cache_hits": hits, "evaluated": len(results) - hits,
                           "invalid": sum(not r["valid"] for r in results),
                           "seconds": round(time.perf_counter() - t0, 3)})
    finally:
        backend.close()
        cache.close()
    best = sorted(scored.values(), key=lambda r: (-r["metric"], r["size"], r["key"]))[: sw.expand_top]
    linear = task.linear_rule_text() if task_has(task, "linear_rule_text") else None
    fits = StoredFits.of_mapping(task, config.fit_settings, scored)  # the sweep's own weights
    finalists = []
    for r in best:
        test = fits.evaluation(r["text"], "test")
        finalists.append({"text": r["text"], "key": r["key"], "size": r["size"],
                          "metric": r["metric"], "weights": r["weights"],
                          "test_metrics": dict(test.metrics)})
    result = {
        "task": {"name": task.name, "fingerprint": task.fingerprint, "metric": task.metric_name},
        "rounds": rounds,
        "best": finalists,
        "linear": dict(fits.evaluation(linear, "test").metrics) if linear else None,
        "oracle": float(task.oracle("test")) if task_has(task, "oracle") else None,
        "rerun_gate": rerun_gate([f["text"] for f in finalists[: config.rerun.finalists]], task,
                                 config.fit_settings, linear, config.rerun.seeds, margin=config.rerun.margin),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(os.fspath(folder.sweep), result)
    return result


def _parse(text):
    from .rule import parse

    return parse(text, check_constants=False)  # texts the sweep itself wrote


def _evaluate_in_chunks(evaluator, rules, progress: bool, desc: str, chunk: int = 256):
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rules), unit="rule", desc=desc, dynamic_ncols=True)
    results, hits = [], 0
    try:
        for i in range(0, len(rules), chunk):
            part, h = evaluator.evaluate(rules[i:i + chunk])
            results += part
            hits += h
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    return results, hits
