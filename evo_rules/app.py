"""The composition root: the one module (with the CLI on top of it) that imports every layer.

It turns a config into a task handle and bound operators, runs or resumes a search, and
writes the report. `run_search` is the Python API for notebooks.
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Mapping

from . import checkpoint
from .config import RunConfig, from_dict, load
from .population import Variation
from .report import build_report, reference_texts, write_report
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
    from fitness.registry import get_task

    settings = dict(config.task.settings)
    token = json.dumps({"name": config.task.name, "settings": settings}, sort_keys=True)
    return TaskHandle(partial(get_task, config.task.name, **settings), token)


def variation(config: RunConfig, features) -> Variation:
    import operators as ops

    g = config.grammar
    grammar = ops.Grammar(features=tuple(g.features or features), operators=tuple(g.operators),
                          max_size=g.max_size, max_depth=g.max_depth,
                          template_share=g.template_share)
    s = config.search
    probs = {"crossover": s.crossover, "subtree": s.subtree, "point": s.point, "hoist": s.hoist,
             "shrink": s.shrink, "insert": s.insert}
    return Variation(
        random_rule=lambda rng: ops.random_rule(grammar, rng),
        mutations={name: partial(_mutate, ops.OPERATORS[name], grammar)
                   for name in ("subtree", "point", "hoist", "shrink", "insert")},
        crossover=lambda a, b, rng: ops.subtree_crossover(a, b, grammar, rng),
        probs={k: v for k, v in probs.items() if v > 0},
    )


def _mutate(op, grammar, rule, rng):
    return op(rule, grammar, rng)


def seed_texts(config: RunConfig, task) -> list[str]:
    texts = list(config.search.seed_rules)
    if config.search.seed_reference:
        texts += reference_texts(task)
    if config.search.seed_linear and hasattr(task, "linear_rule_text"):
        texts.append(task.linear_rule_text())
    return texts


def make_search(config: RunConfig, out: str, progress: bool = True, resume: bool = False) -> Search:
    handle = task_handle(config)
    task = checked_task(config, handle.build)  # settings, data, features: before any folder
    search = Search(config, handle, variation(config, task.features), out,
                    seeds=seed_texts(config, task), progress=progress, resume=resume)
    return search


def start(config: RunConfig, out: str | None = None, progress: bool = True) -> tuple[Search, dict]:
    out = out or os.path.join("runs", f"{config.task.name}-seed{config.run.seed}")
    search = make_search(config, out, progress)
    with open(os.path.join(search.out, "config.json"), "w") as fh:
        json.dump(config.to_dict(), fh, indent=2, sort_keys=True)
    search.run()
    report = build_report(search)
    write_report(search.out, report)
    search.close()
    return search, report


def resume(out: str, generations: int | None = None, progress: bool = True) -> tuple[Search, dict]:
    if not os.path.isdir(out):
        raise RunFolderError(f"{out}: no such run folder")
    state = checkpoint.read_latest(out)
    config = from_dict(state["config"], source=os.path.join(out, checkpoint.NAME))
    if generations is not None:
        config = config.replace("run", generations=generations)
    search = make_search(config, out, progress, resume=True)
    search.load_state(state)
    search.run()
    report = build_report(search)
    write_report(search.out, report)
    search.close()
    return search, report


def run_search(config: Mapping | str | RunConfig | None = None, out: str | None = None,
               progress: bool = False, **run_overrides) -> dict:
    """Notebook API: run a search from a config dict (or TOML path) and return the report.

    `run_overrides` replace keys of [run] (seed, generations, population)."""
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
    return start(cfg, out, progress)[1]


def sweep(config: RunConfig, out: str, progress: bool = True) -> dict:
    """The seed's stage-two procedure: enumerate every template rule up to a size, evaluate all
    through the cache, keep the best; each expansion round grows the best by one more term."""
    import time

    import operators as ops

    from .backends import make_backend
    from .cache import FitnessCache
    from .evaluate import evaluate_rule
    from .evaluator import Evaluator
    from .gate import rerun_gate
    from .report import write_json

    started = time.perf_counter()
    handle = task_handle(config)
    task = checked_task(config, handle.build)
    sw = config.sweep
    features = tuple(config.grammar.features or task.features)
    vocab = ops.term_vocabulary(features, pairs=sw.pairs)
    os.makedirs(out, exist_ok=True)
    cache = FitnessCache(config.cache.path or os.path.join(out, "cache.sqlite"), task.fingerprint,
                         config.fit_settings)
    ev = config.evaluation
    backend = make_backend(ev.backend, handle.factory, handle.token, config.fit_settings,
                           workers=ev.n_workers, chunk=ev.chunk, retries=ev.retries,
                           scheduler=ev.scheduler)
    evaluator = Evaluator(cache, backend)
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
    linear = task.linear_rule_text() if hasattr(task, "linear_rule_text") else None
    finalists = []
    for r in best:
        test = evaluate_rule(r["text"], task, config.fit_settings, part="test")
        finalists.append({"text": r["text"], "key": r["key"], "size": r["size"],
                          "metric": r["metric"], "weights": r["weights"],
                          "test_metrics": test["metrics"]})
    result = {
        "task": {"name": task.name, "fingerprint": task.fingerprint, "metric": task.metric_name},
        "rounds": rounds,
        "best": finalists,
        "linear": evaluate_rule(linear, task, config.fit_settings, part="test")["metrics"] if linear else None,
        "oracle": float(task.oracle("test")) if hasattr(task, "oracle") else None,
        "rerun_gate": rerun_gate([f["text"] for f in finalists[: config.rerun.finalists]], task,
                                 config.fit_settings, linear, config.rerun.seeds),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(os.path.join(out, "sweep.json"), result)
    return result


def _parse(text):
    from .rule import parse

    return parse(text)


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
